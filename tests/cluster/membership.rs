//! Live membership on real node processes: nodes added, decommissioned and replaced while the
//! cluster serves, with every acknowledged write checked on the new replicas' own storage.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
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
