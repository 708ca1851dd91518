//! A client never writes below a version it has seen. Guards against: the client ignoring the
//! timestamps it observes in read replies (`quorum::read`, batch reads) and in write replies
//! (the `current` version a replica answers a write with, single and batched).

use bytes::Bytes;
use dynakv_client::Client;
use dynakv_core::{Record, Version};

use super::{raw, raw_write, version_at};
use crate::support::{TestCluster, client_for};

/// Extra ring settings for these tests. The records they inject are stamped an hour ahead of
/// the wall clock; nodes refuse timestamps more than `[clocks] max_skew_ms` ahead of their own
/// clock, and clients do not observe them, so the bound here is two hours.
const FUTURE_OK: &str = "[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\n[clocks]\nmax_skew_ms = 7200000\n";

/// How far ahead the injected records are stamped.
const AHEAD_MS: i64 = 3_600_000;

/// Writes a value stamped an hour ahead to every replica of `key` (N = 3 of 3 nodes: all of
/// them) and returns its version.
async fn inject_future_value(cluster: &TestCluster, key: &str) -> Version {
    let version = version_at(AHEAD_MS);
    for node in 0..3 {
        let record = Record::value(version, Bytes::from("from the future"));
        assert!(raw_write(&mut raw(cluster, node).await, key, record).await.applied);
    }
    version
}

/// A client that has seen nothing yet: no health checks, no reads, no writes. (Health replies
/// carry node clocks, which would hide a client that ignores data replies.)
fn fresh_client(cluster: &TestCluster) -> Client {
    client_for(&cluster.ring)
}

/// Guards against: the client ignoring the versions it reads (single and batched gets).
#[tokio::test]
async fn a_client_writes_above_a_version_it_has_read() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, FUTURE_OK).await;
    let injected = inject_future_value(&cluster, "put-after-get").await;
    let client = fresh_client(&cluster);
    assert_eq!(client.get("put-after-get").await.unwrap(), Some(Bytes::from("from the future")));
    let put = client.put("put-after-get", "mine").await.unwrap().version;
    assert!(put > injected, "the put ({put:?}) is above the version read ({injected:?})");
    assert_eq!(client.get("put-after-get").await.unwrap(), Some(Bytes::from("mine")));

    let injected = inject_future_value(&cluster, "delete-after-get").await;
    let client = fresh_client(&cluster);
    assert!(client.get("delete-after-get").await.unwrap().is_some());
    let deleted = client.delete("delete-after-get").await.unwrap().version;
    assert!(deleted > injected, "the delete ({deleted:?}) is above the version read");
    assert_eq!(client.get("delete-after-get").await.unwrap(), None);

    let injected = inject_future_value(&cluster, "batched").await;
    let client = fresh_client(&cluster);
    let read = client.get_many(["batched"]).await.unwrap();
    assert_eq!(read[0].as_ref().unwrap(), &Some(Bytes::from("from the future")));
    let written = client.put_many([("batched", "mine")]).await.unwrap();
    let put = written[0].as_ref().unwrap().version;
    assert!(put > injected, "the batched put ({put:?}) is above the version read");
    assert_eq!(client.get("batched").await.unwrap(), Some(Bytes::from("mine")));
    cluster.shutdown().await;
}

/// Guards against: the client ignoring the version a replica answers a write with. A blind
/// write below the injected version loses the merge (whatever the client makes of that); the
/// replicas' answers carry the injected version, so the client's next write is above it.
#[tokio::test]
async fn a_client_writes_above_a_version_a_write_reply_showed_it() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, FUTURE_OK).await;
    let injected = inject_future_value(&cluster, "blind-put").await;
    let client = fresh_client(&cluster);
    let _ = client.put("blind-put", "lost").await;
    let put = client.put("blind-put", "mine").await.unwrap().version;
    assert!(put > injected, "the second put ({put:?}) is above the version it was told of");
    assert_eq!(client.get("blind-put").await.unwrap(), Some(Bytes::from("mine")));

    let injected = inject_future_value(&cluster, "blind-delete").await;
    let client = fresh_client(&cluster);
    let _ = client.delete("blind-delete").await;
    let deleted = client.delete("blind-delete").await.unwrap().version;
    assert!(deleted > injected, "the second delete ({deleted:?}) is above it");
    assert_eq!(client.get("blind-delete").await.unwrap(), None);

    let injected = inject_future_value(&cluster, "blind-batch").await;
    let client = fresh_client(&cluster);
    let _ = client.put_many([("blind-batch", "lost")]).await;
    let written = client.put_many([("blind-batch", "mine")]).await.unwrap();
    let put = written[0].as_ref().unwrap().version;
    assert!(put > injected, "the second batched put ({put:?}) is above it");
    assert_eq!(client.get("blind-batch").await.unwrap(), Some(Bytes::from("mine")));
    cluster.shutdown().await;
}
