//! Live membership: the ring every node stores, how the next one is agreed on, and how ranges
//! move to their new owners.
//!
//! - The ring file only bootstraps a node; the live ring is stored under the data directory
//!   ([`meta`]) and a restarted node serves the newer of the two.
//! - A change turns ring v into v+1 by single-decree Paxos among the nodes owning tokens in v
//!   ([`paxos`]). Ring v+1 is *moving*: reads stay with the current owners, writes go to the
//!   current and the target owners (joint quorum), and every node that gains ranges streams
//!   them ([`moves`]). Once every new owner has synced every range it gains, a node proposes
//!   v+2, the finished ring, and old owners drop what they no longer hold.
//! - Versions travel on every request and reply; a node that hears of a newer ring fetches it
//!   from its peers at once, and compares versions with one peer every `gossip_interval_ms`.
//!
//! # Layout
//! - [`meta`]: the durable files: ring, acceptor votes, move progress.
//! - [`paxos`]: the acceptor and the proposer.
//! - [`moves`]: streaming of gained ranges, move progress, finishing the move, clean-up.

pub mod meta;
pub mod moves;
pub mod paxos;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dynakv_proto::v1;
use dynakv_ring::{Change, Ring};
use tonic::Status;

use crate::service::NodeState;
use crate::topology::Topology;

pub use paxos::{Acceptor, Ballot, ProposeError};

/// A node's membership state, shared by its requests and background tasks.
pub struct Membership {
    /// Durable copies of the ring, the votes and the move progress.
    pub meta: meta::Meta,
    /// The Paxos acceptor's votes for the next ring version; a std mutex: held only to read or
    /// persist a vote, never across an await.
    pub acceptor: parking_lot::Mutex<Acceptor>,
    /// The highest ring version this node has heard of (from requests, replies and votes).
    heard: AtomicU64,
    /// Wakes the membership task when a newer ring is heard of or adopted.
    pub wake: tokio::sync::Notify,
    /// Held (shared) by every write from its ring check until its commit, and exclusively while
    /// a new ring is swapped in: a node reports a new ring only once every write it admitted
    /// under the old one is stored, so a new owner's snapshot, taken once every node serves the
    /// new ring, holds every such write.
    pub admission: tokio::sync::RwLock<()>,
    /// One proposal at a time from this node.
    pub proposing: tokio::sync::Mutex<()>,
    /// The progress of the ranges this node gains in the move in progress.
    pub moves: parking_lot::Mutex<moves::Moves>,
}

impl Membership {
    /// Membership state over `meta`, with the votes and move progress it holds.
    pub fn open(meta: meta::Meta) -> std::io::Result<Membership> {
        let acceptor = meta.load(meta::ACCEPTOR)?.unwrap_or_default();
        let moves = meta.load(meta::MOVES)?.unwrap_or_default();
        Ok(Membership {
            meta,
            acceptor: parking_lot::Mutex::new(acceptor),
            heard: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            admission: tokio::sync::RwLock::new(()),
            proposing: tokio::sync::Mutex::new(()),
            moves: parking_lot::Mutex::new(moves),
        })
    }

    /// Notes that some node serves ring version `version`; the membership task fetches it.
    pub fn heard_of(&self, version: u64) {
        if self.heard.fetch_max(version, Ordering::Relaxed) < version {
            self.wake.notify_one();
        }
    }

    /// The stored ring, if there is one.
    pub fn stored_ring(&self) -> Result<Option<Ring>, String> {
        let text = self.meta.read(meta::RING).map_err(|e| e.to_string())?;
        text.map(|text| Ring::parse(&text).map_err(|e| format!("stored ring: {e}"))).transpose()
    }
}

/// Serves `ring` from now on if it is newer than the node's: stores it durably first, then
/// swaps it in. True when it was adopted.
pub async fn adopt(state: &NodeState, ring: Ring) -> bool {
    if ring.version() <= state.ring_version() {
        return false;
    }
    let _no_write_in_flight = state.membership.admission.write().await;
    let current = state.topology();
    if ring.version() <= current.ring.version() {
        return false;
    }
    if let Err(e) = state.membership.meta.write(meta::RING, &ring.to_toml()) {
        tracing::error!(node = %state.id, version = ring.version(), error = %e, "cannot store the new ring; not adopting it");
        return false;
    }
    let version = ring.version();
    let moving = ring.is_moving();
    let topology = match Topology::new(Arc::new(ring), &state.id, Some(&current), state.max_message)
    {
        Ok(topology) => topology,
        Err(e) => {
            tracing::error!(node = %state.id, version, error = %e, "cannot connect to the new ring's nodes");
            return false;
        }
    };
    let me = topology.me.map(|i| topology.ring.nodes()[i].state);
    state.topology.store(Arc::new(topology));
    state.membership.heard_of(version);
    state.membership.wake.notify_one();
    crate::metrics::ring_version(&state.label, version);
    match me {
        Some(my_state) => {
            tracing::info!(node = %state.id, version, moving, state = %my_state, "serving a new ring")
        }
        None => {
            tracing::info!(node = %state.id, version, "serving a new ring, which does not list this node")
        }
    }
    true
}

/// Adopts a chosen ring and tells every node of it and of the ring before it.
pub async fn commit(state: &NodeState, ring: Ring) {
    let before = state.topology();
    adopt(state, ring.clone()).await;
    let after = state.topology();
    let text = ring.to_toml();
    let mut told = Vec::new();
    let calls = after.peers().chain(before.peers()).filter_map(|(_, peer)| {
        if told.contains(&peer.id) {
            return None;
        }
        told.push(peer.id.clone());
        let request = v1::CommitRequest { ring: text.clone() };
        let peer = peer.clone();
        Some(async move {
            let reply = peer.call(|mut c| async move { c.commit(request).await }).await;
            if let Err(status) = reply {
                tracing::warn!(peer = %peer.id, error = %status, "could not tell a node of the new ring; it will learn it from its peers");
            }
        })
    });
    futures::future::join_all(calls).await;
}

