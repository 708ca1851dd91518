//! Tombstone collection needs agreement: a round collects a range's tombstones only when every
//! replica of the range reported the same digest. Guards against: collecting in a range whose
//! digests differed (the `agreed[i] = false` on a differing range in `anti_entropy::round`), and
//! never collecting in one whose kept digests differ only by records a peer already collected.

use std::time::Duration;

use bytes::Bytes;
use dynakv_core::{Record, Version, now_ms};

use super::{raw, raw_read, raw_write, version_at};
use crate::support::{TestCluster, all_agree, range_digests};

/// A one-second grace period; no hint delivery and no periodic rounds, so only the rounds the
/// test runs move records.
const SHORT_GRACE: &str = "[tombstones]\ngrace_ms = 1000\n[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\n";

const KEY: &str = "deleted-key";

/// All three nodes hold a value at V1; n1 and n3 hold a tombstone at V2, a minute old (long past
/// the grace period, so collectable); n2 missed the delete. Returns V2.
async fn deleted_except_on_n2(cluster: &TestCluster) -> Version {
    let (v1, v2) = (version_at(-120_000), version_at(-60_000));
    for node in 0..3 {
        let reply =
            raw_write(&mut raw(cluster, node).await, KEY, Record::value(v1, Bytes::from("old")))
                .await;
        assert!(reply.applied, "n{} took the value", node + 1);
    }
    for node in [0, 2] {
        let reply = raw_write(&mut raw(cluster, node).await, KEY, Record::tombstone(v2)).await;
        assert!(reply.applied, "n{} took the tombstone", node + 1);
    }
    v2
}

/// Guards against: a range counted as agreed although the round found its digests differing.
/// The round's own push repairs n2, so only the collection decision tells the bug apart.
#[tokio::test]
async fn a_round_that_finds_a_range_differing_collects_nothing_there() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, SHORT_GRACE).await;
    let deleted = deleted_except_on_n2(&cluster).await;
    let client = cluster.client();

    let report = client.repair("n1", Duration::from_secs(60)).await.unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.ranges_differing, 1, "n1 differs from n2 in one range: {report:?}");
    assert_eq!(report.keys_sent, 1, "the round pushes the tombstone to n2: {report:?}");
    assert_eq!(
        report.tombstones_collected, 0,
        "nothing is collected in a range that differed: {report:?}"
    );
    let kept = raw_read(&mut raw(&cluster, 0).await, KEY).await;
    assert!(kept.as_ref().is_some_and(|r| r.is_tombstone() && r.version == deleted), "{kept:?}");

    // The test is not vacuous: the next round, with every replica agreeing, does collect it.
    let report = client.repair("n1", Duration::from_secs(60)).await.unwrap();
    assert_eq!((report.ranges_differing, report.tombstones_collected), (0, 1), "{report:?}");
    assert_eq!(raw_read(&mut raw(&cluster, 0).await, KEY).await, None);
    cluster.shutdown().await;
}

/// Guards against: collecting after a round whose sync with a differing replica failed, which
/// would leave that replica's older value free to come back everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_fails_mid_round_leaves_every_tombstone_in_place() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, SHORT_GRACE).await;
    let deleted = deleted_except_on_n2(&cluster).await;

    // How the sync fails, deterministically: n2 comes back delaying every Read, Write and Batch
    // it serves by 15 s, and nothing else. Health, Digest and Versions answer at once, so n1 and
    // n3 find n2 reachable, find the range differing and exchange versions; the push that
    // follows is a Batch, which outlasts the node-to-node deadline (10 s at least, see
    // `peers.rs`) and fails. A proxy fault could not single out the push: it sees bytes, not
    // RPCs, and cutting at a chosen moment would race the digest exchange.
    cluster.stop(1).await;
    cluster.set_inject_delay(1, Some(15_000..=15_000));
    cluster.restart(1).await;

    let client = cluster.client();
    let (n1, n3) = tokio::join!(
        client.repair("n1", Duration::from_secs(60)),
        client.repair("n3", Duration::from_secs(60)),
    );
    let (n1, n3) = (n1.unwrap(), n3.unwrap());
    for node in [0, 2] {
        let kept = raw_read(&mut raw(&cluster, node).await, KEY).await;
        assert!(
            kept.as_ref().is_some_and(|r| r.is_tombstone() && r.version == deleted),
            "n{} keeps its tombstone: {kept:?}",
            node + 1
        );
    }
    // The round got as far as the push: n2 was reachable, the range differed, the push failed,
    // and the report says so.
    for report in [n1, n3] {
        assert!(report.unreachable.is_empty(), "n2 answered the digests: {report:?}");
        assert_eq!(report.ranges_differing, 1, "{report:?}");
        assert_eq!(report.keys_sent, 0, "the push to n2 failed: {report:?}");
        assert_eq!(report.ranges_failed, 1, "the range did not sync: {report:?}");
        assert!(!report.is_complete(), "{report:?}");
        assert_eq!(report.tombstones_collected, 0, "{report:?}");
    }
    cluster.shutdown().await;
}

