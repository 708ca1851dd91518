//! Catch-up that neither stalls nor drops: large values through hints and through anti-entropy,
//! records that can never fit, stand-in-only writes that outlive any old hint window, stand-ins
//! whose clock lags, and damaged records. Hint delivery and repair run on demand (`handoff` and
//! `repair` RPCs), and time moves by shifting node clocks, never by sleeping.

use std::time::Duration;

use bytes::Bytes;
use dynakv_client::{Client, WriteOptions};
use dynakv_ring::key_token;
use futures::StreamExt;

use crate::support::{TestCluster, counts, dynakv, text, wait_until_up};

/// A long time for one on-demand pass on a loaded machine.
const PASS: Duration = Duration::from_secs(300);

/// Hints delivered only on demand; anti-entropy only on demand ([`crate::support::QUIET`]).
const NO_BACKGROUND_HANDOFF: &str = "[hints]\ninterval_ms = 3600000\n";

/// Writes `keys` keys named `{prefix}{i}` holding `value`, 8 at a time, each acknowledged.
async fn write_all(client: &Client, prefix: &str, keys: usize, value: &Bytes) {
    futures::stream::iter(0..keys)
        .map(|i| {
            let (client, value) = (client.clone(), value.clone());
            let key = format!("{prefix}{i}");
            async move { client.put(key, value).await.expect("acknowledged") }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    client.settle().await;
}

/// Runs an on-demand hint delivery pass on each node; returns (delivered, failed, pending).
async fn hand_off_everywhere(client: &Client) -> (u64, u64, u64) {
    let mut total = (0, 0, 0);
    for node in client.ring().nodes().iter().map(|n| n.id.clone()).collect::<Vec<_>>() {
        let report = client.hand_off(&node, PASS).await.expect("handoff pass");
        total = (total.0 + report.delivered, total.1 + report.failed, total.2 + report.pending);
    }
    total
}

/// n3 misses `keys` writes of `value_len` bytes, returns, and must get every one of them: first
/// through hints alone, then (another set of keys) through anti-entropy alone.
async fn catch_up(value_len: usize, keys: usize) {
    // One token per node: each range then holds a third of the keys, so one exchange pulls many
    // large records at once.
    let extra = format!("vnodes = 1\n{NO_BACKGROUND_HANDOFF}");
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, &extra).await;
    let client = cluster.client();
    let value = Bytes::from(vec![b'v'; value_len]);

    cluster.stop(2).await;
    write_all(&client, "hinted", keys, &value).await;
    cluster.restart(2).await;
    wait_until_up(&client).await;
    let (delivered, failed, pending) = hand_off_everywhere(&client).await;
    assert_eq!((delivered, failed, pending), (keys as u64, 0, 0), "every hint in one pass");
    assert_eq!(counts(&client).await[2].0, keys as u64, "n3 holds every key, through hints");

    cluster.stop(2).await;
    write_all(&client, "repaired", keys, &value).await;
    cluster.restart(2).await;
    wait_until_up(&client).await;
    // The hints for these keys stay where they are: only anti-entropy may bring them over.
    let report = client.repair("n3", PASS).await.expect("repair round");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.keys_received, keys as u64, "{report:?}");
    assert_eq!(counts(&client).await[2].0, 2 * keys as u64, "n3 holds every key, through repair");
    cluster.shutdown().await;
}

#[tokio::test]
async fn forty_kilobyte_values_catch_up_through_hints_and_through_repair() {
    // 600 hints of 40,000 bytes are 24 MB: batches bounded by count alone went over the 5 MiB
    // message limit, and catch-up stalled for good.
    catch_up(40_000, 600).await;
}

#[tokio::test]
async fn values_near_the_limit_catch_up_through_hints_and_through_repair() {
    catch_up(1_000_000, 200).await;
}

#[tokio::test]
async fn a_record_that_can_never_fit_is_reported_not_skipped() {
    // Written while values of 6 MiB were allowed; then the limit (and so the message limit) is
    // lowered to 1 MiB + 4 MiB, and the record can no longer be sent anywhere.
    let big = "[limits]\nmax_value_bytes = 8388608\n[hints]\ninterval_ms = 3600000\n";
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, big).await;
    let client = cluster.client();
    cluster.stop(2).await;
    client.put("huge", vec![b'h'; 6 << 20]).await.unwrap();
    client.put("small", "s").await.unwrap();
    client.settle().await;
    for i in 0..3 {
        cluster.stop(i).await;
    }
    cluster.reconfigure(3, 2, 2, NO_BACKGROUND_HANDOFF);
    for i in 0..3 {
        cluster.restart(i).await;
    }
    let client = cluster.client();
    wait_until_up(&client).await;

    let (delivered, failed, pending) = hand_off_everywhere(&client).await;
    assert_eq!(
        (delivered, failed, pending),
        (1, 1, 1),
        "the small hint goes, the huge one is kept"
    );
    let status = dynakv(&["status", "--json"], &cluster.ring_path()).await;
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let failures: u64 =
        doc["nodes"].as_array().unwrap().iter().map(|n| n["hint_failures"].as_u64().unwrap()).sum();
    assert_eq!(failures, 1, "status counts the failed hint: {doc}");

    let repair = dynakv(&["repair", "--node", "n3"], &cluster.ring_path()).await;
    let out = text(&repair.stdout);
    assert_eq!(repair.status.code(), Some(1), "a range failed to sync: {out}");
    assert!(out.contains("cannot be sent"), "the cause is shown: {out}");
    cluster.shutdown().await;
}

