//! Anti-entropy: replicas of a range compare Merkle digests and stream each other only the keys
//! that differ, tombstones included. After a round in which every replica of a range agreed,
//! the range's collectable tombstones are removed.
//!
//! # Digests
//!
//! A digest is the XOR of a hash of (stored key, version) over the records in a span, with their
//! count, so it is independent of scan order and of record encoding. There are two kinds:
//! - *kept* digests count every record, dead ones included. The storage writer keeps them per
//!   token bucket as it commits ([`dynakv_storage::digests`]), so the digest of a vnode range is a
//!   walk over its buckets plus a scan of the few records where its bounds cut a bucket: an idle
//!   round costs O(ranges), whatever the node holds;
//! - *scanned* digests leave out [`collectable`] records (tombstones and expired records past the
//!   grace period), and are read by scanning the span.
//!
//! A round compares kept digests first: equal ones mean both replicas hold exactly the same
//! records, and the range agrees. A range whose kept digests differ is compared again by scanned
//! digests, and only one whose scanned digests differ too is synced: split into 16 sub-spans
//! (scanned digests) recursively, until a span holds few enough keys to exchange their versions.
//! A peer that cannot answer with kept digests (rebuilding them after a storage failure, or an
//! older node) answers with scanned ones, and its ranges are compared that way.
//!
//! The grace rule lives in scanned digests only because it cannot live in kept ones: a tombstone
//! passes the grace period by the clock, not by a write. It must live somewhere: once one replica
//! has collected a tombstone and another has not yet, their kept digests differ, and the second
//! collects only in a range that agreed. Their scanned digests leave that tombstone out and agree,
//! so the second replica collects it in its next round, after which the kept digests agree again.
//!
//! # Collection
//!
//! Collection is exactly as safe as when every round compared scanned digests:
//! - a range agrees with a peer when their scanned digests agree (no replica holds a live record,
//!   or any newer one, for the key of a collectable tombstone), or when their kept digests agree,
//!   which is stronger: both hold the very same records, the tombstone included;
//! - a range that differed, or whose sync failed, collects nothing in that round;
//! - while a membership change moves ranges nothing is collected: a new owner may not have
//!   streamed a range's newer records yet;
//! - before collecting, the node asks every node of the ring, replica or not, whether it holds
//!   hints for the range ([`crate::handoff::hinted_spans`]); a range with a hint anywhere, or with
//!   a node that cannot be asked, keeps its tombstones. Hints never expire, so no clock decides;
//! - a record is removed only if it is still the version that was found collectable.
//!
//! The candidates come from [`dynakv_storage::Store::dead_before`], which reads only the token
//! buckets whose earliest dead record is due, so a round with nothing due reads nothing. That
//! choice only saves reads: every candidate is checked against [`collectable`] again, and a
//! record the store failed to offer is merely kept for a later round.
//!
//! Records that cannot be decoded are left out of kept digests; scans skip them, count them and
//! log them with their key. They never stop a round.
//!
//! This module holds the round and the digests; `sync` the repair of a differing span, and
//! `collection` the collection step with its question about hints.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::report::note_error;
use dynakv_core::{Record, RepairReport, Version, codec};
use dynakv_proto::v1;
use dynakv_storage::{Digest, Pages, Space, StorageError};
use prost::Message;

use sync::Sync;
pub(crate) use sync::pull_span;

use crate::handoff::hex;
use crate::peers::Peer;
use crate::service::NodeState;

mod collection;
mod sync;

/// Records read per storage scan.
const PAGE: usize = 512;

/// A span of the ring: tokens `t` with `start < t <= end`, clockwise; `start == end` is the whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
}

impl Span {
    /// The stored-key intervals `[from, to)` the span covers (two when it wraps past zero).
    pub(crate) fn key_ranges(self) -> Vec<(Bytes, Option<Bytes>)> {
        let key = |t: u64| Bytes::copy_from_slice(&t.to_be_bytes());
        let after = |t: u64| t.checked_add(1).map(key);
        if self.start < self.end {
            vec![(after(self.start).expect("start < end"), after(self.end))]
        } else {
            let mut ranges = Vec::with_capacity(2);
            if let Some(from) = after(self.start) {
                ranges.push((from, None));
            }
            ranges.push((Bytes::new(), after(self.end)));
            ranges
        }
    }

