//! Crashes under load, as sled tests itself: real node processes are killed with SIGKILL while
//! 64 writers run, again and again. Writers log every write the cluster acknowledged; after each
//! restart, every acknowledged write so far must be on at least W replicas, read replica by
//! replica from the nodes' own storage (not through quorum reads, which could hide a lost copy).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_client::{Client, WriteOptions};
use dynakv_core::Version;
use dynakv_ring::Ring;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::support::{NodeProcess, QUIET, client_for, free_addr, ring_text_with, wait_until_up};

/// Concurrent writers.
const WRITERS: usize = 64;
/// Kill-and-restart cycles per durability setting.
const CYCLES: usize = 20;
/// The write quorum the writers ask for, and so the copies every acknowledged write must have.
const W: usize = 2;
/// Most writes one writer makes in one cycle: bounds a cycle even on a fast machine.
const MAX_WRITES_PER_WRITER: usize = 200;

/// Three node processes of one ring, restartable on their data.
struct Processes {
    dir: tempfile::TempDir,
    ring: Ring,
    nodes: Vec<Option<NodeProcess>>,
}

impl Processes {
    fn start(sync: &str) -> Processes {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
        // No free-space reserve: this test is about crashes, whatever the machine's disk holds.
        let extra = format!("[storage]\nsync = \"{sync}\"\nmin_free_mb = 0\n{QUIET}");
        let text = ring_text_with(&addrs, 3, 2, W, &extra);
        std::fs::write(dir.path().join("ring.toml"), &text).unwrap();
        let ring = Ring::parse(&text).unwrap();
        let mut processes = Processes { dir, ring, nodes: vec![None, None, None] };
        for i in 0..3 {
            processes.restart(i);
        }
        processes
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}", i + 1))
    }

    fn ring_path(&self) -> PathBuf {
        self.dir.path().join("ring.toml")
    }

    fn restart(&mut self, i: usize) {
        let data = self.data_dir(i);
        self.nodes[i] = Some(NodeProcess::start(&self.ring_path(), &format!("n{}", i + 1), &data));
    }

    fn kill9(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill9();
        }
    }
}

/// Writes from 64 writers until stopped; every acknowledged write is logged with its version.
struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    acked: Arc<Mutex<Vec<(Bytes, Version)>>>,
}

impl Load {
    fn start(client: &Client, cycle: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers = (0..WRITERS)
            .map(|writer| {
                let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let options = WriteOptions { w: Some(W), ..Default::default() };
                    for n in 0..MAX_WRITES_PER_WRITER {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // Every key is written once, so the version a replica holds is this one.
                        let key = Bytes::from(format!("c{cycle}-w{writer}-{n}"));
                        match client.put_with(key.clone(), key.clone(), options).await {
                            Ok(written) => acked.lock().push((key, written.version)),
                            // Failed or unknown outcomes are expected while nodes die.
                            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                })
            })
            .collect();
        Load { stop, writers, acked }
    }

    async fn stop(self) -> Vec<(Bytes, Version)> {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers {
            writer.await.expect("writer task");
        }
        std::mem::take(&mut *self.acked.lock())
    }
}

/// What every node stores: key -> version, one map per node, read through `Dump`.
async fn stored_versions(client: &Client) -> Vec<HashMap<Bytes, Version>> {
    let mut per_node = Vec::new();
    for node in ["n1", "n2", "n3"] {
        let stream = client.dump(node, Bytes::new(), None).await.expect("dump starts");
        let records: HashMap<Bytes, Version> = stream
            .map(|entry| entry.map(|d| (d.key, d.record.version)).expect("dump entry"))
            .collect()
            .await;
        per_node.push(records);
    }
    per_node
}

/// Runs `CYCLES` cycles of load, SIGKILL of the nodes `victims` picks, and restart; checks every
/// acknowledged write after each restart. Returns (cycles, writes checked in the last check).
async fn crash_cycles(sync: &str, victims: impl Fn(usize) -> Vec<usize>) -> (usize, usize) {
    let mut processes = Processes::start(sync);
    let setup = client_for(&processes.ring);
    wait_until_up(&setup).await;
    let mut acked: Vec<(Bytes, Version)> = Vec::new();
    for cycle in 0..CYCLES {
        let client = client_for(&processes.ring);
        let load = Load::start(&client, cycle);
        // Kill somewhere in the middle of the load, at a different moment each cycle.
        tokio::time::sleep(Duration::from_millis(100 + rand::random_range(0..300))).await;
        let killed = victims(cycle);
        for &i in &killed {
            processes.kill9(i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for &i in &killed {
            processes.restart(i);
        }
        acked.extend(load.stop().await);
        client.settle().await;
        let checker = client_for(&processes.ring);
        wait_until_up(&checker).await;

        let stored = stored_versions(&checker).await;
        for (key, version) in &acked {
            let copies = stored.iter().filter(|node| node.get(key) == Some(version)).count();
            assert!(
                copies >= W,
                "{sync}, cycle {cycle} (killed {killed:?}): {key:?} at {version:?} was \
                 acknowledged but is on {copies} replicas"
            );
        }
    }
    for i in 0..3 {
        processes.kill9(i);
    }
    (CYCLES, acked.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_loses_no_acknowledged_write() {
    for sync in ["os", "always"] {
        let started = Instant::now();
        let (cycles, checked) = crash_cycles(sync, |cycle| vec![cycle % 3]).await;
        eprintln!(
            "sync = {sync}: {cycles} cycles of kill -9 of one node under {WRITERS} writers; \
             {checked} acknowledged writes checked on every replica ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_node_under_load_loses_no_acknowledged_write() {
    for sync in ["os", "always"] {
        let started = Instant::now();
        let (cycles, checked) = crash_cycles(sync, |_| vec![0, 1, 2]).await;
        eprintln!(
            "sync = {sync}: {cycles} cycles of kill -9 of every node under {WRITERS} writers; \
             {checked} acknowledged writes checked on every replica ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
    }
}
