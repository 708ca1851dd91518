//! The dynakv node: serves replica reads and writes for the keys the ring gives it, sweeps
//! expired records, and streams its records to operators.
//!
//! A node is started with [`Node::serve`], which takes its listener and shutdown signal from the
//! caller, so the binary, tests and benchmarks start nodes the same way.
//!
//! # Layout
//! - [`config`]: [`NodeConfig`], what a node needs to start: its ring, its id, where its data lives.
//! - [`server`]: [`Node::serve`], opening storage, running the gRPC server, stopping cleanly.
//! - [`service`]: the `dynakv.v1.Replica` gRPC service: validation, routing checks, hints, the store.
//! - [`peers`]: node-to-node channels with deadlines and peer health.
//! - [`auth`]: which certificate role each RPC needs, checked in one place.
//! - [`handoff`]: delivery of hints to their owners once they answer again.
//! - [`anti_entropy`]: Merkle-digest comparison with co-replicas, repair, tombstone collection.
//! - [`sweep`]: the TTL sweep, rewriting expired records as tombstones of the same version.
//! - [`disk`]: the disk watch: the free-space reserve, and recovery of failed storage in place.
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`dump`]: the `Dump` stream of a node's records for operators, paged out of storage.
//! - [`error`]: [`NodeError`], why a node could not start.

#![warn(missing_docs)]

pub mod anti_entropy;
pub mod auth;
pub mod config;
pub mod disk;
pub mod dump;
pub mod error;
pub mod handoff;
pub mod metrics;
pub mod peers;
pub mod server;
pub mod service;
pub mod sweep;

pub use config::{NodeConfig, StorageChoice};
pub use error::NodeError;
pub use server::Node;
