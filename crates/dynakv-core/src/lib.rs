//! The shared vocabulary of dynakv: what a key, a value, a version and a record are, and the one
//! rule that decides which of two records wins.
//!
//! Every other crate speaks in these types; none of them re-derives the merge rule.
//!
//! # Layout
//! - [`limits`]: key and value validation, the size limits and the typed [`InputError`].
//! - [`clock`]: [`Clock`], wall-clock time that tests can shift, read by everything that decides
//!   by time.
//! - [`hlc`]: the hybrid logical clock ([`Hlc`], [`Timestamp`]) every writer stamps versions with,
//!   bounded so no timestamp pushes it more than a skew bound ahead ([`ClockSkew`]).
//! - [`version`]: [`Version`] = (timestamp, writer id), totally ordered.
//! - [`record`]: [`Record`] (a value or a tombstone, with its version and expiry) and the
//!   last-write-wins [`merge`] rule.
//! - [`report`]: [`RepairReport`] and [`HandoffReport`], what one anti-entropy round or hint
//!   delivery pass did.
//! - [`codec`]: the compact binary encoding of a record used by storage engines.
//! - [`health`]: [`NodeHealth`], what a caller knows of a remote node's health, and its
//!   [`HealthPolicy`] (failures before down, exponential retry).

#![warn(missing_docs)]

pub mod clock;
pub mod codec;
pub mod health;
pub mod hlc;
pub mod limits;
pub mod record;
pub mod report;
pub mod version;

pub use clock::Clock;
pub use codec::CodecError;
pub use health::{HealthPolicy, NodeHealth};
pub use hlc::{ClockSkew, Hlc, Timestamp};
pub use limits::{
    DEFAULT_MAX_VALUE_BYTES, InputError, MAX_KEY_BYTES, validate_key, validate_value,
};
pub use record::{Record, dead_since, merge, now_ms};
pub use report::{HandoffReport, RepairReport};
pub use version::Version;
