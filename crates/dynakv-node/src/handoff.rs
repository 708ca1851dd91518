//! Hinted handoff: a node keeps records meant for unreachable replicas as hints, and hands them
//! to their owner once it answers again. A hint is removed only after the owner acknowledged it,
//! and only if no newer hint for the same key arrived meanwhile.
//!
//! Hints never expire. A hint may be the only copy of an acknowledged write (a sloppy quorum can
//! be met by stand-ins alone), so dropping one could lose that write. Instead of a hint window
//! judged by one node's clock, tombstone collection asks every node whether it holds hints for a
//! range ([`hinted_spans`]) and keeps the range's tombstones until none does: a late hint can then
//! never bring a deleted key back, whatever any clock says.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::report::note_error;
use dynakv_core::{HandoffReport, Version, codec};
use dynakv_proto::v1::batch_result::Result as Outcome;
use dynakv_storage::{Space, StorageError, Write, next_page_start, split_stored_key};

use crate::anti_entropy::Span;
use crate::peers::{Peer, SizedOp, chunks, unreachable};
use crate::service::NodeState;

/// Hints read per storage scan. Bounds the memory of a pass: a page may hold this many values.
const SCAN_PAGE: usize = 64;

/// Delivers hints every `hints.interval_ms` until the node stops.
pub async fn run(state: Arc<NodeState>) {
    let interval = Duration::from_millis(state.ring().config().hints.interval_ms);
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
            pass = deliver(&state, false) => pass,
        };
        match pass {
            Ok(report) if report.failed > 0 => {
                tracing::warn!(node = %state.id, delivered = report.delivered, failed = report.failed,
                    pending = report.pending, errors = ?report.errors, "hints could not be handed off");
            }
            Ok(report) if report.delivered > 0 => {
                tracing::info!(node = %state.id, delivered = report.delivered, pending = report.pending, "hints handed off");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %state.id, error = %e, "hint delivery failed"),
        }
    }
}

