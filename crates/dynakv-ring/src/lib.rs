//! Where keys live: the ring file and the consistent-hash ring built from it.
//!
//! A ring file names the nodes and the replication defaults. Each node owns `vnodes` tokens on a
//! 64-bit ring (a joining node none yet); a key is hashed to a token and stored on the first N
//! distinct nodes clockwise from it, its [`PreferenceList`].
//!
//! We write our own ring rather than use the `hashring` crate: its replica lookup returns the same
//! physical node twice for about half of the keys once vnodes are on, and it clones the ring on
//! every lookup.
//!
//! # Layout
//! - [`config`]: the ring file as a serde struct ([`RingConfig`]), its defaults, and validation.
//! - [`node_state`]: [`NodeState`], joining, normal, leaving or dead, and which of them own tokens.
//! - [`ring`]: [`Ring`], token placement (current and, mid-change, target), write sets, [`PreferenceList`], clockwise [`Successors`], and each
//!   node's primary and replica share of the token space.
//! - [`plan`]: [`Change`], [`Ring::begin`] (the ring that starts a change), and [`Plan`], what a
//!   change would move, against the ideal.
//! - [`error`]: [`RingError`], one variant per thing a ring file can get wrong, and [`PlanError`],
//!   one per reason a membership change cannot be made.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod node_state;
pub mod plan;
pub mod ring;

pub use config::{
    ClockSettings, Limits, MembershipSettings, NodeSpec, Replication, RingConfig, StorageSettings,
    SyncPolicy, Timeouts, TlsSettings, TtlSettings,
};
pub use error::{PlanError, RingError};
pub use node_state::NodeState;
pub use plan::{Change, NodeShift, Plan, RangeMove, Transfer};
pub use ring::{Gain, NodeIndex, PreferenceList, Ring, Successors, TokenRange, key_token};
