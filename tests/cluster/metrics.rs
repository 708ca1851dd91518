//! Metrics: every node serves Prometheus text at `/metrics`, and its counters move by exactly
//! what the traffic did. Real node processes, so each has a registry of its own.

use std::net::SocketAddr;
use std::time::Duration;

use dynakv_client::WriteOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{NodeProcess, client_for, ring_file_with_metrics, wait_until_up};

/// The body of `GET /metrics` at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to /metrics");
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: dynakv\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    body.to_string()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
pub fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some(())?;
            let wanted = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().expect("a number"))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_the_traffic_did() {
    let dir = tempfile::tempdir().unwrap();
    let (ring_path, ring, metrics) = ring_file_with_metrics(dir.path(), 3, 3, 2, 2);
    let start = |i: usize| {
        NodeProcess::start(&ring_path, &format!("n{}", i + 1), &dir.path().join(format!("n{i}")))
    };
    let mut nodes: Vec<_> = (0..3).map(|i| Some(start(i))).collect();
    let client = client_for(&ring);
    wait_until_up(&client).await;
    let n1 = [("node", "n1")];
    let before = scrape(metrics[0]).await;
    let sent_to_n1 = || client.health()[0].1.requests_sent();
    let sent_before = sent_to_n1();

    let all = WriteOptions { w: Some(3), ..Default::default() };
    for i in 0..10 {
        client.put_with(format!("k{i}"), "v", all).await.unwrap();
    }
    for i in 0..10 {
        assert!(client.get(format!("k{i}")).await.unwrap().is_some());
    }
    client.settle().await;
    let report = client.repair("n1", Duration::from_secs(60)).await.unwrap();

    let after = scrape(metrics[0]).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    let writes = [("node", "n1"), ("op", "write"), ("outcome", "applied")];
    assert_eq!(delta("dynakv_operations_total", &writes), 10.0, "{after}");
    // Every write went to n1; a read asks R = 2 of the key's 3 replicas (more if it hedges), so
    // n1 served the reads this client sent it.
    let sent = (sent_to_n1() - sent_before) as f64;
    let reads = [("node", "n1"), ("op", "read"), ("outcome", "found")];
    assert_eq!(delta("dynakv_operations_total", &reads), sent - 10.0, "{after}");
    assert!(sent - 10.0 >= 1.0, "n1 is among the first two replicas of some key");
    let served: f64 = ["read", "write", "batch"]
        .iter()
        .map(|rpc| delta("dynakv_requests_total", &[("node", "n1"), ("rpc", rpc), ("code", "ok")]))
        .sum();
    assert!((1.0..=sent).contains(&served), "{sent} operations in 1 to {sent} RPCs: {served}");
    assert!(delta("dynakv_request_duration_seconds_count", &n1) >= served);
    assert_eq!(delta("dynakv_requests_total", &[("node", "n1"), ("rpc", "repair")]), 1.0);
    assert_eq!(delta("dynakv_anti_entropy_rounds_total", &n1), 1.0);
    let compared = delta("dynakv_anti_entropy_ranges_compared_total", &n1);
    assert_eq!(compared, report.ranges_compared as f64);
    assert_eq!(delta("dynakv_anti_entropy_round_duration_seconds_count", &n1), 1.0);
    // Every replica holds every key (W = 3): the kept digests agree, so nothing is scanned, on
    // n1 or on the peers answering it.
    assert_eq!(report.ranges_differing, 0, "{report:?}");
    for (i, at) in metrics.iter().enumerate() {
        let node = format!("n{}", i + 1);
        let scanned = sample(
            &scrape(*at).await,
            "dynakv_anti_entropy_records_scanned_total",
            &[("node", &node)],
        );
        assert_eq!(scanned, 0.0, "{node} scanned records for an idle round");
    }
    assert!(delta("dynakv_storage_commit_batch_size_count", &[]) >= 1.0);
    assert_eq!(sample(&after, "dynakv_keys", &n1), 10.0);
    assert_eq!(sample(&after, "dynakv_ring_version", &n1), 1.0);
    assert_eq!(sample(&after, "dynakv_storage_degraded", &n1), 0.0);

    // Hints: n3 misses 20 writes, comes back, and n1's pass hands its share off.
    nodes[2].take().unwrap().kill9();
    for i in 0..20 {
        client.put(format!("h{i}"), "v").await.unwrap();
    }
    client.settle().await;
    let held = sample(&scrape(metrics[0]).await, "dynakv_hints_pending", &n1);
    assert!(held > 0.0, "n1 keeps the hints of the keys it is the first live replica of");
    nodes[2] = Some(start(2));
    wait_until_up(&client).await;
    let before = scrape(metrics[0]).await;
    let pass = client.hand_off("n1", Duration::from_secs(60)).await.unwrap();
    let after = scrape(metrics[0]).await;
    assert_eq!(pass.delivered as f64, held, "n1 delivers every hint it held");
    assert_eq!(
        sample(&after, "dynakv_hints_delivered_total", &n1)
            - sample(&before, "dynakv_hints_delivered_total", &n1),
        held
    );
    assert_eq!(sample(&after, "dynakv_hints_pending", &n1), 0.0);
}
