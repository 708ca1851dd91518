//! The consistent-hash ring: token placement, preference lists and clockwise walks.

use std::path::Path;

use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{MAX_N, NodeSpec, Replication, RingConfig};
use crate::error::RingError;
use crate::node_state::NodeState;

/// A node's position in [`Ring::nodes`].
pub type NodeIndex = usize;

/// The replicas of a key: the first N distinct nodes clockwise from its token, primary first.
/// Kept inline (no allocation) up to the largest supported N.
pub type PreferenceList = SmallVec<[NodeIndex; MAX_N]>;

/// The token of a key: xxh3-64 of its raw bytes. Stable across releases and platforms.
pub fn key_token(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The token of a node's `vnode`-th virtual node: xxh3-64 of the id's UTF-8 bytes, a zero byte,
/// and the vnode index as a big-endian u32.
fn vnode_token(id: &str, vnode: u32) -> u64 {
    let mut buf = Vec::with_capacity(id.len() + 5);
    buf.extend_from_slice(id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&vnode.to_be_bytes());
    xxh3_64(&buf)
}

/// Where one set of nodes puts its tokens: every vnode's token in clockwise order and its owner.
#[derive(Debug, Clone)]
struct Placement {
    /// Vnode tokens, ascending; parallel to `owners` so a lookup's binary search touches only tokens.
    tokens: Vec<u64>,
    /// The node owning each token in `tokens`.
    owners: Vec<NodeIndex>,
    /// How many nodes own tokens: a clockwise walk ends once it has seen this many.
    placed: usize,
}

impl Placement {
    /// Places `vnodes` tokens for every node that `owns` accepts; tokens derive from ids alone.
    fn new(config: &RingConfig, owns: impl Fn(NodeState) -> bool) -> Placement {
        let mut placed: Vec<(u64, NodeIndex)> = config
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| owns(node.state))
            .flat_map(|(i, node)| (0..config.vnodes).map(move |v| (vnode_token(&node.id, v), i)))
            .collect();
        // Ties (astronomically rare) are broken by node id so every process orders them alike.
        placed.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| config.nodes[a.1].id.cmp(&config.nodes[b.1].id))
        });
        let (tokens, owners) = placed.into_iter().unzip();
        let placed = config.nodes.iter().filter(|node| owns(node.state)).count();
        Placement { tokens, owners, placed }
    }

    fn successors(&self, token: u64) -> Successors<'_> {
        let start = self.tokens.partition_point(|&t| t < token);
        Successors { placement: self, next: start, steps: 0, seen: SmallVec::new() }
    }

    fn preference_list(&self, token: u64, n: usize) -> PreferenceList {
        self.successors(token).take(n).collect()
    }

    fn ranges(&self, n: usize) -> impl Iterator<Item = TokenRange> + '_ {
        (0..self.tokens.len()).map(move |i| {
            let end = self.tokens[i];
            let start =
                if i == 0 { self.tokens[self.tokens.len() - 1] } else { self.tokens[i - 1] };
            TokenRange { start, end, replicas: self.preference_list(end, n) }
        })
    }
}

/// A validated ring: nodes, settings, and where their tokens fall.
///
/// Outside a membership change there is one placement: every node but the joining ones owns
/// tokens. While a change moves ranges (`moving = true` in the ring), there are two: the
/// *current* placement (normal, leaving and dead nodes), which reads use until the move is done,
/// and the *target* placement (normal and joining nodes), which the ring will have after it.
/// Writes go to both (see [`Ring::write_sets`]).
#[derive(Debug, Clone)]
pub struct Ring {
    /// The file this ring was built from.
    config: RingConfig,
    /// The placement reads, anti-entropy and stand-ins follow.
    current: Placement,
    /// The placement after the change in progress, if one is.
    target: Option<Placement>,
}

impl Ring {
    /// Builds the ring from a validated configuration. Joining nodes get no tokens in the current
    /// placement; every other node gets `vnodes` tokens derived from its id alone.
    pub fn new(config: RingConfig) -> Result<Self, RingError> {
        config.validate()?;
        let current = Placement::new(&config, NodeState::owns_tokens);
        let target = config.moving.then(|| Placement::new(&config, NodeState::in_target));
        Ok(Ring { config, current, target })
    }

