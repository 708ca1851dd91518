//! The client's live ring: the ring requests are placed by and one [`Replica`] per node, swapped
//! whole when a newer ring arrives.
//!
//! Every reply carries the node's ring version, and a node refuses a request placed by an older
//! ring (a `StaleRing` refusal). Each [`Replica`] reports versions above the client's to
//! [`RingSightings`]; the next round that notices one fetches the ring (`GetRing`) in the
//! background, and the retry layer fetches it before retrying a refused attempt. One refresh
//! runs at a time; a failed one is logged and tried again on the next sighting. Replicas are
//! kept across rings by node id (and address), so channels and health survive a change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dynakv_core::Hlc;
use dynakv_ring::Ring;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;

use crate::client::Shared;
use crate::error::{ClientError, ReplicaError};
use crate::options::ClientOptions;
use crate::replica::Replica;

/// One ring and a handle on each of its nodes: what a round is planned with, from start to end.
pub(crate) struct Topology {
    /// The ring.
    pub(crate) ring: Arc<Ring>,
    /// One handle per ring node, indexed like [`Ring::nodes`].
    pub(crate) replicas: Vec<Arc<Replica>>,
}

impl Topology {
    /// The topology of `ring`, reusing the handles of `previous` for nodes with the same id and
    /// address; every other node gets a new handle.
    pub(crate) fn build(
        ring: Ring,
        previous: Option<&Topology>,
        options: &ClientOptions,
        clock: &Arc<Hlc>,
        sightings: &Arc<RingSightings>,
    ) -> Result<Topology, ClientError> {
        let max_message = dynakv_proto::max_message_bytes(options.max_value_bytes);
        let replicas = ring
            .nodes()
            .iter()
            .map(|node| {
                let kept = previous.and_then(|previous| {
                    let index = previous.ring.node_index(&node.id).ok()?;
                    let same_addr = previous.ring.nodes()[index].addr == node.addr;
                    same_addr.then(|| previous.replicas[index].clone())
                });
                match kept {
                    Some(replica) => Ok(replica),
                    None => {
                        Replica::new(node, options, max_message, clock.clone(), sightings.clone())
                            .map(Arc::new)
                    }
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Topology { ring: Arc::new(ring), replicas })
    }

    /// The ring version requests planned with this topology carry.
    pub(crate) fn version(&self) -> u64 {
        self.ring.version()
    }

    /// The handle on the node `id`, if the ring has it.
    pub(crate) fn replica(&self, id: &str) -> Option<&Arc<Replica>> {
        Some(&self.replicas[self.ring.node_index(id).ok()?])
    }
}

/// The newest ring version any node has reported, and which node reported it first.
#[derive(Debug, Default)]
pub(crate) struct RingSightings {
    /// The highest ring version seen in a reply or a refusal.
    newest: AtomicU64,
    /// The node that reported `newest`: the first place to fetch it from.
    from: Mutex<Option<String>>,
}

impl RingSightings {
    /// Notes that node `id` serves ring `version`.
    pub(crate) fn saw(&self, id: &str, version: u64) {
        if self.newest.fetch_max(version, Ordering::AcqRel) < version {
            *self.from.lock() = Some(id.to_string());
        }
    }

    /// The newest version seen (0: none).
    pub(crate) fn newest(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    /// The node that reported the newest version.
    fn source(&self) -> Option<String> {
        self.from.lock().clone()
    }
}

/// Single flight for ring refreshes.
#[derive(Default)]
pub(crate) struct Refresher {
    /// Held while a refresh runs; later callers wait and then find the ring already fresh.
    running: tokio::sync::Mutex<()>,
    /// Set while a background refresh is spawned, so a burst of rounds spawns one.
    spawned: AtomicBool,
    /// Held while a new topology is built and stored, so two installs cannot interleave (a
    /// std mutex: nothing awaits under it).
    installing: Mutex<()>,
}

impl Shared {
    /// The topology a round is planned with. If a node has reported a newer ring, a refresh
    /// starts in the background (the round goes on with the ring it has).
    pub(crate) fn topology(self: &Arc<Self>) -> Arc<Topology> {
        let topology = self.topology.load_full();
        if self.sightings.newest() > topology.version() {
            self.refresh_in_background();
        }
        topology
    }

    /// Starts one background refresh unless one is already on its way.
    fn refresh_in_background(self: &Arc<Self>) {
        if self.refresher.spawned.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        let spawned = tokio::runtime::Handle::try_current().map(|runtime| {
            runtime.spawn(async move {
                if let Err(e) = shared.refresh(false).await {
                    tracing::debug!(error = %e, "ring refresh failed");
                }
                shared.refresher.spawned.store(false, Ordering::Release);
            })
        });
        if spawned.is_err() {
            self.refresher.spawned.store(false, Ordering::Release);
        }
    }

    /// Fetches the ring and swaps it in if it is newer; returns the live ring. Unless `always`,
    /// nothing is fetched when the client already has the newest version any node reported.
    /// The node that reported it is asked first, then every other node; the first reply at that
    /// version ends the search, else the newest reply wins.
    pub(crate) async fn refresh(&self, always: bool) -> Result<Arc<Ring>, ClientError> {
        let _running = self.refresher.running.lock().await;
        let topology = self.topology.load_full();
        let wanted = self.sightings.newest();
        if !always && wanted <= topology.version() {
            return Ok(topology.ring.clone());
        }
        let source = self.sightings.source();
        let mut order: Vec<&Arc<Replica>> = topology.replicas.iter().collect();
        order.sort_by_key(|replica| Some(&replica.id) != source.as_ref());
        let mut calls: FuturesUnordered<_> = order
            .into_iter()
            .map(|replica| async move { (replica.id.clone(), replica.get_ring().await) })
            .collect();
        let mut best: Option<Ring> = None;
        let mut errors = Vec::new();
        while let Some((id, reply)) = calls.next().await {
            match reply.and_then(|reply| {
                Ring::parse(&reply.ring).map_err(|e| {
                    ReplicaError::malformed(format!(
                        "the node sent a ring that does not parse: {e}"
                    ))
                })
            }) {
                Ok(ring) => {
                    if best.as_ref().is_none_or(|best| ring.version() > best.version()) {
                        best = Some(ring);
                    }
                    if best.as_ref().is_some_and(|b| b.version() >= wanted.max(1)) && !always {
                        break;
                    }
                }
                Err(cause) => errors.push(format!("{id}: {cause}")),
            }
        }
        let Some(ring) = best else {
            return Err(ClientError::RingUnavailable { errors: errors.join("; ") });
        };
        self.install(ring)
    }

    /// Swaps `ring` in if it is newer than the live one; returns the live ring.
    pub(crate) fn install(&self, ring: Ring) -> Result<Arc<Ring>, ClientError> {
        let _installing = self.refresher.installing.lock();
        let current = self.topology.load_full();
        if ring.version() <= current.version() {
            return Ok(current.ring.clone());
        }
        tracing::info!(from = current.version(), to = ring.version(), "ring refreshed");
        self.sightings.saw("", ring.version());
        let next =
            Topology::build(ring, Some(&current), &self.options, &self.clock, &self.sightings)?;
        let ring = next.ring.clone();
        self.topology.store(Arc::new(next));
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(version: u64, nodes: &[(&str, u16)]) -> Ring {
        let mut text = format!("version = {version}\n[replication]\nn = 3\nr = 2\nw = 2\n");
        for (id, port) in nodes {
            text += &format!("[[nodes]]\nid = \"{id}\"\naddr = \"127.0.0.1:{port}\"\n");
        }
        Ring::parse(&text).unwrap()
    }

    fn three() -> Ring {
        ring(1, &[("n1", 7401), ("n2", 7402), ("n3", 7403)])
    }

    #[test]
    fn sightings_keep_the_newest_version_and_who_reported_it() {
        let seen = RingSightings::default();
        seen.saw("n1", 3);
        seen.saw("n2", 5);
        seen.saw("n3", 4);
        assert_eq!((seen.newest(), seen.source().as_deref()), (5, Some("n2")));
    }

    #[tokio::test]
    async fn a_newer_ring_keeps_the_handles_of_the_nodes_it_shares() {
        let client = crate::Client::connect(three()).unwrap();
        let shared = &client.shared;
        let before = shared.topology.load_full();
        let n1 = before.replicas[0].clone();
        n1.health.record_failure();

        // n2 moved to another port; n4 is new.
        let newer = ring(3, &[("n1", 7401), ("n2", 7412), ("n3", 7403), ("n4", 7404)]);
        assert_eq!(shared.install(newer).unwrap().version(), 3);
        let after = shared.topology.load_full();
        assert_eq!(client.ring().version(), 3);
        assert!(Arc::ptr_eq(&after.replicas[0], &n1), "n1's channel and health survive");
        assert_eq!(after.replicas[0].health.consecutive_failures(), 1);
        assert!(!Arc::ptr_eq(&after.replicas[1], &before.replicas[1]), "n2 has a new address");
        assert!(Arc::ptr_eq(&after.replicas[2], &before.replicas[2]));
        assert_eq!(after.replicas[3].id, "n4");
        assert_eq!(after.replica("n4").unwrap().id, "n4");

        // An older or equal ring is never swapped in.
        assert_eq!(shared.install(three()).unwrap().version(), 3);
        assert!(Arc::ptr_eq(&shared.topology.load_full(), &after));
    }

    #[tokio::test]
    async fn a_round_that_sees_a_newer_version_refreshes_once_and_survives_failures() {
        // Nothing listens on these ports: the refresh fails, and the client keeps its ring.
        let client = crate::Client::builder(three())
            .request_timeout(std::time::Duration::from_millis(200))
            .build()
            .unwrap();
        let shared = &client.shared;
        assert!(Arc::ptr_eq(&shared.topology(), &shared.topology.load_full()));
        assert!(!shared.refresher.spawned.load(Ordering::Acquire), "nothing newer seen");
        shared.sightings.saw("n2", 2);
        let _ = shared.topology();
        assert!(shared.refresher.spawned.load(Ordering::Acquire), "a refresh started");
        let error = shared.refresh(false).await.unwrap_err();
        assert!(matches!(error, ClientError::RingUnavailable { .. }), "{error}");
        assert!(error.to_string().contains("n2: "), "{error}");
        for _ in 0..100 {
            if !shared.refresher.spawned.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!shared.refresher.spawned.load(Ordering::Acquire), "the failed refresh ended");
        assert_eq!(client.ring().version(), 1);
    }
}
