//! A test cluster: nodes served in this process by `Node::serve` on loopback listeners, each
//! with its own fjall directory and a fault-injecting proxy in front (the address in the ring),
//! stoppable and restartable on the same address.

pub mod browser;
pub mod proxy;

pub use proxy::{Fault, Proxy};

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_client::{Client, ClientOptions};
use dynakv_core::{Clock, Record};
use dynakv_node::{Node, NodeConfig, StorageChoice};
use dynakv_ring::Ring;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Deadline of one request in tests: generous, so a loaded 2-core machine never trips it.
pub const TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings every test ring gets unless a test asks otherwise: no periodic anti-entropy, so a
/// test sees exactly the repairs it causes.
pub const QUIET: &str = "[anti_entropy]\nenabled = false\n";

/// The request deadline every test ring gets unless a test sets its own: that of
/// [`TEST_REQUEST_TIMEOUT`].
const TEST_TIMEOUTS: &str = "[timeouts]\nrequest_ms = 5000\n";

/// Ring file text for nodes at `addrs`, with the given replication settings and extra TOML tables.
pub fn ring_text_with(addrs: &[SocketAddr], n: usize, r: usize, w: usize, extra: &str) -> String {
    // Periodic anti-entropy stays off unless the test configures it.
    let quiet = if extra.contains("[anti_entropy]") { "" } else { QUIET };
    // The ring's request deadline (what the CLI and the nodes' peer calls use) as generous as
    // the test clients' own, unless the test sets its own.
    let timeouts = if extra.contains("[timeouts]") { "" } else { TEST_TIMEOUTS };
    let extra = format!("{extra}\n{quiet}{timeouts}");
    // 32 tokens per node unless the extras set their own (before any table).
    let vnodes = if extra.contains("vnodes") { "" } else { "vnodes = 32\n" };
    let mut text = format!("{vnodes}{extra}\n[replication]\nn = {n}\nr = {r}\nw = {w}\n");
    for (i, addr) in addrs.iter().enumerate() {
        text += &format!("[[nodes]]\nid = \"n{}\"\naddr = \"{addr}\"\n", i + 1);
    }
    text
}

/// Ring file text for nodes at `addrs`, with the given replication settings and [`QUIET`] extras.
pub fn ring_text(addrs: &[SocketAddr], n: usize, r: usize, w: usize) -> String {
    ring_text_with(addrs, n, r, w, QUIET)
}

/// Writes `dir/ring.toml` for `nodes` nodes on free loopback ports, each with a metrics address
/// of its own (also free), for tests that run real node processes; returns the ring file's path,
/// the ring and the metrics addresses.
pub fn ring_file_with_metrics(
    dir: &Path,
    nodes: usize,
    n: usize,
    r: usize,
    w: usize,
) -> (PathBuf, Ring, Vec<SocketAddr>) {
    let addrs: Vec<_> = (0..nodes).map(|_| free_addr()).collect();
    let metrics: Vec<_> = (0..nodes).map(|_| free_addr()).collect();
    let mut text = ring_text(&addrs, n, r, w);
    for (addr, at) in addrs.iter().zip(&metrics) {
        text = text.replace(
            &format!("addr = \"{addr}\"\n"),
            &format!("addr = \"{addr}\"\nmetrics_addr = \"{at}\"\n"),
        );
    }
    let path = dir.join("ring.toml");
    std::fs::write(&path, &text).unwrap();
    let ring = Ring::load(&path).expect("valid test ring");
    (path, ring, metrics)
}

/// A free loopback port, found by binding port 0 and letting it go.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}

/// Serves a node in this process on `listener`; the sender stops it, and the task ends once it
/// has stopped (it panics if the node fails).
pub fn spawn_node(
    listener: TcpListener,
    config: NodeConfig,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Node::serve(listener, config, async {
            let _ = stopped.await;
        })
        .await
        .expect("node failed");
    });
    (stop, task)
}