    /// Parses and validates a ring file's text.
    pub fn parse(text: &str) -> Result<Self, RingError> {
        Ring::new(RingConfig::parse(text)?)
    }

    /// Reads, parses and validates a ring file; relative `[tls]` paths are taken from the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, RingError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RingError::Read { path: path.to_path_buf(), source })?;
        let mut config = RingConfig::parse(&text)?;
        if let Some(tls) = &mut config.tls {
            tls.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        }
        Ring::new(config)
    }

    /// The ring as ring-file TOML, as nodes store it and send it to each other.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.config).expect("a ring configuration always serializes")
    }

    /// The configuration the ring was built from.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The nodes, indexed by [`NodeIndex`].
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.config.nodes
    }

    /// Replicas per key and default quorums.
    pub fn replication(&self) -> Replication {
        self.config.replication
    }

    /// The ring version.
    pub fn version(&self) -> u64 {
        self.config.version
    }

    /// The index of the node with this id, or an error naming the ids the ring knows.
    pub fn node_index(&self, id: &str) -> Result<NodeIndex, RingError> {
        self.config.nodes.iter().position(|n| n.id == id).ok_or_else(|| RingError::UnknownNode {
            id: id.to_string(),
            known: self.config.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// How many nodes own tokens in the current placement: every node but the joining ones.
    pub fn placed_nodes(&self) -> usize {
        self.current.placed
    }

    /// The N replicas of the key with this token, primary first, in the current placement:
    /// the nodes reads go to.
    pub fn preference_list(&self, token: u64) -> PreferenceList {
        self.current.preference_list(token, self.config.replication.n)
    }

    /// Every node that owns tokens once, clockwise from `token`: the preference list, then the
    /// nodes that stand in for unreachable replicas, in order.
    pub fn successors(&self, token: u64) -> Successors<'_> {
        self.current.successors(token)
    }

    /// Every vnode token of the current placement, ascending.
    pub(crate) fn tokens(&self) -> &[u64] {
        &self.current.tokens
    }

    /// Every vnode's range of the current placement with its preference list, in token order.
    pub fn ranges(&self) -> impl Iterator<Item = TokenRange> + '_ {
        self.current.ranges(self.config.replication.n)
    }

    /// True while a membership change moves ranges (the ring has a target placement).
    pub fn is_moving(&self) -> bool {
        self.target.is_some()
    }

    /// The key's replicas in the target placement, while a change is in progress.
    pub fn target_preference_list(&self, token: u64) -> Option<PreferenceList> {
        Some(self.target.as_ref()?.preference_list(token, self.config.replication.n))
    }

    /// Every vnode's range of the target placement, while a change is in progress (else none).
    pub fn target_ranges(&self) -> impl Iterator<Item = TokenRange> + '_ {
        let n = self.config.replication.n;
        self.target.iter().flat_map(move |target| target.ranges(n))
    }

    /// Where a write of the key goes: the current replicas, and while a change is in progress
    /// the target replicas too. A write needs its quorum in each set (a joint quorum), so it
    /// reaches the new owners of a moving range as well as the old ones.
    pub fn write_sets(&self, token: u64) -> (PreferenceList, Option<PreferenceList>) {
        (self.preference_list(token), self.target_preference_list(token))
    }

    /// True when `node` is a replica of the token in the current or the target placement.
    pub fn holds(&self, token: u64, node: NodeIndex) -> bool {
        let (current, target) = self.write_sets(token);
        current.contains(&node) || target.is_some_and(|t| t.contains(&node))
    }

    /// The spans `node` gains in the change in progress (it is a target replica there but not a
    /// current one), each with the current replicas that hold it, in token order; adjacent spans
    /// with the same holders are merged. Empty outside a change.
    pub fn gains(&self, node: NodeIndex) -> Vec<Gain> {
        let Some(target) = &self.target else { return Vec::new() };
        let n = self.config.replication.n;
        let mut bounds: Vec<u64> =
            self.current.tokens.iter().chain(&target.tokens).copied().collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut gains: Vec<Gain> = Vec::new();
        for (i, &end) in bounds.iter().enumerate() {
            let start = if i == 0 { bounds[bounds.len() - 1] } else { bounds[i - 1] };
            let holders = self.current.preference_list(end, n);
            if !target.preference_list(end, n).contains(&node) || holders.contains(&node) {
                continue;
            }
            match gains.last_mut() {
                Some(last) if last.end == start && last.holders == holders => last.end = end,
                _ => gains.push(Gain { start, end, holders }),
            }
        }
        gains
    }

    /// The ids of the nodes whose vote decides the next ring: those owning tokens now.
    pub fn voters(&self) -> Vec<NodeIndex> {
        (0..self.config.nodes.len()).filter(|&i| self.config.nodes[i].state.owns_tokens()).collect()
    }

    /// The ring once the change in progress is done, one version later: joining nodes become
    /// normal, leaving and dead nodes are gone. `None` when no change is in progress.
    pub fn finished(&self) -> Option<Result<Ring, RingError>> {
        if !self.is_moving() {
            return None;
        }
        let mut config = self.config.clone();
        config.nodes.retain(|node| node.state.in_target());
        for node in &mut config.nodes {
            node.state = NodeState::Normal;
        }
        config.moving = false;
        config.version += 1;
        Some(Ring::new(config))
    }

    /// The share of the token space each node is primary for, indexed by [`NodeIndex`]; sums to 1.
    pub fn primary_shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.config.nodes.len()];
        for range in self.ranges() {
            shares[range.replicas[0]] += range.share();
        }
        shares
    }

    /// The share of the token space each node is a replica for (primary or not), indexed by
    /// [`NodeIndex`]; sums to N. A node holds about this share of the keys.
    pub fn replica_shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.config.nodes.len()];
        for range in self.ranges() {
            for &node in &range.replicas {
                shares[node] += range.share();
            }
        }
        shares
    }
}

