//! Client metrics: an application that installs a `metrics` recorder sees what its client did,
//! counted exactly: quorum rounds by op, replica failures by node and cause, stand-ins, read
//! repairs and the coalescer's batch sizes.

use dynakv_client::{ClientOptions, ReadOptions};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::metrics::sample;
use crate::support::{TEST_REQUEST_TIMEOUT, TestCluster, wait_until_up};

/// Hints stay where they are for the whole test, so only read repair fixes a stale replica.
const NO_HANDOFF: &str = "[hints]\ninterval_ms = 3600000\n";

#[test]
fn the_client_counts_rounds_failures_stand_ins_repairs_and_batches() {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("batch_size".into()), &[1.0, 2.0, 512.0])
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    // The recorder is this thread's alone, and a current-thread runtime runs every task of the
    // test (the client's included) on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let mut cluster = TestCluster::start_with(3, 3, 2, 2, NO_HANDOFF).await;
            let client = cluster.client();
            let delta = |before: &str, after: &str, name: &str, labels: &[(&str, &str)]| {
                sample(after, name, labels) - sample(before, name, labels)
            };
            let rounds = "dynakv_client_quorum_duration_seconds_count";

            let before = handle.render();
            for i in 0..10 {
                client.put(format!("k{i}"), "v").await.unwrap();
            }
            for i in 0..10 {
                assert!(client.get(format!("k{i}")).await.unwrap().is_some());
            }
            client.settle().await;
            let after = handle.render();
            let writes = [("op", "write"), ("outcome", "met")];
            assert_eq!(delta(&before, &after, rounds, &writes), 10.0, "{after}");
            let reads = [("op", "read"), ("outcome", "met")];
            assert_eq!(delta(&before, &after, rounds, &reads), 10.0, "{after}");
            let failures = "dynakv_client_replica_failures_total";
            assert_eq!(delta(&before, &after, failures, &[]), 0.0, "{after}");

            // n3 is down: its write fails (refused), and a live replica keeps its hint.
            cluster.stop(2).await;
            let before = handle.render();
            client.put("while-n3-is-down", "v").await.unwrap();
            client.settle().await;
            let after = handle.render();
            let n3 = [("node", "n3"), ("cause", "refused")];
            assert!(delta(&before, &after, failures, &n3) >= 1.0, "{after}");
            assert_eq!(delta(&before, &after, failures, &[("node", "n1")]), 0.0, "{after}");
            let stand_ins = "dynakv_client_stand_ins_total";
            assert_eq!(delta(&before, &after, stand_ins, &[("keeper", "replica")]), 1.0, "{after}");

            // n3 is back without the write: a read at R = 3 repairs it, once.
            cluster.restart(2).await;
            wait_until_up(&client).await;
            let before = handle.render();
            let value = client
                .get_with("while-n3-is-down", ReadOptions { r: Some(3), ..Default::default() })
                .await;
            assert!(value.unwrap().is_some());
            client.settle().await;
            let after = handle.render();
            let repairs = "dynakv_client_read_repairs_total";
            assert_eq!(delta(&before, &after, repairs, &[("outcome", "ok")]), 1.0, "{after}");
            assert!(cluster.replica_record(&client, 2, "while-n3-is-down").await.is_some());

            // One RPC slot per node: the coalescer packs the rest into batches.
            let options = ClientOptions {
                request_timeout: TEST_REQUEST_TIMEOUT,
                rpcs_in_flight_per_node: 1,
                ..ClientOptions::from_ring(&cluster.ring)
            };
            let batching = dynakv_client::Client::builder(cluster.ring.clone())
                .options(options)
                .build()
                .unwrap();
            let before = handle.render();
            let items: Vec<_> = (0..200).map(|i| (format!("b{i}"), "v")).collect();
            for result in batching.put_many(items).await.unwrap() {
                result.unwrap();
            }
            batching.settle().await;
            let after = handle.render();
            let sent = delta(&before, &after, "dynakv_client_batch_size_count", &[]);
            let ops = delta(&before, &after, "dynakv_client_batch_size_sum", &[]);
            let alone = delta(&before, &after, "dynakv_client_batch_size_bucket", &[("le", "1")]);
            assert!(sent >= 1.0 && ops <= 600.0, "600 writes, some batched: {after}");
            assert!(alone < sent, "some RPC carried more than one operation: {after}");
            cluster.shutdown().await;
        })
    });
}
