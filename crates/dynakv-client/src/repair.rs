//! Read repair: after a read has answered, bring every replica of the key up to the newest
//! version seen, in the background. Late replies are compared too. Bounded: when too many
//! repairs are in flight, new ones are skipped and left to anti-entropy.

use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::Record;
use dynakv_ring::{NodeIndex, PreferenceList};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::client::Shared;
use crate::quorum::{Pending, newest};

/// Starts repairing the key's replicas, given the replies a read has so far and the calls still
/// in flight. Returns at once.
pub(crate) fn after_read(
    shared: &Arc<Shared>,
    key: Bytes,
    replicas: PreferenceList,
    mut replies: Vec<(NodeIndex, Option<Record>)>,
    mut pending: Pending<Option<Record>>,
) {
    if pending.is_empty() && replies.len() == replicas.len() && !needs_repair(&replicas, &replies) {
        return;
    }
    let Ok(permit) = shared.repairs.clone().try_acquire_owned() else {
        tracing::debug!("read repair skipped: too many in flight");
        shared.background.spawn(async move { while pending.next().await.is_some() {} });
        return;
    };
    let shared = shared.clone();
    shared.background.clone().spawn(async move {
        let _permit = permit;
        while let Some((node, result)) = pending.next().await {
            if let Ok(record) = result {
                replies.push((node, record));
            }
        }
        let Some(best) = newest(&replies).cloned() else { return };
        let mut writes: FuturesUnordered<_> = stale(&replicas, &replies, &best)
            .filter(|&node| shared.replicas[node].health.is_up())
            .map(|node| {
                let (replica, key, best) = (&shared.replicas[node], key.clone(), best.clone());
                async move {
                    if let Err(e) = replica.write(key, best).await {
                        tracing::debug!(node = %replica.id, error = %e, "read repair failed");
                    }
                }
            })
            .collect();
        while writes.next().await.is_some() {}
    });
}

/// True when some replica did not answer with the newest version.
fn needs_repair(replicas: &PreferenceList, replies: &[(NodeIndex, Option<Record>)]) -> bool {
    match newest(replies) {
        Some(best) => stale(replicas, replies, best).next().is_some(),
        None => false,
    }
}

/// Replicas that did not answer with `best`'s version: older, empty, or no answer at all.
pub(crate) fn stale<'a>(
    replicas: &'a PreferenceList,
    replies: &'a [(NodeIndex, Option<Record>)],
    best: &'a Record,
) -> impl Iterator<Item = NodeIndex> + 'a {
    replicas.iter().copied().filter(move |node| {
        !replies
            .iter()
            .any(|(n, r)| n == node && r.as_ref().is_some_and(|r| r.version == best.version))
    })
}
