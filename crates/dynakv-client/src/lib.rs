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
//! replicas at once; it returns after W acknowledgements, as a [`Written`] that says whether a
//! replica already held a newer version ([`WriteOutcome::Superseded`]). The clock follows cluster
//! time when it is behind, and no timestamp moves it more than the ring's `max_skew_ms` ahead;
//! nodes refuse writes stamped further ahead than that ([`ReplicaError::ClockSkew`]). A read asks
//! R replicas (the up ones first, in preference order) and asks one more when one of them fails
//! or is slower than its node's recent p95 (a hedged request); it resolves the first R replies
//! by version (last write wins), and asked replicas that answered with an older version, or not
//! at all, are repaired in the background ([`ReadFanout::All`] asks all N instead). Late
//! replies still count for node health and read repair.
//! Under load, concurrent operations to one node share batch RPCs; each keeps its own deadline,
//! result and health record.
//!
//! Operations that miss their quorum for a retryable reason (see [`ClientError::is_retryable`])
//! are retried with backoff; a retried write reuses its version. Writes may carry a time-to-live
//! ([`Client::put_with_ttl`]); many keys go in one call with [`Client::put_many`],
//! [`Client::get_many`] and [`Client::delete_many`], each key through the same quorum rounds as
//! a single operation (not atomic across keys).
//!
//! The ring is live: every request carries the version of the ring it was placed by, and a
//! reply or refusal from a node with a newer ring makes the client fetch that ring and swap it
//! in (a refused attempt is retried with it, same version), so a client started with an old ring
//! file keeps answering correctly. While a membership change moves ranges, a write needs W
//! acknowledgements among the current replicas and W among the target ones (a joint quorum);
//! reads stay on the current replicas. [`Client::change_ring`] makes a change and
//! [`Client::move_status`] follows it.
//!
//! When the ring file has a `[tls]` table, every channel is mutual TLS against its cluster CA and
//! presents the client certificate, or the admin's with [`ClientBuilder::caller`]; a refused
//! handshake is [`ReplicaError::Tls`].
//!
//! # Layout
//! - [`client`]: [`Client`] and its builder: the public operations.
//! - [`batch`]: `put_many`, `get_many`, `delete_many`: every key through the single-key rounds,
//!   concurrently and bounded; one outcome per operation (not atomic across keys).
//! - [`options`]: [`ClientOptions`], per-call [`ReadOptions`] and [`WriteOptions`].
//! - [`consistency`]: [`Consistency`] levels (`One`, `Quorum`, `All`, `Custom`, `Linearizable`),
//!   set on the client or per call, and the quorum each one waits for.
//! - [`linearizable`]: the ABD rounds of linearizable gets, puts and deletes over strict
//!   majorities.
//! - [`quorum`]: the write round every put and delete runs: the concurrent fan-out that waits for
//!   W acknowledgements, joint quorums during a ring change, stand-ins and hints for unreachable
//!   replicas.
//! - `read`: the read round every get runs: R replicas (or all N), hedges, resolution by version,
//!   then read repair.
//! - [`hedge`]: which replicas a read asks ([`ReadFanout`]), when it asks one more
//!   ([`HedgePolicy`]), and the per-node latency estimate behind it.
//! - [`repair`]: asynchronous read repair of stale replicas.
//! - [`retry`]: idempotent retries of retryable failures, exponential backoff with jitter.
//! - [`replica`]: one node's channel, with deadlines and health accounting on every call.
//! - `cluster_time`: before its first write, a client follows cluster time (the nodes' wall
//!   clocks, by majority) when its own clock is behind.
//! - `coalesce`: concurrent operations to one node sent together as batch RPCs: the one batcher,
//!   with the one set of size limits.
//! - `topology`: the live ring and its node handles, swapped whole when a reply or a refusal
//!   shows a newer ring version; single-flight ring refreshes.
//! - [`membership`]: ring changes ([`Client::change_ring`]), live ring fetches and the
//!   progress of moving ranges ([`Client::move_status`]).
//! - [`metrics`]: what the client counts (quorum latency, replica failures, stand-ins, read
//!   repairs, batch sizes), through the `metrics` facade.
//! - `spans`: a tracing span per operation (op, key token, ring version, quorum numbers).
//! - [`error`]: [`ClientError`], [`QuorumError`] and [`ReplicaError`], carrying the numbers.

#![warn(missing_docs)]

pub mod batch;
pub mod client;
mod cluster_time;
mod coalesce;
pub mod consistency;
pub mod error;
pub mod hedge;
pub mod linearizable;
pub mod membership;
pub mod metrics;
pub mod options;
pub mod quorum;
mod read;
pub mod repair;
pub mod replica;
pub mod retry;
mod spans;
mod topology;

pub use batch::{BatchPut, ReadResults, WriteResults};
pub use client::{
    Client, ClientBuilder, DumpedRecord, Inspection, LiveHealth, NodeReport, NodeStatus,
    ReplicaView, Versioned,
};
pub use consistency::{Consistency, UnknownConsistency};
pub use dynakv_core::{HandoffReport, HealthPolicy, NodeHealth, RepairReport};
pub use dynakv_tls::Caller;
pub use error::{
    ClientError, Op, QuorumError, ReplicaError, ReplicaFailure, Round, SetCount, WriteOutcome,
    Written,
};
pub use hedge::{HedgePolicy, ReadFanout};
pub use membership::{MoveReport, NodeMoves, RangeProgress};
pub use options::{ClientOptions, ReadOptions, WriteOptions};
