//! Read repair: after a read has answered, bring every replica it asked up to the newest version
//! seen. Late replies (a slow replica's, after a hedge) are compared too. A replica the read did
//! not ask is left alone: a later read that asks it repairs it, and so do anti-entropy and
//! hinted handoff. A single read repairs in the background, bounded:
//! when too many repairs are in flight, new ones are skipped and left to anti-entropy. A batched
//! read repairs before its operation ends, bounded by the batch's own limit on operations in flight.

use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::Record;
use dynakv_ring::{NodeIndex, PreferenceList};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::client::Shared;
use crate::quorum::{Late, Pending};
use crate::read::newest;
use crate::topology::Topology;

/// Repairs the replicas a read asked (`asked`), given the replies it has so far and the calls
/// still in flight: in a background task (returning at once) or here, as `late` says.
pub(crate) async fn after_read(
    shared: &Arc<Shared>,
    topology: Arc<Topology>,
    key: Bytes,
    asked: PreferenceList,
    replies: Vec<(NodeIndex, Option<Record>)>,
    mut pending: Pending<Option<Record>>,
    late: Late,
) {
    if pending.is_empty() && replies.len() == asked.len() && !needs_repair(&asked, &replies) {
        return;
    }
    if late == Late::Await {
        return repair(topology, key, asked, replies, pending).await;
    }
    let Ok(permit) = shared.repairs.clone().try_acquire_owned() else {
        tracing::debug!("read repair skipped: too many in flight");
        crate::metrics::repair_skipped();
        shared.background.spawn(async move { while pending.next().await.is_some() {} });
        return;
    };
    let repair = repair(topology, key, asked, replies, pending);
    shared.background.spawn(async move {
        let _permit = permit;
        repair.await;
    });
}

/// Waits for the late replies, then writes the newest record to every stale replica of `asked`
/// that is up, placed by the ring the read was.
async fn repair(
    topology: Arc<Topology>,
    key: Bytes,
    asked: PreferenceList,
    mut replies: Vec<(NodeIndex, Option<Record>)>,
    mut pending: Pending<Option<Record>>,
) {
    while let Some((node, result)) = pending.next().await {
        if let Ok(record) = result {
            replies.push((node, record));
        }
    }
    let Some(best) = newest(&replies).cloned() else { return };
    let mut writes: FuturesUnordered<_> = stale(&asked, &replies, &best)
        .filter(|&node| topology.replicas[node].health.is_up())
        .map(|node| {
            let (replica, key, best) = (&topology.replicas[node], key.clone(), best.clone());
            let version = topology.version();
            async move {
                let result = replica.write(key, best, version).await;
                crate::metrics::repair_sent(result.is_ok());
                if let Err(e) = result {
                    tracing::debug!(node = %replica.id, error = %e, "read repair failed");
                }
            }
        })
        .collect();
    while writes.next().await.is_some() {}
}

/// True when some replica did not answer with the newest version.
fn needs_repair(replicas: &PreferenceList, replies: &[(NodeIndex, Option<Record>)]) -> bool {
    match newest(replies) {
        Some(best) => stale(replicas, replies, best).next().is_some(),
        None => false,
    }
}

/// Replicas whose answer `best` supersedes by the merge rule: older, empty, or no answer at all.
fn stale<'a>(
    replicas: &'a PreferenceList,
    replies: &'a [(NodeIndex, Option<Record>)],
    best: &'a Record,
) -> impl Iterator<Item = NodeIndex> + 'a {
    replicas.iter().copied().filter(move |node| {
        !replies.iter().any(|(n, r)| n == node && r.as_ref().is_some_and(|r| !best.supersedes(r)))
    })
}
