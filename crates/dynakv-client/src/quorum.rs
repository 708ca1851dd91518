//! The write round behind every put and delete, single or batched, and what it shares with the
//! read round (`read`): ask all N replicas of a key at once and decide as soon as W have
//! acknowledged. The calls still in flight then either go to a background task or are awaited
//! by the caller (`Late`); either way their results still update node health and failed
//! replicas are still stood in for.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::{Record, Version};
use dynakv_proto::v1::WriteResponse;
use dynakv_ring::{NodeIndex, PreferenceList, key_token};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::client::Shared;
use crate::error::{Op, QuorumError, ReplicaError, ReplicaFailure, SetCount, WriteOutcome};
use crate::topology::Topology;

/// What a round does with the calls still in flight once its outcome is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Late {
    /// Hand them to a background task and return at once: a single operation answers as soon as
    /// its quorum is met.
    Background,
    /// Finish them (and, for reads, the repair) before returning: a batch operation holds its
    /// place among the batch's operations in flight until all of its work is done, so a batch
    /// bounds all the work it causes, late calls included.
    Await,
}

/// Calls still in flight when a quorum call returns.
pub(crate) type Pending<T> =
    FuturesUnordered<BoxFuture<'static, (NodeIndex, Result<T, ReplicaError>)>>;

/// The key's replicas split by health: those that may be sent to, those marked down, and a
/// `Down` failure for each of the latter (reported if the quorum is missed).
pub(crate) fn split_by_health(
    topology: &Topology,
    replicas: &PreferenceList,
) -> (PreferenceList, PreferenceList, Vec<ReplicaFailure>) {
    let (mut up, mut down, mut skipped) =
        (PreferenceList::new(), PreferenceList::new(), Vec::new());
    for &node in replicas {
        match topology.replicas[node].health.retry_in() {
            None => up.push(node),
            Some(retry_in) => {
                down.push(node);
                skipped.push(ReplicaFailure {
                    node: topology.replicas[node].id.clone(),
                    cause: ReplicaError::Down { retry_in },
                });
            }
        }
    }
    (up, down, skipped)
}

/// Where a write goes, and whose acknowledgements count: the key's current replicas and, while
/// the ring changes, its target replicas. The write needs W in each set (a joint quorum).
#[derive(Debug, Clone)]
pub(crate) struct WriteSets {
    /// The replicas in the current placement (where reads go).
    current: PreferenceList,
    /// The replicas in the target placement, while a change is in progress.
    target: Option<PreferenceList>,
    /// Every member of either set once: current replicas first, then the new target ones.
    union: PreferenceList,
}

/// One acknowledgement: the node that acked, and the replica it stood in for (kept a hint for).
pub(crate) type Ack = (NodeIndex, Option<NodeIndex>);

impl WriteSets {
    /// The sets of a key, from [`Ring::write_sets`](dynakv_ring::Ring::write_sets).
    pub(crate) fn new((current, target): (PreferenceList, Option<PreferenceList>)) -> Self {
        let mut union = current.clone();
        for &node in target.iter().flatten() {
            if !union.contains(&node) {
                union.push(node);
            }
        }
        WriteSets { current, target, union }
    }

    /// The member an acknowledgement counts for: a member counts for itself (a hint it keeps
    /// for another replica adds nothing); a stand-in outside the sets counts for the replica it
    /// keeps a hint for, unless `strict`.
    fn credited(&self, (node, hint_for): Ack, strict: bool) -> Option<NodeIndex> {
        if self.union.contains(&node) {
            Some(node)
        } else if strict {
            None
        } else {
            hint_for.filter(|owner| self.union.contains(owner))
        }
    }