/// A client for `ring` with test deadlines.
pub fn client_for(ring: &Ring) -> Client {
    client_with(ring, test_options(ring))
}

/// The default client options for `ring`, with test deadlines.
pub fn test_options(ring: &Ring) -> ClientOptions {
    ClientOptions { request_timeout: TEST_REQUEST_TIMEOUT, ..ClientOptions::from_ring(ring) }
}

/// A client for `ring` with `options`.
pub fn client_with(ring: &Ring, options: ClientOptions) -> Client {
    Client::builder(ring.clone()).options(options).build().expect("client")
}

/// The first of `tag-0`, `tag-1`, ... whose preference list has node `node` (0-based) at
/// `position`: reads ask the first R replicas, so a test picks which ones a read asks.
pub fn key_with(ring: &Ring, node: usize, position: usize, tag: &str) -> String {
    (0..10_000)
        .map(|i| format!("{tag}-{i}"))
        .find(|key| {
            let replicas = ring.preference_list(dynakv_ring::key_token(key.as_bytes()));
            replicas.get(position) == Some(&node)
        })
        .expect("some key puts the node there")
}

/// One in-process node.
struct TestNode {
    /// Where the node itself listens; only its proxy connects here.
    addr: SocketAddr,
    /// The node's address in the ring.
    proxy: Proxy,
    data_dir: PathBuf,
    /// The node's `inject_delay_ms` from its next start on (see [`TestCluster::set_inject_delay`]).
    inject_delay_ms: Option<RangeInclusive<u64>>,
    /// The node's wall clock, kept across restarts; a test shifts it while the node runs.
    clock: Clock,
    /// Present while the node runs.
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Nodes of one ring, in this process.
pub struct TestCluster {
    pub ring: Ring,
    nodes: Vec<TestNode>,
    /// Holds the data directories and the ring file; removed on drop.
    pub dir: TempDir,
}

impl TestCluster {
    /// Starts `nodes` nodes with replication `n`, `r`, `w`, and no periodic anti-entropy.
    pub async fn start(nodes: usize, n: usize, r: usize, w: usize) -> TestCluster {
        TestCluster::start_with(nodes, n, r, w, QUIET).await
    }

    /// Starts `nodes` nodes with replication `n`, `r`, `w` and extra ring-file tables.
    pub async fn start_with(
        nodes: usize,
        n: usize,
        r: usize,
        w: usize,
        extra: &str,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        for _ in 0..nodes {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind loopback"));
        }
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut proxies = Vec::new();
        for &addr in &addrs {
            proxies.push(Proxy::start(addr).await);
        }
        let proxy_addrs: Vec<_> = proxies.iter().map(|p| p.addr).collect();
        let text = ring_text_with(&proxy_addrs, n, r, w, extra);
        std::fs::write(dir.path().join("ring.toml"), &text).unwrap();
        let ring = Ring::parse(&text).expect("valid test ring");
        let mut cluster = TestCluster {
            nodes: addrs
                .iter()
                .zip(proxies)
                .enumerate()
                .map(|(i, (&addr, proxy))| TestNode {
                    addr,
                    proxy,
                    data_dir: dir.path().join(format!("n{}", i + 1)),
                    inject_delay_ms: None,
                    clock: Clock::system(),
                    running: None,
                })
                .collect(),
            ring,
            dir,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            cluster.serve(i, listener);
        }
        cluster
    }

    /// The ring file's path.
    pub fn ring_path(&self) -> PathBuf {
        self.dir.path().join("ring.toml")
    }

    fn serve(&mut self, i: usize, listener: TcpListener) {
        let node = &mut self.nodes[i];
        let mut config = NodeConfig::new(
            Arc::new(self.ring.clone()),
            format!("n{}", i + 1),
            StorageChoice::Fjall(node.data_dir.clone()),
        );
        config.inject_delay_ms = node.inject_delay_ms.clone();
        config.clock = node.clock.clone();
        node.running = Some(spawn_node(listener, config));
    }

    /// A client with test deadlines.
    pub fn client(&self) -> Client {
        client_for(&self.ring)
    }

