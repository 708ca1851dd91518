//! The read and write rounds behind every operation, single or batched: ask all N replicas of a
//! key at once and decide as soon as R (or W) have answered. The calls still in flight then
//! either go to a background task or are awaited by the caller (`Late`); either way their
//! results still update node health, failed replicas are still stood in for, and late read
//! replies still feed read repair.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::{Record, Version, merge};
use dynakv_proto::v1::WriteResponse;
use dynakv_ring::{NodeIndex, PreferenceList, key_token};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::client::Shared;
use crate::error::{Op, QuorumError, ReplicaError, ReplicaFailure, WriteOutcome};
use crate::repair;

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
fn split_by_health(
    shared: &Shared,
    replicas: &PreferenceList,
) -> (PreferenceList, PreferenceList, Vec<ReplicaFailure>) {
    let (mut up, mut down, mut skipped) =
        (PreferenceList::new(), PreferenceList::new(), Vec::new());
    for &node in replicas {
        match shared.replicas[node].health.retry_in() {
            None => up.push(node),
            Some(retry_in) => {
                down.push(node);
                skipped.push(ReplicaFailure {
                    node: shared.replicas[node].id.clone(),
                    cause: ReplicaError::Down { retry_in },
                });
            }
        }
    }
    (up, down, skipped)
}

/// The replicas a call goes to. Nodes marked down are skipped, unless skipping them would leave
/// too few to reach the quorum: then every replica is tried.
fn targets(
    shared: &Shared,
    replicas: &PreferenceList,
    quorum: usize,
) -> (PreferenceList, Vec<ReplicaFailure>) {
    let (up, _, skipped) = split_by_health(shared, replicas);
    if up.len() < quorum { (replicas.clone(), Vec::new()) } else { (up, skipped) }
}

/// Where one write goes: the node, and the unreachable replica it keeps a hint for, if any.
type Send = (NodeIndex, Option<NodeIndex>);