    /// Acknowledgements counted in the current set and in the target set (if any); each member
    /// counts once, however many acks credit it.
    pub(crate) fn tally(&self, acks: &[Ack], strict: bool) -> (usize, Option<usize>) {
        let mut credited = PreferenceList::new();
        for &ack in acks {
            if let Some(member) = self.credited(ack, strict)
                && !credited.contains(&member)
            {
                credited.push(member);
            }
        }
        let count = |set: &PreferenceList| set.iter().filter(|m| credited.contains(m)).count();
        (count(&self.current), self.target.as_ref().map(count))
    }

    /// True once `acks` make `w` in the current set and `w` in the target set (when there is one).
    pub(crate) fn met(&self, acks: &[Ack], w: usize, strict: bool) -> bool {
        let (current, target) = self.tally(acks, strict);
        current >= w && target.is_none_or(|target| target >= w)
    }

    /// The error for a write that stopped short with `acks`.
    fn shortfall(
        &self,
        acks: &[Ack],
        w: usize,
        strict: bool,
        failures: Vec<ReplicaFailure>,
    ) -> QuorumError {
        let (got, target_got) = self.tally(acks, strict);
        QuorumError {
            op: Op::Write,
            needed: w,
            got,
            replicas: self.current.len(),
            target: self
                .target
                .as_ref()
                .zip(target_got)
                .map(|(set, got)| SetCount { got, replicas: set.len() }),
            failures,
        }
    }
}

/// Where one write goes: the node, and the unreachable replica it keeps a hint for, if any.
type Send = (NodeIndex, Option<NodeIndex>);

/// Plans a write: every live member of the write sets gets it; each member marked down is
/// stood in for by the next live node clockwise that is in neither set (sloppy quorum), or,
/// when there is none (as with 3 nodes and N = 3), a live member keeps a hint for it. In strict
/// mode no stand-ins are used. If that leaves too few nodes to reach the joint quorum, every
/// member is tried.
fn plan_write(
    topology: &Topology,
    token: u64,
    sets: &WriteSets,
    w: usize,
    strict: bool,
) -> (Vec<Send>, VecDeque<NodeIndex>, Vec<ReplicaFailure>) {
    let (up, down, skipped) = split_by_health(topology, &sets.union);
    let mut spare: VecDeque<NodeIndex> = if strict {
        VecDeque::new()
    } else {
        let usable =
            |node: NodeIndex| !sets.union.contains(&node) && topology.replicas[node].health.is_up();
        topology.ring.successors(token).filter(|&n| usable(n)).collect()
    };
    let mut sends: Vec<Send> = up.iter().map(|&node| (node, None)).collect();
    let mut keepers = 0;
    for &owner in &down {
        if let Some(stand_in) = spare.pop_front() {
            sends.push((stand_in, Some(owner)));
        } else if keepers < up.len() {
            sends[keepers].1 = Some(owner);
            keepers += 1;
        }
    }
    if !sets.met(&sends, w, strict) {
        return (sets.union.iter().map(|&node| (node, None)).collect(), spare, Vec::new());
    }
    (sends, spare, skipped)
}

/// Writes `record` to the key's write sets and returns once the joint quorum is met: `w`
/// acknowledgements in the current set and `w` in the target set, if the ring is changing
/// (stand-ins keeping hints count for the replica they stand in for, unless `strict`), leaving
/// the other calls to `late`. The outcome is [`WriteOutcome::Superseded`] if a node answered
/// that it holds a newer version.
pub(crate) async fn write(
    shared: &Arc<Shared>,
    key: Bytes,
    record: Record,
    w: usize,
    strict: bool,
    late: Late,
) -> Result<WriteOutcome, QuorumError> {
    let topology = shared.topology();
    let started = std::time::Instant::now();
    let token = key_token(&key);
    let sets = WriteSets::new(topology.ring.write_sets(token));
    let (sends, spare, failures) = plan_write(&topology, token, &sets, w, strict);
    let mut round = WriteRound {
        topology,
        key,
        record,
        hinted: sends.iter().filter_map(|s| s.1).collect(),
        sets,
        spare,
        orphans: PreferenceList::new(),
        acks: Vec::new(),
        newer: None,
        failures,
        calls: FuturesUnordered::new(),
    };
    for send in sends {
        round.send(send, true);
    }
    while !round.sets.met(&round.acks, w, strict) && round.next().await {}
    crate::metrics::quorum(Op::Write, started, round.sets.met(&round.acks, w, strict));
    let outcome = match round.newer {
        Some(by) => WriteOutcome::Superseded { by },
        None => WriteOutcome::Applied,
    };
    let error = (!round.sets.met(&round.acks, w, strict)).then(|| {
        let failures = std::mem::take(&mut round.failures);
        round.sets.shortfall(&round.acks, w, strict, failures)
    });
    if !round.calls.is_empty() {
        match late {
            Late::Background => {
                shared.background.spawn(async move { while round.next().await {} });
            }
            Late::Await => while round.next().await {},
        }
    }
    error.map_or(Ok(outcome), Err)
}

