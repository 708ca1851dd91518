//! Coalescing: many concurrent operations to the same nodes share batch RPCs, and each still
//! gets its own result, its own error, and its own value.

use std::time::Duration;

use bytes::Bytes;
use dynakv_client::{Client, ClientError, ClientOptions, ReplicaError};
use dynakv_ring::Ring;

use crate::support::{TestCluster, client_with, test_options};

/// Concurrent operations per test: far more than the RPC slots, so most of them are batched.
const CONCURRENT: usize = 300;

/// A client for `cluster` with `slots` RPCs in flight per node (0: no coalescing).
fn client_with_slots(ring: &Ring, slots: usize, max_value_bytes: usize) -> Client {
    let options =
        ClientOptions { rpcs_in_flight_per_node: slots, max_value_bytes, ..test_options(ring) };
    client_with(ring, options)
}

/// Runs `CONCURRENT` puts at once, then `CONCURRENT` gets at once, and checks every get sees
/// its own key's value.
async fn concurrent_round_trips(client: &Client, value_len: usize) {
    let value_of = |i: usize| {
        let mut value = format!("value {i} ").into_bytes();
        value.resize(value_len.max(value.len()), b'.');
        Bytes::from(value)
    };
    let puts = (0..CONCURRENT).map(|i| {
        let client = client.clone();
        let value = value_of(i);
        tokio::spawn(async move { client.put(format!("key-{i}"), value).await })
    });
    for put in futures::future::join_all(puts).await {
        put.unwrap().expect("put");
    }
    let gets = (0..CONCURRENT).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.get(format!("key-{i}")).await })
    });
    for (i, get) in futures::future::join_all(gets).await.into_iter().enumerate() {
        assert_eq!(get.unwrap().expect("get"), Some(value_of(i)), "key-{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_get_their_own_results() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    for slots in [1, 2, 0] {
        let client = client_with_slots(&cluster.ring, slots, 1024 * 1024);
        concurrent_round_trips(&client, 100).await;
        client.settle().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_operation_does_not_fail_its_neighbours() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, "[limits]\nmax_value_bytes = 1024\n").await;
    // The ring allows 1 KiB values; this client thinks it may send 4 KiB, so the nodes refuse
    // every oversized write on its own, inside batches shared with valid ones.
    let limit = cluster.ring.config().limits.max_value_bytes;
    let client = client_with_slots(&cluster.ring, 1, 4 * limit);
    let oversized = |i: usize| i % 7 == 3;
    let puts = (0..CONCURRENT).map(|i| {
        let client = client.clone();
        let len = if oversized(i) { limit + 1 } else { 10 };
        tokio::spawn(async move { client.put(format!("key-{i}"), vec![b'v'; len]).await })
    });
    for (i, put) in futures::future::join_all(puts).await.into_iter().enumerate() {
        match put.unwrap() {
            Ok(_) => assert!(!oversized(i), "key-{i}: an oversized write was accepted"),
            Err(ClientError::Quorum(quorum)) => {
                assert!(oversized(i), "key-{i} failed: {quorum}");
                assert!(
                    quorum.failures.iter().all(|f| matches!(
                        f.cause,
                        ReplicaError::Rejected { code: tonic::Code::InvalidArgument, .. }
                    )),
                    "key-{i}: {quorum}"
                );
            }
            Err(e) => panic!("key-{i}: unexpected error {e}"),
        }
    }
    for (_, health) in client.health() {
        assert_eq!(health.consecutive_failures(), 0, "refused writes say nothing of node health");
    }
    for i in (0..CONCURRENT).filter(|&i| !oversized(i)) {
        assert_eq!(
            client.get(format!("key-{i}")).await.unwrap(),
            Some(Bytes::from(vec![b'v'; 10]))
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_whose_replies_outgrow_the_message_limit_are_resent_one_by_one() {
    // 60 KiB values with the ring's 64 KiB limit: a batch of a few hundred reads would answer
    // with ~18 MiB, far over the 4 MiB + 64 KiB message limit, and a fresh client does not
    // know the values' size until the first reply.
    let cluster = TestCluster::start_with(3, 3, 2, 2, "[limits]\nmax_value_bytes = 65536\n").await;
    let writer = client_with_slots(&cluster.ring, 1, 65536);
    concurrent_round_trips(&writer, 60 * 1024).await;
    writer.settle().await;
    let reader = client_with_slots(&cluster.ring, 1, 65536);
    concurrent_round_trips(&reader, 60 * 1024).await;
    reader.settle().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_operations_to_a_stopped_node_fail_alone() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = client_with_slots(&cluster.ring, 1, 1024 * 1024);
    concurrent_round_trips(&client, 10).await;
    cluster.stop(2).await;
    // Every operation still reaches its quorum on the two live nodes.
    concurrent_round_trips(&client, 20).await;
    tokio::time::timeout(Duration::from_secs(60), client.settle()).await.expect("settles");
    cluster.shutdown().await;
}