    /// The tokens the span covers, as inclusive intervals (two when it wraps past zero).
    pub(crate) fn tokens(self) -> Vec<RangeInclusive<u64>> {
        if self.start < self.end {
            return vec![self.start + 1..=self.end];
        }
        let mut ranges = Vec::with_capacity(2);
        if self.start < u64::MAX {
            ranges.push(self.start + 1..=u64::MAX);
        }
        ranges.push(0..=self.end);
        ranges
    }

    /// Splits the span into `parts` consecutive sub-spans.
    fn split(self, parts: u64) -> Vec<Span> {
        let width = self.end.wrapping_sub(self.start);
        let step = if width == 0 { u64::MAX / parts + 1 } else { (width / parts).max(1) };
        let mut spans = Vec::with_capacity(parts as usize);
        let mut start = self.start;
        for i in 0..parts {
            let end = if i + 1 == parts { self.end } else { start.wrapping_add(step) };
            spans.push(Span { start, end });
            start = end;
            if start == self.end {
                break;
            }
        }
        spans
    }
}

impl From<Span> for v1::TokenSpan {
    fn from(s: Span) -> Self {
        v1::TokenSpan { start: s.start, end: s.end }
    }
}

impl From<v1::TokenSpan> for Span {
    fn from(s: v1::TokenSpan) -> Self {
        Span { start: s.start, end: s.end }
    }
}

/// True when a record reads as absent (tombstone or expired) and has been so for longer than
/// the grace period: it is left out of digests and may be collected.
pub fn collectable(record: &Record, now: u64, grace_ms: u64) -> bool {
    // Dead since before `now - grace` implies expired by `now`: the death time of an expiring
    // value is at or after its expiry.
    record.dead_since().is_some_and(|since| since.saturating_add(grace_ms) < now)
}

/// The scanned digest of each span, collectable records left out; damaged records are skipped
/// and added to `damaged` (a round reports those its first digests met).
pub async fn digests(
    state: &NodeState,
    spans: &[Span],
    damaged: &mut u64,
) -> Result<Vec<Digest>, StorageError> {
    let (now, grace) = (state.wall.now_ms(), state.ring().config().tombstones.grace_ms);
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let mut digest = Digest::default();
        *damaged += for_each_record(state, *span, |stored, record| {
            if !collectable(record, now, grace) {
                digest.add(stored, record.version);
            }
        })
        .await?;
        out.push(digest);
    }
    Ok(out)
}

/// The kept digest of each span, every record counted, without a scan; `None` while the store
/// is rebuilding its digests.
pub async fn kept_digests(
    state: &NodeState,
    spans: &[Span],
) -> Result<Option<Vec<Digest>>, StorageError> {
    let parts: Vec<Vec<RangeInclusive<u64>>> = spans.iter().map(|s| s.tokens()).collect();
    let Some(digests) = state.store.digests(parts.iter().flatten().cloned().collect()).await?
    else {
        return Ok(None);
    };
    let mut digests = digests.into_iter();
    let mut out = Vec::with_capacity(spans.len());
    for span_parts in &parts {
        let mut digest = Digest::default();
        for part in digests.by_ref().take(span_parts.len()) {
            digest.merge(part);
        }
        out.push(digest);
    }
    Ok(Some(out))
}