/// A span of the token space, `(start, end]` clockwise, that a node gains in a change, and the
/// current replicas that hold its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gain {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
    /// The span's current replicas (dead ones included), primary first.
    pub holders: PreferenceList,
}

/// A vnode's range of the token space, `(start, end]` clockwise, and the replicas that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRange {
    /// Exclusive lower bound (the previous vnode's token).
    pub start: u64,
    /// Inclusive upper bound (this vnode's token).
    pub end: u64,
    /// The range's preference list.
    pub replicas: PreferenceList,
}

impl TokenRange {
    /// The fraction of the token space the range covers (wrapping past zero where it must).
    pub fn share(&self) -> f64 {
        span_share(self.start, self.end)
    }

    /// True when `token` falls in this range.
    pub fn contains(&self, token: u64) -> bool {
        span_contains(self.start, self.end, token)
    }
}

/// The fraction of the token space in `(start, end]` clockwise; `start == end` is the whole ring.
pub(crate) fn span_share(start: u64, end: u64) -> f64 {
    if start == end {
        return 1.0;
    }
    end.wrapping_sub(start) as f64 / 2f64.powi(64)
}

/// True when `token` falls in `(start, end]` clockwise; `start == end` is the whole ring.
pub(crate) fn span_contains(start: u64, end: u64, token: u64) -> bool {
    start == end || token.wrapping_sub(start).wrapping_sub(1) < end.wrapping_sub(start)
}

/// Distinct nodes clockwise from a token; see [`Ring::successors`].
#[derive(Debug)]
pub struct Successors<'a> {
    placement: &'a Placement,
    /// Position in `tokens` of the next vnode to look at (may equal its length: wrap to 0).
    next: usize,
    /// Vnodes looked at so far; the walk ends after one full turn.
    steps: usize,
    /// Nodes already yielded.
    seen: SmallVec<[NodeIndex; MAX_N]>,
}