/// A write call's result: where it went, whether its ack counts toward W, and the reply.
type WriteCall = BoxFuture<'static, (Send, bool, Result<WriteResponse, ReplicaError>)>;

/// One write in flight: its calls, and what is known of them so far. Outlives the caller when
/// the quorum is reached early, so late failures are still handled.
struct WriteRound {
    /// The ring and node handles the write was planned with, kept for all of its calls.
    topology: Arc<Topology>,
    key: Bytes,
    record: Record,
    /// The key's current and target replicas.
    sets: WriteSets,
    /// Live nodes in neither set not yet used as stand-ins.
    spare: VecDeque<NodeIndex>,
    /// Acknowledgements that count toward W, with the replica each stand-in stood in for.
    acks: Vec<Ack>,
    /// The highest version newer than `record` that a node answered it holds, if any.
    newer: Option<Version>,
    /// Replicas some node already keeps a hint for.
    hinted: PreferenceList,
    /// Failed replicas waiting for a replica to acknowledge, which will then keep their hint.
    orphans: PreferenceList,
    failures: Vec<ReplicaFailure>,
    calls: FuturesUnordered<WriteCall>,
}

impl WriteRound {
    fn send(&mut self, (node, hint_for): Send, counts: bool) {
        let topology = self.topology.clone();
        let (key, record) = (self.key.clone(), self.record.clone());
        if hint_for.is_some() {
            crate::metrics::stand_in(self.sets.union.contains(&node));
        }
        self.calls.push(Box::pin(async move {
            let owner =
                hint_for.map(|owner| topology.replicas[owner].id.clone()).unwrap_or_default();
            let version = topology.version();
            let reply = topology.replicas[node].write_hinted(key, record, owner, version).await;
            ((node, hint_for), counts, reply)
        }));
    }

    /// Handles the next reply; false when no call is left.
    async fn next(&mut self) -> bool {
        let Some(((node, hint_for), counts, reply)) = self.calls.next().await else {
            return false;
        };
        match reply {
            Ok(reply) => {
                let current = reply.current.map(Version::from).unwrap_or_default();
                if current.supersedes(self.record.version) {
                    self.newer = self.newer.max(Some(current));
                }
                if counts {
                    self.acks.push((node, hint_for));
                    if self.sets.union.contains(&node) {
                        for orphan in std::mem::take(&mut self.orphans) {
                            self.send((node, Some(orphan)), false);
                        }
                    }
                }
            }
            Err(cause) => {
                self.stand_in_for(node);
                let id = self.topology.replicas[node].id.clone();
                self.failures.push(ReplicaFailure { node: id, cause });
            }
        }
        true
    }

