//! Read repair brings stale replicas up to date. A read asks the first R replicas of its key,
//! so each key here has the stale node first.

use bytes::Bytes;

use crate::support::{TestCluster, key_with};

#[tokio::test]
async fn a_read_repairs_a_replica_that_missed_a_write() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let writer = cluster.client();
    let k = key_with(&cluster.ring, 2, 0, "k");
    writer.put(k.clone(), "old").await.unwrap();
    // The put returns after W = 2 acks; let the third land before stopping its node.
    writer.settle().await;
    cluster.stop(2).await;
    let version = writer.put(k.clone(), "new").await.unwrap().version;
    writer.settle().await;
    cluster.restart(2).await;

    let reader = cluster.client();
    let stale = cluster.replica_record(&reader, 2, &k).await.unwrap();
    assert!(stale.version < version, "n3 missed the write");
    assert_eq!(stale.value, Some(Bytes::from("old")));

    assert_eq!(reader.get(k.clone()).await.unwrap(), Some(Bytes::from("new")));
    reader.settle().await;
    let repaired = cluster.replica_record(&reader, 2, &k).await.unwrap();
    assert_eq!(repaired.version, version);
    assert_eq!(repaired.value, Some(Bytes::from("new")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_read_repairs_a_replica_that_missed_a_delete_and_a_first_write() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    let gone = key_with(&cluster.ring, 0, 0, "gone");
    let fresh = key_with(&cluster.ring, 0, 0, "fresh");
    client.put(gone.clone(), "v").await.unwrap();
    // The put returned after W = 2 acks; let the third replica's write land before stopping it.
    client.settle().await;
    cluster.stop(0).await;
    let deleted = client.delete(gone.clone()).await.unwrap().version;
    let created = client.put(fresh.clone(), "v").await.unwrap().version;
    client.settle().await;
    cluster.restart(0).await;

    let reader = cluster.client();
    assert!(cluster.replica_record(&reader, 0, &gone).await.unwrap().value.is_some());
    assert_eq!(cluster.replica_record(&reader, 0, &fresh).await, None);
    assert_eq!(reader.get(gone.clone()).await.unwrap(), None);
    assert_eq!(reader.get(fresh.clone()).await.unwrap(), Some(Bytes::from("v")));
    reader.settle().await;
    let tombstone = cluster.replica_record(&reader, 0, &gone).await.unwrap();
    assert!(tombstone.is_tombstone() && tombstone.version == deleted);
    assert_eq!(cluster.replica_record(&reader, 0, &fresh).await.unwrap().version, created);
    cluster.shutdown().await;
}
