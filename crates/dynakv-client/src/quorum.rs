//! The concurrent fan-out behind every read and write: ask all N replicas of a key at once and
//! return as soon as R (or W) have answered. The calls still in flight are handed to a
//! background task, so their results still update node health (and, for reads, feed repair).

use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::{Record, Timestamp};
use dynakv_ring::{NodeIndex, PreferenceList, key_token};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::client::Shared;
use crate::error::{Op, QuorumError, ReplicaError, ReplicaFailure};
use crate::repair;

/// Calls still in flight when a quorum call returns.
pub(crate) type Pending<T> =
    FuturesUnordered<BoxFuture<'static, (NodeIndex, Result<T, ReplicaError>)>>;

/// The replicas a call goes to. Nodes marked down are skipped, unless skipping them would leave
/// too few to reach the quorum: then every replica is tried.
pub(crate) fn targets(
    shared: &Shared,
    replicas: &PreferenceList,
    quorum: usize,
) -> (PreferenceList, Vec<ReplicaFailure>) {
    let mut up = PreferenceList::new();
    let mut skipped = Vec::new();
    for &node in replicas {
        match shared.replicas[node].health.retry_in() {
            None => up.push(node),
            Some(retry_in) => skipped.push(ReplicaFailure {
                node: shared.replicas[node].id.clone(),
                cause: ReplicaError::Down { retry_in },
            }),
        }
    }
    if up.len() < quorum { (replicas.clone(), Vec::new()) } else { (up, skipped) }
}

/// Writes `record` to the key's replicas and returns once `w` have acknowledged it.
pub(crate) async fn write(
    shared: &Arc<Shared>,
    key: Bytes,
    record: Record,
    w: usize,
) -> Result<(), QuorumError> {
    let replicas = shared.ring.preference_list(key_token(&key));
    let (targets, mut failures) = targets(shared, &replicas, w);
    let mut calls: Pending<dynakv_proto::v1::WriteResponse> = targets
        .iter()
        .map(|&node| {
            let shared = shared.clone();
            let (key, record) = (key.clone(), record.clone());
            Box::pin(async move { (node, shared.replicas[node].write(key, record).await) })
                as BoxFuture<'static, _>
        })
        .collect();
    let mut acked = 0;
    while acked < w {
        match calls.next().await {
            Some((_, Ok(reply))) => {
                acked += 1;
                if let Some(current) = reply.current {
                    shared.clock.observe(Timestamp(current.timestamp));
                }
            }
            Some((node, Err(cause))) => {
                failures.push(ReplicaFailure { node: shared.replicas[node].id.clone(), cause })
            }
            None => break,
        }
    }
    if !calls.is_empty() {
        shared.background.spawn(async move { while calls.next().await.is_some() {} });
    }
    if acked >= w {
        Ok(())
    } else {
        Err(QuorumError {
            op: Op::Write,
            needed: w,
            got: acked,
            replicas: replicas.len(),
            failures,
        })
    }
}

/// Reads the key from its replicas and returns the newest record among the first `r` replies
/// (`None` if none of them holds anything). Stale replicas are repaired in the background.
pub(crate) async fn read(
    shared: &Arc<Shared>,
    key: Bytes,
    r: usize,
) -> Result<Option<Record>, QuorumError> {
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
            shared.background.spawn(async move { while calls.next().await.is_some() {} });
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
    if let Some(record) = &winner {
        shared.clock.observe(record.version.timestamp);
    }
    repair::after_read(shared, key, replicas, replies, calls);
    Ok(winner)
}

/// The record with the highest version among the replies.
pub(crate) fn newest(replies: &[(NodeIndex, Option<Record>)]) -> Option<&Record> {
    replies.iter().filter_map(|(_, record)| record.as_ref()).max_by_key(|record| record.version)
}
