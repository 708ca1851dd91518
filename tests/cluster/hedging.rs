//! Reads from R replicas with hedging: a paused replica is hedged around, a stale replica the
//! read asked is repaired, one it did not ask is left to anti-entropy, and `ReadFanout::All`
//! asks (and repairs) every replica as before. Single reads and batched ones count the same.

use std::time::Duration;

use bytes::Bytes;
use dynakv_client::{Client, ClientOptions, HedgePolicy, ReadFanout, WriteOptions};
use dynakv_ring::Ring;

use crate::support::{
    NodeProcess, PATIENCE, QUIET, TestCluster, client_with, free_addr, key_with, ring_text_with,
    test_options, wait_until_up,
};

/// Hints stay where they are for the whole test, so a stale replica is fixed only by what the
/// test does.
const NO_HANDOFF: &str = "[hints]\ninterval_ms = 3600000\n";

/// A hedge policy under which no call is ever late: reads ask only R replicas, plus one for
/// each call that fails, so the replicas a read asks do not depend on the machine's speed.
const NEVER_LATE: HedgePolicy = HedgePolicy {
    quantile: 0.95,
    min_delay: Duration::from_secs(3600),
    max_delay: Duration::from_secs(3600),
};

/// A client of `ring` with test deadlines, reading with `fanout` and `hedge`.
fn reader(ring: &Ring, fanout: ReadFanout, hedge: HedgePolicy) -> Client {
    client_with(ring, ClientOptions { read_fanout: fanout, hedge, ..test_options(ring) })
}

/// Reads and writes `client` has sent to each node so far.
fn sent(client: &Client) -> Vec<u64> {
    client.health().iter().map(|(_, health)| health.requests_sent()).collect()
}

#[tokio::test]
async fn a_read_with_a_paused_replica_answers_through_the_hedge() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let text = ring_text_with(&addrs, 3, 2, 2, QUIET);
    let path = dir.path().join("ring.toml");
    std::fs::write(&path, &text).unwrap();
    let ring = Ring::parse(&text).unwrap();
    let nodes: Vec<_> = (0..3)
        .map(|i| NodeProcess::start(&path, &format!("n{}", i + 1), &dir.path().join(i.to_string())))
        .collect();
    // A deadline far beyond the hedge delay (at most 100 ms): a read that waited for the paused
    // replica's call to fail would take a minute, and its failure would show in the health.
    let client =
        client_with(&ring, ClientOptions { request_timeout: PATIENCE, ..test_options(&ring) });
    wait_until_up(&client).await;

    let keys: Vec<String> = (0..5).map(|i| key_with(&ring, 0, 0, &format!("paused{i}"))).collect();
    let all = WriteOptions { w: Some(3), ..Default::default() };
    for key in &keys {
        client.put_with(key.clone(), "v", all).await.unwrap();
        // Warm the latency estimates (and check the reads before the pause).
        assert_eq!(client.get(key.clone()).await.unwrap(), Some(Bytes::from("v")));
    }
    client.settle().await;

    // n1 is the first replica of every key: each read asks it and the second replica.
    nodes[0].pause();
    let before = sent(&client);
    for key in &keys {
        let read = tokio::time::timeout(PATIENCE / 2, client.get(key.clone()));
        let value = read.await.expect("the read answers without waiting for the paused node");
        assert_eq!(value.unwrap(), Some(Bytes::from("v")), "{key}");
    }
    let after = sent(&client);
    let health = client.health();
    assert_eq!(
        health[0].1.consecutive_failures(),
        0,
        "every read answered while its call to the paused node was still in flight"
    );
    assert!(health[0].1.is_up());
    for node in 1..3 {
        // The second replica of the key up front, the third through the hedge.
        let asked = after[node] - before[node];
        assert_eq!(
            asked,
            keys.len() as u64,
            "every read asked n{}: {before:?} -> {after:?}",
            node + 1
        );
    }
    assert_eq!(after[0] - before[0], keys.len() as u64, "each read asked n1 once, no more");

    nodes[0].resume();
    client.settle().await;
    assert_eq!(client.health()[0].1.consecutive_failures(), 0, "n1 answered once resumed");
}

