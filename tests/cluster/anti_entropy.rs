//! Anti-entropy: after a partition heals, one repair round makes every replica identical; a
//! round over identical replicas moves digests only.

use std::time::Duration;

use dynakv_client::{Client, ClientOptions};

use crate::support::{Fault, TestCluster, all_agree, range_digests};

/// No hint delivery (the interval is an hour) and no periodic rounds: repairs happen only when
/// the test asks for them.
const REPAIR_ONLY: &str = "[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_after_a_partition_makes_replicas_identical() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, REPAIR_ONLY).await;
    // Short deadlines, so writes do not wait long on the black-holed node.
    let options = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..ClientOptions::from_ring(&cluster.ring)
    };
    let client = Client::builder(cluster.ring.clone()).options(options).build().unwrap();
    for i in 0..100 {
        client.put(format!("before-{i}"), "v").await.unwrap();
    }
    client.settle().await;

    cluster.fault(2, Fault::Blackhole);
    let writers = (0..4).map(|w| {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                client.put(format!("during-{w}-{i}"), format!("{w}/{i}")).await.unwrap();
                if i % 10 == 0 {
                    client.delete(format!("before-{}", w * 10 + i / 10)).await.unwrap();
                }
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    client.settle().await;
    // A black hole holds what was sent into it; healing the same connections would deliver
    // those writes late and leave repair nothing to do. Reset them instead.
    cluster.heal_with_reset(2).await;

    assert!(!all_agree(&range_digests(&cluster.ring).await), "n3 missed the writes");
    let repairer = cluster.client();
    let report = repairer.repair("n3", Duration::from_secs(60)).await.unwrap();
    assert!(report.unreachable.is_empty(), "{report:?}");
    assert!(report.ranges_differing > 0 && report.keys_received > 0, "{report:?}");
    assert!(all_agree(&range_digests(&cluster.ring).await), "replicas differ after repair");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_round_over_identical_replicas_moves_digests_only() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, REPAIR_ONLY).await;
    let client = cluster.client();
    let writes = (0..2000).map(|i| {
        let client = client.clone();
        async move { client.put(format!("key-{i}"), vec![b'x'; 100]).await }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    client.settle().await;
    assert!(all_agree(&range_digests(&cluster.ring).await));

    for node in ["n1", "n2", "n3"] {
        let report = client.repair(node, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            (report.ranges_differing, report.keys_sent, report.keys_received),
            (0, 0, 0),
            "{report:?}"
        );
        // 2 peers x 96 ranges x (a span in the request, a digest and a count in the reply), about
        // 6 KB; nothing else, such as asking every node for hints when no tombstone is due.
        assert!(
            report.bytes < 8 * 1024,
            "a round with nothing to repair sends digests only: {report:?}"
        );
        eprintln!(
            "{node}: idle round moved {} bytes for {} range comparisons",
            report.bytes, report.ranges_compared
        );
    }
    cluster.shutdown().await;
}

/// The digests a node keeps as it writes, and those it builds from its storage when it starts,
/// are the same: a node restarted over values, overwrites, deletes and expiring records agrees
/// with its peers at once, and a round finds nothing to repair.
#[tokio::test]
async fn digests_built_at_start_up_equal_those_kept_while_writing() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, REPAIR_ONLY).await;
    let client = cluster.client();
    let all = dynakv_client::WriteOptions { w: Some(3), ..Default::default() };
    for i in 0..300 {
        client.put_with(format!("key-{i}"), "first", all).await.unwrap();
    }
    for i in (0..300).step_by(3) {
        client.put_with(format!("key-{i}"), "second", all).await.unwrap();
    }
    for i in (1..300).step_by(5) {
        client.delete_with(format!("key-{i}"), all).await.unwrap();
    }
    for i in 0..20 {
        client
            .put_ttl_with(format!("short-{i}"), "v", Duration::from_secs(3600), all)
            .await
            .unwrap();
    }
    client.settle().await;
    assert!(all_agree(&range_digests(&cluster.ring).await), "every write reached every replica");

    cluster.stop(0).await;
    cluster.restart(0).await;
    let fresh = cluster.client();
    assert!(all_agree(&range_digests(&cluster.ring).await), "n1's rebuilt digests differ");
    let report = fresh.repair("n1", Duration::from_secs(60)).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        (report.ranges_differing, report.keys_sent, report.keys_received),
        (0, 0, 0),
        "{report:?}"
    );
    cluster.shutdown().await;
}
