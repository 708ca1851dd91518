//! A replica never lets an older write replace a newer one, end to end through the `Write` RPC.
//! Guards against: the storage writer's merge taking an older version (`decide` in
//! `dynakv-storage`'s store), which until now only its unit tests caught.

use bytes::Bytes;
use dynakv_client::WriteOptions;
use dynakv_core::{Record, Timestamp, Version};

use super::{raw, raw_read, raw_write};
use crate::support::TestCluster;

#[tokio::test]
async fn every_replica_refuses_an_older_write_and_keeps_the_newer_one() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    let put = client
        .put_with("k", "newest", WriteOptions { w: Some(3), ..Default::default() })
        .await
        .unwrap()
        .version;

    // The same write again (a retry: not applied a second time), older by timestamp (a value
    // and a tombstone), and older by writer at the same timestamp.
    let earlier = Version::new(Timestamp(put.timestamp.0 - 1), put.writer);
    let mut older = vec![
        Record::value(put, Bytes::from("newest")),
        Record::value(earlier, Bytes::from("older value")),
        Record::tombstone(earlier),
        Record::value(Version::new(put.timestamp, 0), Bytes::from("lower writer")),
    ];
    if put.writer == 0 {
        older.pop();
    }
    for node in 0..3 {
        let mut raw = raw(&cluster, node).await;
        for record in &older {
            let reply = raw_write(&mut raw, "k", record.clone()).await;
            assert!(!reply.applied, "n{} applied {record:?} over the put", node + 1);
            assert_eq!(
                reply.current.map(Version::from),
                Some(put),
                "n{} answers with the version it holds",
                node + 1
            );
        }
        let held = raw_read(&mut raw, "k").await.expect("the replica holds the key");
        assert_eq!(held.version, put, "n{} still holds the put", node + 1);
        assert_eq!(held.value, Some(Bytes::from("newest")));
    }
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("newest")));
    cluster.shutdown().await;
}
