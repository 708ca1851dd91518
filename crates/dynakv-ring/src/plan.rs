//! Plans for membership changes: what adding or removing a node would move, before anything moves.
//!
//! A [`Plan`] compares the ring before a change with the ring after it, piece by piece: the token
//! boundaries of both rings cut the token space into spans that have one preference list in each
//! ring. A span *moves* when its replica set changes (a new owner must receive its keys, an old
//! one may drop them); its primary may change without its replica set changing, which moves no
//! data but shifts coordination. Shares are fractions of the token space, which hashing makes
//! the expected fraction of keys.
//!
//! The ideal movement is the least any placement could achieve: adding a node to `n` nodes that
//! own tokens must hand it `1/(n+1)` of the primaries and `N/(n+1)` of the replicas; removing a
//! node must hand out exactly what it held.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::config::NodeSpec;
use crate::error::PlanError;
use crate::node_state::NodeState;
use crate::ring::{Ring, span_contains, span_share};

/// A proposed membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Place a new node (or a joining node, at the address it joined with) on the ring.
    Add {
        /// The node's id; its tokens derive from it.
        id: String,
        /// Where the node serves gRPC.
        addr: SocketAddr,
    },
    /// Take a node off the ring: decommission it (its ranges are streamed from it and the other
    /// holders), or, with `dead`, write it off (survivors re-replicate its ranges without it).
    Remove {
        /// The node's id.
        id: String,
        /// The node is gone for good: nothing is streamed from it.
        dead: bool,
    },
    /// Put a new node in the place of one that is gone for good.
    Replace {
        /// The node that is gone.
        dead: String,
        /// The new node's id.
        id: String,
        /// Where the new node serves gRPC.
        addr: SocketAddr,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Add { id, addr } => write!(f, "add {id} at {addr}"),
            Change::Remove { id, dead: false } => write!(f, "remove {id}"),
            Change::Remove { id, dead: true } => write!(f, "remove dead {id}"),
            Change::Replace { dead, id, addr } => {
                write!(f, "replace dead {dead} by {id} at {addr}")
            }
        }
    }
}

impl Ring {
    /// The ring that starts `change`, one version later: it is `moving`, with the added node
    /// joining, the removed one leaving (or dead), so writes reach both the current and the
    /// target owners while ranges stream. Removing a node that owns no tokens yet takes it off at
    /// once. The checks are those of [`Plan::new`], plus one change at a time.
    pub fn begin(&self, change: &Change) -> Result<Ring, PlanError> {
        if self.is_moving() {
            return Err(PlanError::Busy { version: self.version() });
        }
        let mut config = self.config().clone();
        match change {
            Change::Add { id, addr } => {
                check_new_node(self, id, *addr)?;
                join(&mut config.nodes, id, *addr);
                config.moving = true;
            }
            Change::Remove { id, dead } => {
                let index = check_removable(self, id)?;
                if config.nodes[index].state.owns_tokens() {
                    config.nodes[index].state =
                        if *dead { NodeState::Dead } else { NodeState::Leaving };
                    config.moving = true;
                } else {
                    config.nodes.remove(index);
                }
            }
            Change::Replace { dead, id, addr } => {
                let index = self.node_index(dead).map_err(|_| unknown(self, dead))?;
                let state = config.nodes[index].state;
                if !state.owns_tokens() {
                    return Err(PlanError::NotReplaceable { id: dead.clone(), state });
                }
                check_new_node(self, id, *addr)?;
                config.nodes[index].state = NodeState::Dead;
                join(&mut config.nodes, id, *addr);
                config.moving = true;
            }
        }
        config.version += 1;
        Ok(Ring::new(config)?)
    }
}

/// Lists node `id` at `addr` as joining, unless it is listed already (as a joining node there).
fn join(nodes: &mut Vec<NodeSpec>, id: &str, addr: SocketAddr) {
    if !nodes.iter().any(|node| node.id == id) {
        nodes.push(node_at(id, addr, NodeState::Joining));
    }
}

