//! The ring a node serves right now, with everything derived from it: the node's own place in
//! it, a channel per other node, and the hint owners. Swapped whole when a newer ring arrives, so
//! a request or a background pass works with one consistent ring from start to end.

use std::collections::HashMap;
use std::sync::Arc;

use dynakv_ring::{NodeIndex, Ring};

use crate::peers::Peer;
use crate::service::owner_hash;

/// One ring and what the node derives from it.
pub struct Topology {
    /// The ring.
    pub ring: Arc<Ring>,
    /// This node's position in the ring's node list; `None` while it is not in the ring (a node
    /// that joined but has not been added, or one that was removed).
    pub me: Option<NodeIndex>,
    /// A channel to every other node, indexed like the ring's nodes; `None` for this node.
    peers: Vec<Option<Arc<Peer>>>,
    /// Node index by the hash hints are filed under.
    owners: HashMap<u64, NodeIndex>,
}

impl Topology {
    /// The topology of `ring` for node `id`, reusing the channels (and health) of `previous` for
    /// nodes that keep their address.
    pub fn new(
        ring: Arc<Ring>,
        id: &str,
        previous: Option<&Topology>,
        max_message: usize,
    ) -> Result<Topology, dynakv_tls::TlsError> {
        let me = ring.nodes().iter().position(|node| node.id == id);
        let mut peers = Vec::with_capacity(ring.nodes().len());
        for (i, node) in ring.nodes().iter().enumerate() {
            if Some(i) == me {
                peers.push(None);
                continue;
            }
            let reused = previous.and_then(|p| {
                p.peers.iter().flatten().find(|peer| peer.id == node.id && peer.addr == node.addr)
            });
            peers.push(Some(match reused {
                Some(peer) => peer.clone(),
                None => Arc::new(Peer::connect(node, &ring, id, max_message)?),
            }));
        }
        let owners = ring.nodes().iter().enumerate().map(|(i, n)| (owner_hash(&n.id), i)).collect();
        Ok(Topology { ring, me, peers, owners })
    }

    /// The peer at `index`; `None` for this node itself.
    pub fn peer(&self, index: NodeIndex) -> Option<&Arc<Peer>> {
        self.peers.get(index).and_then(Option::as_ref)
    }

    /// Every other node of the ring, with its index.
    pub fn peers(&self) -> impl Iterator<Item = (NodeIndex, &Arc<Peer>)> {
        self.peers.iter().enumerate().filter_map(|(i, p)| Some((i, p.as_ref()?)))
    }

    /// The node whose hints are filed under `hash`.
    pub fn owner(&self, hash: u64) -> Option<NodeIndex> {
        self.owners.get(&hash).copied()
    }

    /// True when this node is a replica of the token in either placement of its ring.
    pub fn holds(&self, token: u64) -> bool {
        self.me.is_some_and(|me| self.ring.holds(token, me))
    }
}
