//! Live membership on real node processes: nodes added, decommissioned and replaced while the
//! cluster serves, with every acknowledged write checked on the new replicas' own storage.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dynakv_client::Client;
use dynakv_core::Version;
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use dynakv_ring::{Ring, key_token};
use futures::StreamExt;
use tonic::transport::Channel;

use crate::support::{
    NodeProcess, PATIENCE, QUIET, client_for, eventually, free_addr, ring_text_with, wait_until_up,
};

/// Node processes of one ring, with room for nodes that join later.
struct Cluster {
    dir: tempfile::TempDir,
    /// The ring file the first nodes started with (it never changes).
    ring: Ring,
    addrs: Vec<SocketAddr>,
    nodes: Vec<Option<NodeProcess>>,
}

impl Cluster {
    fn start(nodes: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<_> = (0..nodes).map(|_| free_addr()).collect();
        let extra = format!("[storage]\nmin_free_mb = 0\n{QUIET}");
        let text = ring_text_with(&addrs, 3, 2, 2, &extra);
        std::fs::write(dir.path().join("ring.toml"), &text).unwrap();
        let ring = Ring::parse(&text).unwrap();
        let mut cluster = Cluster { dir, ring, addrs, nodes: Vec::new() };
        for i in 0..nodes {
            let node = NodeProcess::start(
                &cluster.ring_path(),
                &format!("n{}", i + 1),
                &cluster.data_dir(i),
            );
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn ring_path(&self) -> PathBuf {
        self.dir.path().join("ring.toml")
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}", i + 1))
    }

    /// Starts node `n{i+1}`, which the ring file does not list, joining through n1.
    fn join(&mut self, i: usize) -> SocketAddr {
        let addr = free_addr();
        let (at, member) = (addr.to_string(), self.addrs[0].to_string());
        let node = NodeProcess::start_with(
            &self.ring_path(),
            &format!("n{}", i + 1),
            &self.data_dir(i),
            &["--addr", &at, "--join", &member],
        );
        self.addrs.push(addr);
        self.nodes.push(Some(node));
        addr
    }
}

async fn raw(addr: SocketAddr) -> ReplicaClient<Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    ReplicaClient::new(channel).max_decoding_message_size(64 << 20)
}

/// The ring node `addr` serves, if it answers.
async fn ring_of(addr: SocketAddr) -> Option<Ring> {
    let reply = raw(addr).await.get_ring(v1::GetRingRequest {}).await.ok()?.into_inner();
    Ring::parse(&reply.ring).ok()
}

