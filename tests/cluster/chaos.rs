//! A seeded random schedule of stops, restarts, partitions and slow links under concurrent
//! writers. At the end, after healing and repair, no acknowledged write is lost: every key holds
//! the newest acknowledged write or something newer, on every replica.
//!
//! Replay a failing run with `DYNAKV_CHAOS_SEED=<seed>` (the seed is printed at the start).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_client::{Client, ClientOptions};
use dynakv_core::Version;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{Fault, PATIENCE, TestCluster, all_agree, counts, eventually, range_digests};

const NODES: usize = 5;
const KEYS: u32 = 40;
const SCHEDULE: Duration = Duration::from_secs(20);
const SETTINGS: &str = "[hints]\ninterval_ms = 200\n[anti_entropy]\nenabled = false\n";

/// What a writer did to one key: a value (or a delete, `None`) and whether it was acknowledged.
#[derive(Debug, Clone)]
struct Attempt {
    value: Option<Bytes>,
    acked: Option<Version>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_random_fault_schedule() {
    let seed: u64 = std::env::var("DYNAKV_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed {seed} (replay with DYNAKV_CHAOS_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = TestCluster::start_with(NODES, 3, 2, 2, SETTINGS).await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(500),
        ..ClientOptions::from_ring(&cluster.ring)
    };
    let client = Client::builder(cluster.ring.clone()).options(options).build().unwrap();

    let history: Arc<Mutex<HashMap<String, Vec<Attempt>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let (client, history, stop) = (client.clone(), history.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w + 1));
            tokio::spawn(async move {
                for i in 0..5_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("key-{}", rng.random_range(0..KEYS));
                    let (value, result) = if rng.random_ratio(1, 10) {
                        (None, client.delete(key.clone()).await)
                    } else {
                        let value = Bytes::from(format!("writer {w} op {i}"));
                        (Some(value.clone()), client.put(key.clone(), value).await)
                    };
                    let attempt = Attempt { value, acked: result.ok().map(|w| w.version) };
                    history.lock().entry(key).or_default().push(attempt);
                }
            })
        })
        .collect();

    // The schedule: at most two nodes impaired at once, each impairment healed later.
    let mut stopped = [false; NODES];
    let mut faulted = [false; NODES];
    let started = Instant::now();
    let mut actions = 0;
    while started.elapsed() < SCHEDULE && actions < 200 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
        actions += 1;
        let node = rng.random_range(0..NODES);
        let impaired = (0..NODES).filter(|&i| stopped[i] || faulted[i]).count();
        match (stopped[node], faulted[node]) {
            (true, _) => {
                eprintln!("chaos: restart n{}", node + 1);
                cluster.restart(node).await;
                stopped[node] = false;
            }
            (false, true) => {
                eprintln!("chaos: heal n{}", node + 1);
                cluster.fault(node, Fault::None);
                faulted[node] = false;
            }
            (false, false) if impaired < 2 => {
                let fault = match rng.random_range(0..4) {
                    0 => None,
                    1 => Some(Fault::Blackhole),
                    2 => Some(Fault::Drop),
                    _ => Some(Fault::Delay(Duration::from_millis(rng.random_range(5..100)))),
                };
                match fault {
                    None => {
                        eprintln!("chaos: stop n{}", node + 1);
                        cluster.stop(node).await;
                        stopped[node] = true;
                    }
                    Some(fault) => {
                        eprintln!("chaos: {fault:?} n{}", node + 1);
                        cluster.fault(node, fault);
                        faulted[node] = true;
                    }
                }
            }
            (false, false) => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    client.settle().await;

    // Heal everything, let hints drain, then repair every node.
    for (node, stopped) in stopped.into_iter().enumerate() {
        if stopped {
            cluster.restart(node).await;
        }
        cluster.fault(node, Fault::None);
    }
    let checker = cluster.client();
    eventually(PATIENCE, "every hint is handed off", || async {
        counts(&checker).await.iter().all(|c| c.1 == 0)
    })
    .await;
    for _ in 0..2 {
        for node in cluster.ring.nodes() {
            let report = checker.repair(&node.id, Duration::from_secs(60)).await.unwrap();
            assert!(report.unreachable.is_empty(), "seed {seed}: {report:?}");
        }
    }
    assert!(
        all_agree(&range_digests(&cluster.ring).await),
        "seed {seed}: replicas differ after repair"
    );

    let history = history.lock().clone();
    let acked_total: usize = history.values().flatten().filter(|a| a.acked.is_some()).count();
    eprintln!(
        "chaos: {actions} actions, {acked_total} acknowledged writes over {} keys",
        history.len()
    );
    assert!(acked_total > 0, "seed {seed}: no write was acknowledged");
    for (key, attempts) in &history {
        let inspection = checker.inspect(key.clone()).await.unwrap();
        let records: Vec<_> = inspection.replicas.into_iter().map(|v| v.record.unwrap()).collect();
        assert!(
            records.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: {key} differs: {records:?}"
        );
        let Some(newest_acked) =
            attempts.iter().filter_map(|a| a.acked.map(|v| (v, a))).max_by_key(|(v, _)| *v)
        else {
            continue;
        };
        let held =
            records[0].clone().unwrap_or_else(|| panic!("seed {seed}: {key} lost every write"));
        assert!(
            held.version >= newest_acked.0,
            "seed {seed}: {key} holds {} older than acknowledged {}",
            held.version,
            newest_acked.0
        );
        if held.version == newest_acked.0 {
            assert_eq!(
                held.value, newest_acked.1.value,
                "seed {seed}: {key} holds another write's value"
            );
        } else {
            // Superseded by a newer write whose acknowledgement was lost: it must be one we made.
            assert!(
                attempts.iter().any(|a| a.acked.is_none() && a.value == held.value),
                "seed {seed}: {key} holds a value nobody wrote: {held:?}"
            );
        }
    }
    cluster.shutdown().await;
}
