//! Disk faults: a node whose disk fills up or fails says so (DEGRADED, with the cause), refuses
//! writes at once with the right code, keeps serving reads, and takes writes again by itself once
//! the cause clears; the cluster keeps taking writes meanwhile, and the node catches up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_client::{Client, ReplicaError};
use dynakv_node::{NodeConfig, StorageChoice};
use dynakv_ring::Ring;
use dynakv_storage::{FaultKind, FaultyStorage, MemoryStorage};
use tokio::net::TcpListener;

use crate::support::{
    PATIENCE, TestCluster, client_for, counts, dynakv, eventually, spawn_node, text,
};

/// Checks and recovery attempts every 100 ms.
const WATCHFUL: &str = "[storage]\nmin_free_mb = 0\ncheck_interval_ms = 100\n";

/// One node over a fault-injecting engine, as a one-node ring.
struct FaultyNode {
    engine: Arc<FaultyStorage>,
    client: Client,
    ring_path: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FaultyNode {
    async fn start() -> FaultyNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let text = format!(
            "{WATCHFUL}[anti_entropy]\nenabled = false\n[replication]\nn = 1\nr = 1\nw = 1\n\
             [[nodes]]\nid = \"n1\"\naddr = \"{addr}\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let ring_path = dir.path().join("ring.toml");
        std::fs::write(&ring_path, &text).unwrap();
        let ring = Ring::parse(&text).unwrap();
        let engine = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let config =
            NodeConfig::new(Arc::new(ring.clone()), "n1", StorageChoice::Engine(engine.clone()));
        let (stop, task) = spawn_node(listener, config);
        FaultyNode { engine, client: client_for(&ring), ring_path, stop, task, _dir: dir }
    }

    /// What the node says of its storage: `None` while it takes writes.
    async fn degraded(&self) -> Option<String> {
        let statuses = self.client.node_statuses().await;
        statuses[0].reply.as_ref().expect("the node answers").degraded.clone()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// The gRPC code the replica refused the write with (the client files UNAVAILABLE, like a
/// refused connection, as unreachable).
fn refusal(error: &dynakv_client::ClientError) -> tonic::Code {
    match error {
        dynakv_client::ClientError::Quorum(q) => match &q.failures[0].cause {
            ReplicaError::Rejected { code, .. } => *code,
            ReplicaError::Unreachable(_) => tonic::Code::Unavailable,
            other => panic!("not a refusal: {other:?}"),
        },
        other => panic!("not a quorum error: {other:?}"),
    }
}

#[tokio::test]
async fn a_failing_disk_degrades_the_node_which_keeps_reading_and_recovers() {
    for (kind, code, words) in [
        (FaultKind::DiskFull, tonic::Code::ResourceExhausted, "disk full"),
        (FaultKind::Io, tonic::Code::Unavailable, "I/O error"),
    ] {
        let node = FaultyNode::start().await;
        let client = &node.client;
        client.put("before", "kept").await.unwrap();
        assert_eq!(node.degraded().await, None);

        node.engine.fail_commits(Some(kind));
        let error = client.put("during", "refused").await.unwrap_err();
        assert_eq!(refusal(&error), code, "{error}");
        assert!(error.to_string().contains(words), "{error}");
        let cause = node.degraded().await.expect("health says DEGRADED");
        assert!(cause.contains(words), "{cause}");
        let status = dynakv(&["status"], &node.ring_path).await;
        let out = text(&status.stdout);
        assert!(out.contains("DEGRADED") && out.contains(words), "{out}");
        assert_eq!(status.status.code(), Some(1), "no range has W writable replicas: {out}");
        assert_eq!(client.get("before").await.unwrap(), Some(Bytes::from("kept")), "reads go on");

        // Still failing: recovery attempts keep failing, and the node stays degraded.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(node.degraded().await.is_some());
        node.engine.fail_commits(None);
        eventually(PATIENCE, "the node recovers by itself", || async {
            node.degraded().await.is_none()
        })
        .await;
        client.put("after", "taken").await.unwrap();
        assert_eq!(client.get("after").await.unwrap(), Some(Bytes::from("taken")));
        assert_eq!(client.get("during").await.unwrap(), None, "a refused write did not land");
        node.stop().await;
    }
}

/// A tmpfs mounted over a directory for the length of a test; unmounted on drop, even on panic.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mb` MiB at `dir`; `None` (with a loud message) where that cannot be done.
    fn mount(dir: &Path, mb: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status();
        match status {
            Ok(s) if s.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                eprintln!(
                    "\n*** SKIPPED disk::a_full_disk_*: cannot mount a tmpfs ({other:?}); this test \
                     needs root (CAP_SYS_ADMIN). Nothing was checked. ***\n"
                );
                None
            }
        }
    }

    fn resize(&self, mb: u64) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mb}m")])
            .arg(&self.0)
            .status()
            .expect("remount")
            .success();
        assert!(ok, "remount {} to {mb} MiB", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// n1's data lives on a 96 MiB tmpfs that fills up under 64 KiB writes at W=2, with `reserve_mb`
/// of free space kept back (0: the disk really fills and the engine fails). The reserve must
/// exceed what the engine writes at once (a memtable flush), as the default of 256 MiB does.
async fn a_full_disk(reserve_mb: u64) {
    let extra = format!(
        "[storage]\nmin_free_mb = {reserve_mb}\ncheck_interval_ms = 100\n[hints]\ninterval_ms = 200\n"
    );
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, &extra).await;
    cluster.stop(0).await;
    let dir = cluster.data_dir(0).to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    let Some(tmpfs) = Tmpfs::mount(&dir, 96) else { return };
    cluster.restart(0).await;
    let client = cluster.client();
    crate::support::wait_until_up(&client).await;

    // Random, so the engine cannot compress the disk full away.
    let value: Bytes = (0..64 * 1024).map(|_| rand::random::<u8>()).collect::<Vec<u8>>().into();
    let n1_degraded = || async {
        client.node_statuses().await[0].reply.as_ref().ok().and_then(|r| r.degraded.clone())
    };
    let (mut written, mut degraded) = (0, None);
    // Bounded: 96 MiB cannot hold 2,000 values of 64 KiB.
    while written < 2000 {
        client.put(format!("k{written}"), value.clone()).await.expect("W=2 through n2 and n3");
        written += 1;
        if written % 10 == 0 && degraded.is_none() {
            degraded = n1_degraded().await.map(|cause| (written, cause));
        }
        if degraded.as_ref().is_some_and(|(at, _)| written >= at + 40) {
            break;
        }
    }
    let (at, cause) = degraded.expect("n1 reports DEGRADED once its disk is full");
    assert!(cause.contains("disk full"), "{cause}");
    eprintln!("n1 degraded after {at} writes ({cause}); {written} writes acknowledged");
    if reserve_mb > 0 {
        // Below the reserve the node stays degraded until space returns.
        assert!(cause.contains("below the reserve"), "{cause}");
        let status = dynakv(&["status", "--json"], &cluster.ring_path()).await;
        let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(doc["nodes"][0]["state"], "degraded", "{doc}");
        assert_eq!(status.status.code(), Some(0), "two writable replicas still meet W=2: {doc}");
    }

    // Space returns: n1 takes writes again without a restart, and the hints fill it in.
    tmpfs.resize(512);
    eventually(PATIENCE, "n1 recovers by itself", || async { n1_degraded().await.is_none() }).await;
    eventually(PATIENCE, "n1 holds every acknowledged key", || async {
        counts(&client).await[0].0 == written as u64
    })
    .await;
    assert_eq!(client.get(format!("k{}", written - 1)).await.unwrap(), Some(value));
    cluster.shutdown().await;
    drop(tmpfs);
}

#[tokio::test]
async fn a_full_disk_below_the_reserve_refuses_writes_then_recovers() {
    a_full_disk(48).await;
}

#[tokio::test]
async fn a_full_disk_that_fails_the_engine_recovers_without_a_restart() {
    a_full_disk(0).await;
}