/// Waits until every node at `addrs` serves the same ring, at least `version` and not moving.
async fn settled(addrs: &[SocketAddr], version: u64) -> Ring {
    let deadline = std::time::Instant::now() + PATIENCE * 3;
    loop {
        let mut rings = Vec::new();
        for &addr in addrs {
            rings.extend(ring_of(addr).await);
        }
        let first = rings.first().map_or(0, Ring::version);
        if rings.len() == addrs.len()
            && first >= version
            && rings.iter().all(|r| r.version() == first && !r.is_moving())
        {
            return rings.swap_remove(0);
        }
        let seen: Vec<_> = rings.iter().map(|r| (r.version(), r.is_moving())).collect();
        assert!(std::time::Instant::now() < deadline, "the ring change never finished: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record a node stores: key to version.
async fn stored(addr: SocketAddr) -> HashMap<Bytes, Version> {
    let mut stream = raw(addr)
        .await
        .dump(v1::DumpRequest { prefix: Bytes::new(), limit: 0 })
        .await
        .expect("dump")
        .into_inner();
    let mut out = HashMap::new();
    while let Some(entry) = stream.next().await {
        let entry = entry.expect("dump entry");
        let record = dynakv_core::Record::try_from(entry.record.unwrap()).unwrap();
        out.insert(entry.key, record.version);
    }
    out
}

async fn change(
    addr: SocketAddr,
    change: v1::change_ring_request::Change,
) -> Result<Ring, tonic::Status> {
    let reply = raw(addr).await.change_ring(v1::ChangeRingRequest { change: Some(change) }).await?;
    Ok(Ring::parse(&reply.into_inner().ring).unwrap())
}

/// Writes `count` keys with a prefix, returning each acknowledged key's version.
async fn write_keys(client: &Client, prefix: &str, count: usize) -> HashMap<Bytes, Version> {
    let mut acked = HashMap::new();
    for i in 0..count {
        let key = Bytes::from(format!("{prefix}-{i:05}"));
        let value = Bytes::from(vec![b'v'; 512]);
        if let Ok(written) = client.put(key.clone(), value).await {
            acked.insert(key, written.version);
        }
    }
    acked
}

/// The acknowledged keys that are on fewer than `at_least` of their replicas in `ring`, each
/// with the replicas that lack it.
async fn short_of(ring: &Ring, acked: &HashMap<Bytes, Version>, at_least: usize) -> Vec<String> {
    let mut held: Vec<HashMap<Bytes, Version>> = Vec::new();
    for node in ring.nodes() {
        held.push(stored(node.addr).await);
    }
    acked
        .iter()
        .filter_map(|(key, version)| {
            let replicas = ring.preference_list(key_token(key));
            let lacking: Vec<&str> = replicas
                .iter()
                .filter(|&&i| held[i].get(key).is_none_or(|v| v < version))
                .map(|&i| ring.nodes()[i].id.as_str())
                .collect();
            (replicas.len() - lacking.len() < at_least)
                .then(|| format!("{} lacks {lacking:?}", String::from_utf8_lossy(key)))
        })
        .collect()
}

/// Every acknowledged key is on at least `at_least` of its replicas in `ring`, at its version
/// or a newer one, read from each replica's own storage.
async fn check_on_replicas(ring: &Ring, acked: &HashMap<Bytes, Version>, at_least: usize) {
    let mut held: HashMap<String, HashMap<Bytes, Version>> = HashMap::new();
    for node in ring.nodes() {
        held.insert(node.id.clone(), stored(node.addr).await);
    }
    for (key, version) in acked {
        let replicas = ring.preference_list(key_token(key));
        let copies = replicas
            .iter()
            .filter(|&&i| held[&ring.nodes()[i].id].get(key).is_some_and(|v| v >= version))
            .count();
        assert!(
            copies >= at_least,
            "{} is on {copies} of its replicas {:?} in ring v{}, wanted {at_least}",
            String::from_utf8_lossy(key),
            replicas.iter().map(|&i| &ring.nodes()[i].id).collect::<Vec<_>>(),
            ring.version()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_to_a_live_cluster_receives_its_ranges_and_old_owners_drop_them() {
    let mut cluster = Cluster::start(3);
    let client = client_for(&cluster.ring);
    wait_until_up(&client).await;
    let acked = write_keys(&client, "before", 600).await;
    assert_eq!(acked.len(), 600);
    client.settle().await;

    let n4 = cluster.join(3);
    // The joining node learns the live ring and serves no keys until it is added.
    eventually(PATIENCE, "n4 serves the live ring", || async move {
        ring_of(n4).await.is_some_and(|r| r.version() == 1)
    })
    .await;
    let add =
        v1::change_ring_request::Change::Add(v1::AddNode { id: "n4".into(), addr: n4.to_string() });
    let joint = change(cluster.addrs[1], add.clone()).await.expect("ring add");
    assert_eq!(joint.version(), 2);
    assert!(joint.is_moving());
    // A second add of the same node is refused while the first is unfinished, ring unchanged.
    let again = change(cluster.addrs[2], add).await.unwrap_err();
    assert!(again.message().contains("still moving"), "{}", again.message());

    let ring = settled(&cluster.addrs, 3).await;
    assert_eq!(ring.nodes().len(), 4);
    check_on_replicas(&ring, &acked, 2).await;

    // The moved fraction: keys whose replica set gained n4, against the ideal N/(n+1).
    let n4_index = ring.node_index("n4").unwrap();
    let moved =
        acked.keys().filter(|k| ring.preference_list(key_token(k)).contains(&n4_index)).count();
    let fraction = moved as f64 / acked.len() as f64;
    let ideal = 3.0 / 4.0;
    println!(
        "moved {moved} of {} keys to n4: {:.3} (ideal {ideal:.3}, ratio {:.3})",
        acked.len(),
        fraction,
        fraction / ideal
    );
    assert!(fraction <= 1.15 * ideal, "moved {fraction}");

    // Old owners drop what they no longer hold.
    let held: Vec<HashSet<Bytes>> = {
        let mut held = Vec::new();
        for node in ring.nodes() {
            held.push(stored(node.addr).await.into_keys().collect());
        }
        held
    };
    eventually(PATIENCE, "old owners drop the ranges they lost", || {
        let ring = ring.clone();
        async move {
            for (i, node) in ring.nodes().iter().enumerate() {
                let keys = stored(node.addr).await;
                if keys.keys().any(|k| !ring.preference_list(key_token(k)).contains(&i)) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(held.iter().all(|h| !h.is_empty()));
    for node in cluster.nodes.iter_mut() {
        node.take();
    }
}

fn remove(id: &str, dead: bool) -> v1::change_ring_request::Change {
    v1::change_ring_request::Change::Remove(v1::RemoveNode { id: id.into(), dead })
}

fn add(id: &str, addr: SocketAddr) -> v1::change_ring_request::Change {
    v1::change_ring_request::Change::Add(v1::AddNode { id: id.into(), addr: addr.to_string() })
}

/// The addresses of the nodes `ring` lists.
fn addrs_of(ring: &Ring) -> Vec<SocketAddr> {
    ring.nodes().iter().map(|n| n.addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_node_hands_its_ranges_over_and_holds_nothing_the_cluster_needs() {
    let mut cluster = Cluster::start(4);
    let client = client_for(&cluster.ring);
    wait_until_up(&client).await;
    let acked = write_keys(&client, "k", 400).await;
    assert_eq!(acked.len(), 400);
    client.settle().await;

    let joint = change(cluster.addrs[0], remove("n2", false)).await.expect("ring remove");
    assert!(joint.is_moving());
    let survivors: Vec<SocketAddr> = [0, 2, 3].iter().map(|&i| cluster.addrs[i]).collect();
    let ring = settled(&survivors, 3).await;
    assert!(ring.node_index("n2").is_err(), "n2 is off the ring");
    // n2 learns it was removed, and refuses keys from then on.
    eventually(PATIENCE, "n2 serves the ring without itself", || {
        let n2 = cluster.addrs[1];
        async move { ring_of(n2).await.is_some_and(|r| r.version() == 3) }
    })
    .await;
    // Its data directory can go: every key is on all N of its new replicas without it.
    cluster.nodes[1].take();
    std::fs::remove_dir_all(cluster.data_dir(1)).unwrap();
    on_all_replicas_after_repair(&ring, &acked).await;

    // A node restarted alone with the old ring file serves the newer ring it stored.
    for node in cluster.nodes.iter_mut() {
        node.take();
    }
    cluster.nodes[0] = Some(NodeProcess::start(&cluster.ring_path(), "n1", &cluster.data_dir(0)));
    let n1 = cluster.addrs[0];
    eventually(PATIENCE, "n1 answers again", || async move { ring_of(n1).await.is_some() }).await;
    assert_eq!(ring_of(n1).await.unwrap().version(), 3, "n1 serves the ring it stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_replaced_leaves_every_key_on_n_replicas_again() {
    let mut cluster = Cluster::start(3);
    let client = client_for(&cluster.ring);
    wait_until_up(&client).await;
    let mut acked = write_keys(&client, "early", 200).await;
    client.settle().await;
    // n2 dies for good; writes go on (a live replica keeps hints for it).
    cluster.nodes[1].take().unwrap().kill9();
    acked.extend(write_keys(&client, "late", 200).await);
    assert_eq!(acked.len(), 400);
    client.settle().await;

    let n4 = cluster.join(3);
    let replace = v1::change_ring_request::Change::Replace(v1::ReplaceNode {
        dead: "n2".into(),
        id: "n4".into(),
        addr: n4.to_string(),
    });
    let joint = change(cluster.addrs[0], replace).await.expect("ring replace");
    assert!(joint.is_moving());
    let ring = settled(&[cluster.addrs[0], cluster.addrs[2], n4], 3).await;
    assert!(ring.node_index("n2").is_err());
    check_on_replicas(&ring, &acked, 3).await;
    // The hints kept for n2 go to the key's replicas now, and are dropped.
    eventually(PATIENCE, "the hints for n2 are handed to the new replicas", || {
        let addrs = addrs_of(&ring);
        async move {
            let mut pending = 0;
            for addr in addrs {
                let mut node = raw(addr).await;
                let _ = node.handoff(v1::HandoffRequest {}).await;
                pending +=
                    node.health(v1::HealthRequest {}).await.map_or(1, |h| h.into_inner().hints);
            }
            pending == 0
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_changes_exactly_one_applies() {
    let mut cluster = Cluster::start(3);
    let client = client_for(&cluster.ring);
    wait_until_up(&client).await;
    let n4 = cluster.join(3);
    let n5 = cluster.join(4);
    for addr in [n4, n5] {
        eventually(PATIENCE, "the joining nodes serve the live ring", || async move {
            ring_of(addr).await.is_some()
        })
        .await;
    }
    let (first, second) = tokio::join!(
        change(cluster.addrs[0], add("n4", n4)),
        change(cluster.addrs[1], add("n5", n5)),
    );
    let outcomes = [first, second];
    let applied: Vec<&Ring> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(applied.len(), 1, "exactly one change applies: {outcomes:?}");
    let refused = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
    assert!(
        refused.message().contains("another change won")
            || refused.message().contains("still moving"),
        "a clear refusal: {}",
        refused.message()
    );
    // Every node agrees on the one change that won.
    let winner = applied[0].clone();
    let ring = settled(&[cluster.addrs[0], cluster.addrs[1], cluster.addrs[2]], 3).await;
    assert_eq!(ring.nodes().len(), 4);
    let added = if winner.node_index("n4").is_ok() { "n4" } else { "n5" };
    assert!(ring.node_index(added).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_killed_mid_stream_resumes_and_so_does_a_killed_source() {
    // Streaming at 1 MiB/s, so the move takes seconds and can be interrupted.
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let extra = format!("[storage]\nmin_free_mb = 0\n[membership]\nstream_mb_per_sec = 1\n{QUIET}");
    let text = ring_text_with(&addrs, 3, 2, 2, &extra);
    let ring_path = dir.path().join("ring.toml");
    std::fs::write(&ring_path, &text).unwrap();
    let ring = Ring::parse(&text).unwrap();
    let data = |i: usize| dir.path().join(format!("n{}", i + 1));
    let mut nodes: Vec<Option<NodeProcess>> = (0..3)
        .map(|i| Some(NodeProcess::start(&ring_path, &format!("n{}", i + 1), &data(i))))
        .collect();
    let client = client_for(&ring);
    wait_until_up(&client).await;
    let mut acked = HashMap::new();
    for i in 0..800 {
        let key = Bytes::from(format!("big-{i:04}"));
        let written =
            client.put(key.clone(), Bytes::from(vec![b'x'; 8 * 1024])).await.expect("put");
        acked.insert(key, written.version);
    }
    client.settle().await;

    let n4 = free_addr();
    let join = |n4: SocketAddr| {
        NodeProcess::start_with(
            &ring_path,
            "n4",
            &data(3),
            &["--addr", &n4.to_string(), "--join", &addrs[0].to_string()],
        )
    };
    let mut joining = Some(join(n4));
    eventually(PATIENCE, "n4 serves the live ring", || async move { ring_of(n4).await.is_some() })
        .await;
    change(addrs[0], add("n4", n4)).await.expect("ring add");

    let progress = |addr: SocketAddr| async move {
        let reply = raw(addr).await.move_status(v1::MoveStatusRequest {}).await.ok()?.into_inner();
        Some((
            reply.ranges.iter().map(|r| r.keys).sum::<u64>(),
            reply.ranges.iter().all(|r| r.done),
        ))
    };
    eventually(PATIENCE, "n4 has streamed some keys", || async move {
        progress(n4).await.is_some_and(|(keys, done)| keys > 50 && !done)
    })
    .await;
    joining.take().unwrap().kill9();
    joining = Some(join(n4));
    let deadline = std::time::Instant::now() + PATIENCE;
    let (before, _) = loop {
        if let Some(seen) = progress(n4).await {
            break seen;
        }
        assert!(std::time::Instant::now() < deadline, "n4 never answered after its restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(before > 50, "the progress made before the kill survives it: {before} keys");

    // Now the first holder dies mid-stream and comes back.
    eventually(PATIENCE, "n4 streams again", || async move {
        progress(n4).await.is_some_and(|(keys, done)| keys > before + 20 || done)
    })
    .await;
    nodes[0].take().unwrap().kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes[0] = Some(NodeProcess::start(&ring_path, "n1", &data(0)));

    let ring = settled(&[addrs[0], addrs[1], addrs[2], n4], 3).await;
    check_on_replicas(&ring, &acked, 2).await;
    drop(joining);
}

/// 4 writers of fresh keys and 4 readers of preloaded ones, running until finished.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<parking_lot::Mutex<HashMap<Bytes, Version>>>,
    /// Reads that found the key, found nothing, and failed.
    reads: Arc<[AtomicU64; 3]>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &Client, preloaded: &HashMap<Bytes, Version>) -> Load {
        let acked = Arc::new(parking_lot::Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reads: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..5_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = Bytes::from(format!("w{w}-{i:05}"));
                    if let Ok(written) = client.put(key.clone(), Bytes::from(vec![b'w'; 256])).await
                    {
                        acked.lock().insert(key, written.version);
                    }
                }
            }));
        }
        let keys: Vec<Bytes> = preloaded.keys().cloned().collect();
        for r in 0..4 {
            let (client, stop, keys, reads) =
                (client.clone(), stop.clone(), keys.clone(), reads.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..20_000usize {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let outcome =
                        match client.get(keys[(i * 7 + r * 31) % keys.len()].clone()).await {
                            Ok(Some(_)) => 0,
                            Ok(None) => 1,
                            Err(_) => 2,
                        };
                    reads[outcome].fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { stop, acked, reads, tasks }
    }

    /// Stops the load; the writes it had acknowledged. Fails the test if a preloaded key ever
    /// read as not found.
    async fn finish(self, client: &Client) -> HashMap<Bytes, Version> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        client.settle().await;
        let acked = self.acked.lock().clone();
        let [found, missing, failed] = [0, 1, 2].map(|i| self.reads[i].load(Ordering::Relaxed));
        println!(
            "{} writes acknowledged; {found} reads of preloaded keys, {missing} not found, {failed} failed",
            acked.len()
        );
        assert!(acked.len() > 100, "the writers made progress");
        assert_eq!(missing, 0, "a preloaded key read as not found");
        acked
    }
}

/// Waits until every acknowledged write is on all N of its replicas in `ring`, after one
/// anti-entropy round on every node (a replica that refused a write placed by an older ring
/// while a change was agreed missed it, as any replica that fails a write does).
async fn on_all_replicas_after_repair(ring: &Ring, acked: &HashMap<Bytes, Version>) {
    for node in ring.nodes() {
        raw(node.addr).await.repair(v1::RepairRequest {}).await.expect("repair");
    }
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let short = short_of(ring, acked, 3).await;
        if short.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} acknowledged writes are not on all N replicas: {:?}",
            short.len(),
            &short[..short.len().min(8)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_added_under_load_lose_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let client = client_for(&cluster.ring);
    wait_until_up(&client).await;
    let preloaded = write_keys(&client, "pre", 300).await;
    assert_eq!(preloaded.len(), 300);
    client.settle().await;

    let load = Load::start(&client, &preloaded);

    let mut live: Vec<SocketAddr> = cluster.addrs.clone();
    let mut version = 1;
    for i in 3..5 {
        let addr = cluster.join(i);
        eventually(PATIENCE, "the new node serves the live ring", || async move {
            ring_of(addr).await.is_some()
        })
        .await;
        let id = format!("n{}", i + 1);
        let before = ring_of(live[0]).await.unwrap();
        change(live[0], add(&id, addr)).await.expect("ring add");
        live.push(addr);
        version += 2;
        let after = settled(&live, version).await;
        let plan =
            dynakv_ring::Plan::new(&before, dynakv_ring::Change::Add { id: id.clone(), addr })
                .unwrap();
        println!(
            "adding {id}: {:.3} of the key space moved, ideal {:.3} (ratio {:.3})",
            plan.moved_replicas,
            plan.ideal_replicas,
            plan.replica_ratio().unwrap()
        );
        assert!(plan.replica_ratio().unwrap() <= 1.15);
        assert_eq!(after.nodes().len(), i + 1);
    }
    let acked = load.finish(&client).await;
    let ring = settled(&live, version).await;
    // Right away on R replicas of the new ring; on all N after one anti-entropy round.
    check_on_replicas(&ring, &acked, 2).await;
    check_on_replicas(&ring, &preloaded, 2).await;
    on_all_replicas_after_repair(&ring, &acked).await;
}
