//! Quorums with nodes down.

use bytes::Bytes;
use dynakv_client::{ClientError, Op, WriteOutcome};

use crate::support::TestCluster;

#[tokio::test]
async fn one_node_down_quorums_still_succeed() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    client.put("before", "1").await.unwrap();
    cluster.stop(2).await;

    for i in 0..20 {
        client.put(format!("during-{i}"), "2").await.unwrap();
    }
    assert_eq!(client.get("before").await.unwrap(), Some(Bytes::from("1")));
    for i in 0..20 {
        assert_eq!(client.get(format!("during-{i}")).await.unwrap(), Some(Bytes::from("2")));
    }
    client.delete("before").await.unwrap();
    assert_eq!(client.get("before").await.unwrap(), None);
    cluster.shutdown().await;
}

#[tokio::test]
async fn two_nodes_down_writes_fail_saying_how_many_acked() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    client.put("k", "old").await.unwrap();
    cluster.stop(1).await;
    cluster.stop(2).await;

    let err = client.put("k", "new").await.unwrap_err();
    let ClientError::Quorum(quorum) = &err else { panic!("expected a quorum error, got {err}") };
    assert_eq!((quorum.op, quorum.needed, quorum.got, quorum.replicas), (Op::Write, 2, 1, 3));
    assert_eq!(quorum.failures.len(), 2);
    assert_eq!(quorum.write_outcome(), WriteOutcome::Unknown, "one replica stored it");
    let message = err.to_string();
    assert!(message.contains("1 of 2 required replicas acknowledged"), "{message}");
    assert!(message.contains("n2") && message.contains("n3"), "{message}");

    let err = client.get("k").await.unwrap_err();
    assert!(matches!(&err, ClientError::Quorum(q) if q.op == Op::Read && q.got == 1), "{err}");

    // With every replica refusing connections, the write is known not to have been applied.
    cluster.stop(0).await;
    let err = client.put("k", "newest").await.unwrap_err();
    let ClientError::Quorum(quorum) = &err else { panic!("expected a quorum error, got {err}") };
    assert_eq!(quorum.got, 0);
    assert_eq!(quorum.write_outcome(), WriteOutcome::NotApplied, "{err}");
    assert!(err.to_string().contains("the write was not applied"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_recovered_cluster_serves_again() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    cluster.stop(0).await;
    cluster.stop(1).await;
    assert!(client.put("k", "v").await.is_err());
    cluster.restart(0).await;
    cluster.restart(1).await;
    // The client may still be backing off from the nodes it saw fail; it must find them again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match client.put("k", "v2").await {
            Ok(_) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "never recovered: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v2")));
    cluster.shutdown().await;
}
