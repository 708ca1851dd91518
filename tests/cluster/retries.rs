//! Idempotent retries: a retried write reuses its version, and a write that may have landed is
//! reported as such, by the client and by the CLI.

use std::time::Duration;

use bytes::Bytes;
use dynakv_client::{ClientOptions, WriteOutcome};

use crate::support::{PATIENCE, TEST_REQUEST_TIMEOUT, TestCluster, dynakv, eventually, text};

#[tokio::test]
async fn a_retried_write_produces_one_version() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    // Enough attempts to outlast the restart below; each wait at most 100 ms.
    let options = ClientOptions {
        request_timeout: TEST_REQUEST_TIMEOUT,
        max_attempts: 600,
        backoff_min_delay: Duration::from_millis(10),
        backoff_max_delay: Duration::from_millis(100),
        ..ClientOptions::from_ring(&cluster.ring)
    };
    let writer =
        dynakv_client::Client::builder(cluster.ring.clone()).options(options).build().unwrap();
    cluster.stop(1).await;
    cluster.stop(2).await;
    let put = tokio::spawn({
        let writer = writer.clone();
        async move { writer.put("k", "once").await }
    });

    // The first attempt reached n1 only and missed its quorum; the client keeps retrying.
    let observer = cluster.client();
    eventually(PATIENCE, "n1 holds the first attempt", || async {
        cluster.replica_record(&observer, 0, "k").await.is_some()
    })
    .await;
    let first = cluster.replica_record(&observer, 0, "k").await.map(|r| r.version);
    assert!(!put.is_finished(), "one replica is not a quorum of two");
    cluster.restart(1).await;

    let version = put.await.unwrap().expect("a retry met the quorum").version;
    assert_eq!(Some(version), first, "the retry offered the same version");
    for node in 0..2 {
        let record = cluster.replica_record(&observer, node, "k").await.unwrap();
        assert_eq!((record.version, record.value), (version, Some(Bytes::from("once"))));
    }
    let read = observer.get_versioned("k").await.unwrap().unwrap();
    assert_eq!(read.version, version, "no second write exists");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_write_that_may_have_landed_is_reported_as_unknown() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    cluster.stop(1).await;
    cluster.stop(2).await;

    let client = cluster.client();
    let err = client.put("k", "maybe").await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(err.write_outcome(), Some(WriteOutcome::Unknown), "{err}");
    let err = client.delete("k").await.unwrap_err();
    assert_eq!(err.write_outcome(), Some(WriteOutcome::Unknown), "{err}");

    let put = dynakv(&["put", "k", "maybe"], &ring).await;
    let stderr = text(&put.stderr);
    assert_eq!(put.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("outcome unknown"), "{stderr}");

    cluster.stop(0).await;
    let err = client.put("k", "never").await.unwrap_err();
    assert_eq!(err.write_outcome(), Some(WriteOutcome::NotApplied), "{err}");
    let put = dynakv(&["put", "k2", "never"], &ring).await;
    let stderr = text(&put.stderr);
    assert_eq!(put.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the write was not applied"), "{stderr}");
}
