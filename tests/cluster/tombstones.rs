//! Tombstone collection: a deleted key never comes back, whatever node was down when it was
//! deleted; tombstones are collected only once every replica holds them and no node holds hints
//! for their range.

use std::time::Duration;

use bytes::Bytes;

use crate::support::TestCluster;

/// A one-second grace period, no hint delivery and no periodic rounds: tombstones move only
/// through the repairs the test runs.
const SHORT_GRACE: &str = "[tombstones]\ngrace_ms = 1000\n[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\n";

#[tokio::test]
async fn a_key_deleted_while_a_replica_was_down_stays_deleted() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, SHORT_GRACE).await;
    let client = cluster.client();
    client.put("doomed", "old value").await.unwrap();
    client.put("kept", "v").await.unwrap();
    client.settle().await;

    cluster.stop(2).await;
    let deleted = client.delete("doomed").await.unwrap().version;
    client.settle().await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the grace period

    // n3 cannot be compared with, so nothing may be collected yet.
    for node in ["n1", "n2"] {
        let report = client.repair(node, Duration::from_secs(30)).await.unwrap();
        assert_eq!(report.unreachable, vec!["n3".to_string()], "{report:?}");
        assert_eq!(report.tombstones_collected, 0, "{report:?}");
    }
    let kept = cluster.replica_record(&client, 0, "doomed").await.unwrap();
    assert!(kept.is_tombstone() && kept.version == deleted, "{kept:?}");

    // n3 returns with the old value; repair hands it the tombstone, and only then, once every
    // replica agrees, are the tombstones collected.
    cluster.restart(2).await;
    let fresh = cluster.client();
    assert_eq!(
        cluster.replica_record(&fresh, 2, "doomed").await.unwrap().value,
        Some(Bytes::from("old value"))
    );
    for node in ["n1", "n2", "n3"] {
        let report = fresh.repair(node, Duration::from_secs(30)).await.unwrap();
        assert_eq!(report.tombstones_collected, 0, "hints for n3 are still held: {report:?}");
    }
    assert!(cluster.replica_record(&fresh, 2, "doomed").await.unwrap().is_tombstone());
    // Once the hints are handed off (the tombstone they carry is no news to n3 any more),
    // nothing holds the tombstones back.
    let mut delivered = 0;
    for node in ["n1", "n2"] {
        delivered += fresh.hand_off(node, Duration::from_secs(30)).await.unwrap().delivered;
    }
    assert_eq!(delivered, 1, "one live replica kept the hint for n3");
    let mut collected = 0;
    for _ in 0..3 {
        for node in ["n1", "n2", "n3"] {
            collected +=
                fresh.repair(node, Duration::from_secs(30)).await.unwrap().tombstones_collected;
        }
    }
    assert_eq!(collected, 3, "each replica collects its tombstone once");
    for node in 0..3 {
        assert_eq!(
            cluster.replica_record(&fresh, node, "doomed").await,
            None,
            "n{} still holds it",
            node + 1
        );
    }
    assert_eq!(fresh.get("doomed").await.unwrap(), None);
    assert_eq!(fresh.get("kept").await.unwrap(), Some(Bytes::from("v")));

    // Nothing brings it back: not further rounds, not reads.
    for node in ["n1", "n2", "n3"] {
        fresh.repair(node, Duration::from_secs(30)).await.unwrap();
    }
    fresh.settle().await;
    for node in 0..3 {
        assert_eq!(cluster.replica_record(&fresh, node, "doomed").await, None);
    }
    cluster.shutdown().await;
}