/// A ring-file entry for node `id` at `addr`, metrics at the default address.
fn node_at(id: &str, addr: SocketAddr, state: NodeState) -> NodeSpec {
    NodeSpec { id: id.to_string(), addr, metrics: None, state }
}

/// The error for an id the ring does not list.
fn unknown(ring: &Ring, id: &str) -> PlanError {
    PlanError::UnknownNode {
        id: id.to_string(),
        known: ring.nodes().iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(", "),
    }
}

/// Checks that `id` at `addr` may be added: a new id and address, or a joining node at the
/// address it joined with.
fn check_new_node(ring: &Ring, id: &str, addr: SocketAddr) -> Result<(), PlanError> {
    if let Some(node) = ring.nodes().iter().find(|node| node.id == id)
        && (node.state != NodeState::Joining || node.addr != addr)
    {
        return Err(PlanError::DuplicateId {
            id: id.to_string(),
            addr: node.addr,
            state: node.state,
        });
    }
    if let Some(holder) = ring.nodes().iter().find(|node| node.addr == addr && node.id != id) {
        return Err(PlanError::DuplicateAddr { addr, id: holder.id.clone() });
    }
    Ok(())
}

/// The index of the node `id`, once removing it would leave at least N nodes owning tokens.
fn check_removable(ring: &Ring, id: &str) -> Result<usize, PlanError> {
    let index =
        ring.nodes().iter().position(|node| node.id == id).ok_or_else(|| unknown(ring, id))?;
    let owns_tokens = ring.nodes()[index].state.owns_tokens();
    let remaining = ring.placed_nodes() - usize::from(owns_tokens);
    let n = ring.replication().n;
    if remaining < n {
        return Err(PlanError::BelowN { id: id.to_string(), remaining, n });
    }
    Ok(index)
}

/// A span of the token space whose replica set changes.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeMove {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
    /// Replica ids before the change, primary first.
    pub from: Vec<String>,
    /// Replica ids after the change, primary first.
    pub to: Vec<String>,
}

impl RangeMove {
    /// The fraction of the token space the span covers.
    pub fn share(&self) -> f64 {
        span_share(self.start, self.end)
    }

    /// True when `token` falls in the span.
    pub fn contains(&self, token: u64) -> bool {
        span_contains(self.start, self.end, token)
    }

    /// Nodes that become replicas of the span and must receive its keys.
    pub fn gaining(&self) -> impl Iterator<Item = &str> {
        self.to.iter().filter(|id| !self.from.contains(id)).map(String::as_str)
    }

    /// Nodes that stop being replicas of the span and may drop its keys once it has moved.
    pub fn losing(&self) -> impl Iterator<Item = &str> {
        self.from.iter().filter(|id| !self.to.contains(id)).map(String::as_str)
    }
}

/// How one node's shares change; a share is 0 in a ring the node is not placed in.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeShift {
    /// The node's id.
    pub id: String,
    /// Where the node serves.
    pub addr: SocketAddr,
    /// The node's state before the change; `None` when the change adds it.
    pub state_before: Option<NodeState>,
    /// The node's state after the change; `None` when the change removes it.
    pub state_after: Option<NodeState>,
    /// Share of the token space the node is primary for, before.
    pub primary_before: f64,
    /// Share of the token space the node is primary for, after.
    pub primary_after: f64,
    /// Share of the token space the node is a replica for, before.
    pub replica_before: f64,
    /// Share of the token space the node is a replica for, after.
    pub replica_after: f64,
    /// Share of the token space the node becomes a replica of (keys it receives).
    pub gains: f64,
    /// Share of the token space the node stops being a replica of (keys it hands off).
    pub losses: f64,
}