    /// Stops node `i` (0-based) cleanly and waits until it has let go of its port and storage.
    pub async fn stop(&mut self, i: usize) {
        if let Some((stop, task)) = self.nodes[i].running.take() {
            self.nodes[i].proxy.close().await;
            let _ = stop.send(());
            task.await.expect("node task");
        }
    }

    /// Starts node `i` again on its old address, with its old data.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].running.is_none(), "node {i} is running");
        let addr = self.nodes[i].addr;
        let deadline = Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        self.serve(i, listener);
        self.nodes[i].proxy.reopen().await;
    }

    /// Sets the delay node `i` adds to every Read, Write and Batch it serves (not Health, Digest
    /// or Versions), from its next [`restart`](Self::restart) on.
    pub fn set_inject_delay(&mut self, i: usize, delay_ms: Option<RangeInclusive<u64>>) {
        self.nodes[i].inject_delay_ms = delay_ms;
    }

    /// Node `i`'s wall clock: shifting it moves the running node's time (and survives restarts).
    pub fn clock(&self, i: usize) -> &Clock {
        &self.nodes[i].clock
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data_dir
    }

    /// Rewrites the ring file with other settings (same nodes and addresses); nodes started or
    /// restarted from now on use it, and clients made from now on too.
    pub fn reconfigure(&mut self, n: usize, r: usize, w: usize, extra: &str) {
        let addrs: Vec<_> = self.nodes.iter().map(|node| node.proxy.addr).collect();
        let text = ring_text_with(&addrs, n, r, w, extra);
        std::fs::write(self.ring_path(), &text).unwrap();
        self.ring = Ring::parse(&text).expect("valid test ring");
    }

    /// Injects a fault between node `i` and everyone else (clients and peers).
    pub fn fault(&self, i: usize, fault: Fault) {
        self.nodes[i].proxy.set(fault);
    }

    /// Ends a fault on node `i` the way a long partition ends: the connections that were open
    /// across it are reset and whatever they held is lost, so nothing sent into the partition
    /// arrives late.
    pub async fn heal_with_reset(&mut self, i: usize) {
        self.nodes[i].proxy.close().await;
        self.nodes[i].proxy.set(Fault::None);
        self.nodes[i].proxy.reopen().await;
    }

    /// What node `i` holds for `key`, asked directly.
    pub async fn replica_record(&self, client: &Client, i: usize, key: &str) -> Option<Record> {
        let id = format!("n{}", i + 1);
        let inspection = client.inspect(key.to_string()).await.expect("inspect");
        let view = inspection.replicas.into_iter().find(|v| v.node == id);
        view.expect("node is a replica of the key").record.expect("replica answers")
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some((stop, task)) = node.running.take() {
                let _ = stop.send(());
                task.abort();
            }
        }
    }
}

/// Runs the `dynakv` binary with `args` and `--ring <ring>`, and collects its output.
pub async fn dynakv(args: &[&str], ring: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
        .args(args)
        .arg("--ring")
        .arg(ring)
        .output()
        .await
        .expect("run dynakv")
}

/// Output bytes as text, for messages and assertions.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `dynakv node` process of the real binary.
pub struct NodeProcess {
    child: std::process::Child,
}

impl NodeProcess {
    /// Starts `dynakv node --ring <ring> --id <id> --data-dir <dir>`.
    pub fn start(ring: &Path, id: &str, data_dir: &Path) -> NodeProcess {
        NodeProcess::start_with(ring, id, data_dir, &[])
    }

    /// Starts `dynakv node --ring <ring> --id <id> --data-dir <dir>` with more arguments.
    pub fn start_with(ring: &Path, id: &str, data_dir: &Path, more: &[&str]) -> NodeProcess {
        NodeProcess::spawn(ring, id, data_dir, |command| command.args(more).env("RUST_LOG", "warn"))
    }

