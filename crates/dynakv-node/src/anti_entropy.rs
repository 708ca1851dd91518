//! Anti-entropy: replicas of a range compare Merkle digests and stream each other only the keys
//! that differ, tombstones included. After a round in which every replica of a range agreed,
//! the range's collectable tombstones are removed.
//!
//! The tree is two levels deep and computed on demand: one digest per vnode range, then, for a
//! range that differs, 16 digests per sub-span, recursively, until a span holds few enough keys
//! to exchange their versions. A digest is the XOR of a hash of (stored key, version) over the
//! records in a span, so it is independent of scan order and of record encoding.
//!
//! Collection is safe because a tombstone past the grace period is left out of digests: ranges
//! agree only when no replica holds a live record (or any newer one) for its key, and hints old
//! enough to carry an overwritten value are dropped instead of delivered (see `hints.window_ms`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::{Record, RepairReport, Version, codec, now_ms};
use dynakv_proto::v1::{self, batch_op::Op, batch_result::Result as Outcome};
use dynakv_ring::key_token;
use dynakv_storage::{Space, StorageError, next_page_start, split_stored_key};
use prost::Message;
use xxhash_rust::xxh3::xxh3_64;

use crate::peers::Peer;
use crate::service::NodeState;

/// A span holding more records than this on either side is split before versions are exchanged.
const EXCHANGE_LIMIT: u64 = 512;
/// Sub-spans a differing span is split into.
const FANOUT: u64 = 16;
/// Deepest split below a vnode range.
const MAX_DEPTH: u32 = 4;
/// Records read or written per storage scan and per batch call.
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
    fn key_ranges(self) -> Vec<(Bytes, Option<Bytes>)> {
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
    let dead = record.is_tombstone() || record.is_expired_at(now);
    let since = record.version.timestamp.millis().max(record.expires_at_ms);
    dead && since.saturating_add(grace_ms) < now
}

/// The digest and record count of each span.
pub async fn digests(state: &NodeState, spans: &[Span]) -> Result<Vec<(u64, u64)>, StorageError> {
    let (now, grace) = (now_ms(), state.ring.config().tombstones.grace_ms);
    let mut out = Vec::with_capacity(spans.len());
    for span in spans {
        let (mut digest, mut count) = (0u64, 0u64);
        for_each_record(state, *span, |stored, record| {
            if !collectable(record, now, grace) {
                digest ^= entry_hash(stored, record.version);
                count += 1;
            }
        })
        .await?;
        out.push((digest, count));
    }
    Ok(out)
}

/// The key and version of every record in `span`, tombstones included.
pub async fn versions(
    state: &NodeState,
    span: Span,
) -> Result<Vec<(Bytes, Version)>, StorageError> {
    let mut out = Vec::new();
    for_each_record(state, span, |stored, record| {
        out.push((Bytes::copy_from_slice(&stored[8..]), record.version));
    })
    .await?;
    Ok(out)
}

/// Calls `f` with the stored key and record of every record in `span`, reading in pages.
async fn for_each_record(
    state: &NodeState,
    span: Span,
    mut f: impl FnMut(&[u8], &Record),
) -> Result<(), StorageError> {
    for (mut from, to) in span.key_ranges() {
        loop {
            let page = state.store.scan(Space::Records, from.clone(), to.clone(), PAGE).await?;
            for (stored, bytes) in &page {
                f(stored, &codec::decode(bytes)?);
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => from = next_page_start(last),
                _ => break,
            }
        }
    }
    Ok(())
}

/// A record's contribution to its span's digest.
fn entry_hash(stored_key: &[u8], version: Version) -> u64 {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&xxh3_64(stored_key).to_be_bytes());
    buf[8..16].copy_from_slice(&version.timestamp.0.to_be_bytes());
    buf[16..].copy_from_slice(&version.writer.to_be_bytes());
    xxh3_64(&buf)
}

/// Runs a round every `anti_entropy.interval_ms` until the node stops.
pub async fn run(state: std::sync::Arc<NodeState>) {
    let interval = Duration::from_millis(state.ring.config().anti_entropy.interval_ms);
    loop {
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let round = round(&state);
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            report = round => match report {
                Ok(r) => tracing::info!(
                    node = %state.id, compared = r.ranges_compared, differing = r.ranges_differing,
                    sent = r.keys_sent, received = r.keys_received, collected = r.tombstones_collected,
                    "anti-entropy round"
                ),
                Err(e) => tracing::warn!(node = %state.id, error = %e, "anti-entropy round failed"),
            }
        }
    }
}

