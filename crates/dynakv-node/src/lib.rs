//! The dynakv node: serves replica reads and writes for the keys the ring gives it, keeps the
//! live ring with the other nodes, sweeps expired records, and streams its records to operators
//! and to new owners.
//!
//! A node is started with [`Node::serve`], which takes its listener and shutdown signal from the
//! caller, so the binary, tests and benchmarks start nodes the same way.
//!
//! # Layout
//! - [`config`]: [`NodeConfig`], what a node needs to start: its ring, its id, where its data lives.
//! - [`server`]: [`Node::serve`], opening storage, running the gRPC server, stopping cleanly.
//! - [`service`]: the `dynakv.v1.Replica` gRPC service: validation, routing checks, hints, the store.
//! - [`topology`]: the ring the node serves now, its place in it and a channel per peer; swapped
//!   whole when a newer ring arrives.
//! - [`membership`]: the live ring: stored durably, agreed on by Paxos, pulled by version, and
//!   the moves of ranges to new owners during a change.
//! - [`peers`]: node-to-node channels with deadlines and peer health.
//! - [`auth`]: which certificate role each RPC needs, checked in one place.
//! - [`handoff`]: delivery of hints to their owners once they answer again.
//! - [`anti_entropy`]: Merkle-digest comparison with co-replicas (the digests the storage writer
//!   keeps first, scans only where they differ), repair, tombstone collection.
//! - [`sweep`]: the TTL sweep, rewriting expired records as tombstones of the same version.
//! - [`disk`]: the disk watch: the free-space reserve, and recovery of failed storage in place.
//! - [`spans`]: a tracing span per request served (rpc, node id, ring version, key token).
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`dashboard`]: the live dashboard page on the metrics address, and the `/api/cluster` view
//!   it polls, gathered from the peers.
//! - [`dump`]: the `Dump` stream of a node's records for operators, paged out of storage.
//! - [`error`]: [`NodeError`], why a node could not start.

#![warn(missing_docs)]

pub mod anti_entropy;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod disk;
pub mod dump;
pub mod error;
pub mod handoff;
pub mod membership;
pub mod metrics;
pub mod peers;
pub mod server;
pub mod service;
pub mod spans;
pub mod sweep;
pub mod topology;

pub use config::{NodeConfig, StorageChoice};
pub use error::NodeError;
pub use server::Node;