/// The answer to a `Digest` request: kept digests when asked for and built, scanned ones otherwise.
pub async fn answer(
    state: &NodeState,
    request: v1::DigestRequest,
) -> Result<v1::DigestResponse, StorageError> {
    let spans: Vec<Span> = request.spans.into_iter().map(Span::from).collect();
    let kept = if request.all_records { kept_digests(state, &spans).await? } else { None };
    let all_records = kept.is_some();
    let digests = match kept {
        Some(kept) => kept,
        None => digests(state, &spans, &mut 0).await?,
    };
    Ok(v1::DigestResponse {
        digests: digests.iter().map(|d| d.hash).collect(),
        counts: digests.iter().map(|d| d.count).collect(),
        ring_version: state.ring_version(),
        all_records,
    })
}

/// The digests of one reply, one per requested span; `None` when the reply has the wrong length.
pub(super) fn reply_digests(reply: &v1::DigestResponse, spans: usize) -> Option<Vec<Digest>> {
    (reply.digests.len() == spans && reply.counts.len() == spans).then(|| {
        reply
            .digests
            .iter()
            .zip(&reply.counts)
            .map(|(&hash, &count)| Digest { hash, count })
            .collect()
    })
}

/// One record of a span as [`versions`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    /// The user key.
    pub key: Bytes,
    /// The stored version.
    pub version: Version,
    /// Bytes of the stored value (0 for a tombstone).
    pub size: u64,
}

/// The key, version and value size of every record in `span`, tombstones included.
pub async fn versions(state: &NodeState, span: Span) -> Result<Vec<KeyVersion>, StorageError> {
    let mut out = Vec::new();
    for_each_record(state, span, |stored, record| {
        out.push(KeyVersion {
            key: Bytes::copy_from_slice(&stored[8..]),
            version: record.version,
            size: record.value.as_ref().map_or(0, |v| v.len() as u64),
        });
    })
    .await?;
    Ok(out)
}

/// Calls `f` with the stored key and record of every record in `span`, reading in pages.
/// Returns how many records could not be decoded: each is skipped and logged with its key.
pub(super) async fn for_each_record(
    state: &NodeState,
    span: Span,
    mut f: impl FnMut(&[u8], &Record),
) -> Result<u64, StorageError> {
    let mut damaged = 0;
    for (from, to) in span.key_ranges() {
        let mut pages = Pages::new(&state.store, Space::Records, from, to, PAGE);
        while let Some(page) = pages.next().await? {
            crate::metrics::scanned(&state.label, page.len() as u64);
            for (stored, bytes) in &page {
                match codec::decode(bytes) {
                    Ok(record) => f(stored, &record),
                    Err(e) => {
                        damaged += 1;
                        tracing::error!(node = %state.id, key = %hex(stored), error = %e, "skipping a damaged record");
                    }
                }
            }
        }
    }
    Ok(damaged)
}

/// Runs a round every `anti_entropy.interval_ms` until the node stops.
pub async fn run(state: std::sync::Arc<NodeState>) {
    let interval = Duration::from_millis(state.ring().config().anti_entropy.interval_ms);
    loop {
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let round = round(&state);
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            report = round => match report {
                Ok(r) if r.ranges_failed > 0 || r.records_damaged > 0 => tracing::warn!(
                    node = %state.id, compared = r.ranges_compared, differing = r.ranges_differing,
                    failed = r.ranges_failed, damaged = r.records_damaged, errors = ?r.errors,
                    "anti-entropy round could not sync every range"
                ),
                Ok(r) => tracing::info!(
                    node = %state.id, compared = r.ranges_compared, differing = r.ranges_differing,
                    sent = r.keys_sent, received = r.keys_received, collected = r.tombstones_collected,
                    held = r.ranges_held, "anti-entropy round"
                ),
                Err(e) => tracing::warn!(node = %state.id, error = %e, "anti-entropy round failed"),
            }
        }
    }
}

