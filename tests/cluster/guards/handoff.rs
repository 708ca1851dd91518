//! One on-demand delivery pass hands every hint to its returning owner. Guards against: hints
//! never delivered (or delivered but kept), caught in seconds by the pass's own counts instead
//! of after a 60 s wait for background delivery.

use std::time::Duration;

use bytes::Bytes;

use super::{raw, raw_read};
use crate::support::{TestCluster, counts};

/// No background delivery (an hour between passes) and no periodic rounds: only the passes the
/// test asks for move hints.
const NO_BACKGROUND_DELIVERY: &str =
    "[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\n";

/// A deadline for one pass: generous for a loaded machine, and short enough that a pass that
/// hangs fails the test in seconds rather than after [`crate::support::PATIENCE`].
const PASS_DEADLINE: Duration = Duration::from_secs(15);

const KEYS: usize = 50;

#[tokio::test]
async fn one_delivery_pass_hands_every_hint_to_its_returning_owner() {
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, NO_BACKGROUND_DELIVERY).await;
    let client = cluster.client();
    cluster.stop(2).await;
    for i in 0..KEYS {
        client.put(format!("key-{i}"), format!("value-{i}")).await.unwrap();
    }
    client.delete("key-0").await.unwrap();
    client.settle().await;
    let held = counts(&client).await;
    let hints = held[0].1 + held[1].1;
    // A hint per key for n3 (a later hint for a key replaces the earlier one on the node that
    // keeps both; key-0's put and delete may be kept on different nodes).
    assert!(hints >= KEYS as u64, "n1 and n2 hold hints for n3: {held:?}");

    cluster.restart(2).await;
    let fresh = cluster.client();
    let n1 = fresh.hand_off("n1", PASS_DEADLINE).await.unwrap();
    let n2 = fresh.hand_off("n2", PASS_DEADLINE).await.unwrap();
    assert_eq!(n1.delivered + n2.delivered, hints, "every hint delivered: {n1:?} {n2:?}");
    assert_eq!((n1.failed, n2.failed), (0, 0), "{n1:?} {n2:?}");
    assert_eq!((n1.pending, n2.pending), (0, 0), "{n1:?} {n2:?}");
    let after = counts(&fresh).await;
    assert_eq!((after[0].1, after[1].1), (0, 0), "delivered hints are removed: {after:?}");

    let mut n3 = raw(&cluster, 2).await;
    let deleted = raw_read(&mut n3, "key-0").await;
    assert!(deleted.is_some_and(|r| r.is_tombstone()), "n3 got the delete");
    for i in 1..KEYS {
        let key = format!("key-{i}");
        let record = raw_read(&mut n3, &key).await;
        assert_eq!(
            record.and_then(|r| r.value),
            Some(Bytes::from(format!("value-{i}"))),
            "n3 holds {key}"
        );
    }
    cluster.shutdown().await;
}