/// Guards against: a replica that still holds tombstones (and expired records) another replica
/// has collected never collecting its own. Their kept digests differ from then on, so a round
/// that took differing kept digests for a differing range would hold collection forever; the
/// range agrees by scanned digests, which leave collectable records out. Also guards against
/// collecting what is not collectable yet (a tombstone within the grace period) and against
/// the store not offering expired values (their death time is their expiry).
#[tokio::test]
async fn each_replica_collects_its_dead_records_after_another_has() {
    // Ten minutes of grace: the dead records below are an hour old, the fresh tombstone is not
    // due for as long as any test runs.
    const GRACE: &str = "[tombstones]\ngrace_ms = 600000\n[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\n";
    let cluster = TestCluster::start_with(3, 3, 2, 2, GRACE).await;
    let (old, older) = (version_at(-3_600_000), version_at(-7_200_000));
    let (expired_at, fresh) = (now_ms() - 3_600_000, version_at(0));
    for node in 0..3 {
        let mut raw = raw(&cluster, node).await;
        for i in 0..20 {
            let writes = [
                (format!("gone-{i}"), Record::tombstone(old)),
                (
                    format!("expired-{i}"),
                    Record {
                        expires_at_ms: expired_at,
                        ..Record::value(older, Bytes::from("stale"))
                    },
                ),
                (format!("kept-{i}"), Record::value(old, Bytes::from("v"))),
            ];
            for (key, record) in writes {
                assert!(raw_write(&mut raw, &key, record).await.applied);
            }
        }
        assert!(raw_write(&mut raw, "fresh", Record::tombstone(fresh)).await.applied);
    }
    assert!(all_agree(&range_digests(&cluster.ring).await), "every replica holds the same");

    let client = cluster.client();
    for node in ["n1", "n2", "n3"] {
        let report = client.repair(node, Duration::from_secs(60)).await.unwrap();
        assert!(report.is_complete(), "{report:?}");
        assert_eq!(
            (report.ranges_differing, report.keys_sent, report.keys_received),
            (0, 0, 0),
            "dead records a peer collected are no difference to repair: {report:?}"
        );
        assert_eq!(report.tombstones_collected, 40, "{node} collects its own: {report:?}");
    }
    assert!(all_agree(&range_digests(&cluster.ring).await), "every replica collected the same");
    for node in 0..3 {
        let mut raw = raw(&cluster, node).await;
        for i in [0, 19] {
            assert_eq!(raw_read(&mut raw, &format!("gone-{i}")).await, None);
            assert_eq!(raw_read(&mut raw, &format!("expired-{i}")).await, None);
            let kept = raw_read(&mut raw, &format!("kept-{i}")).await;
            assert_eq!(kept.and_then(|r| r.value), Some(Bytes::from("v")));
        }
        let fresh = raw_read(&mut raw, "fresh").await;
        assert!(fresh.is_some_and(|r| r.is_tombstone()), "n{}: within the grace period", node + 1);
    }
    let report = client.repair("n1", Duration::from_secs(60)).await.unwrap();
    assert_eq!((report.ranges_differing, report.tombstones_collected), (0, 0), "{report:?}");
    cluster.shutdown().await;
}