#[tokio::test]
async fn a_stale_replica_the_read_asked_is_repaired_and_one_it_did_not_ask_waits_for_anti_entropy()
{
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, NO_HANDOFF).await;
    let ring = cluster.ring.clone();
    // n3 is first for `asked` and last (not asked) for `unasked` and `all`.
    let asked = key_with(&ring, 2, 0, "asked");
    let unasked = key_with(&ring, 2, 2, "unasked");
    let all = key_with(&ring, 2, 2, "all");
    let writer = cluster.client();
    for key in [&asked, &unasked, &all] {
        writer.put(key.clone(), "old").await.unwrap();
    }
    writer.settle().await;
    cluster.stop(2).await;
    let mut versions = Vec::new();
    for key in [&asked, &unasked, &all] {
        versions.push(writer.put(key.clone(), "new").await.unwrap().version);
    }
    writer.settle().await;
    cluster.restart(2).await;

    let quorum = reader(&ring, ReadFanout::Quorum, NEVER_LATE);
    wait_until_up(&quorum).await;
    for key in [&asked, &unasked, &all] {
        let stale = cluster.replica_record(&quorum, 2, key).await.unwrap();
        assert_eq!(stale.value, Some(Bytes::from("old")), "n3 missed the write of {key}");
    }
    let before = sent(&quorum);
    for key in [&asked, &unasked] {
        assert_eq!(quorum.get(key.clone()).await.unwrap(), Some(Bytes::from("new")));
    }
    quorum.settle().await;
    let after = sent(&quorum);
    // `asked`: a read to n3 and n1 or n2, then the repair write to n3; `unasked`: n1 and n2.
    assert_eq!(after.iter().sum::<u64>() - before.iter().sum::<u64>(), 5);
    assert_eq!(after[2] - before[2], 2, "n3: one read, one repair");
    let repaired = cluster.replica_record(&quorum, 2, &asked).await.unwrap();
    assert_eq!((repaired.version, repaired.value), (versions[0], Some(Bytes::from("new"))));
    let left = cluster.replica_record(&quorum, 2, &unasked).await.unwrap();
    assert_eq!(
        left.value,
        Some(Bytes::from("old")),
        "a replica the read did not ask is not repaired"
    );

    // Anti-entropy brings it up to date.
    quorum.repair("n3", PATIENCE).await.unwrap();
    let synced = cluster.replica_record(&quorum, 2, &unasked).await.unwrap();
    assert_eq!((synced.version, synced.value), (versions[1], Some(Bytes::from("new"))));

    // With `ReadFanout::All` a read asks every replica, so it repairs n3 wherever it stands.
    let everyone = reader(&ring, ReadFanout::All, NEVER_LATE);
    assert_eq!(everyone.get(all.clone()).await.unwrap(), Some(Bytes::from("new")));
    everyone.settle().await;
    let repaired = cluster.replica_record(&everyone, 2, &all).await.unwrap();
    assert_eq!((repaired.version, repaired.value), (versions[2], Some(Bytes::from("new"))));
    cluster.shutdown().await;
}

#[tokio::test]
async fn single_and_batched_reads_ask_r_replicas_or_all_n() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring.clone();
    let writer = cluster.client();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    // A batch waits for every replica's ack, so all three hold every key.
    for result in writer.put_many(keys.iter().map(|k| (k.clone(), "v"))).await.unwrap() {
        result.unwrap();
    }
    for (fanout, per_read) in [(ReadFanout::Quorum, 2), (ReadFanout::All, 3)] {
        // One RPC slot per node, so most reads of the batch share batch RPCs.
        let options = ClientOptions {
            read_fanout: fanout,
            hedge: NEVER_LATE,
            rpcs_in_flight_per_node: 1,
            ..test_options(&ring)
        };
        let client = client_with(&ring, options);
        for key in &keys[..10] {
            assert_eq!(client.get(key.clone()).await.unwrap(), Some(Bytes::from("v")));
        }
        client.settle().await;
        assert_eq!(sent(&client).iter().sum::<u64>(), 10 * per_read, "{fanout:?}: single reads");
        let values = client.get_many(keys.clone()).await.unwrap();
        assert!(values.iter().all(|v| v.as_ref().unwrap().as_deref() == Some(&b"v"[..])));
        assert_eq!(sent(&client).iter().sum::<u64>(), 110 * per_read, "{fanout:?}: batched reads");
    }
    cluster.shutdown().await;
}
