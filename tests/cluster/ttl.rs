//! Time-to-live: expired records read as not found on every path, each node's sweep turns them
//! into tombstones of the same version (storage shrinks), a put resets the TTL, and the expiry
//! travels with repaired copies.

use std::time::Duration;

use bytes::Bytes;
use dynakv_client::Client;
use dynakv_core::{Record, now_ms};
use futures::StreamExt;

use crate::support::{PATIENCE, TestCluster, eventually};

/// Ring settings for tests that wait for the sweep: sweep every 100 ms.
const FAST_SWEEP: &str = "[ttl]\nsweep_interval_ms = 100\n";

/// Waits until the wall clock has passed `expires_at_ms`.
async fn wait_past(expires_at_ms: u64) {
    eventually(PATIENCE, "the expiry time has passed", || async move { now_ms() > expires_at_ms })
        .await;
}

/// Every record node `node` stores, through the Dump stream.
async fn dump(client: &Client, node: &str) -> Vec<(Bytes, Record)> {
    let stream = client.dump(node, Bytes::new(), None).await.expect("dump starts");
    stream.map(|entry| entry.map(|d| (d.key, d.record)).expect("dump entry")).collect().await
}

/// Live keys node by node, from Health.
async fn live_keys(client: &Client) -> Vec<u64> {
    let statuses = client.node_statuses().await;
    statuses.into_iter().map(|s| s.reply.expect("node answers").keys).collect()
}

