//! Guards for the invariants the coming refactors (quorum engine, storage writer, catch-up
//! paths) must keep. Each test names the bug it catches; each was checked by putting that bug
//! into the production code by hand and seeing the test fail.
//!
//! Most set up replica state with raw `Write` RPCs to single nodes, so what each replica holds
//! is decided by the test, not by timing.

mod clocks;
mod expiry;
mod handoff;
mod stale_writes;
mod tombstones;

use bytes::Bytes;
use dynakv_core::{Record, Timestamp, Version, now_ms};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use tonic::transport::Channel;

use crate::support::TestCluster;

/// Writer id of the records the tests write directly; no client picks it on purpose.
const RAW_WRITER: u64 = 7;

/// A raw gRPC client of node `i` (0-based), through its proxy like every other caller.
async fn raw(cluster: &TestCluster, i: usize) -> ReplicaClient<Channel> {
    let addr = cluster.ring.nodes()[i].addr;
    ReplicaClient::connect(format!("http://{addr}")).await.expect("connect to node")
}

/// A version stamped `offset_ms` from now (negative: in the past).
fn version_at(offset_ms: i64) -> Version {
    Version::new(Timestamp::from_millis(now_ms().saturating_add_signed(offset_ms)), RAW_WRITER)
}

/// Offers `record` for `key` to one node, as a replica (no hint); returns the node's answer.
async fn raw_write(
    raw: &mut ReplicaClient<Channel>,
    key: &str,
    record: Record,
) -> v1::WriteResponse {
    let request = v1::WriteRequest {
        ring_version: 0,
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: Some(record.into()),
        hint_for: String::new(),
    };
    raw.write(request).await.expect("raw write").into_inner()
}

/// What one node holds for `key`, tombstones and expired records included.
async fn raw_read(raw: &mut ReplicaClient<Channel>, key: &str) -> Option<Record> {
    let request = v1::ReadRequest { ring_version: 0, key: Bytes::copy_from_slice(key.as_bytes()) };
    let reply = raw.read(request).await.expect("raw read").into_inner();
    reply.record.map(|r| Record::try_from(r).expect("well-formed record"))
}
