//! Hinted handoff: a node keeps records meant for unreachable replicas as hints, and hands them
//! to their owner once it answers again. A hint is removed only after the owner acknowledged it,
//! and only if no newer hint for the same key arrived meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_core::{Record, codec, now_ms};
use dynakv_proto::v1::{self, batch_op::Op, batch_result::Result as Outcome};
use dynakv_storage::{Space, next_page_start, split_stored_key};

use crate::service::NodeState;

/// Hints handed off per batch call.
const DELIVERY_BATCH: usize = 256;

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Hints the owner acknowledged and that were removed.
    pub delivered: u64,
    /// Hints older than the hint window, removed without delivery.
    pub dropped: u64,
}

/// Delivers hints every `hints.interval_ms` until the node stops.
pub async fn run(state: Arc<NodeState>) {
    let interval = Duration::from_millis(state.ring.config().hints.interval_ms);
    loop {
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if state.store.pending_hints() == 0 {
            continue;
        }
        // A pass may wait on slow owners: stop at once on shutdown (hints are removed only
        // after their owner's ack, so an interrupted pass loses nothing).
        let pass = tokio::select! {
            _ = state.stopping.cancelled() => return,
            pass = deliver(&state) => pass,
        };
        match pass {
            Ok(stats) if stats != DeliveryStats::default() => {
                tracing::info!(node = %state.id, delivered = stats.delivered, dropped = stats.dropped, "hints handed off");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %state.id, error = %e, "hint delivery failed"),
        }
    }
}

/// One pass over every hint: owners that answer get theirs; owners that are down are skipped.
pub async fn deliver(state: &NodeState) -> Result<DeliveryStats, dynakv_storage::StorageError> {
    let window = state.ring.config().hints.window_ms;
    let mut stats = DeliveryStats::default();
    let mut from = Bytes::new();
    loop {
        let page = state.store.scan(Space::Hints, from.clone(), None, DELIVERY_BATCH).await?;
        let Some((last, _)) = page.last() else { return Ok(stats) };
        from = next_page_start(last);
        let mut start = 0;
        while start < page.len() {
            let owner = owner_of(&page[start].0);
            let end =
                start + page[start..].iter().take_while(|(k, _)| owner_of(k) == owner).count();
            let hints = &page[start..end];
            start = end;
            let handed_off = match state.owner(owner).and_then(|i| state.peers.get(i)) {
                Some(peer) if peer.health.is_up() => {
                    hand_off(state, peer, hints, window, &mut stats).await?
                }
                Some(_) => false,
                None => {
                    tracing::warn!(node = %state.id, owner = format!("{owner:016x}"), "keeping hints for a node that is not in the ring");
                    false
                }
            };
            if !handed_off {
                // Skip the rest of this owner's hints this pass; go on with the next owner.
                let Some(next) = owner.checked_add(1) else { return Ok(stats) };
                from = Bytes::copy_from_slice(&next.to_be_bytes());
                break;
            }
        }
    }
}

/// Hands one owner's hints to it; false when the owner could not be reached.
async fn hand_off(
    state: &NodeState,
    peer: &crate::peers::Peer,
    hints: &[(Bytes, Bytes)],
    window: u64,
    stats: &mut DeliveryStats,
) -> Result<bool, dynakv_storage::StorageError> {
    let mut ops = Vec::with_capacity(hints.len());
    let mut pending = Vec::with_capacity(hints.len());
    for (hint_key, bytes) in hints {
        let record = codec::decode(bytes)?;
        if expired_hint(&record, window) {
            if state.store.remove_if(Space::Hints, hint_key.clone(), record.version).await?.applied
            {
                stats.dropped += 1;
            }
            continue;
        }
        let Some((_, key)) = split_stored_key(&hint_key[8..]) else { continue };
        ops.push(v1::BatchOp {
            op: Some(Op::Write(v1::WriteRequest {
                key: Bytes::copy_from_slice(key),
                record: Some(record.clone().into()),
                hint_for: String::new(),
            })),
        });
        pending.push((hint_key.clone(), record));
    }
    if ops.is_empty() {
        return Ok(true);
    }
    let Ok(reply) = peer.call(|mut c| async move { c.batch(v1::BatchRequest { ops }).await }).await
    else {
        return Ok(false);
    };
    for ((hint_key, record), result) in pending.into_iter().zip(reply.results) {
        if matches!(result.result, Some(Outcome::Write(_)))
            && state.store.remove_if(Space::Hints, hint_key, record.version).await?.applied
        {
            stats.delivered += 1;
        }
    }
    Ok(true)
}

/// The owner hash a hint's stored key starts with.
fn owner_of(hint_key: &[u8]) -> u64 {
    hint_key.get(..8).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// True when a hint's write is older than the hint window: delivering it could bring back a key
/// whose tombstone has been collected since.
fn expired_hint(record: &Record, window_ms: u64) -> bool {
    record.version.timestamp.millis().saturating_add(window_ms) < now_ms()
}
