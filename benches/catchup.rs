//! Catch-up benchmark, on real node processes over loopback: how long a replica that was down
//! while 10,000 keys were written takes to hold them all once it returns, by hinted handoff and
//! by one anti-entropy round; and what an anti-entropy round costs when nothing differs.
//!
//! Run with `cargo bench --bench catchup`. Prints the median of 3 runs of each figure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use dynakv_client::{Client, ClientOptions};
use dynakv_ring::Ring;
use futures::StreamExt;

const KEYS: usize = 10_000;
const VALUE: usize = 1024;
const RUNS: usize = 3;

/// Three `dynakv node` processes sharing a ring file in a temporary directory.
struct Cluster {
    dir: tempfile::TempDir,
    ring_path: PathBuf,
    ring: Ring,
    nodes: Vec<Option<Child>>,
}

impl Cluster {
    fn start(settings: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<SocketAddr> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap())
            .collect();
        let mut text = format!("{settings}\n[replication]\nn = 3\nr = 2\nw = 2\n");
        for (i, addr) in addrs.iter().enumerate() {
            text += &format!("[[nodes]]\nid = \"n{}\"\naddr = \"{addr}\"\n", i + 1);
        }
        let ring_path = dir.path().join("ring.toml");
        std::fs::write(&ring_path, &text).unwrap();
        let ring = Ring::parse(&text).unwrap();
        let mut cluster = Cluster { dir, ring_path, ring, nodes: Vec::new() };
        for i in 0..3 {
            let child = cluster.spawn(i);
            cluster.nodes.push(Some(child));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Child {
        let id = format!("n{}", i + 1);
        Command::new(env!("CARGO_BIN_EXE_dynakv"))
            .args(["node", "--ring"])
            .arg(&self.ring_path)
            .args(["--id", &id, "--data-dir"])
            .arg(self.dir.path().join(&id))
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn node")
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn restart(&mut self, i: usize) {
        self.nodes[i] = Some(self.spawn(i));
    }

    fn client(&self) -> Client {
        let options = ClientOptions {
            request_timeout: Duration::from_secs(5),
            ..ClientOptions::from_ring(&self.ring)
        };
        Client::builder(self.ring.clone()).options(options).build().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Waits until `check` holds, polling every 5 ms, for at most `limit`.
async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "gave up after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

async fn all_up(client: &Client) -> bool {
    client.node_statuses().await.iter().all(|s| s.reply.is_ok())
}

/// Writes `KEYS` keys of `VALUE` bytes with 64 writes in flight.
async fn load(client: &Client) {
    let value = bytes::Bytes::from(vec![b'v'; VALUE]);
    futures::stream::iter(0..KEYS)
        .map(|i| {
            let (client, value) = (client.clone(), value.clone());
            async move { client.put(format!("key-{i:05}"), value).await.expect("write") }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    client.settle().await;
}

/// Keys and pending hints of every node.
async fn counts(client: &Client) -> Vec<(u64, u64)> {
    let statuses = client.node_statuses().await;
    statuses.iter().map(|s| s.reply.as_ref().map_or((0, u64::MAX), |r| (r.keys, r.hints))).collect()
}

/// Time from restarting a node that missed `KEYS` writes until it holds them all, by hints alone.
async fn hinted_catch_up() -> Duration {
    let mut cluster = Cluster::start("[hints]\ninterval_ms = 100\n[anti_entropy]\nenabled = false");
    let client = cluster.client();
    until(Duration::from_secs(30), async || all_up(&client).await).await;
    cluster.kill(2);
    load(&client).await;
    cluster.restart(2);
    until(Duration::from_secs(300), async || {
        counts(&client).await.iter().all(|&(keys, hints)| keys == KEYS as u64 && hints == 0)
    })
    .await
}

/// Time of the one anti-entropy round that brings a node that missed `KEYS` writes up to date,
/// with hint delivery off; and the bytes a second, idle round moves.
async fn repair_catch_up() -> (Duration, u64, u64, Duration) {
    let mut cluster = Cluster::start(
        "[hints]\ninterval_ms = 3600000\n[anti_entropy]\nenabled = false\nmax_keys_per_sec = 1000000",
    );
    let client = cluster.client();
    until(Duration::from_secs(30), async || all_up(&client).await).await;
    cluster.kill(2);
    load(&client).await;
    cluster.restart(2);
    until(Duration::from_secs(30), async || all_up(&client).await).await;
    let started = Instant::now();
    let report = client.repair("n3", Duration::from_secs(600)).await.expect("repair");
    let took = started.elapsed();
    assert_eq!(report.keys_received, KEYS as u64, "{report:?}");
    assert_eq!(counts(&client).await[2].0, KEYS as u64);
    let idle = client.repair("n3", Duration::from_secs(600)).await.expect("repair");
    assert_eq!(idle.keys_received + idle.keys_sent, 0, "{idle:?}");
    (took, report.bytes, idle.bytes, idle.elapsed)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut hinted = Vec::new();
        let mut repaired = Vec::new();
        let mut repair_bytes = Vec::new();
        let mut idle_bytes = Vec::new();
        let mut idle_ms = Vec::new();
        for run in 1..=RUNS {
            let h = hinted_catch_up().await;
            let (r, bytes, idle, idle_took) = repair_catch_up().await;
            eprintln!(
                "run {run}: hints {:.0} ms; repair {:.0} ms ({bytes} B); idle round {idle} B in {:.1} ms",
                h.as_secs_f64() * 1e3,
                r.as_secs_f64() * 1e3,
                idle_took.as_secs_f64() * 1e3
            );
            hinted.push(h.as_secs_f64() * 1e3);
            repaired.push(r.as_secs_f64() * 1e3);
            repair_bytes.push(bytes as f64);
            idle_bytes.push(idle as f64);
            idle_ms.push(idle_took.as_secs_f64() * 1e3);
        }
        println!("catch-up of {KEYS} keys x {VALUE} B after a node returns (median of {RUNS}):");
        println!("  by hinted handoff:          {:>8.0} ms", median(hinted));
        println!("  by one anti-entropy round:  {:>8.0} ms, {:.0} B moved", median(repaired), median(repair_bytes));
        println!("  idle anti-entropy round:    {:>8.1} ms, {:.0} B moved", median(idle_ms), median(idle_bytes));
    });
}
