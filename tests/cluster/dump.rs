//! The `Dump` stream through the client: paging, prefixes, and a node that stops mid-dump.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::support::TestCluster;

#[tokio::test]
async fn dumps_page_through_storage_and_never_hold_up_shutdown() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    // More records than one storage page and than the stream's buffer.
    let pairs: Vec<_> = (0..1500).map(|i| (format!("p{}-{i}", i % 2), "v")).collect();
    assert!(
        client
            .put_many_with(
                pairs.iter().map(|(k, v)| dynakv_client::BatchPut::new(k.clone(), *v)),
                dynakv_client::WriteOptions { w: Some(3), ..Default::default() },
            )
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );

    let all: Vec<_> = client.dump("n1", Bytes::new(), None).await.unwrap().collect().await;
    assert_eq!(all.len(), 1500);
    let tokens: Vec<u64> = all.iter().map(|d| d.as_ref().unwrap().token).collect();
    assert!(tokens.windows(2).all(|w| w[0] <= w[1]), "stored-key order: by token");
    let odd = client.dump("n2", "p1-", None).await.unwrap();
    let odd: Vec<_> = odd.map(|d| d.unwrap().key).collect().await;
    assert_eq!(odd.len(), 750);
    assert!(odd.iter().all(|k| k.starts_with(b"p1-")));
    let few = client.dump("n3", "p0-", Some(7)).await.unwrap();
    assert_eq!(few.count().await, 7);
    assert!(matches!(
        client.dump("n7", "", None).await,
        Err(dynakv_client::ClientError::UnknownNode(_))
    ));

    // A dump whose reader has stopped reading must not keep its node from stopping.
    let mut stalled = client.dump("n1", Bytes::new(), None).await.unwrap();
    assert!(stalled.next().await.unwrap().is_ok());
    tokio::time::timeout(Duration::from_secs(60), cluster.stop(0))
        .await
        .expect("node n1 stopped with a dump open");
    drop(stalled);
    cluster.shutdown().await;
}
