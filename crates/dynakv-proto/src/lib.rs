//! Generated code for the dynakv wire protocol (`proto/dynakv.proto`, package `dynakv.v1`).
//!
//! The messages are generated, not written: `build.rs` runs a vendored protoc. The node serves
//! [`v1::replica_server::Replica`]; the client calls it through [`v1::replica_client::ReplicaClient`].
//!
//! # Layout
//! - [`v1`]: the generated `dynakv.v1` messages, client and server.
//! - [`convert`]: conversions between wire messages and [`dynakv_core`] types, written once for
//!   the node and the client alike.

#![warn(missing_docs)]

/// The `dynakv.v1` protocol package.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("dynakv.v1");
}

pub mod convert;

/// Bytes a gRPC message may carry beyond the largest value: keys, framing, and batches of small
/// records. Nodes and clients size their message limits with [`max_message_bytes`].
pub const MESSAGE_OVERHEAD: usize = 4 * 1024 * 1024;

/// The largest gRPC message a node or client accepts when values may be `max_value_bytes` long.
pub fn max_message_bytes(max_value_bytes: usize) -> usize {
    max_value_bytes + MESSAGE_OVERHEAD
}