/// Compares every range this node replicates with each other replica of it, repairs the
/// differences both ways, then collects tombstones in ranges where every replica agreed and no
/// node holds hints.
pub async fn round(state: &NodeState) -> Result<RepairReport, StorageError> {
    let _one_at_a_time = state.anti_entropy.lock().await;
    let started = Instant::now();
    let mut report = RepairReport { node: state.id.clone(), ..RepairReport::default() };
    let topology = state.topology();
    let ring = &topology.ring;
    let Some(me) = topology.me else {
        report.elapsed = started.elapsed();
        return Ok(report);
    };
    let ranges: Vec<_> = ring.ranges().filter(|r| r.replicas.contains(&me)).collect();
    let spans: Vec<Span> = ranges.iter().map(|r| Span { start: r.start, end: r.end }).collect();
    let mut agreed = vec![true; ranges.len()];
    let mut local =
        Local { kept: kept_digests(state, &spans).await?, scanned: vec![None; spans.len()] };

    for (peer_index, peer) in topology.peers() {
        let shared: Vec<usize> =
            (0..ranges.len()).filter(|&i| ranges[i].replicas.contains(&peer_index)).collect();
        if shared.is_empty() {
            continue;
        }
        // Kept digests first, if this node has them; a peer that cannot answers with scanned ones.
        let request = v1::DigestRequest {
            spans: shared.iter().map(|&i| spans[i].into()).collect(),
            all_records: local.kept.is_some(),
        };
        report.bytes += request.encoded_len() as u64;
        let reply = ask(peer, |mut c| async move { c.digest(request).await }).await;
        let Some((kept_reply, theirs)) = reply.and_then(Result::ok).and_then(|reply| {
            report.bytes += reply.encoded_len() as u64;
            Some((reply.all_records, reply_digests(&reply, shared.len())?))
        }) else {
            report.unreachable.push(peer.id.clone());
            shared.iter().for_each(|&i| agreed[i] = false);
            continue;
        };
        report.ranges_compared += shared.len() as u64;
        // The ranges left to compare by scanned digests, and the peer's scanned digests of them.
        let (unsettled, theirs) = match (&local.kept, kept_reply) {
            (Some(kept), true) => {
                let differing: Vec<usize> = shared
                    .iter()
                    .zip(&theirs)
                    .filter(|(i, d)| kept[**i] != **d)
                    .map(|(i, _)| *i)
                    .collect();
                if differing.is_empty() {
                    continue;
                }
                match scanned_of(peer, &spans, &differing, &mut report).await {
                    Ok(theirs) => (differing, theirs),
                    Err(e) => {
                        report.ranges_failed += differing.len() as u64;
                        differing.iter().for_each(|&i| agreed[i] = false);
                        tracing::warn!(node = %state.id, peer = %peer.id, error = %e, "digest comparison failed");
                        note_error(&mut report.errors, format_args!("{}: digests: {e}", peer.id));
                        continue;
                    }
                }
            }
            _ => (shared, theirs),
        };
        let mine = local.scanned(state, &spans, &unsettled, &mut report.records_damaged).await?;
        for ((&i, theirs), mine) in unsettled.iter().zip(theirs).zip(mine) {
            if theirs == mine {
                continue;
            }
            report.ranges_differing += 1;
            agreed[i] = false;
            let mut sync =
                Sync { state, peer: peer.as_ref(), report: &mut report, pull_only: false };
            if let Err(e) = sync.span(spans[i], mine.count.max(theirs.count), 0).await {
                report.ranges_failed += 1;
                let span = spans[i];
                tracing::warn!(node = %state.id, peer = %peer.id, start = span.start, end = span.end, error = %e, "range sync failed");
                note_error(
                    &mut report.errors,
                    format_args!("{} range ({:016x}, {:016x}]: {e}", peer.id, span.start, span.end),
                );
            }
        }
    }

    collection::collect(state, &topology, &spans, &agreed, &mut report).await?;
    report.elapsed = started.elapsed();
    crate::metrics::repair(&state.label, &report);
    Ok(report)
}

/// This node's digests of its ranges in one round: kept ones read at the start, scanned ones
/// read once each, when a peer first needs them.
struct Local {
    kept: Option<Vec<Digest>>,
    scanned: Vec<Option<Digest>>,
}

