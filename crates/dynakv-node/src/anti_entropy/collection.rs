//! Tombstone collection at the end of a round: in the ranges every replica agreed on, the
//! records dead for longer than the grace period are removed, once no node holds hints for them.

use std::ops::RangeInclusive;

use bytes::Bytes;
use dynakv_core::{RepairReport, Version};
use dynakv_proto::v1;
use dynakv_storage::{Space, StorageError};
use prost::Message;

use super::{Span, ask, collectable};
use crate::handoff::hinted_spans;
use crate::service::NodeState;
use crate::topology::Topology;

/// Removes the collectable records of the ranges of `spans` marked in `agreed`, unless a ring
/// change is moving ranges or some node holds (or may hold) hints for the range.
pub(super) async fn collect(
    state: &NodeState,
    topology: &Topology,
    spans: &[Span],
    agreed: &[bool],
    report: &mut RepairReport,
) -> Result<(), StorageError> {
    let ring = &topology.ring;
    // The collectable records of each agreed range; only ranges that have some ask the other
    // nodes about hints, so an idle round still moves digests only.
    let (now, grace) = (state.wall.now_ms(), ring.config().tombstones.grace_ms);
    let mut candidates: Vec<(Span, Vec<(Bytes, Version)>)> = Vec::new();
    // While a membership change moves ranges nothing is collected: a new owner may not have
    // streamed a range's newer records yet.
    let collecting = !ring.is_moving();
    let agreed: Vec<Span> = spans
        .iter()
        .zip(agreed)
        .filter(|(_, agreed)| **agreed && collecting)
        .map(|(s, _)| *s)
        .collect();
    // Dead since before `now - grace`, in one call: the store reads only buckets that may hold one.
    let parts: Vec<Vec<RangeInclusive<u64>>> = agreed.iter().map(|s| s.tokens()).collect();
    let ranges = parts.iter().flatten().cloned().collect();
    let mut found = state.store.dead_before(ranges, now.saturating_sub(grace)).await?.into_iter();
    for (span, span_parts) in agreed.into_iter().zip(&parts) {
        let dead: Vec<(Bytes, Version)> = found
            .by_ref()
            .take(span_parts.len())
            .flatten()
            .filter(|(_, record)| collectable(record, now, grace))
            .map(|(stored, record)| (stored, record.version))
            .collect();
        if !dead.is_empty() {
            candidates.push((span, dead));
        }
    }
    let asked: Vec<Span> = candidates.iter().map(|(span, _)| *span).collect();
    let held = hints_anywhere(state, topology, &asked, report).await?;
    report.ranges_held = held.iter().filter(|h| **h).count() as u64;
    for ((_, dead), _) in candidates.into_iter().zip(&held).filter(|(_, held)| !**held) {
        // Conditional on the version seen: a record written since is never removed.
        for (stored, version) in dead {
            if state.store.remove_if(Space::Records, stored, version).await?.applied {
                report.tombstones_collected += 1;
            }
        }
    }
    Ok(())
}

/// For each span, whether any node of the ring (this one included) holds hints for it, or could
/// not be asked: either way its tombstones must wait.
async fn hints_anywhere(
    state: &NodeState,
    topology: &Topology,
    spans: &[Span],
    report: &mut RepairReport,
) -> Result<Vec<bool>, StorageError> {
    if spans.is_empty() {
        return Ok(Vec::new());
    }
    let mut held = hinted_spans(state, spans, &[]).await?;
    for (index, spec) in topology.ring.nodes().iter().enumerate() {
        // A joining node owns no tokens and is never a stand-in, so it holds no hints: one that
        // is listed but not running yet must not hold collection back.
        if spec.state == dynakv_ring::NodeState::Joining {
            continue;
        }
        let Some(peer) = topology.peer(index) else { continue };
        let request = v1::HintSpansRequest {
            spans: spans.iter().map(|&s| s.into()).collect(),
            ignore_owners: Vec::new(),
        };
        report.bytes += request.encoded_len() as u64;
        match ask(peer, |mut c| async move { c.hint_spans(request).await }).await {
            Some(Ok(reply)) if reply.held.len() == spans.len() => {
                report.bytes += reply.encoded_len() as u64;
                held.iter_mut().zip(reply.held).for_each(|(h, theirs)| *h |= theirs);
            }
            _ => {
                tracing::debug!(node = %state.id, peer = %peer.id, "cannot ask for hints: keeping tombstones");
                return Ok(vec![true; spans.len()]);
            }
        }
    }
    Ok(held)
}