/// Plans a write: every live replica gets it; each replica marked down is stood in for by the
/// next live node clockwise that is not a replica (sloppy quorum), or, when there is none (as
/// with 3 nodes and N = 3), a live replica keeps a hint for it. In strict mode no stand-ins are
/// used. If that leaves too few nodes to reach `w`, every replica is tried.
fn plan_write(
    shared: &Shared,
    token: u64,
    replicas: &PreferenceList,
    w: usize,
    strict: bool,
) -> (Vec<Send>, VecDeque<NodeIndex>, Vec<ReplicaFailure>) {
    let (up, down, skipped) = split_by_health(shared, replicas);
    let mut spare: VecDeque<NodeIndex> = if strict {
        VecDeque::new()
    } else {
        let is_up = |node: NodeIndex| shared.replicas[node].health.is_up();
        shared.ring.successors(token).skip(replicas.len()).filter(|&n| is_up(n)).collect()
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
    if sends.len() < w {
        return (replicas.iter().map(|&node| (node, None)).collect(), spare, Vec::new());
    }
    (sends, spare, skipped)
}

/// Writes `record` to the key's replicas and returns once `w` nodes have acknowledged it
/// (stand-ins keeping hints count, unless `strict`), leaving the other calls to `late`. The
/// outcome is [`WriteOutcome::Superseded`] if a node answered that it holds a newer version.
pub(crate) async fn write(
    shared: &Arc<Shared>,
    key: Bytes,
    record: Record,
    w: usize,
    strict: bool,
    late: Late,
) -> Result<WriteOutcome, QuorumError> {
    let token = key_token(&key);
    let replicas = shared.ring.preference_list(token);
    let (sends, spare, failures) = plan_write(shared, token, &replicas, w, strict);
    let mut round = WriteRound {
        shared: shared.clone(),
        key,
        record,
        hinted: sends.iter().filter_map(|s| s.1).collect(),
        replicas,
        spare,
        orphans: PreferenceList::new(),
        acked: PreferenceList::new(),
        newer: None,
        failures,
        calls: FuturesUnordered::new(),
    };
    for send in sends {
        round.send(send, true);
    }
    while round.acked.len() < w && round.next().await {}
    let acked = round.acked.len();
    let outcome = match round.newer {
        Some(by) => WriteOutcome::Superseded { by },
        None => WriteOutcome::Applied,
    };
    let error = (acked < w).then(|| QuorumError {
        op: Op::Write,
        needed: w,
        got: acked,
        replicas: round.replicas.len(),
        failures: std::mem::take(&mut round.failures),
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
    shared: Arc<Shared>,
    key: Bytes,
    record: Record,
    replicas: PreferenceList,
    /// Live non-replicas not yet used as stand-ins.
    spare: VecDeque<NodeIndex>,
    /// Nodes whose acknowledgement counts toward W.
    acked: PreferenceList,
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
        let shared = self.shared.clone();
        let (key, record) = (self.key.clone(), self.record.clone());
        self.calls.push(Box::pin(async move {
            let owner = hint_for.map(|owner| shared.replicas[owner].id.clone()).unwrap_or_default();
            let reply = shared.replicas[node].write_hinted(key, record, owner).await;
            ((node, hint_for), counts, reply)
        }));
    }

    /// Handles the next reply; false when no call is left.
    async fn next(&mut self) -> bool {
        let Some(((node, _), counts, reply)) = self.calls.next().await else { return false };
        match reply {
            Ok(reply) => {
                let current = reply.current.map(Version::from).unwrap_or_default();
                if current.supersedes(self.record.version) {
                    self.newer = self.newer.max(Some(current));
                }
                if counts {
                    self.acked.push(node);
                    if self.replicas.contains(&node) {
                        for orphan in std::mem::take(&mut self.orphans) {
                            self.send((node, Some(orphan)), false);
                        }
                    }
                }
            }
            Err(cause) => {
                self.stand_in_for(node);
                let id = self.shared.replicas[node].id.clone();
                self.failures.push(ReplicaFailure { node: id, cause });
            }
        }
        true
    }

    /// A replica that failed the write is stood in for, like one known to be down: by a spare
    /// node, whose ack counts; or else by a replica that acknowledged (or the next one to), which
    /// keeps a hint for it.
    fn stand_in_for(&mut self, failed: NodeIndex) {
        if !self.replicas.contains(&failed) || self.hinted.contains(&failed) {
            return;
        }
        if let Some(stand_in) = self.spare.pop_front() {
            self.hinted.push(failed);
            self.send((stand_in, Some(failed)), true);
        } else if let Some(&keeper) = self.acked.iter().find(|&&n| self.replicas.contains(&n)) {
            self.hinted.push(failed);
            self.send((keeper, Some(failed)), false);
        } else {
            self.hinted.push(failed);
            self.orphans.push(failed);
        }
    }
}

/// Reads the key from its replicas and returns the newest record among the first `r` replies
/// (`None` if none of them holds anything). Stale replicas are repaired, as `late` says.
pub(crate) async fn read(
    shared: &Arc<Shared>,
    key: Bytes,
    r: usize,
    late: Late,
) -> Result<Option<Record>, QuorumError> {
    read_agreeing(shared, key, r, late).await.map(|(winner, _)| winner)
}

/// [`read`], also saying how many of the first `r` replies hold the winning version (all `r`
/// when none holds anything): a linearizable read returns at once when they all do.
pub(crate) async fn read_agreeing(
    shared: &Arc<Shared>,
    key: Bytes,
    r: usize,
    late: Late,
) -> Result<(Option<Record>, usize), QuorumError> {
    let replicas = shared.ring.preference_list(key_token(&key));
    let (targets, mut failures) = targets(shared, &replicas, r);
    let mut calls: Pending<Option<Record>> = targets
        .iter()
        .map(|&node| {
            let shared = shared.clone();
            let key = key.clone();
            Box::pin(async move { (node, shared.replicas[node].read(key).await) })
                as BoxFuture<'static, _>
        })
        .collect();
    let mut replies: Vec<(NodeIndex, Option<Record>)> = Vec::with_capacity(replicas.len());
    while replies.len() < r {
        match calls.next().await {
            Some((node, Ok(record))) => replies.push((node, record)),
            Some((node, Err(cause))) => {
                failures.push(ReplicaFailure { node: shared.replicas[node].id.clone(), cause })
            }
            None => break,
        }
    }
    if replies.len() < r {
        if !calls.is_empty() {
            let drain = async move { while calls.next().await.is_some() {} };
            match late {
                Late::Background => drop(shared.background.spawn(drain)),
                Late::Await => drain.await,
            }
        }
        return Err(QuorumError {
            op: Op::Read,
            needed: r,
            got: replies.len(),
            replicas: replicas.len(),
            failures,
        });
    }
    let winner = newest(&replies).cloned();
    let version = winner.as_ref().map(|w| w.version);
    let agreeing = replies.iter().filter(|(_, r)| r.as_ref().map(|r| r.version) == version).count();
    repair::after_read(shared, key, replicas, replies, calls, late).await;
    Ok((winner, agreeing))
}

/// The record that wins the merge rule among the replies.
pub(crate) fn newest(replies: &[(NodeIndex, Option<Record>)]) -> Option<&Record> {
    replies.iter().filter_map(|(_, record)| record.as_ref()).reduce(merge)
}
