//! Clock safety: nodes refuse writes stamped too far ahead of their clocks, no timestamp drags a
//! node or a client into the future, a client whose clock lags follows cluster time, a write
//! that loses to a newer version says so, and `status` shows clock offsets. Clocks are skewed by
//! injecting them (client options, node clocks), never by waiting.

use bytes::Bytes;
use dynakv_client::{Client, ClientError, ClientOptions, ReplicaError, WriteOutcome};
use dynakv_core::{Clock, Record, Timestamp, Version, now_ms};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};

use crate::support::{TEST_REQUEST_TIMEOUT, TestCluster, dynakv, text};

/// An hour, in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// A client of `cluster` whose wall clock is `offset_ms` off the system clock.
fn skewed_client(cluster: &TestCluster, offset_ms: i64) -> Client {
    let options = ClientOptions {
        request_timeout: TEST_REQUEST_TIMEOUT,
        clock: Clock::skewed(offset_ms),
        ..ClientOptions::from_ring(&cluster.ring)
    };
    Client::builder(cluster.ring.clone()).options(options).build().expect("client")
}

/// A raw gRPC client of node `i`, through its proxy.
async fn raw(cluster: &TestCluster, i: usize) -> ReplicaClient<tonic::transport::Channel> {
    let addr = cluster.ring.nodes()[i].addr;
    ReplicaClient::connect(format!("http://{addr}")).await.expect("connect to node")
}

/// Node `i`'s hybrid clock, in Unix milliseconds.
async fn node_clock_ms(cluster: &TestCluster, i: usize) -> u64 {
    let health = raw(cluster, i).await.health(v1::HealthRequest {}).await.unwrap().into_inner();
    Timestamp(health.clock).millis()
}

