//! Expired records read as not found on every read path while they still hold their value: the
//! sweep is held off (its interval is an hour), so nothing but the read path can hide them.
//! Guards against: `get`, `get_many` or read resolution ignoring the expiry; nodes hiding
//! expired records from reads (an older copy elsewhere would then win); read repair copying an
//! older unexpired value instead of the newer expired record.

use std::time::Duration;

use bytes::Bytes;
use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_core::{Record, now_ms};

use super::{raw, raw_read, raw_write, version_at};
use crate::support::{PATIENCE, TestCluster, eventually};

/// The TTL sweep would run only after an hour.
const NO_SWEEP: &str = "[ttl]\nsweep_interval_ms = 3600000\n";

/// Waits until the wall clock has passed `expires_at_ms`.
async fn wait_past(expires_at_ms: u64) {
    eventually(PATIENCE, "the expiry time has passed", || async move { now_ms() > expires_at_ms })
        .await;
}

#[tokio::test]
async fn an_expired_record_the_sweep_has_not_rewritten_reads_as_not_found() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, NO_SWEEP).await;
    let client = cluster.client();
    let all = WriteOptions { w: Some(3), ..Default::default() };
    client.put_with("lasting", "here", all).await.unwrap();
    let version = client
        .put_ttl_with("brief", "gone soon", Duration::from_secs(1), all)
        .await
        .unwrap()
        .version;
    let expires_at = cluster.replica_record(&client, 0, "brief").await.unwrap().expires_at_ms;
    assert!(expires_at > 0);
    wait_past(expires_at).await;

    // Every replica still holds the value: the sweep has not rewritten it as a tombstone.
    let inspection = client.inspect("brief").await.unwrap();
    assert_eq!(inspection.replicas.len(), 3);
    for view in inspection.replicas {
        let record = view.record.unwrap().expect("the replica still holds the record");
        assert_eq!(record.version, version, "{}", view.node);
        assert_eq!(record.value, Some(Bytes::from("gone soon")), "{}: not swept", view.node);
        assert_eq!(record.expires_at_ms, expires_at, "{}", view.node);
        assert!(record.is_expired_at(now_ms()), "{} shows it as expired", view.node);
    }

    assert_eq!(client.get("brief").await.unwrap(), None);
    assert_eq!(
        client.get_with("brief", ReadOptions { r: Some(3), ..Default::default() }).await.unwrap(),
        None
    );
    assert_eq!(client.get_versioned("brief").await.unwrap(), None);
    let many = client.get_many(["brief", "lasting"]).await.unwrap();
    assert_eq!(many[0].as_ref().unwrap(), &None);
    assert_eq!(many[1].as_ref().unwrap(), &Some(Bytes::from("here")));
    let many = client
        .get_many_with(["brief"], ReadOptions { r: Some(3), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(many[0].as_ref().unwrap(), &None);
    cluster.shutdown().await;
}

#[tokio::test]
async fn read_repair_copies_the_expired_record_not_an_older_value() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, NO_SWEEP).await;
    // n1 and n2 hold a value that expires in a second; n3 holds an older one that never does.
    let newer = Record {
        version: version_at(0),
        value: Some(Bytes::from("new")),
        expires_at_ms: now_ms() + 1000,
    };
    let older = Record::value(version_at(-60_000), Bytes::from("old"));
    for node in [0, 1] {
        assert!(raw_write(&mut raw(&cluster, node).await, "k", newer.clone()).await.applied);
    }
    assert!(raw_write(&mut raw(&cluster, 2).await, "k", older).await.applied);
    wait_past(newer.expires_at_ms).await;

    let client = cluster.client();
    assert_eq!(
        client.get_with("k", ReadOptions { r: Some(3), ..Default::default() }).await.unwrap(),
        None,
        "the newer record decides, expired as it is"
    );
    client.settle().await;
    for node in 0..3 {
        let held = raw_read(&mut raw(&cluster, node).await, "k").await;
        assert_eq!(held.as_ref(), Some(&newer), "n{} holds the expired record", node + 1);
    }
    for r in 1..=3 {
        assert_eq!(
            client.get_with("k", ReadOptions { r: Some(r), ..Default::default() }).await.unwrap(),
            None
        );
    }
    let many = client.get_many(["k"]).await.unwrap();
    assert_eq!(many[0].as_ref().unwrap(), &None);
    cluster.shutdown().await;
}