/// Compares every range this node replicates with each other replica of it, repairs the
/// differences both ways, then collects tombstones in ranges where every replica agreed.
pub async fn round(state: &NodeState) -> Result<RepairReport, StorageError> {
    let _one_at_a_time = state.anti_entropy.lock().await;
    let started = Instant::now();
    let mut report = RepairReport { node: state.id.clone(), ..RepairReport::default() };
    let me = state.index;
    let ranges: Vec<_> = state.ring.ranges().filter(|r| r.replicas.contains(&me)).collect();
    let spans: Vec<Span> = ranges.iter().map(|r| Span { start: r.start, end: r.end }).collect();
    let mut agreed = vec![true; ranges.len()];
    let local = digests(state, &spans).await?;

    for peer_index in 0..state.ring.nodes().len() {
        let Some(peer) = state.peers.get(peer_index) else { continue };
        let shared: Vec<usize> =
            (0..ranges.len()).filter(|&i| ranges[i].replicas.contains(&peer_index)).collect();
        if shared.is_empty() {
            continue;
        }
        let request =
            v1::DigestRequest { spans: shared.iter().map(|&i| spans[i].into()).collect() };
        // A peer known to be down gets one cheap probe instead of the digest request, which
        // could wait out a full deadline.
        let reachable = peer.health.is_up()
            || peer.call(|mut c| async move { c.health(v1::HealthRequest {}).await }).await.is_ok();
        let remote = if reachable {
            report.bytes += request.encoded_len() as u64;
            peer.call(|mut c| async move { c.digest(request).await }).await
        } else {
            Err(tonic::Status::unavailable("peer is down"))
        };
        let remote = match remote {
            Ok(remote)
                if remote.digests.len() == shared.len() && remote.counts.len() == shared.len() =>
            {
                remote
            }
            Ok(_) | Err(_) => {
                report.unreachable.push(peer.id.clone());
                shared.iter().for_each(|&i| agreed[i] = false);
                continue;
            }
        };
        report.bytes += remote.encoded_len() as u64;
        for (k, &i) in shared.iter().enumerate() {
            report.ranges_compared += 1;
            let theirs = (remote.digests[k], remote.counts[k]);
            if theirs == local[i] {
                continue;
            }
            report.ranges_differing += 1;
            agreed[i] = false;
            let mut sync = Sync { state, peer, report: &mut report };
            if let Err(e) = sync.span(spans[i], local[i].1.max(theirs.1), 0).await {
                tracing::warn!(node = %state.id, peer = %peer.id, error = %e, "range sync failed");
            }
        }
    }

    let (now, grace) = (now_ms(), state.ring.config().tombstones.grace_ms);
    for (span, _) in spans.iter().zip(&agreed).filter(|(_, agreed)| **agreed) {
        let mut dead = Vec::new();
        for_each_record(state, *span, |stored, record| {
            if collectable(record, now, grace) {
                dead.push((Bytes::copy_from_slice(stored), record.version));
            }
        })
        .await?;
        for (stored, version) in dead {
            if state.store.remove_if(Space::Records, stored, version).await?.applied {
                report.tombstones_collected += 1;
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The repair of one peer's differences, span by span.
struct Sync<'a> {
    state: &'a NodeState,
    peer: &'a Peer,
    report: &'a mut RepairReport,
}

/// A failure while syncing a span: local storage, or the peer.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("peer: {0}")]
    Peer(#[from] tonic::Status),
}

impl Sync<'_> {
    /// Brings `span` into agreement: splits it while it is large, exchanges versions when small.
    async fn span(&mut self, span: Span, records: u64, depth: u32) -> Result<(), SyncError> {
        if records > EXCHANGE_LIMIT && depth < MAX_DEPTH {
            let parts = span.split(FANOUT);
            let local = digests(self.state, &parts).await?;
            let request = v1::DigestRequest { spans: parts.iter().map(|&s| s.into()).collect() };
            self.report.bytes += request.encoded_len() as u64;
            let remote = self.peer.call(|mut c| async move { c.digest(request).await }).await?;
            self.report.bytes += remote.encoded_len() as u64;
            for (k, part) in parts.into_iter().enumerate() {
                let theirs = (
                    remote.digests.get(k).copied().unwrap_or_default(),
                    remote.counts.get(k).copied().unwrap_or_default(),
                );
                if theirs != local[k] {
                    Box::pin(self.span(part, local[k].1.max(theirs.1), depth + 1)).await?;
                }
            }
            return Ok(());
        }
        self.exchange(span).await
    }

    /// Compares every key's version in `span` with the peer's; pulls what the peer has newer and
    /// pushes what this node has newer.
    async fn exchange(&mut self, span: Span) -> Result<(), SyncError> {
        let request = v1::VersionsRequest { span: Some(span.into()) };
        self.report.bytes += request.encoded_len() as u64;
        let remote = self.peer.call(|mut c| async move { c.versions(request).await }).await?;
        self.report.bytes += remote.encoded_len() as u64;
        let theirs: HashMap<Bytes, Version> =
            remote.entries.into_iter().filter_map(|e| Some((e.key, e.version?.into()))).collect();
        let (now, grace) = (now_ms(), self.state.ring.config().tombstones.grace_ms);
        let mut mine: HashMap<Bytes, Record> = HashMap::new();
        for_each_record(self.state, span, |stored, record| {
            if let Some((_, key)) = split_stored_key(stored) {
                mine.insert(Bytes::copy_from_slice(key), record.clone());
            }
        })
        .await?;
        let pulls: Vec<Bytes> = theirs
            .iter()
            .filter(|(key, version)| mine.get(*key).is_none_or(|r| r.version < **version))
            .map(|(key, _)| key.clone())
            .collect();
        let pushes: Vec<(Bytes, Record)> = mine
            .into_iter()
            .filter(|(key, record)| match theirs.get(key) {
                Some(version) => record.version > *version,
                // Nothing there is the same as a collectable tombstone: no need to send it.
                None => !collectable(record, now, grace),
            })
            .collect();
        self.pull(pulls).await?;
        self.push(pushes).await?;
        Ok(())
    }

    async fn pull(&mut self, keys: Vec<Bytes>) -> Result<(), SyncError> {
        for chunk in keys.chunks(PAGE) {
            let ops = chunk
                .iter()
                .map(|key| v1::BatchOp { op: Some(Op::Read(v1::ReadRequest { key: key.clone() })) })
                .collect();
            let reply = self.batch(ops).await?;
            let state = self.state;
            // Offered to the store all at once, so the chunk shares one group commit.
            let writes = chunk.iter().zip(reply.results).filter_map(|(key, result)| {
                let Some(Outcome::Read(read)) = result.result else { return None };
                let record = read.record.and_then(|r| Record::try_from(r).ok())?;
                state.clock.observe(record.version.timestamp);
                Some(state.store.write(key_token(key), key, record))
            });
            for outcome in futures::future::join_all(writes).await {
                if outcome?.applied {
                    self.report.keys_received += 1;
                }
            }
            self.pace(chunk.len()).await;
        }
        Ok(())
    }

    async fn push(&mut self, records: Vec<(Bytes, Record)>) -> Result<(), SyncError> {
        for chunk in records.chunks(PAGE) {
            let ops = chunk
                .iter()
                .map(|(key, record)| v1::BatchOp {
                    op: Some(Op::Write(v1::WriteRequest {
                        key: key.clone(),
                        record: Some(record.clone().into()),
                        hint_for: String::new(),
                    })),
                })
                .collect();
            let reply = self.batch(ops).await?;
            self.report.keys_sent += reply
                .results
                .iter()
                .filter(|r| matches!(&r.result, Some(Outcome::Write(w)) if w.applied))
                .count() as u64;
            self.pace(chunk.len()).await;
        }
        Ok(())
    }

    async fn batch(&mut self, ops: Vec<v1::BatchOp>) -> Result<v1::BatchResponse, SyncError> {
        let request = v1::BatchRequest { ops };
        self.report.bytes += request.encoded_len() as u64;
        let reply = self.peer.call(|mut c| async move { c.batch(request).await }).await?;
        self.report.bytes += reply.encoded_len() as u64;
        Ok(reply)
    }

    /// Sleeps long enough to keep to `anti_entropy.max_keys_per_sec`.
    async fn pace(&self, keys: usize) {
        let rate = self.state.ring.config().anti_entropy.max_keys_per_sec.max(1);
        tokio::time::sleep(Duration::from_secs_f64(keys as f64 / rate as f64)).await;
    }
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
