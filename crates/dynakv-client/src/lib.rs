//! The dynakv Rust client: concurrent quorum reads and writes against the replicas of each key.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dynakv_client::Client;
//! let ring = dynakv_ring::Ring::load("config/ring.toml".as_ref())?;
//! let client = Client::connect(ring)?;
//! client.put("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! client.delete("greeting").await?;
//! # Ok(()) }
//! ```
//!
//! A write is stamped with a version from the client's hybrid logical clock and sent to all N
//! replicas at once; it returns after W acknowledgements. A read asks all N and resolves the
//! first R replies by version (last write wins); replicas that answered with an older version,
//! or not at all, are repaired in the background. Late replies still count for node health.
//! Under load, concurrent operations to one node share batch RPCs; each keeps its own deadline,
//! result and health record.
//!
//! # Layout
//! - [`client`]: [`Client`] and its builder: the public operations.
//! - [`options`]: [`ClientOptions`], per-call [`ReadOptions`] and [`WriteOptions`].
//! - [`quorum`]: the concurrent fan-out that waits for R or W replies.
//! - [`repair`]: asynchronous read repair of stale replicas.
//! - [`replica`]: one node's channel, with deadlines and health accounting on every call.
//! - `coalesce`: concurrent operations to one node sent together as batch RPCs.
//! - [`health`]: [`NodeHealth`], consecutive failures, latency, and exponential retry of down nodes.
//! - [`error`]: [`ClientError`], [`QuorumError`] and [`ReplicaError`], carrying the numbers.

#![warn(missing_docs)]

pub mod client;
mod coalesce;
pub mod error;
pub mod health;
pub mod options;
pub mod quorum;
pub mod repair;
pub mod replica;

pub use client::{
    Client, ClientBuilder, Inspection, NodeReport, NodeStatus, ReplicaView, Versioned,
};
pub use error::{ClientError, Op, QuorumError, ReplicaError, ReplicaFailure, WriteOutcome};
pub use health::NodeHealth;
pub use options::{ClientOptions, ReadOptions, WriteOptions};
