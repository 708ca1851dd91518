//! The read round behind every get, single or batched: ask R replicas of the key (or all N),
//! ask one more when a call fails or is late (see [`hedge`](crate::hedge)), and decide as soon
//! as R have answered, by version. The calls still in flight then go to read repair, in a
//! background task or awaited by the caller (`Late`); either way their results still update
//! node health and are compared too.

use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::{Record, merge};
use dynakv_ring::{NodeIndex, PreferenceList, key_token};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::client::Shared;
use crate::error::{Op, QuorumError, ReplicaFailure};
use crate::hedge::{Lateness, ReadFanout};
use crate::quorum::{Late, Pending, split_by_health};
use crate::repair;
use crate::topology::Topology;

/// The replicas a read may ask, in the order it asks them, and how many it asks up front. The
/// up replicas come first, in preference order, those that failed their last call after those
/// that did not; replicas marked down are left out, each with a `Down` failure (reported if the
/// quorum is missed). If that leaves fewer than `r`, every replica is asked at once.
fn plan_read(
    topology: &Topology,
    replicas: &PreferenceList,
    r: usize,
    fanout: ReadFanout,
) -> (PreferenceList, usize, Vec<ReplicaFailure>) {
    let (mut up, _, skipped) = split_by_health(topology, replicas);
    if up.len() < r {
        return (replicas.clone(), replicas.len(), Vec::new());
    }
    up.sort_by_key(|&node| topology.replicas[node].health.consecutive_failures() > 0);
    let first = match fanout {
        ReadFanout::Quorum => r,
        ReadFanout::All => up.len(),
    };
    (up, first, skipped)
}

/// Reads the key from its replicas (in the current placement, also during a ring change) and
/// returns the newest record among the first `r` replies (`None` if none of them holds
/// anything). Stale replicas among those asked are repaired, as `late` says.
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
///
/// The read asks the first replicas of its plan ([`plan_read`]), and one more from the plan
/// whenever a call fails or becomes late by the [`HedgePolicy`](crate::HedgePolicy); replies
/// count in the order they arrive, so any `r` of the key's replicas make the quorum.
pub(crate) async fn read_agreeing(
    shared: &Arc<Shared>,
    key: Bytes,
    r: usize,
    late: Late,
) -> Result<(Option<Record>, usize), QuorumError> {
    let topology = shared.topology();
    let started = std::time::Instant::now();
    let replicas = topology.ring.preference_list(key_token(&key));
    let (order, first, failures) = plan_read(&topology, &replicas, r, shared.options.read_fanout);
    let mut round = ReadRound {
        hedge: shared.options.hedge,
        topology,
        key,
        order,
        asked: 0,
        calls: FuturesUnordered::new(),
        lateness: Lateness::default(),
        failures,
    };
    for _ in 0..first {
        round.ask_next();
    }
    let mut replies: Vec<(NodeIndex, Option<Record>)> = Vec::with_capacity(replicas.len());
    // Armed only while a call is watched and a replica is left to hedge to.
    let mut timer = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    while replies.len() < r {
        let late_at = round.can_hedge().then(|| round.lateness.next()).flatten();
        if let Some(at) = late_at
            && timer.deadline() != at
        {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            biased;
            reply = round.calls.next() => match reply {
                Some((node, Ok(record))) => {
                    round.lateness.ended(node);
                    replies.push((node, record));
                }
                Some((node, Err(cause))) => {
                    round.lateness.ended(node);
                    let id = round.topology.replicas[node].id.clone();
                    round.failures.push(ReplicaFailure { node: id, cause });
                    round.hedge(Hedge::Failed);
                }
                None => break,
            },
            () = &mut timer, if late_at.is_some() => {
                round.lateness.hedged();
                round.hedge(Hedge::Late);
            }
        }
    }
    crate::metrics::quorum(Op::Read, started, replies.len() >= r);
    let ReadRound { topology, key, order, asked, mut calls, failures, .. } = round;
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
            target: None,
            failures,
        });
    }
    let winner = newest(&replies).cloned();
    let version = winner.as_ref().map(|w| w.version);
    let agreeing = replies.iter().filter(|(_, r)| r.as_ref().map(|r| r.version) == version).count();
    let asked = order[..asked].iter().copied().collect();
    repair::after_read(shared, topology, key, asked, replies, calls, late).await;
    Ok((winner, agreeing))
}