#[tokio::test]
async fn writes_stamped_past_the_skew_bound_are_refused_and_move_no_clock() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ahead = skewed_client(&cluster, HOUR_MS);

    let err = ahead.put("k", "from the future").await.unwrap_err();
    let ClientError::Quorum(quorum) = &err else { panic!("expected a quorum error: {err}") };
    assert_eq!(quorum.got, 0, "{err}");
    assert_eq!(err.write_outcome(), Some(WriteOutcome::NotApplied), "{err}");
    let (ahead_ms, max_skew_ms) = quorum.clock_skew().expect("refused for clock skew");
    assert_eq!(max_skew_ms, 500);
    assert!((3_599_000..=3_600_000).contains(&ahead_ms), "names the offset: {ahead_ms}");
    assert!(!err.is_retryable(), "retrying cannot fix a clock");
    // Batched writes reach the same check, and get the same typed error, through Batch RPCs.
    let batched = ahead.put_many([("k", "future"), ("k2", "future")]).await.unwrap();
    for result in batched {
        let Err(ClientError::Quorum(quorum)) = result else { panic!("refused: {result:?}") };
        let refused = quorum.failures.iter().all(|f| {
            matches!(f.cause, ReplicaError::ClockSkew { max_skew_ms: 500, ahead_ms } if ahead_ms > 3_500_000)
        });
        assert!(refused, "{quorum}");
    }

    // A raw write an hour ahead, or at the end of time, is refused and moves no node's clock.
    let mut node = raw(&cluster, 0).await;
    for timestamp in [Timestamp::from_millis(now_ms() + HOUR_MS as u64), Timestamp(u64::MAX)] {
        let record = Record::value(Version::new(timestamp, 7), Bytes::from("x"));
        let request = v1::WriteRequest {
            ring_version: 0,
            key: Bytes::from("raw"),
            record: Some(record.into()),
            hint_for: String::new(),
        };
        let status = node.write(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert!(status.message().starts_with("clock skew: node n1"), "{}", status.message());
    }
    for i in 0..3 {
        let clock = node_clock_ms(&cluster, i).await;
        assert!(clock < now_ms() + 60_000, "n{}'s clock stays near now: {clock}", i + 1);
    }

    let client = cluster.client();
    let written = client.put("k", "now").await.unwrap();
    assert_eq!(written.outcome, WriteOutcome::Applied);
    assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("now")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_client_whose_clock_lags_follows_cluster_time() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let first = cluster.client().put("k", "first").await.unwrap();
    // Ten minutes behind: without following cluster time its put would lose to the first one.
    let behind = skewed_client(&cluster, -600_000);
    let written = behind.put("k", "second").await.unwrap();
    assert_eq!(written.outcome, WriteOutcome::Applied, "{written:?}");
    assert!(written.version > first.version, "{written:?} is above {first:?}");
    assert_eq!(cluster.client().get("k").await.unwrap(), Some(Bytes::from("second")));
    let deleted = behind.delete_many(["k"]).await.unwrap();
    assert_eq!(deleted[0].as_ref().unwrap().outcome, WriteOutcome::Applied);
    assert_eq!(cluster.client().get("k").await.unwrap(), None);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_whose_clock_runs_ahead_drags_no_client_and_status_warns() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    cluster.clock(2).shift(HOUR_MS);
    let client = cluster.client();
    let written = client.put("k", "v").await.unwrap();
    assert!(written.version.timestamp.millis() < now_ms() + 60_000, "the majority decides");
    // Status observes every node's clock; n3's is past the skew bound and is not taken.
    let statuses = client.node_statuses().await;
    let offset = statuses[2].reply.as_ref().unwrap().clock_offset_ms;
    assert!((3_590_000..=3_610_000).contains(&offset), "n3 is an hour ahead: {offset}");
    let again = client.put("k", "v2").await.unwrap();
    assert!(again.version.timestamp.millis() < now_ms() + 60_000, "{again:?}");
    assert_eq!(again.outcome, WriteOutcome::Applied);

    let status = dynakv(&["status"], &cluster.ring_path()).await;
    let out = text(&status.stdout);
    assert!(out.contains("warning: n3's clock is"), "{out}");
    assert!(!out.contains("warning: n1") && !out.contains("warning: n2"), "{out}");
    let json = dynakv(&["status", "--json"], &cluster.ring_path()).await;
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let skewed: Vec<bool> = (0..3).map(|i| doc["nodes"][i]["clock_skewed"] == true).collect();
    assert_eq!(skewed, [false, false, true], "{doc}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_write_that_loses_to_a_newer_version_is_reported_superseded() {
    // Two hours of allowed skew, so a client an hour ahead is accepted and wins every merge.
    let cluster = TestCluster::start_with(3, 3, 2, 2, "[clocks]\nmax_skew_ms = 7200000\n").await;
    let future = skewed_client(&cluster, HOUR_MS).put("k", "future").await.unwrap();
    assert_eq!(future.outcome, WriteOutcome::Applied);

    let written = cluster.client().put("k", "now").await.unwrap();
    assert_eq!(written.outcome, WriteOutcome::Superseded { by: future.version }, "{written:?}");
    assert!(!written.is_applied());
    let batched = cluster.client().put_many([("k", "batched")]).await.unwrap();
    let outcome = batched[0].as_ref().unwrap().outcome;
    assert_eq!(outcome, WriteOutcome::Superseded { by: future.version });

    let ring = cluster.ring_path();
    let put = dynakv(&["put", "k", "from the shell"], &ring).await;
    let stderr = text(&put.stderr);
    assert_eq!(put.status.code(), Some(4), "{stderr}");
    assert!(stderr.starts_with("superseded: version"), "{stderr}");
    assert!(stderr.contains(&future.version.to_string()), "names the newer version: {stderr}");
    let file = cluster.dir.path().join("superseded.jsonl");
    std::fs::write(
        &file,
        "{\"key\": \"k\", \"value\": \"x\"}\n{\"key\": \"j\", \"value\": \"y\"}\n",
    )
    .unwrap();
    let batch = dynakv(&["put", "--batch", file.to_str().unwrap()], &ring).await;
    let stderr = text(&batch.stderr);
    assert_eq!(batch.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("line 1: superseded"), "{stderr}");
    assert!(stderr.contains("1 of 2 puts ok, 1 superseded"), "{stderr}");
    assert_eq!(cluster.client().get("k").await.unwrap(), Some(Bytes::from("future")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_cli_says_clock_skew_and_exits_2_when_nodes_refuse_its_writes() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    // Every node an hour behind: this machine's clock is an hour ahead of the cluster's.
    for i in 0..3 {
        cluster.clock(i).shift(-HOUR_MS);
    }
    let put = dynakv(&["put", "k", "v"], &cluster.ring_path()).await;
    let stderr = text(&put.stderr);
    assert_eq!(put.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: clock skew: this machine's clock is about"), "{stderr}");
    assert!(stderr.contains("max_skew_ms = 500"), "{stderr}");
    let delete = dynakv(&["delete", "k"], &cluster.ring_path()).await;
    assert_eq!(delete.status.code(), Some(2), "{}", text(&delete.stderr));
    assert!(text(&delete.stderr).contains("clock skew"), "{}", text(&delete.stderr));
    cluster.shutdown().await;
}