/// The key's replicas and the other nodes, as node indexes.
fn placement(cluster: &TestCluster, key: &str) -> (Vec<usize>, Vec<usize>) {
    let replicas: Vec<usize> =
        cluster.ring.preference_list(key_token(key.as_bytes())).iter().copied().collect();
    let others = (0..cluster.ring.nodes().len()).filter(|i| !replicas.contains(i)).collect();
    (replicas, others)
}

#[tokio::test]
async fn a_write_only_stand_ins_acknowledged_survives_a_long_outage() {
    let mut cluster = TestCluster::start_with(5, 3, 2, 2, NO_BACKGROUND_HANDOFF).await;
    let (replicas, stand_ins) = placement(&cluster, "k1");
    for &i in &replicas {
        cluster.stop(i).await;
    }
    let client = cluster.client();
    client.put("k1", "precious").await.expect("two stand-ins acknowledge");
    client.settle().await;
    // Four hours pass everywhere (hints used to be dropped after three).
    for i in 0..5 {
        cluster.clock(i).shift(4 * 3600 * 1000);
    }
    for &i in &replicas {
        cluster.restart(i).await;
    }
    let fresh = cluster.client();
    wait_until_up(&fresh).await;
    for node in ["n1", "n2", "n3", "n4", "n5"] {
        fresh.repair(node, PASS).await.unwrap();
    }
    let (delivered, failed, pending) = hand_off_everywhere(&fresh).await;
    assert_eq!((delivered, failed, pending), (2, 0, 0), "stand-ins {stand_ins:?} deliver");
    assert_eq!(fresh.get("k1").await.unwrap(), Some(Bytes::from("precious")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stand_in_whose_clock_lags_cannot_bring_a_deleted_key_back() {
    // The stand-ins' clocks lag by a minute, so the ring allows more skew than that: a node
    // refuses writes stamped further ahead of its clock than `max_skew_ms`.
    let extra = format!(
        "{NO_BACKGROUND_HANDOFF}[tombstones]\ngrace_ms = 6000\n[clocks]\nmax_skew_ms = 120000\n"
    );
    let mut cluster = TestCluster::start_with(5, 3, 2, 2, &extra).await;
    let (replicas, stand_ins) = placement(&cluster, "k");
    for &i in &stand_ins {
        cluster.clock(i).shift(-60_000);
    }
    // Written while one replica is down: a stand-in keeps its hint.
    cluster.stop(replicas[0]).await;
    let client = cluster.client();
    client.put("k", "old").await.unwrap();
    client.settle().await;
    cluster.restart(replicas[0]).await;
    // The stand-ins go away; the key is deleted on every replica, and the grace period passes.
    for &i in &stand_ins {
        cluster.stop(i).await;
    }
    let client = cluster.client();
    wait_until_up_nodes(&client, &replicas).await;
    client.delete_with("k", WriteOptions { w: Some(3), ..Default::default() }).await.unwrap();
    for &i in &replicas {
        cluster.clock(i).shift(10_000);
    }
    for &i in &replicas {
        let report = client.repair(&format!("n{}", i + 1), PASS).await.unwrap();
        assert_eq!(report.tombstones_collected, 0, "a stand-in may hold hints: {report:?}");
        assert!(report.ranges_held > 0, "{report:?}");
    }
    // The stand-ins return and hand their old hint off: it loses to the tombstone.
    for &i in &stand_ins {
        cluster.restart(i).await;
    }
    let client = cluster.client();
    wait_until_up(&client).await;
    let (delivered, failed, pending) = hand_off_everywhere(&client).await;
    assert_eq!((delivered, failed, pending), (1, 0, 0));
    let mut collected = 0;
    for &i in &replicas {
        collected +=
            client.repair(&format!("n{}", i + 1), PASS).await.unwrap().tombstones_collected;
    }
    assert_eq!(collected, 3, "no hint is left: every replica collects");
    assert_eq!(client.get("k").await.unwrap(), None);
    for &i in &replicas {
        assert_eq!(cluster.replica_record(&client, i, "k").await, None, "n{}", i + 1);
    }
    cluster.shutdown().await;
}

/// Waits until the nodes `nodes` answer health checks.
async fn wait_until_up_nodes(client: &Client, nodes: &[usize]) {
    crate::support::eventually(crate::support::PATIENCE, "the nodes answer", || async {
        let statuses = client.node_statuses().await;
        nodes.iter().all(|&i| statuses[i].reply.is_ok())
    })
    .await;
}

#[tokio::test]
async fn a_damaged_record_is_skipped_and_repaired_not_fatal() {
    use dynakv_storage::{FjallStorage, Mutation, Space, Storage, stored_key};
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, NO_BACKGROUND_HANDOFF).await;
    let client = cluster.client();
    for i in 0..20 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    client.settle().await;
    // n1 is stopped and one of its records overwritten with bytes no build can decode.
    cluster.stop(0).await;
    {
        let engine = FjallStorage::open(cluster.data_dir(0)).unwrap();
        let stored = stored_key(key_token(b"k7"), b"k7");
        engine
            .commit(vec![Mutation::Put(Space::Records, stored, Bytes::from("junk"))], true)
            .unwrap();
    }
    cluster.restart(0).await;
    wait_until_up(&client).await;
    let report = client.repair("n1", PASS).await.expect("the round runs");
    assert_eq!(report.records_damaged, 1, "{report:?}");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.keys_received, 1, "the damaged record is replaced by a replica's copy");
    let healed = cluster.replica_record(&client, 0, "k7").await.expect("repaired");
    assert_eq!(healed.value, Some(Bytes::from("v")));
    assert_eq!(client.repair("n1", PASS).await.unwrap().records_damaged, 0);
    cluster.shutdown().await;
}