#[tokio::test]
async fn expired_records_read_as_not_found_on_every_path() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    client.put_with_ttl("lasting", "here", Duration::from_secs(3600)).await.unwrap();
    assert_eq!(client.get("lasting").await.unwrap(), Some(Bytes::from("here")));

    let version = client
        .put_with_ttl("brief", "gone soon", Duration::from_millis(200))
        .await
        .unwrap()
        .version;
    client.settle().await;
    let stored = cluster.replica_record(&client, 0, "brief").await.unwrap();
    assert_eq!(stored.version, version);
    assert!(stored.expires_at_ms > 0 && stored.expires_at_ms <= now_ms() + 200);
    for node in 1..3 {
        let copy = cluster.replica_record(&client, node, "brief").await.unwrap();
        assert_eq!(
            copy.expires_at_ms, stored.expires_at_ms,
            "one absolute expiry on every replica"
        );
    }
    wait_past(stored.expires_at_ms).await;

    assert_eq!(client.get("brief").await.unwrap(), None);
    assert_eq!(client.get_versioned("brief").await.unwrap(), None);
    let many = client.get_many(["brief", "lasting"]).await.unwrap();
    assert_eq!(many[0].as_ref().unwrap(), &None);
    assert_eq!(many[1].as_ref().unwrap(), &Some(Bytes::from("here")));
    let inspection = client.inspect("brief").await.unwrap();
    for view in inspection.replicas {
        let record = view.record.unwrap().expect("the replica still holds the record");
        assert!(record.is_expired_at(now_ms()), "{} shows it as expired", view.node);
    }

    let err = client.put_with_ttl("k", "v", Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("invalid ttl"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_sweep_turns_expired_values_into_tombstones_and_storage_shrinks() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, FAST_SWEEP).await;
    let client = cluster.client();
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut expiring = Vec::new();
    // An hour: nothing expires while the test writes, however slow the machine; the nodes' clocks
    // are moved past it below.
    for i in 0..20 {
        let key = format!("session-{i}");
        let version = client
            .put_with_ttl(key.clone(), payload.clone(), Duration::from_secs(3600))
            .await
            .unwrap()
            .version;
        expiring.push((Bytes::from(key), version));
    }
    for i in 0..5 {
        client.put(format!("kept-{i}"), payload.clone()).await.unwrap();
    }
    client.settle().await;
    let before = dump(&client, "n1").await;
    let bytes = |records: &[(Bytes, Record)]| -> usize {
        records.iter().map(|(_, r)| r.value.as_ref().map_or(0, Bytes::len)).sum()
    };
    assert_eq!(before.len(), 25);
    assert_eq!(bytes(&before), 25 * 1024);
    for node in 0..3 {
        cluster.clock(node).shift(2 * 3600 * 1000);
    }

    eventually(PATIENCE, "every node swept its expired records", || async {
        live_keys(&client).await == [5, 5, 5]
    })
    .await;
    for node in ["n1", "n2", "n3"] {
        let after = dump(&client, node).await;
        assert_eq!(after.len(), 25, "{node}: swept records stay as tombstones");
        assert_eq!(bytes(&after), 5 * 1024, "{node}: only the kept values are stored");
        for (key, version) in &expiring {
            let (_, record) = after.iter().find(|(k, _)| k == key).expect("swept key is listed");
            assert!(record.is_tombstone(), "{node}: {key:?} is a tombstone");
            assert_eq!(record.version, *version, "{node}: the tombstone keeps the version");
            assert!(record.expires_at_ms > 0, "{node}: and the expiry");
        }
    }
    assert_eq!(client.get("session-0").await.unwrap(), None);
    assert_eq!(client.get("kept-0").await.unwrap(), Some(payload));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_put_replaces_the_ttl() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    client.put_with_ttl("k", "first", Duration::from_millis(300)).await.unwrap();
    client.settle().await;
    let first = cluster.replica_record(&client, 0, "k").await.unwrap().expires_at_ms;
    client
        .put_with("k", "second", dynakv_client::WriteOptions { w: Some(3), ..Default::default() })
        .await
        .unwrap();
    for node in 0..3 {
        let record = cluster.replica_record(&client, node, "k").await.unwrap();
        assert_eq!(record.expires_at_ms, 0, "n{}: a put without ttl never expires", node + 1);
    }
    wait_past(first).await;
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("second")));

    client.put_with_ttl("k", "third", Duration::from_secs(3600)).await.unwrap();
    client.settle().await;
    let record = cluster.replica_record(&client, 0, "k").await.unwrap();
    assert!(record.expires_at_ms > now_ms(), "a put with ttl sets a new expiry");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_ttl_survives_read_repair() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    cluster.stop(2).await;
    let version = client.put_with_ttl("k", "v", Duration::from_secs(3600)).await.unwrap().version;
    client.settle().await;
    cluster.restart(2).await;

    let reader = cluster.client();
    assert_eq!(cluster.replica_record(&reader, 2, "k").await, None, "n3 missed the write");
    assert_eq!(reader.get("k").await.unwrap(), Some(Bytes::from("v")));
    reader.settle().await;
    let original = cluster.replica_record(&reader, 0, "k").await.unwrap();
    let repaired = cluster.replica_record(&reader, 2, "k").await.unwrap();
    assert_eq!(repaired.version, version);
    assert_eq!(
        repaired.expires_at_ms, original.expires_at_ms,
        "the copy expires at the same moment"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_expired_key_is_not_resurrected_by_an_older_copy() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, FAST_SWEEP).await;
    let client = cluster.client();
    client
        .put_with("k", "old", dynakv_client::WriteOptions { w: Some(3), ..Default::default() })
        .await
        .unwrap();
    cluster.stop(2).await;
    let version =
        client.put_with_ttl("k", "new", Duration::from_millis(200)).await.unwrap().version;
    client.settle().await;
    eventually(PATIENCE, "n1 and n2 swept the expired record", || async {
        let inspection = client.inspect("k").await.unwrap();
        inspection.replicas.iter().filter(|v| v.node != "n3").all(
            |view| matches!(&view.record, Ok(Some(r)) if r.is_tombstone() && r.version == version),
        )
    })
    .await;
    cluster.restart(2).await;

    // n3 still holds the older, never-expiring value; the swept tombstone outranks it.
    let reader = cluster.client();
    let stale = cluster.replica_record(&reader, 2, "k").await.unwrap();
    assert_eq!(stale.value, Some(Bytes::from("old")));
    assert_eq!(
        reader
            .get_with("k", dynakv_client::ReadOptions { r: Some(3), ..Default::default() })
            .await
            .unwrap(),
        None
    );
    reader.settle().await;
    let repaired = cluster.replica_record(&reader, 2, "k").await.unwrap();
    assert_eq!(repaired.version, version, "n3 was repaired to the newer version");
    assert_eq!(reader.get("k").await.unwrap(), None);
    cluster.shutdown().await;
}