impl Local {
    /// The scanned digests of the ranges at `indices` (of `spans`), scanning those not read yet.
    async fn scanned(
        &mut self,
        state: &NodeState,
        spans: &[Span],
        indices: &[usize],
        damaged: &mut u64,
    ) -> Result<Vec<Digest>, StorageError> {
        let missing: Vec<usize> =
            indices.iter().copied().filter(|&i| self.scanned[i].is_none()).collect();
        let read =
            digests(state, &missing.iter().map(|&i| spans[i]).collect::<Vec<_>>(), damaged).await?;
        for (i, digest) in missing.into_iter().zip(read) {
            self.scanned[i] = Some(digest);
        }
        Ok(indices.iter().map(|&i| self.scanned[i].unwrap_or_default()).collect())
    }
}

/// The peer's scanned digests of the ranges at `indices` (of `spans`).
async fn scanned_of(
    peer: &Peer,
    spans: &[Span],
    indices: &[usize],
    report: &mut RepairReport,
) -> Result<Vec<Digest>, tonic::Status> {
    let request = v1::DigestRequest {
        spans: indices.iter().map(|&i| spans[i].into()).collect(),
        all_records: false,
    };
    report.bytes += request.encoded_len() as u64;
    let reply = peer.call(|mut c| async move { c.digest(request).await }).await?;
    report.bytes += reply.encoded_len() as u64;
    reply_digests(&reply, indices.len())
        .ok_or_else(|| tonic::Status::internal("digest reply of the wrong length"))
}

/// Calls a peer, after one cheap health probe if it is marked down (a call to a down peer could
/// wait out a full deadline); `None` when the probe fails too.
pub(super) async fn ask<T, F, Fut>(peer: &Peer, call: F) -> Option<Result<T, tonic::Status>>
where
    F: FnOnce(v1::replica_client::ReplicaClient<tonic::transport::Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let reachable = peer.health.is_up()
        || peer.call(|mut c| async move { c.health(v1::HealthRequest {}).await }).await.is_ok();
    if reachable { Some(peer.call(call).await) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_split_into_consecutive_parts() {
        let span = Span { start: 100, end: 260 };
        let parts = span.split(16);
        assert_eq!(parts.len(), 16);
        assert_eq!(parts[0], Span { start: 100, end: 110 });
        assert_eq!(parts[15].end, 260);
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));

        let wrapping = Span { start: u64::MAX - 10, end: 20 };
        let parts = wrapping.split(4);
        assert_eq!(parts.first().unwrap().start, u64::MAX - 10);
        assert_eq!(parts.last().unwrap().end, 20);
        assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn spans_map_to_stored_key_ranges() {
        let be = |t: u64| Bytes::copy_from_slice(&t.to_be_bytes());
        assert_eq!(Span { start: 5, end: 9 }.key_ranges(), vec![(be(6), Some(be(10)))]);
        assert_eq!(Span { start: 5, end: u64::MAX }.key_ranges(), vec![(be(6), None)]);
        assert_eq!(
            Span { start: 9, end: 5 }.key_ranges(),
            vec![(be(10), None), (Bytes::new(), Some(be(6)))]
        );
        assert_eq!(
            Span { start: u64::MAX, end: 5 }.key_ranges(),
            vec![(Bytes::new(), Some(be(6)))]
        );
    }

    #[test]
    fn only_long_dead_records_are_collectable() {
        use dynakv_core::Timestamp;
        let at = |ms: u64| Version::new(Timestamp::from_millis(ms), 1);
        let tombstone = Record::tombstone(at(1_000));
        assert!(!collectable(&tombstone, 1_500, 1_000), "within the grace period");
        assert!(collectable(&tombstone, 2_001, 1_000));
        let value = Record::value(at(1_000), Bytes::from_static(b"v"));
        assert!(!collectable(&value, u64::MAX / 2, 1_000), "live values are never collected");
        let expiring = Record { expires_at_ms: 5_000, ..value };
        assert!(!collectable(&expiring, 5_500, 1_000), "grace counts from the expiry");
        assert!(collectable(&expiring, 6_001, 1_000));
    }
}
