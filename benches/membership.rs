//! Membership benchmark, on real node processes over loopback: load keys of 1 KiB on 3 nodes,
//! then add a 4th under a steady background load of reads and writes, and report how long the
//! change takes, how fast ranges stream, how many keys moved against the ideal, the client's p99
//! before and during the move, and how soon after `ring add` the new node takes writes.
//!
//! Run with `cargo bench --bench membership`. `DYNAKV_BENCH_KEYS` sets the keys loaded
//! (default 1,000,000: about 3 GB on disk over the three nodes and ten minutes on two cores),
//! `DYNAKV_BENCH_STREAM_MB` the stream's rate limit in MB/s (default 1024).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_client::{Client, ClientOptions};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use dynakv_ring::{Ring, key_token};
use futures::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;

const VALUE: usize = 1024;
/// Operations in flight in the background load.
const BACKGROUND: usize = 16;

fn keys() -> usize {
    std::env::var("DYNAKV_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// The stream's rate limit, `[membership] stream_mb_per_sec`: `DYNAKV_BENCH_STREAM_MB`, by
/// default 1024 (no limit on this machine), to measure what streaming costs the foreground.
fn stream_mb_per_sec() -> u64 {
    std::env::var("DYNAKV_BENCH_STREAM_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024)
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/<pid>/stat`; 0 where
/// that cannot be read. The machine is shared, so CPU spent says more than wall time.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command (which may hold spaces) start after its closing parenthesis.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Cluster {
    dir: tempfile::TempDir,
    ring_path: PathBuf,
    ring: Ring,
    nodes: Vec<Child>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let mut text = format!(
            "[storage]\nmin_free_mb = 0\n[anti_entropy]\nenabled = false\n[membership]\n\
             stream_mb_per_sec = {}\n[replication]\nn = 3\nr = 2\nw = 2\n",
            stream_mb_per_sec()
        );
        for (i, addr) in addrs.iter().enumerate() {
            text += &format!("[[nodes]]\nid = \"n{}\"\naddr = \"{addr}\"\n", i + 1);
        }
        let ring_path = dir.path().join("ring.toml");
        std::fs::write(&ring_path, &text).unwrap();
        let ring = Ring::parse(&text).unwrap();
        let mut cluster = Cluster { dir, ring_path, ring, nodes: Vec::new() };
        for i in 0..3 {
            let child = cluster.spawn(&format!("n{}", i + 1), &[]);
            cluster.nodes.push(child);
        }
        cluster
    }

    fn spawn(&self, id: &str, more: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_dynakv"))
            .args(["node", "--ring"])
            .arg(&self.ring_path)
            .args(["--id", id, "--data-dir"])
            .arg(self.dir.path().join(id))
            .args(more)
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("spawn node")
    }

    fn client(&self) -> Client {
        let options = ClientOptions {
            request_timeout: Duration::from_secs(10),
            ..ClientOptions::from_ring(&self.ring)
        };
        Client::builder(self.ring.clone()).options(options).build().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn raw(addr: SocketAddr) -> ReplicaClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    ReplicaClient::new(channel).max_decoding_message_size(64 << 20)
}

async fn ring_of(addr: SocketAddr) -> Option<Ring> {
    let reply = raw(addr).await.get_ring(v1::GetRingRequest {}).await.ok()?.into_inner();
    Ring::parse(&reply.ring).ok()
}

/// Latencies of the background load, split at the moment the move starts.
struct Load {
    before: Mutex<Histogram<u64>>,
    during: Mutex<Histogram<u64>>,
    moving: AtomicBool,
    stop: AtomicBool,
    /// Fresh keys the background load wrote.
    written: std::sync::atomic::AtomicU64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// Half writes of fresh keys, half reads of loaded ones, `BACKGROUND` in flight, until stopped.
async fn background(client: Client, load: Arc<Load>, keys: usize) {
    let value = Bytes::from(vec![b'b'; VALUE]);
    let workers = (0..BACKGROUND).map(|w| {
        let (client, load, value) = (client.clone(), load.clone(), value.clone());
        async move {
            let mut i = 0u64;
            while !load.stop.load(Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let ok = if i.is_multiple_of(2) {
                    let ok = client.put(format!("bg-{w}-{i}"), value.clone()).await.is_ok();
                    load.written.fetch_add(u64::from(ok), Ordering::Relaxed);
                    ok
                } else {
                    let key = format!("key-{:07}", (i as usize * 7919 + w * 104_729) % keys);
                    client.get(key).await.is_ok()
                };
                let micros = started.elapsed().as_micros() as u64;
                let phase =
                    if load.moving.load(Ordering::Relaxed) { &load.during } else { &load.before };
                if ok {
                    phase.lock().record(micros.max(1)).ok();
                }
            }
        }
    });
    futures::future::join_all(workers).await;
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let keys = keys();
        let cluster = Cluster::start();
        let client = cluster.client();
        let addrs: Vec<SocketAddr> = cluster.ring.nodes().iter().map(|n| n.addr).collect();
        for _ in 0..600 {
            if client.node_statuses().await.iter().all(|s| s.reply.is_ok()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let value = Bytes::from(vec![b'v'; VALUE]);
        let started = Instant::now();
        futures::stream::iter(0..keys)
            .map(|i| {
                let (client, value) = (client.clone(), value.clone());
                async move { client.put(format!("key-{i:07}"), value).await.expect("load") }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        client.settle().await;
        eprintln!("loaded {keys} keys in {:.1} s", started.elapsed().as_secs_f64());

        let load = Arc::new(Load {
            before: Mutex::new(histogram()),
            during: Mutex::new(histogram()),
            moving: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            written: Default::default(),
        });
        let bg = tokio::spawn(background(cluster.client(), load.clone(), keys));
        tokio::time::sleep(Duration::from_secs(10)).await;

        let n4 = free_addr();
        let mut cluster = cluster;
        let n4_child = cluster.spawn("n4", &["--addr", &n4.to_string(), "--join", &addrs[0].to_string()]);
        cluster.nodes.push(n4_child);
        while ring_of(n4).await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        load.moving.store(true, Ordering::Relaxed);
        let pids: Vec<u32> = cluster.nodes.iter().map(Child::id).collect();
        let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
        let added = Instant::now();
        let change = v1::ChangeRingRequest {
            change: Some(v1::change_ring_request::Change::Add(v1::AddNode {
                id: "n4".into(),
                addr: n4.to_string(),
            })),
        };
        let joint = raw(addrs[0]).await.change_ring(change).await.expect("ring add").into_inner();
        let agreed = added.elapsed();
        let joint = Ring::parse(&joint.ring).unwrap();
        // How soon n4 takes a write for a key it gains, placed by the moving ring.
        let n4_index = joint.node_index("n4").unwrap();
        let key = (0..)
            .map(|i| format!("probe-{i}"))
            .find(|k| joint.target_preference_list(key_token(k.as_bytes())).unwrap().contains(&n4_index))
            .unwrap();
        let record = dynakv_core::Record::value(
            dynakv_core::Version::new(dynakv_core::Timestamp::from_millis(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
            ), 1),
            Bytes::from_static(b"probe"),
        );
        let takes_writes = loop {
            let request = v1::WriteRequest {
                key: Bytes::from(key.clone()),
                record: Some(record.clone().into()),
                hint_for: String::new(),
                ring_version: joint.version(),
            };
            if raw(n4).await.write(request).await.is_ok() {
                break added.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };

        // Stream progress until the ring is finished everywhere.
        let mut first_bytes: Option<Instant> = None;
        let mut streamed = 0u64;
        let mut streamed_at = Instant::now();
        let finished = loop {
            if let Ok(reply) = raw(n4).await.move_status(v1::MoveStatusRequest {}).await {
                let bytes: u64 = reply.into_inner().ranges.iter().map(|r| r.bytes).sum();
                if bytes > 0 && first_bytes.is_none() {
                    first_bytes = Some(Instant::now());
                }
                if bytes > streamed {
                    streamed = bytes;
                    streamed_at = Instant::now();
                }
            }
            let mut rings = Vec::new();
            for &addr in addrs.iter().chain([&n4]) {
                rings.extend(ring_of(addr).await);
            }
            if rings.len() == 4 && rings.iter().all(|r| r.version() == joint.version() + 1) {
                break added.elapsed();
            }
            assert!(added.elapsed() < Duration::from_secs(3600), "the move never finished");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let cpu: Vec<f64> =
            pids.iter().zip(&cpu_before).map(|(&pid, before)| cpu_seconds(pid) - before).collect();
        load.stop.store(true, Ordering::Relaxed);
        bg.await.unwrap();
        let health = raw(n4).await.health(v1::HealthRequest {}).await.unwrap().into_inner();
        let stream_secs = first_bytes.map_or(f64::NAN, |t| (streamed_at - t).as_secs_f64().max(1e-3));
        let (before, during) = (load.before.lock().clone(), load.during.lock().clone());
        println!("adding a 4th node to 3 holding {keys} keys x {VALUE} B, under {BACKGROUND} ops in flight:");
        println!("  agreement on the moving ring:    {:>9.1} ms", agreed.as_secs_f64() * 1e3);
        println!("  n4 takes writes after ring add:  {:>9.1} ms", takes_writes.as_secs_f64() * 1e3);
        println!("  move finished after ring add:    {:>9.1} s", finished.as_secs_f64());
        println!(
            "  streamed to n4:                  {:>9.1} MB at {:.1} MB/s",
            streamed as f64 / 1e6,
            streamed as f64 / 1e6 / stream_secs
        );
        println!(
            "  node CPU during the move:        {:>9.1} s on n4, {:.1} s on n1-n3 ({:.1} MB streamed per CPU second of n4)",
            cpu[3],
            cpu[..3].iter().sum::<f64>(),
            streamed as f64 / 1e6 / cpu[3].max(1e-3)
        );
        let total = keys as u64 + load.written.load(Ordering::Relaxed);
        println!(
            "  keys n4 holds:                   {:>9} = {:.3} of the {total} keys (ideal N/(n+1) = 0.750)",
            health.keys,
            health.keys as f64 / total as f64
        );
        println!(
            "  background p99 before / during:  {:>9.2} ms / {:.2} ms (p50 {:.2} / {:.2} ms; {} / {} ops)",
            before.value_at_quantile(0.99) as f64 / 1e3,
            during.value_at_quantile(0.99) as f64 / 1e3,
            before.value_at_quantile(0.5) as f64 / 1e3,
            during.value_at_quantile(0.5) as f64 / 1e3,
            before.len(),
            during.len()
        );
    });
}
