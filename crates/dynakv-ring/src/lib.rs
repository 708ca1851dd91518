//! Where keys live: the ring file and the consistent-hash ring built from it.
//!
//! A ring file names the nodes and the replication defaults. Each node owns `vnodes` tokens on a
//! 64-bit ring; a key is hashed to a token and stored on the first N distinct nodes clockwise
//! from it, its [`PreferenceList`].
//!
//! We write our own ring rather than use the `hashring` crate: its replica lookup returns the same
//! physical node twice for about half of the keys once vnodes are on, and it clones the ring on
//! every lookup.
//!
//! # Layout
//! - [`config`]: the ring file as a serde struct ([`RingConfig`]), its defaults, and validation.
//! - [`ring`]: [`Ring`], token placement, [`PreferenceList`] and clockwise [`Successors`].
//! - [`error`]: [`RingError`], one variant per thing a ring file can get wrong.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod ring;

pub use config::{
    ClockSettings, Limits, NodeSpec, Replication, RingConfig, StorageSettings, SyncPolicy,
    Timeouts, TtlSettings,
};
pub use error::RingError;
pub use ring::{NodeIndex, PreferenceList, Ring, Successors, TokenRange, key_token};