/// One pass over every hint: owners that answer get theirs; owners marked down are skipped,
/// unless `try_down` (an operator asked for the pass: every owner is tried once). Hints that fail
/// although their owner answered are kept, counted, and reported with their cause. Passes never
/// overlap.
pub async fn deliver(state: &NodeState, try_down: bool) -> Result<HandoffReport, StorageError> {
    let _one_at_a_time = state.handoff.lock().await;
    let started = Instant::now();
    let mut report = HandoffReport { node: state.id.clone(), ..HandoffReport::default() };
    let topology = state.topology();
    let mut from = Bytes::new();
    'pages: loop {
        let page = state.store.scan(Space::Hints, from.clone(), None, SCAN_PAGE).await?;
        let Some((last, _)) = page.last() else { break };
        from = next_page_start(last);
        let mut start = 0;
        while start < page.len() {
            let owner = owner_of(&page[start].0);
            let end =
                start + page[start..].iter().take_while(|(k, _)| owner_of(k) == owner).count();
            let hints = &page[start..end];
            start = end;
            // Hints for keys their owner no longer holds (a ring change moved them, or removed
            // the owner) go to the key's replicas in the ring as it is now instead.
            let index = topology.owner(owner);
            let (kept, moved): (Vec<_>, Vec<_>) = hints.iter().cloned().partition(|(key, _)| {
                let token = hint_token(key);
                index.is_some_and(|i| token.is_some_and(|t| topology.ring.holds(t, i)))
            });
            if !moved.is_empty() {
                redirect(state, &topology, &moved, &mut report).await?;
            }
            let handed_off = match index.and_then(|i| topology.peer(i)) {
                _ if kept.is_empty() => true,
                Some(peer) if try_down || peer.health.is_up() => {
                    hand_off(state, peer, &kept, &mut report).await?
                }
                Some(_) => false,
                None => true,
            };
            if !handed_off {
                // Skip the rest of this owner's hints this pass; go on with the next owner.
                let Some(next) = owner.checked_add(1) else { break 'pages };
                from = Bytes::copy_from_slice(&next.to_be_bytes());
                break;
            }
        }
    }
    state.hint_failures.fetch_add(report.failed, Ordering::Relaxed);
    crate::metrics::handoff(&state.label, &report);
    report.pending = state.store.pending_hints();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Hands one owner's hints to it; false when the owner could not be reached.
async fn hand_off(
    state: &NodeState,
    peer: &Peer,
    hints: &[(Bytes, Bytes)],
    report: &mut HandoffReport,
) -> Result<bool, StorageError> {
    let mut ops = Vec::with_capacity(hints.len());
    let mut sent: Vec<(Bytes, Version)> = Vec::with_capacity(hints.len());
    for (hint_key, bytes) in hints {
        let decoded = codec::decode(bytes).map_err(|e| e.to_string()).and_then(|record| {
            let (_, key) = split_stored_key(&hint_key[8..]).ok_or("hint key is too short")?;
            Ok((Bytes::copy_from_slice(key), record))
        });
        match decoded {
            Ok((key, record)) => {
                sent.push((hint_key.clone(), record.version));
                ops.push(SizedOp::write(key, record));
            }
            Err(e) => {
                report.failed += 1;
                note_error(&mut report.errors, format!("damaged hint {}: {e}", hex(hint_key)));
            }
        }
    }
    let mut sent = sent.into_iter();
    for chunk in chunks(ops, peer.batch_budget()) {
        let chunk_hints: Vec<_> = sent.by_ref().take(chunk.len()).collect();
        let results = match peer.batch(chunk).await {
            Ok(results) => results,
            Err(status) if unreachable(&status) => return Ok(false),
            Err(status) => {
                report.failed += chunk_hints.len() as u64;
                note_error(&mut report.errors, format!("{} refused hints: {status}", peer.id));
                continue;
            }
        };
        // Removals go to the store as one message, so they share one group commit.
        let mut removals = Vec::with_capacity(chunk_hints.len());
        for ((hint_key, version), result) in chunk_hints.into_iter().zip(results) {
            match result {
                // Applied or not, the owner now holds this version or a newer one.
                Ok(Outcome::Write(_)) => {
                    removals.push(Write::remove_if(Space::Hints, hint_key, version));
                }
                Ok(_) => {
                    report.failed += 1;
                    note_error(&mut report.errors, format!("{} answered a hint oddly", peer.id));
                }
                // The owner cannot take writes now (its disk is full or failing): it is not
                // ready, like an owner that is down. Try again next pass.
                Err(status) if owner_not_ready(&status) => return Ok(false),
                Err(status) => {
                    report.failed += 1;
                    note_error(
                        &mut report.errors,
                        format!("{} refused hint {}: {status}", peer.id, hex(&hint_key)),
                    );
                }
            }
        }
        for removed in state.store.write_batch(removals).await {
            report.delivered += u64::from(removed?.applied);
        }
    }
    Ok(true)
}

/// The ring token of the key a hint's stored key names.
fn hint_token(hint_key: &[u8]) -> Option<u64> {
    split_stored_key(hint_key.get(8..)?).map(|(token, _)| token)
}

/// Delivers hints whose owner no longer holds their key to every replica the key has now (this
/// node's own store included, if it is one), each as a plain write under the merge rule; a hint
/// is removed once every one of them has taken it.
async fn redirect(
    state: &NodeState,
    topology: &crate::topology::Topology,
    hints: &[(Bytes, Bytes)],
    report: &mut HandoffReport,
) -> Result<(), StorageError> {
    for (hint_key, bytes) in hints {
        let decoded = codec::decode(bytes).ok().zip(split_stored_key(&hint_key[8..]));
        let Some((record, (token, key))) = decoded else {
            report.failed += 1;
            note_error(&mut report.errors, format!("damaged hint {}", hex(hint_key)));
            continue;
        };
        let (current, target) = topology.ring.write_sets(token);
        let mut replicas: Vec<usize> = current.to_vec();
        replicas.extend(target.iter().flatten().filter(|i| !current.contains(i)));
        let mut taken = true;
        for replica in replicas {
            let ok = match topology.peer(replica) {
                None => state.store.write(token, key, record.clone()).await.is_ok(),
                Some(peer) => {
                    let op = SizedOp::write(Bytes::copy_from_slice(key), record.clone());
                    matches!(peer.batch(vec![op]).await.as_deref(), Ok([Ok(Outcome::Write(_))]))
                }
            };
            taken &= ok;
        }
        if taken {
            let removed =
                state.store.remove_if(Space::Hints, hint_key.clone(), record.version).await?;
            report.delivered += u64::from(removed.applied);
        }
    }
    Ok(())
}

/// For each span, whether this node holds a hint (for any owner but those whose id hashes are
/// in `ignore`) for a key whose token is in it. A scan of at most one entry per owner held and
/// span: cheap, and free when no hint is held.
pub async fn hinted_spans(
    state: &NodeState,
    spans: &[Span],
    ignore: &[u64],
) -> Result<Vec<bool>, StorageError> {
    let mut held = vec![false; spans.len()];
    if state.store.pending_hints() == 0 {
        return Ok(held);
    }
    let mut from = Bytes::new();
    loop {
        // The next owner this node holds hints for.
        let first = state.store.scan(Space::Hints, from, None, 1).await?;
        let Some((key, _)) = first.first() else { return Ok(held) };
        let owner = owner_of(key);
        let prefixed = |tail: &[u8]| {
            let mut out = owner.to_be_bytes().to_vec();
            out.extend_from_slice(tail);
            Bytes::from(out)
        };
        let next_owner = owner.checked_add(1).map(|o| Bytes::copy_from_slice(&o.to_be_bytes()));
        for (i, span) in spans.iter().enumerate().filter(|_| !ignore.contains(&owner)) {
            for (lo, hi) in span.key_ranges() {
                if held[i] {
                    break;
                }
                let hi = hi.map(|hi| prefixed(&hi)).or_else(|| next_owner.clone());
                held[i] = !state.store.scan(Space::Hints, prefixed(&lo), hi, 1).await?.is_empty();
            }
        }
        match next_owner {
            Some(next) => from = next,
            None => return Ok(held),
        }
    }
}

/// True when an owner refused a hint because it cannot take writes at the moment.
fn owner_not_ready(status: &tonic::Status) -> bool {
    matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::Unavailable)
}

/// The owner hash a hint's stored key starts with.
fn owner_of(hint_key: &[u8]) -> u64 {
    hint_key.get(..8).map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// The start of a stored key as hex, for logs: keys may be binary and long, and values are never
/// logged.
pub(crate) fn hex(key: &[u8]) -> String {
    let mut out: String = key.iter().take(40).map(|b| format!("{b:02x}")).collect();
    if key.len() > 40 {
        out.push_str("...");
    }
    out
}