/// Keys handed from one node to another: spans `from` stops holding and `to` starts holding.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// The node that stops being a replica.
    pub from: String,
    /// The node that becomes a replica in its place.
    pub to: String,
    /// Share of the token space handed over.
    pub share: f64,
    /// How many moving spans it is spread over.
    pub ranges: usize,
}

/// What a membership change would do to the ring, computed without changing anything.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The change planned.
    pub change: Change,
    /// The ring as it is.
    pub before: Ring,
    /// The ring after the change, one version later.
    pub after: Ring,
    /// Spans whose replica set changes, in token order; adjacent spans with the same replicas
    /// before and after are merged.
    pub moves: Vec<RangeMove>,
    /// Every node of either ring: the nodes of `before` in order, then a node the change adds.
    pub nodes: Vec<NodeShift>,
    /// Who hands keys to whom, largest share first.
    pub transfers: Vec<Transfer>,
    /// Share of the key space whose primary changes.
    pub moved_primary: f64,
    /// Share of the key space whose replica set changes: the keys that must be streamed.
    pub moved_replicas: f64,
    /// The least `moved_primary` any placement could achieve for this change.
    pub ideal_primary: f64,
    /// The least `moved_replicas` any placement could achieve for this change.
    pub ideal_replicas: f64,
}

impl Plan {
    /// Plans `change` on `ring`, or says why it cannot be made.
    pub fn new(ring: &Ring, change: Change) -> Result<Plan, PlanError> {
        match change {
            Change::Add { id, addr } => Plan::add(ring, &id, addr),
            Change::Remove { id, dead } => Plan::remove(ring, &id, dead),
            Change::Replace { dead, id, addr } => Plan::replace(ring, &dead, &id, addr),
        }
    }

    /// Plans placing node `id` at `addr` on `ring`. A node already in the ring as joining, at
    /// that address, is placed where it is; any other node with that id or address is an error.
    pub fn add(ring: &Ring, id: &str, addr: SocketAddr) -> Result<Plan, PlanError> {
        check_new_node(ring, id, addr)?;
        let mut config = ring.config().clone();
        let existing = config.nodes.iter().position(|node| node.id == id);
        match existing {
            Some(i) => config.nodes[i].state = NodeState::Normal,
            None => config.nodes.push(node_at(id, addr, NodeState::Normal)),
        }
        config.version += 1;
        let after = Ring::new(config)?;
        let n = ring.replication().n as f64;
        let owners_after = after.placed_nodes() as f64;
        let ideal = (1.0 / owners_after, n / owners_after);
        let change = Change::Add { id: id.to_string(), addr };
        Ok(Plan::compare(change, ring.clone(), after, ideal))
    }

    /// Plans taking node `id` off `ring` (written off if `dead`); at least N nodes owning tokens
    /// must remain.
    pub fn remove(ring: &Ring, id: &str, dead: bool) -> Result<Plan, PlanError> {
        let index = check_removable(ring, id)?;
        let mut config = ring.config().clone();
        config.nodes.remove(index);
        config.version += 1;
        let after = Ring::new(config)?;
        let ideal = (ring.primary_shares()[index], ring.replica_shares()[index]);
        Ok(Plan::compare(Change::Remove { id: id.to_string(), dead }, ring.clone(), after, ideal))
    }

    /// Plans putting node `id` at `addr` in the place of `dead`, which owns tokens.
    pub fn replace(ring: &Ring, dead: &str, id: &str, addr: SocketAddr) -> Result<Plan, PlanError> {
        let index = ring.node_index(dead).map_err(|_| unknown(ring, dead))?;
        let state = ring.nodes()[index].state;
        if !state.owns_tokens() {
            return Err(PlanError::NotReplaceable { id: dead.to_string(), state });
        }
        check_new_node(ring, id, addr)?;
        let mut config = ring.config().clone();
        config.nodes.retain(|node| node.id != dead && node.id != id);
        config.nodes.push(node_at(id, addr, NodeState::Normal));
        config.version += 1;
        let after = Ring::new(config)?;
        let ideal = (ring.primary_shares()[index], ring.replica_shares()[index]);
        let change = Change::Replace { dead: dead.to_string(), id: id.to_string(), addr };
        Ok(Plan::compare(change, ring.clone(), after, ideal))
    }