    /// Starts a node as [`start`](Self::start) does, logging JSON lines filtered by `rust_log`
    /// to the file `log`.
    pub fn start_logging(
        ring: &Path,
        id: &str,
        data_dir: &Path,
        rust_log: &str,
        log: &Path,
    ) -> NodeProcess {
        let file = std::fs::File::create(log).expect("log file");
        NodeProcess::spawn(ring, id, data_dir, |command| {
            command.args(["--log-format", "json"]).env("RUST_LOG", rust_log).stderr(file)
        })
    }

    fn spawn(
        ring: &Path,
        id: &str,
        data_dir: &Path,
        configure: impl FnOnce(&mut std::process::Command) -> &mut std::process::Command,
    ) -> NodeProcess {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dynakv"));
        command.args(["node", "--ring"]).arg(ring).args(["--id", id, "--data-dir"]).arg(data_dir);
        let child = configure(&mut command).spawn().expect("spawn dynakv node");
        NodeProcess { child }
    }

    /// Stops the process with SIGSTOP: it keeps its sockets open and answers nothing, like a
    /// node in a long GC pause or a swapped-out VM, until [`resume`](Self::resume).
    /// Returns once every thread of the process has stopped, so nothing it does afterwards can
    /// race the pause.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.child.id());
        let stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|threads| {
                threads.flatten().all(|thread| {
                    let stat =
                        std::fs::read_to_string(thread.path().join("stat")).unwrap_or_default();
                    // "tid (name) state ...": the state follows the last parenthesis.
                    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
                    matches!(state, Some('T' | 't'))
                })
            })
        };
        let deadline = std::time::Instant::now() + PATIENCE;
        while !stopped() {
            assert!(std::time::Instant::now() < deadline, "node process did not stop on SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill has no memory effects; the pid is our own child's, not yet reaped.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} to node process {pid}");
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long tests wait for the cluster to converge before failing: generous, for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `check` every 50 ms until it returns true; fails the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most [`PATIENCE`]) until every node of the ring answers a health check.
pub async fn wait_until_up(client: &Client) {
    eventually(PATIENCE, "every node answers", || async {
        client.node_statuses().await.iter().all(|s| s.reply.is_ok())
    })
    .await;
}

/// Each node's (live keys, pending hints), asked of the nodes themselves.
pub async fn counts(client: &Client) -> Vec<(u64, u64)> {
    client
        .node_statuses()
        .await
        .into_iter()
        .map(|s| s.reply.map(|r| (r.keys, r.hints)).unwrap_or((u64::MAX, u64::MAX)))
        .collect()
}

/// For every vnode range, the kept digest (every record, dead ones too) each of its replicas
/// reports; replicas hold identical data for the range exactly when these agree.
pub async fn range_digests(ring: &Ring) -> Vec<Vec<(u64, u64)>> {
    use dynakv_proto::v1::{self, replica_client::ReplicaClient};
    let ranges: Vec<_> = ring.ranges().collect();
    let mut per_range = vec![Vec::new(); ranges.len()];
    for (node, spec) in ring.nodes().iter().enumerate() {
        let mut raw =
            ReplicaClient::connect(format!("http://{}", spec.addr)).await.expect("connect");
        let mine: Vec<usize> =
            (0..ranges.len()).filter(|&i| ranges[i].replicas.contains(&node)).collect();
        let spans = mine
            .iter()
            .map(|&i| v1::TokenSpan { start: ranges[i].start, end: ranges[i].end })
            .collect();
        let request = v1::DigestRequest { spans, all_records: true };
        let reply = raw.digest(request).await.expect("digest").into_inner();
        assert!(reply.all_records, "{} answers with the digests it keeps", spec.id);
        for (k, &i) in mine.iter().enumerate() {
            per_range[i].push((reply.digests[k], reply.counts[k]));
        }
    }
    per_range
}

/// True when every range's replicas report the same digest.
pub fn all_agree(digests: &[Vec<(u64, u64)>]) -> bool {
    digests.iter().all(|replicas| replicas.windows(2).all(|w| w[0] == w[1]))
}
