//! Generated code for the dynakv wire protocol (`proto/dynakv.proto`, package `dynakv.v1`).
//!
//! Nothing here is written by hand: `build.rs` runs a vendored protoc. The node serves
//! [`v1::replica_server::Replica`]; the client calls it through [`v1::replica_client::ReplicaClient`].

/// The `dynakv.v1` protocol package.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("dynakv.v1");
}