/// Asks every peer for its ring and adopts the newest one, if newer than this node's.
pub async fn learn(state: &NodeState) {
    let topology = state.topology();
    let calls = topology.peers().map(|(_, peer)| async move {
        let reply = peer.call(|mut c| async move { c.get_ring(v1::GetRingRequest {}).await }).await;
        reply.ok().and_then(|reply| Ring::parse(&reply.ring).ok())
    });
    let newest =
        futures::future::join_all(calls).await.into_iter().flatten().max_by_key(Ring::version);
    if let Some(ring) = newest {
        adopt(state, ring).await;
    }
}

/// Fetches the ring a member at `addr` serves, for a node joining through it.
pub async fn fetch_ring(
    addr: SocketAddr,
    ring: &Ring,
    me: &str,
    max_message: usize,
) -> Result<Ring, String> {
    let node = dynakv_ring::NodeSpec {
        id: "member".into(),
        addr,
        metrics: None,
        state: Default::default(),
    };
    let peer =
        crate::peers::Peer::connect(&node, ring, me, max_message).map_err(|e| e.to_string())?;
    let mut last = String::new();
    for attempt in 0..20u64 {
        match peer.call(|mut c| async move { c.get_ring(v1::GetRingRequest {}).await }).await {
            Ok(reply) => {
                return Ring::parse(&reply.ring)
                    .map_err(|e| format!("{addr} sent a ring that does not parse: {e}"));
            }
            Err(status) => last = status.message().to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(10))).await;
    }
    Err(format!("cannot fetch the ring from {addr}: {last}"))
}

/// The membership task: learns newer rings, completes votes left half-done, drives the move of
/// this node's gains, finishes the move once every new owner is done, and cleans up after it.
pub async fn run(state: Arc<NodeState>) {
    let gossip = Duration::from_millis(state.ring().config().membership.gossip_interval_ms);
    let mut quiet_rounds = 0u32;
    // A node that was down during a ring change learns of it first thing, from its peers.
    tokio::select! {
        _ = state.stopping.cancelled() => return,
        _ = learn(&state) => {}
    }
    loop {
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = state.membership.wake.notified() => {}
            _ = tokio::time::sleep(gossip) => {}
        }
        let step = async {
            if state.membership.heard.load(Ordering::Relaxed) > state.ring_version() {
                learn(&state).await;
            } else {
                gossip_once(&state).await;
            }
            // A vote accepted long ago and never committed: finish it (whatever was chosen).
            if state.pending_acceptance().is_some() {
                quiet_rounds += 1;
                if quiet_rounds >= 3 {
                    quiet_rounds = 0;
                    let _ = paxos::propose(&state, |ring| Some(Ok(ring.clone()))).await;
                }
            } else {
                quiet_rounds = 0;
            }
            moves::step(&state).await;
        };
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = step => {}
        }
    }
}

/// Compares ring versions with one random peer, fetching its ring if newer.
async fn gossip_once(state: &NodeState) {
    let topology = state.topology();
    let peers: Vec<_> = topology.peers().map(|(_, p)| p.clone()).collect();
    if peers.is_empty() {
        return;
    }
    let peer = &peers[rand::random_range(0..peers.len())];
    if let Ok(health) = peer.call(|mut c| async move { c.health(v1::HealthRequest {}).await }).await
        && health.ring_version > topology.ring.version()
    {
        state.membership.heard_of(health.ring_version);
        learn(state).await;
    }
}

/// Serves `ChangeRing`: agrees on the ring that starts the change and returns it.
pub async fn change_ring(
    state: &NodeState,
    request: v1::ChangeRingRequest,
) -> Result<v1::RingReply, Status> {
    use v1::change_ring_request::Change as Wire;
    let addr = |text: &str| -> Result<SocketAddr, Status> {
        text.parse().map_err(|e| Status::invalid_argument(format!("address {text:?}: {e}")))
    };
    let change = match request.change {
        Some(Wire::Add(add)) => Change::Add { id: add.id, addr: addr(&add.addr)? },
        Some(Wire::Remove(remove)) => Change::Remove { id: remove.id, dead: remove.dead },
        Some(Wire::Replace(r)) => Change::Replace { dead: r.dead, id: r.id, addr: addr(&r.addr)? },
        None => return Err(Status::invalid_argument("change_ring names no change")),
    };
    for id in match &change {
        Change::Add { id, .. } | Change::Remove { id, .. } => vec![id],
        Change::Replace { dead, id, .. } => vec![dead, id],
    } {
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("a node id must not be empty"));
        }
    }
    tracing::info!(node = %state.id, %change, "membership change asked for");
    let ring = paxos::propose(state, |ring| Some(ring.begin(&change))).await?;
    let ring = ring.expect("a change always proposes a ring");
    tracing::info!(node = %state.id, %change, version = ring.version(), "membership change agreed; moving ranges");
    Ok(v1::RingReply { version: ring.version(), ring: ring.to_toml() })
}

/// Serves `GetRing`.
pub fn get_ring(state: &NodeState) -> v1::RingReply {
    let ring = state.ring();
    v1::RingReply { version: ring.version(), ring: ring.to_toml() }
}

/// Serves `Commit`: adopts the ring if it is newer.
pub async fn commit_request(
    state: &NodeState,
    request: v1::CommitRequest,
) -> Result<v1::RingReply, Status> {
    let ring = Ring::parse(&request.ring).map_err(|e| Status::invalid_argument(e.to_string()))?;
    adopt(state, ring).await;
    Ok(get_ring(state))
}