    /// `moved_primary / ideal_primary`: 1.0 is the least movement possible; `None` when the
    /// change moves nothing by design (a joining node removed).
    pub fn primary_ratio(&self) -> Option<f64> {
        (self.ideal_primary > 0.0).then(|| self.moved_primary / self.ideal_primary)
    }

    /// `moved_replicas / ideal_replicas`, as [`Plan::primary_ratio`].
    pub fn replica_ratio(&self) -> Option<f64> {
        (self.ideal_replicas > 0.0).then(|| self.moved_replicas / self.ideal_replicas)
    }

    /// Walks the spans cut by the tokens of both rings and accounts for every one that moves.
    fn compare(change: Change, before: Ring, after: Ring, ideal: (f64, f64)) -> Plan {
        let mut nodes: Vec<NodeShift> = Vec::new();
        let mut slot: HashMap<String, usize> = HashMap::new();
        for (ring, is_after) in [(&before, false), (&after, true)] {
            let primary = ring.primary_shares();
            let replica = ring.replica_shares();
            for (i, node) in ring.nodes().iter().enumerate() {
                let at = *slot.entry(node.id.clone()).or_insert_with(|| {
                    nodes.push(NodeShift {
                        id: node.id.clone(),
                        addr: node.addr,
                        state_before: None,
                        state_after: None,
                        primary_before: 0.0,
                        primary_after: 0.0,
                        replica_before: 0.0,
                        replica_after: 0.0,
                        gains: 0.0,
                        losses: 0.0,
                    });
                    nodes.len() - 1
                });
                let shift = &mut nodes[at];
                if is_after {
                    shift.state_after = Some(node.state);
                    (shift.primary_after, shift.replica_after) = (primary[i], replica[i]);
                } else {
                    shift.state_before = Some(node.state);
                    (shift.primary_before, shift.replica_before) = (primary[i], replica[i]);
                }
            }
        }

        let mut bounds: Vec<u64> = before.tokens().iter().chain(after.tokens()).copied().collect();
        bounds.sort_unstable();
        bounds.dedup();
        let ids = |ring: &Ring, token: u64| -> Vec<String> {
            ring.preference_list(token).iter().map(|&i| ring.nodes()[i].id.clone()).collect()
        };
        let mut moves: Vec<RangeMove> = Vec::new();
        let mut flows: HashMap<(String, String), (f64, usize)> = HashMap::new();
        let (mut moved_primary, mut moved_replicas) = (0.0, 0.0);
        for (i, &end) in bounds.iter().enumerate() {
            let start = if i == 0 { bounds[bounds.len() - 1] } else { bounds[i - 1] };
            let share = span_share(start, end);
            let (from, to) = (ids(&before, end), ids(&after, end));
            if from[0] != to[0] {
                moved_primary += share;
            }
            let span = RangeMove { start, end, from, to };
            let losing: Vec<&str> = span.losing().collect();
            let gaining: Vec<&str> = span.gaining().collect();
            if losing.is_empty() && gaining.is_empty() {
                continue;
            }
            moved_replicas += share;
            for id in &gaining {
                nodes[slot[*id]].gains += share;
            }
            for id in &losing {
                nodes[slot[*id]].losses += share;
            }
            // The k-th node leaving the span hands over to the k-th node entering it; a
            // one-node change has exactly one of each.
            for (from, to) in losing.iter().zip(&gaining) {
                let flow = flows.entry((from.to_string(), to.to_string())).or_default();
                flow.0 += share;
                flow.1 += 1;
            }
            match moves.last_mut() {
                Some(last) if last.end == start && last.from == span.from && last.to == span.to => {
                    last.end = end;
                }
                _ => moves.push(span),
            }
        }
        let mut transfers: Vec<Transfer> = flows
            .into_iter()
            .map(|((from, to), (share, ranges))| Transfer { from, to, share, ranges })
            .collect();
        transfers.sort_by(|a, b| {
            b.share.total_cmp(&a.share).then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
        });
        Plan {
            change,
            before,
            after,
            moves,
            nodes,
            transfers,
            moved_primary,
            moved_replicas,
            ideal_primary: ideal.0,
            ideal_replicas: ideal.1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::key_token;

    /// A ring of nodes `n1..=nodes` at ports 7401.., with `n` replicas and `vnodes` tokens each.
    fn ring(nodes: usize, n: usize, vnodes: u32) -> Ring {
        Ring::parse(&ring_text(nodes, n, vnodes, "")).unwrap()
    }

    fn ring_text(nodes: usize, n: usize, vnodes: u32, last_node_extra: &str) -> String {
        let mut text = format!("vnodes = {vnodes}\n[replication]\nn = {n}\nr = 1\nw = 1\n");
        for i in 1..=nodes {
            text += &format!("[[nodes]]\nid = \"n{i}\"\naddr = \"127.0.0.1:{}\"\n", 7400 + i);
        }
        text + last_node_extra
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn replica_ids(ring: &Ring, token: u64) -> Vec<String> {
        let mut ids: Vec<String> =
            ring.preference_list(token).iter().map(|&i| ring.nodes()[i].id.clone()).collect();
        ids.sort();
        ids
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn adding_a_node_hands_it_exactly_what_moves() {
        let before = ring(5, 3, 64);
        let plan = Plan::add(&before, "n6", addr(7406)).unwrap();
        assert_eq!(plan.after.version(), before.version() + 1);
        assert_eq!(plan.after.nodes().len(), 6);
        assert!(close(plan.ideal_primary, 1.0 / 6.0));
        assert!(close(plan.ideal_replicas, 3.0 / 6.0));
        let new = plan.nodes.iter().find(|s| s.id == "n6").unwrap();
        assert_eq!((new.state_before, new.state_after), (None, Some(NodeState::Normal)));
        // Every moving span gains the new node and loses exactly one old one.
        for span in &plan.moves {
            assert_eq!(span.gaining().collect::<Vec<_>>(), ["n6"], "{span:?}");
            assert_eq!(span.losing().count(), 1, "{span:?}");
        }
        assert!(close(plan.moved_replicas, new.gains));
        assert!(close(new.gains, new.replica_after));
        assert!(close(new.primary_after, plan.moved_primary));
        let lost: f64 = plan.nodes.iter().map(|s| s.losses).sum();
        assert!(close(lost, plan.moved_replicas));
        for shift in &plan.nodes {
            let net = shift.replica_after - shift.replica_before;
            assert!(close(net, shift.gains - shift.losses), "{shift:?}");
        }
        let handed: f64 = plan.transfers.iter().map(|t| t.share).sum();
        assert!(close(handed, plan.moved_replicas));
        assert!(plan.transfers.iter().all(|t| t.to == "n6"));
        assert!(plan.transfers.windows(2).all(|w| w[0].share >= w[1].share));
    }

    #[test]
    fn removing_a_node_hands_out_exactly_what_it_held() {
        let before = ring(5, 3, 64);
        let plan = Plan::remove(&before, "n2", false).unwrap();
        assert_eq!(plan.after.nodes().len(), 4);
        assert!(plan.after.node_index("n2").is_err());
        let gone = plan.nodes.iter().find(|s| s.id == "n2").unwrap();
        assert_eq!(gone.state_after, None);
        assert!(close(plan.ideal_primary, before.primary_shares()[1]));
        assert!(close(plan.moved_replicas, gone.replica_before));
        assert!(close(gone.losses, gone.replica_before));
        assert!(close(plan.moved_primary, gone.primary_before));
        assert_eq!(plan.replica_ratio().map(|r| (r * 1e6).round()), Some(1e6));
        for span in &plan.moves {
            assert_eq!(span.losing().collect::<Vec<_>>(), ["n2"], "{span:?}");
            assert_eq!(span.gaining().count(), 1, "{span:?}");
        }
    }

    /// The spans' arithmetic agrees with the ring itself, key by key.
    #[test]
    fn moving_spans_hold_exactly_the_keys_whose_replicas_change() {
        let before = ring(4, 3, 16);
        for plan in [
            Plan::add(&before, "n5", addr(7405)).unwrap(),
            Plan::remove(&before, "n1", false).unwrap(),
        ] {
            for k in 0..20_000u32 {
                let token = key_token(&k.to_be_bytes());
                let changes = replica_ids(&plan.before, token) != replica_ids(&plan.after, token);
                let span = plan.moves.iter().find(|m| m.contains(token));
                assert_eq!(changes, span.is_some(), "key {k} token {token:#x}");
                if let Some(span) = span {
                    let mut to = span.to.clone();
                    to.sort();
                    assert_eq!(to, replica_ids(&plan.after, token));
                }
            }
        }
    }

    #[test]
    fn invalid_changes_are_refused_with_their_reason() {
        let before = ring(3, 3, 8);
        let err = |r: Result<Plan, PlanError>| r.unwrap_err();
        assert!(matches!(
            err(Plan::add(&before, "n2", addr(7999))),
            PlanError::DuplicateId { ref id, state: NodeState::Normal, .. } if id == "n2"
        ));
        assert_eq!(
            err(Plan::add(&before, "n4", addr(7401))).to_string(),
            "address 127.0.0.1:7401 is already used by node \"n1\""
        );
        assert_eq!(
            err(Plan::remove(&before, "n9", false)).to_string(),
            "node id \"n9\" is not in the ring (known: n1, n2, n3)"
        );
        assert_eq!(
            err(Plan::remove(&before, "n3", false)).to_string(),
            "cannot remove \"n3\": 2 nodes would remain, fewer than replication.n = 3 replicas \
             per key"
        );
        assert!(matches!(err(Plan::add(&before, " ", addr(7404))), PlanError::Ring(_)));
        assert_eq!(before.nodes().len(), 3, "the ring is left as it was");
        assert_eq!(before.version(), 1);
    }

    #[test]
    fn a_joining_node_is_placed_by_adding_it_and_moves_nothing_when_removed() {
        let joining = "state = \"joining\"\n";
        let before = Ring::parse(&ring_text(4, 3, 16, joining)).unwrap();
        assert_eq!(before.placed_nodes(), 3);
        let add = Plan::add(&before, "n4", addr(7404)).unwrap();
        assert_eq!(add.after.nodes().len(), 4);
        assert_eq!(add.after.nodes()[3].state, NodeState::Normal);
        assert!(close(add.ideal_primary, 0.25));
        let n4 = add.nodes.iter().find(|s| s.id == "n4").unwrap();
        assert_eq!(n4.state_before, Some(NodeState::Joining));
        assert_eq!(n4.replica_before, 0.0);
        assert!(close(n4.gains, add.moved_replicas));

        let elsewhere = Plan::add(&before, "n4", addr(7999)).unwrap_err().to_string();
        assert_eq!(elsewhere, "node id \"n4\" is already in the ring (at 127.0.0.1:7404, joining)");

        let remove = Plan::remove(&before, "n4", false).unwrap();
        assert!(remove.moves.is_empty());
        assert_eq!((remove.moved_replicas, remove.primary_ratio()), (0.0, None));
    }

    /// Adding a node to `nodes` nodes: (primary moved / ideal 1/(n+1), replicas moved by 100,000
    /// keys / ideal N/(n+1), primary moved, replicas moved by keys).
    fn measure_add(nodes: usize, vnodes: u32) -> (f64, f64, f64, f64) {
        let n = 3;
        let before = ring(nodes, n, vnodes);
        let plan = Plan::add(&before, &format!("n{}", nodes + 1), addr(9000)).unwrap();
        const KEYS: u32 = 100_000;
        let changed = (0..KEYS)
            .filter(|k| {
                let token = key_token(format!("user:{k}").as_bytes());
                replica_ids(&plan.before, token) != replica_ids(&plan.after, token)
            })
            .count();
        let by_keys = changed as f64 / f64::from(KEYS);
        assert!(
            (by_keys - plan.moved_replicas).abs() < 0.01,
            "{nodes}->{}: keys say {by_keys}, token shares say {}",
            nodes + 1,
            plan.moved_replicas
        );
        let ideal_primary = 1.0 / (nodes + 1) as f64;
        let ideal_replicas = n as f64 / (nodes + 1) as f64;
        assert!(close(plan.ideal_primary, ideal_primary));
        (plan.moved_primary / ideal_primary, by_keys / ideal_replicas, plan.moved_primary, by_keys)
    }

    /// The bound: adding a node to n nodes moves at most 1.15 x 1/(n+1) of the keys.
    /// `cargo test -p dynakv-ring movement -- --nocapture` prints the table.
    #[test]
    fn movement_when_adding_a_node_is_near_the_ideal() {
        println!(
            "nodes    vnodes  primary moved  ideal 1/(n+1)  ratio  replicas moved  ideal N/(n+1)  ratio"
        );
        let mut failures = Vec::new();
        for vnodes in [64, 256] {
            for nodes in [3, 4, 5, 9, 19] {
                let (primary_ratio, replica_ratio, primary, replicas) = measure_add(nodes, vnodes);
                let line = format!(
                    "{nodes:>2}->{:<2}  {vnodes:>6}  {:>12.2}%  {:>12.2}%  {primary_ratio:>5.3}  {:>13.2}%  {:>12.2}%  {replica_ratio:>5.3}",
                    nodes + 1,
                    primary * 100.0,
                    100.0 / (nodes + 1) as f64,
                    replicas * 100.0,
                    300.0 / (nodes + 1) as f64,
                );
                println!("{line}");
                if primary_ratio > 1.15 || replica_ratio > 1.15 {
                    failures.push(line);
                }
            }
        }
        assert!(failures.is_empty(), "above 1.15 x ideal:\n{}", failures.join("\n"));
    }

    /// The bound above holds for the ids it tries; how often does it hold for any id? Adds each
    /// of 200 differently named nodes and prints the spread of the primary and replica ratios.
    /// `cargo test -p dynakv-ring --release movement_spread -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, about a minute in release mode"]
    fn movement_spread_over_new_node_ids() {
        const IDS: usize = 200;
        println!(
            "nodes    vnodes   primary ratio p50 p95 max, share > 1.15   replica ratio p50 p95 max, share > 1.15"
        );
        for vnodes in [32, 64, 128, 256, 512] {
            for nodes in [3, 5, 9, 19] {
                let before = ring(nodes, 3, vnodes);
                let (mut primary, mut replica): (Vec<f64>, Vec<f64>) = (0..IDS)
                    .map(|k| {
                        let plan = Plan::add(&before, &format!("new-{k}"), addr(9000)).unwrap();
                        (plan.primary_ratio().unwrap(), plan.replica_ratio().unwrap())
                    })
                    .unzip();
                let spread = |ratios: &mut Vec<f64>| {
                    ratios.sort_by(f64::total_cmp);
                    let above = ratios.iter().filter(|&&r| r > 1.15).count();
                    format!(
                        "{:.3} {:.3} {:.3}, {:>5.1}%",
                        ratios[IDS / 2],
                        ratios[IDS * 95 / 100],
                        ratios[IDS - 1],
                        above as f64 * 100.0 / IDS as f64
                    )
                };
                println!(
                    "{nodes:>2}->{:<2}  {vnodes:>6}   {:>36}   {:>36}",
                    nodes + 1,
                    spread(&mut primary),
                    spread(&mut replica)
                );
            }
        }
    }

    /// The ring a change starts writes to both placements and ends where its plan said.
    #[test]
    fn a_change_begins_moving_and_finishes_where_its_plan_ends() {
        let before = ring(4, 3, 32);
        let changes = [
            Change::Add { id: "n5".into(), addr: addr(7405) },
            Change::Remove { id: "n2".into(), dead: false },
            Change::Remove { id: "n3".into(), dead: true },
            Change::Replace { dead: "n4".into(), id: "n9".into(), addr: addr(7409) },
        ];
        for change in changes {
            let joint = before.begin(&change).unwrap();
            assert!(joint.is_moving(), "{change}");
            assert_eq!(joint.version(), before.version() + 1);
            let busy = joint.begin(&Change::Remove { id: "n1".into(), dead: false }).unwrap_err();
            assert!(matches!(busy, PlanError::Busy { version } if version == joint.version()));
            let done = joint.finished().unwrap().unwrap();
            assert!(!done.is_moving() && done.finished().is_none());
            assert_eq!(done.version(), before.version() + 2);
            let plan = Plan::new(&before, change.clone()).unwrap();
            for k in 0..2_000u32 {
                let token = key_token(&k.to_be_bytes());
                // Reads stay with the current owners; writes reach the target ones too.
                assert_eq!(replica_ids(&joint, token), replica_ids(&before, token), "{change}");
                let (current, target) = joint.write_sets(token);
                let ids = |list: &crate::PreferenceList| {
                    let mut ids: Vec<String> =
                        list.iter().map(|&i| joint.nodes()[i].id.clone()).collect();
                    ids.sort();
                    ids
                };
                assert_eq!(ids(&current), replica_ids(&before, token));
                assert_eq!(ids(&target.unwrap()), replica_ids(&plan.after, token), "{change}");
                assert_eq!(replica_ids(&done, token), replica_ids(&plan.after, token));
                // Every node that is a target replica but not a current one gains the token.
                for (i, node) in joint.nodes().iter().enumerate() {
                    let gains = joint.gains(i);
                    let gained = gains.iter().find(|g| span_contains(g.start, g.end, token));
                    let expect = target_has(&joint, token, i) && !current.contains(&i);
                    assert_eq!(gained.is_some(), expect, "{change}: {} at {token}", node.id);
                    if let Some(gain) = gained {
                        assert_eq!(gain.holders, current);
                    }
                }
            }
        }
    }

    fn target_has(ring: &Ring, token: u64, node: usize) -> bool {
        ring.target_preference_list(token).is_some_and(|list| list.contains(&node))
    }

    #[test]
    fn bad_changes_leave_the_ring_as_it_was() {
        let before = ring(3, 3, 8);
        let err = |change: Change| before.begin(&change).unwrap_err().to_string();
        assert!(
            err(Change::Add { id: "n2".into(), addr: addr(7499) }).contains("already in the ring")
        );
        assert!(
            err(Change::Add { id: "n9".into(), addr: addr(7401) })
                .contains("already used by node \"n1\"")
        );
        assert!(
            err(Change::Remove { id: "n2".into(), dead: false })
                .contains("fewer than replication.n")
        );
        assert!(err(Change::Remove { id: "n7".into(), dead: true }).contains("not in the ring"));
        let replace = Change::Replace { dead: "n7".into(), id: "n8".into(), addr: addr(7408) };
        assert!(err(replace).contains("not in the ring"));
        // A 3-node ring can replace a dead node: N stays met by the target placement.
        let replace = Change::Replace { dead: "n2".into(), id: "n8".into(), addr: addr(7408) };
        let joint = before.begin(&replace).unwrap();
        assert_eq!(joint.nodes().iter().filter(|n| n.state.in_target()).count(), 3);
    }
}