impl Iterator for Successors<'_> {
    type Item = NodeIndex;

    fn next(&mut self) -> Option<NodeIndex> {
        let ring = self.placement;
        while self.steps < ring.tokens.len() && self.seen.len() < ring.placed {
            if self.next >= ring.tokens.len() {
                self.next = 0;
            }
            let owner = ring.owners[self.next];
            self.next += 1;
            self.steps += 1;
            if !self.seen.contains(&owner) {
                self.seen.push(owner);
                return Some(owner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(nodes: usize, n: usize, vnodes: u32) -> Ring {
        let mut text = format!("vnodes = {vnodes}\n[replication]\nn = {n}\nr = 1\nw = 1\n");
        for i in 1..=nodes {
            text += &format!("[[nodes]]\nid = \"n{i}\"\naddr = \"127.0.0.1:{}\"\n", 7400 + i);
        }
        Ring::parse(&text).unwrap()
    }

    fn ids(ring: &Ring, list: &[NodeIndex]) -> Vec<String> {
        list.iter().map(|&i| ring.nodes()[i].id.clone()).collect()
    }

    /// Placement is part of the on-disk format: these must never change between releases.
    #[test]
    fn golden_placement() {
        assert_eq!(key_token(b"hello"), 0x9555_e855_5c62_dcfd);
        assert_eq!(vnode_token("n1", 0), 0xc39c_e744_6ee2_0c42);
        let r = ring(5, 3, 64);
        let cases = [
            ("alpha", ["n5", "n3", "n2"]),
            ("beta", ["n1", "n2", "n3"]),
            ("gamma", ["n3", "n4", "n5"]),
            ("delta", ["n1", "n4", "n5"]),
            ("user:42", ["n3", "n4", "n5"]),
            ("k", ["n1", "n3", "n4"]),
        ];
        for (key, want) in cases {
            assert_eq!(ids(&r, &r.preference_list(key_token(key.as_bytes()))), want, "key {key}");
        }
    }

    #[test]
    fn preference_lists_hold_n_distinct_nodes() {
        for (nodes, n, vnodes) in [(3, 3, 64), (5, 3, 64), (7, 5, 16), (2, 2, 1), (1, 1, 8)] {
            let r = ring(nodes, n, vnodes);
            for k in 0..2_000u32 {
                let list = r.preference_list(key_token(&k.to_be_bytes()));
                assert_eq!(list.len(), n);
                let mut dedup = list.to_vec();
                dedup.sort();
                dedup.dedup();
                assert_eq!(dedup.len(), n, "duplicate replica in {list:?}");
            }
        }
    }

    #[test]
    fn successors_visit_every_node_once_starting_with_the_preference_list() {
        let r = ring(6, 3, 32);
        let token = key_token(b"some key");
        let all: Vec<_> = r.successors(token).collect();
        assert_eq!(all.len(), 6);
        assert_eq!(&all[..3], &r.preference_list(token)[..]);
    }

    #[test]
    fn the_primary_owns_the_token() {
        let r = ring(4, 2, 16);
        for k in 0..500u32 {
            let token = key_token(&k.to_le_bytes());
            let range = r.ranges().find(|range| range.contains(token)).unwrap();
            assert_eq!(range.replicas, r.preference_list(token));
        }
    }

    #[test]
    fn a_one_token_ring_is_one_range_covering_everything() {
        let r = ring(1, 1, 1);
        let ranges: Vec<_> = r.ranges().collect();
        assert_eq!(ranges.len(), 1);
        assert!(ranges[0].contains(0) && ranges[0].contains(u64::MAX) && ranges[0].contains(12345));
        assert_eq!(r.primary_shares(), vec![1.0]);
    }

    #[test]
    fn shares_sum_to_one_and_are_balanced() {
        let r = ring(3, 3, 64);
        let shares = r.primary_shares();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        for share in shares {
            assert!((0.2..0.47).contains(&share), "unbalanced share {share}");
        }
    }

    /// The text of `ring(nodes, ..)` with `state = ...` lines added to some nodes (1-based).
    fn text_with_states(nodes: usize, n: usize, vnodes: u32, states: &[(usize, &str)]) -> String {
        let mut text = format!("vnodes = {vnodes}\n[replication]\nn = {n}\nr = 1\nw = 1\n");
        for i in 1..=nodes {
            text += &format!("[[nodes]]\nid = \"n{i}\"\naddr = \"127.0.0.1:{}\"\n", 7400 + i);
            if let Some((_, state)) = states.iter().find(|(node, _)| *node == i) {
                text += &format!("state = \"{state}\"\n");
            }
        }
        text
    }

    fn ring_with_states(nodes: usize, n: usize, vnodes: u32, states: &[(usize, &str)]) -> Ring {
        Ring::parse(&text_with_states(nodes, n, vnodes, states)).unwrap()
    }

    #[test]
    fn node_states_parse_lowercase_and_default_to_normal() {
        use crate::node_state::NodeState::*;
        let r = ring_with_states(4, 3, 4, &[(1, "joining"), (2, "leaving"), (3, "dead")]);
        let states: Vec<_> = r.nodes().iter().map(|node| node.state).collect();
        assert_eq!(states, [Joining, Leaving, Dead, Normal]);
        let bad = Ring::parse(&text_with_states(3, 3, 4, &[(2, "Gone")])).unwrap_err();
        assert!(bad.to_string().contains("unknown variant `Gone`"), "{bad}");
        let bad = Ring::parse(&text_with_states(3, 3, 4, &[(2, "Normal")])).unwrap_err();
        assert!(bad.to_string().contains("expected one of `joining`, `normal`"), "{bad}");
        let written = toml::to_string(r.config()).unwrap();
        assert_eq!(written.matches("state = ").count(), 3, "normal is left out: {written}");
        assert_eq!(RingConfig::parse(&written).unwrap(), *r.config());
    }

    /// A joining node owns no tokens: every key keeps the replicas it has without the node.
    #[test]
    fn a_joining_node_owns_no_tokens_and_serves_no_keys() {
        let without = ring(5, 3, 64);
        let with = ring_with_states(6, 3, 64, &[(6, "joining")]);
        assert_eq!(with.placed_nodes(), 5);
        assert_eq!(with.ranges().count(), 5 * 64);
        for k in 0..5_000u32 {
            let token = key_token(&k.to_be_bytes());
            assert_eq!(with.preference_list(token), without.preference_list(token));
            assert_eq!(with.successors(token).count(), 5, "the walk never reaches n6");
        }
        assert_eq!(with.primary_shares()[5], 0.0);
        assert_eq!(with.replica_shares()[5], 0.0);
        assert_eq!(with.primary_shares()[..5], without.primary_shares()[..]);
        // The golden vectors hold whatever joins.
        assert_eq!(ids(&with, &with.preference_list(key_token(b"alpha"))), ["n5", "n3", "n2"]);
    }

    /// Leaving and dead nodes keep their tokens, so placement is that of an all-normal ring.
    #[test]
    fn leaving_and_dead_nodes_keep_their_tokens() {
        let normal = ring(5, 3, 64);
        let marked = ring_with_states(5, 3, 64, &[(2, "leaving"), (4, "dead")]);
        assert_eq!(marked.placed_nodes(), 5);
        for k in 0..5_000u32 {
            let token = key_token(&k.to_be_bytes());
            assert_eq!(marked.preference_list(token), normal.preference_list(token));
        }
        assert_eq!(marked.replica_shares(), normal.replica_shares());
    }

    #[test]
    fn n_counts_only_nodes_that_own_tokens() {
        let text = |state: &str| {
            let mut text = "[replication]\nn = 3\nr = 2\nw = 2\n".to_string();
            for i in 1..=3 {
                text += &format!("[[nodes]]\nid = \"n{i}\"\naddr = \"127.0.0.1:{}\"\n", 7400 + i);
            }
            text + &format!("state = \"{state}\"\n")
        };
        assert!(Ring::parse(&text("dead")).is_ok());
        let err = Ring::parse(&text("joining")).unwrap_err().to_string();
        assert_eq!(err, "replication.n = 3 but only 2 nodes own tokens (1 still joining)");
    }

    #[test]
    fn replica_shares_sum_to_n() {
        for (nodes, n) in [(3, 3), (5, 3), (7, 5), (1, 1)] {
            let r = ring(nodes, n, 32);
            let shares = r.replica_shares();
            assert!((shares.iter().sum::<f64>() - n as f64).abs() < 1e-9, "{shares:?}");
            assert!(shares.iter().all(|&s| s <= 1.0 + 1e-12), "{shares:?}");
            let primary = r.primary_shares();
            assert!(shares.iter().zip(&primary).all(|(r, p)| r >= p));
        }
    }

    #[test]
    fn unknown_ids_are_named() {
        let r = ring(3, 3, 4);
        assert_eq!(r.node_index("n2").unwrap(), 1);
        let err = r.node_index("n9").unwrap_err().to_string();
        assert_eq!(err, "node id \"n9\" is not in the ring (known: n1, n2, n3)");
    }
}
