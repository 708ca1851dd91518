//! Hinted handoff: writes made while a replica is down reach it when it returns.

use bytes::Bytes;

use crate::support::{PATIENCE, TestCluster, counts, eventually};

/// Hints are handed off every 200 ms; no periodic anti-entropy, so hints alone must do it.
const FAST_HINTS: &str = "[hints]\ninterval_ms = 200\n[anti_entropy]\nenabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_catches_up_from_hints() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, FAST_HINTS).await;
    let client = cluster.client();
    cluster.stop(2).await;
    let writes = (0..1000).map(|i| {
        let client = client.clone();
        async move { client.put(format!("key-{i}"), format!("value-{i}")).await }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    client.settle().await;
    let held = counts(&client).await;
    assert_eq!((held[0].0, held[1].0), (1000, 1000));
    assert!(
        held[0].1 + held[1].1 >= 1000,
        "the live replicas hold a hint per key for n3: {held:?}"
    );

    cluster.restart(2).await;
    eventually(PATIENCE, "n3 holds every key and no hints are pending", || async {
        let now = counts(&client).await;
        now.iter().all(|&(keys, hints)| keys == 1000 && hints == 0)
    })
    .await;
    let record = cluster.replica_record(&client, 2, "key-7").await.unwrap();
    assert_eq!(record.value, Some(Bytes::from("value-7")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn hints_survive_a_restart_of_the_node_holding_them() {
    let extra = "[hints]\ninterval_ms = 200\n[anti_entropy]\nenabled = false\n";
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, extra).await;
    let client = cluster.client();
    cluster.stop(2).await;
    for i in 0..50 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    client.delete("k0").await.unwrap();
    client.settle().await;
    let before = counts(&client).await;
    assert!(before[0].1 + before[1].1 >= 50, "{before:?}");

    cluster.stop(0).await;
    cluster.stop(1).await;
    cluster.restart(0).await;
    cluster.restart(1).await;
    let fresh = cluster.client();
    let after = counts(&fresh).await;
    assert_eq!((after[0].1, after[1].1), (before[0].1, before[1].1), "hints are durable");

    cluster.restart(2).await;
    eventually(PATIENCE, "every hint is handed off", || async {
        let now = counts(&fresh).await;
        now.iter().all(|&(keys, hints)| keys == 49 && hints == 0)
    })
    .await;
    assert!(cluster.replica_record(&fresh, 2, "k0").await.unwrap().is_tombstone());
    cluster.shutdown().await;
}

#[tokio::test]
async fn stand_ins_count_toward_w_unless_strict() {
    use dynakv_client::{ClientError, WriteOptions};
    use dynakv_ring::key_token;

    let extra = "[hints]\ninterval_ms = 200\n[anti_entropy]\nenabled = false\n";
    let mut cluster = TestCluster::start_with(5, 3, 2, 2, extra).await;
    let ring = cluster.ring.clone();
    // A key whose preference list starts n1, so stopping two of its replicas leaves one.
    let key = (0..)
        .map(|i| format!("key-{i}"))
        .find(|k| ring.preference_list(key_token(k.as_bytes()))[0] == 0)
        .unwrap();
    let replicas = ring.preference_list(key_token(key.as_bytes()));
    cluster.stop(replicas[1]).await;
    cluster.stop(replicas[2]).await;
    let client = cluster.client();

    let strict = client
        .put_with(key.clone(), "v", WriteOptions { w: Some(2), strict: true, ..Default::default() })
        .await;
    assert!(matches!(strict, Err(ClientError::Quorum(ref q)) if q.got == 1), "{strict:?}");

    // Failed replicas are stood in for by the next live nodes clockwise, which keep hints. The
    // two acks may both come from stand-ins, so the one live replica may get the write later:
    // a sloppy quorum does not promise read-your-writes until the late write has landed.
    client.put(key.clone(), "v2").await.unwrap();
    client.settle().await;
    assert_eq!(
        client
            .get_with(key.clone(), dynakv_client::ReadOptions { r: Some(1), ..Default::default() })
            .await
            .unwrap(),
        Some(Bytes::from("v2"))
    );
    let held: u64 = counts(&client).await.iter().filter(|c| c.1 != u64::MAX).map(|c| c.1).sum();
    assert!(held >= 2, "stand-ins hold hints: {held}");

    cluster.restart(replicas[1]).await;
    cluster.restart(replicas[2]).await;
    let fresh = cluster.client();
    eventually(PATIENCE, "hints reach both returning replicas", || async {
        let mut ok = true;
        for &r in &replicas[1..] {
            let record = cluster.replica_record(&fresh, r, &key).await;
            ok &= record.is_some_and(|r| r.value == Some(Bytes::from("v2")));
        }
        ok
    })
    .await;
    eventually(PATIENCE, "no hints are pending", || async {
        counts(&fresh).await.iter().all(|c| c.1 == 0)
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_ttl_travels_with_its_hint() {
    let extra = "[hints]\ninterval_ms = 100\n";
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, extra).await;
    let client = cluster.client();
    cluster.stop(2).await;
    client.put_with_ttl("session", "token", std::time::Duration::from_secs(3600)).await.unwrap();
    client.settle().await;
    let expires_at = cluster.replica_record(&client, 0, "session").await.unwrap().expires_at_ms;
    assert!(expires_at > 0);

    cluster.restart(2).await;
    let fresh = cluster.client();
    eventually(PATIENCE, "the hint reaches n3", || async {
        counts(&fresh).await.iter().all(|c| c.1 == 0)
    })
    .await;
    let handed_off = cluster.replica_record(&fresh, 2, "session").await.unwrap();
    assert_eq!(handed_off.expires_at_ms, expires_at, "the same absolute expiry on every replica");
    assert_eq!(handed_off.value, Some(Bytes::from("token")));
    cluster.shutdown().await;
}