/// Why a read asks one more replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hedge {
    /// A call failed (an error or its deadline).
    Failed,
    /// A call has not answered within its node's hedge delay.
    Late,
}

/// One read in flight: the replicas it may ask, the calls it has made, and which of them may
/// still cause a hedge.
struct ReadRound {
    topology: Arc<Topology>,
    key: Bytes,
    hedge: crate::HedgePolicy,
    /// Every replica the read may ask, in the order it asks them.
    order: PreferenceList,
    /// How many of `order` have been asked.
    asked: usize,
    calls: Pending<Option<Record>>,
    /// The calls that have not answered and not yet caused a hedge.
    lateness: Lateness,
    failures: Vec<ReplicaFailure>,
}

impl ReadRound {
    /// True while some replica of the plan has not been asked.
    fn can_hedge(&self) -> bool {
        self.asked < self.order.len()
    }

    /// Asks the next replica of the plan, if one is left.
    fn ask_next(&mut self) -> bool {
        let Some(&node) = self.order.get(self.asked) else { return false };
        self.asked += 1;
        let replica = &self.topology.replicas[node];
        let late_at = tokio::time::Instant::now() + self.hedge.delay(replica.read_latency.get());
        self.lateness.sent(node, late_at);
        let (topology, key) = (self.topology.clone(), self.key.clone());
        self.calls.push(Box::pin(async move {
            (node, topology.replicas[node].read(key, topology.version()).await)
        }));
        true
    }

    /// Asks one more replica, for `why`.
    fn hedge(&mut self, why: Hedge) {
        if self.ask_next() {
            crate::metrics::hedge(why);
        }
    }
}

/// The record that wins the merge rule among the replies.
pub(crate) fn newest(replies: &[(NodeIndex, Option<Record>)]) -> Option<&Record> {
    replies.iter().filter_map(|(_, record)| record.as_ref()).reduce(merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_asks_r_healthy_replicas_first_then_the_rest_in_order() {
        let mut text = "[replication]\nn = 3\nr = 2\nw = 2\n".to_string();
        for i in 1..=4 {
            text += &format!("[[nodes]]\nid = \"n{i}\"\naddr = \"127.0.0.1:{}\"\n", 7400 + i);
        }
        let client = crate::Client::connect(dynakv_ring::Ring::parse(&text).unwrap()).unwrap();
        let topology = client.shared.topology.load_full();
        let replicas = topology.ring.preference_list(key_token(b"k"));
        let [a, b, c] = [replicas[0], replicas[1], replicas[2]];
        let plan = |r, fanout| {
            let (order, first, failures) = plan_read(&topology, &replicas, r, fanout);
            (order.to_vec(), first, failures.len())
        };
        assert_eq!(plan(2, ReadFanout::Quorum), (vec![a, b, c], 2, 0));
        assert_eq!(plan(2, ReadFanout::All), (vec![a, b, c], 3, 0));
        assert_eq!(plan(3, ReadFanout::Quorum), (vec![a, b, c], 3, 0), "R = N asks all");
        // One failure: still up, asked after the others.
        topology.replicas[a].health.record_failure();
        assert_eq!(plan(2, ReadFanout::Quorum), (vec![b, c, a], 2, 0));
        // Three in a row: down, left out (and reported if the quorum is missed).
        topology.replicas[a].health.record_failure();
        topology.replicas[a].health.record_failure();
        assert_eq!(plan(2, ReadFanout::Quorum), (vec![b, c], 2, 1));
        assert_eq!(plan(2, ReadFanout::All), (vec![b, c], 2, 1));
        // Too few up for R = 3: every replica, at once.
        assert_eq!(plan(3, ReadFanout::Quorum), (vec![a, b, c], 3, 0));
    }
}