    /// A replica that failed the write is stood in for, like one known to be down: by a spare
    /// node, whose ack counts; or else by a replica that acknowledged (or the next one to), which
    /// keeps a hint for it.
    fn stand_in_for(&mut self, failed: NodeIndex) {
        if !self.sets.union.contains(&failed) || self.hinted.contains(&failed) {
            return;
        }
        let union = &self.sets.union;
        if let Some(stand_in) = self.spare.pop_front() {
            self.hinted.push(failed);
            self.send((stand_in, Some(failed)), true);
        } else if let Some(keeper) = self.acks.iter().map(|a| a.0).find(|n| union.contains(n)) {
            self.hinted.push(failed);
            self.send((keeper, Some(failed)), false);
        } else {
            self.hinted.push(failed);
            self.orphans.push(failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_ring::PreferenceList;

    fn list(nodes: &[NodeIndex]) -> PreferenceList {
        nodes.iter().copied().collect()
    }

    /// Nodes 0..=2 hold the key now; after the change 1, 2 and the joining 3 will.
    fn moving() -> WriteSets {
        WriteSets::new((list(&[0, 1, 2]), Some(list(&[1, 2, 3]))))
    }

    #[test]
    fn outside_a_change_w_acks_of_the_replicas_are_enough() {
        let sets = WriteSets::new((list(&[0, 1, 2]), None));
        assert_eq!(sets.union[..], [0, 1, 2]);
        assert!(!sets.met(&[(0, None)], 2, false));
        assert!(sets.met(&[(0, None), (2, None)], 2, false));
        assert_eq!(sets.tally(&[(0, None), (2, None)], false), (2, None));
    }

    #[test]
    fn a_joint_quorum_needs_w_in_each_set() {
        let sets = moving();
        assert_eq!(sets.union[..], [0, 1, 2, 3], "a write goes to the union");
        // 0 and 1 make W = 2 in the current set, but only one in the target set.
        let acks = [(0, None), (1, None)];
        assert_eq!(sets.tally(&acks, false), (2, Some(1)));
        assert!(!sets.met(&acks, 2, false));
        // 3 (joining) makes the target set.
        let acks = [(0, None), (1, None), (3, None)];
        assert_eq!(sets.tally(&acks, false), (2, Some(2)));
        assert!(sets.met(&acks, 2, false));
        // 1 and 2 are in both sets: two acks meet both.
        assert!(sets.met(&[(2, None), (1, None)], 2, false));
        // 0 and 3 alone: one in each set.
        assert_eq!(sets.tally(&[(0, None), (3, None)], false), (1, Some(1)));
    }

    #[test]
    fn a_stand_in_counts_for_the_sets_of_the_replica_it_stands_in_for() {
        let sets = moving();
        // Node 7 is in neither set; standing in for 2 (in both) it counts in both.
        let acks = [(1, None), (7, Some(2))];
        assert_eq!(sets.tally(&acks, false), (2, Some(2)));
        // Standing in for 3 (target only) it counts in the target set only.
        assert_eq!(sets.tally(&[(0, None), (7, Some(3))], false), (1, Some(1)));
        // Strict: stand-ins count for nothing.
        assert_eq!(sets.tally(&acks, true), (1, Some(1)));
        // A member keeping a hint counts for itself only, and nobody counts twice.
        let acks = [(1, Some(0)), (1, None), (8, Some(1))];
        assert_eq!(sets.tally(&acks, false), (1, Some(1)));
    }

    #[test]
    fn a_missed_joint_quorum_says_how_many_acked_in_each_set() {
        let sets = moving();
        let failure = ReplicaFailure {
            node: "n4".into(),
            cause: ReplicaError::Timeout { after: std::time::Duration::from_millis(500) },
        };
        let error = sets.shortfall(&[(0, None), (1, None)], 2, false, vec![failure]);
        assert_eq!((error.got, error.replicas), (2, 3));
        assert_eq!(error.target, Some(SetCount { got: 1, replicas: 3 }));
        assert_eq!(
            error.to_string(),
            "write joint quorum not met (the ring is changing; 2 needed in each replica set): \
             2 of 3 current replicas and 1 of 3 target replicas acknowledged (n4: timed out \
             after 500ms); outcome unknown: the write may have been applied on some replicas"
        );
    }
}
