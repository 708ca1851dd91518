//! Puts, gets and deletes on a healthy cluster.

use bytes::Bytes;

use crate::support::TestCluster;

#[tokio::test]
async fn put_get_overwrite_delete() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();

    assert_eq!(client.get("fruit").await.unwrap(), None);
    let first = client.put("fruit", "apple").await.unwrap().version;
    assert_eq!(client.get("fruit").await.unwrap(), Some(Bytes::from("apple")));

    let second = client.put("fruit", "banana").await.unwrap().version;
    assert!(second > first, "a client's versions increase");
    let read = client.get_versioned("fruit").await.unwrap().unwrap();
    assert_eq!((read.value, read.version), (Bytes::from("banana"), second));

    let deleted = client.delete("fruit").await.unwrap().version;
    assert!(deleted > second);
    assert_eq!(client.get("fruit").await.unwrap(), None);
    assert_eq!(client.get_versioned("fruit").await.unwrap(), None);

    client.put("fruit", "cherry").await.unwrap();
    assert_eq!(
        client.get("fruit").await.unwrap(),
        Some(Bytes::from("cherry")),
        "a put after a delete is visible"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_empty_value_is_a_value() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    client.put("empty", "").await.unwrap();
    assert_eq!(client.get("empty").await.unwrap(), Some(Bytes::new()));
    assert_eq!(client.get("absent").await.unwrap(), None);
    cluster.shutdown().await;
}

#[tokio::test]
async fn binary_keys_and_values_and_many_keys() {
    let cluster = TestCluster::start(5, 3, 2, 2).await;
    let client = cluster.client();
    let key = Bytes::from_static(&[0, 255, 10, 13, 0]);
    let value = Bytes::from((0..=255u8).collect::<Vec<_>>());
    client.put(key.clone(), value.clone()).await.unwrap();
    assert_eq!(client.get(key).await.unwrap(), Some(value));

    for i in 0..200 {
        client.put(format!("key-{i}"), format!("value-{i}")).await.unwrap();
    }
    for i in 0..200 {
        let got = client.get(format!("key-{i}")).await.unwrap();
        assert_eq!(got, Some(Bytes::from(format!("value-{i}"))));
    }
    client.settle().await;
    // Every key lives on exactly N = 3 of the 5 nodes.
    let stored: u64 =
        client.node_statuses().await.iter().map(|s| s.reply.as_ref().unwrap().keys).sum();
    assert_eq!(stored, 3 * 201);
    cluster.shutdown().await;
}

#[tokio::test]
async fn quorum_overrides_are_checked() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    use dynakv_client::{ClientError, ReadOptions, WriteOptions};
    client.put_with("k", "v", WriteOptions { w: Some(3), ..Default::default() }).await.unwrap();
    assert_eq!(
        client.get_with("k", ReadOptions { r: Some(1), ..Default::default() }).await.unwrap(),
        Some(Bytes::from("v"))
    );
    let err = client
        .put_with("k", "v", WriteOptions { w: Some(4), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidQuorum { asked: 4, n: 3, .. }), "{err}");
    let err =
        client.get_with("k", ReadOptions { r: Some(0), ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidQuorum { asked: 0, .. }), "{err}");
    cluster.shutdown().await;
}
