//! The TTL sweep: a background task that periodically finds records whose expiry has passed and
//! rewrites each as a tombstone carrying the same version and expiry, dropping its value.
//!
//! Deleting an expired record outright would be unsafe: another replica may hold an older,
//! unexpired version of the key, which read repair or anti-entropy would then copy back
//! (resurrection). A tombstone of the same version still wins over every older copy, reads as
//! "not found" like the expired value it replaces, and is purged later by tombstone collection.
//! The rewrite goes through the store's single writer ([`Store::expire`]), so it is ordered with
//! every other write and acts only if the key still holds exactly the expired version.
//!
//! Each pass also learns when the next stored value expires ([`Store::next_expiry_ms`], lowered
//! by every expiring write), and ticks before then skip the pass: a node that stores no expiring
//! values does not rescan its storage every interval.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_core::codec;
use dynakv_storage::{Space, StorageError, Store, Write};
use tokio_util::sync::CancellationToken;

use crate::service::NodeState;

/// Stored records read per storage scan; one page's expired records share one group commit.
pub const SWEEP_PAGE: usize = 1024;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Stored records looked at.
    pub scanned: u64,
    /// Expired records rewritten as tombstones.
    pub expired: u64,
}

/// Sweeps the node's storage every `interval` until the node starts shutting down.
pub async fn run(state: Arc<NodeState>, interval: Duration) {
    let stop = &state.stopping;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; skip it so a node starts serving before it sweeps.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = state.wall.now_ms();
        if now < state.store.next_expiry_ms() {
            continue;
        }
        match sweep_once(&state.store, now, stop).await {
            Ok(report) if report.expired > 0 => {
                crate::metrics::expired(&state.label, report.expired);
                tracing::debug!(node = %state.id, scanned = report.scanned, expired = report.expired, "ttl sweep");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %state.id, error = %e, "ttl sweep failed"),
        }
    }
}

/// One pass over the whole store, page by page, expiring what has expired at `now` (Unix ms);
/// stops early once `stop` is cancelled. Also recomputes when the next stored value expires, so
/// passes before then can be skipped.
pub async fn sweep_once(
    store: &Store,
    now: u64,
    stop: &CancellationToken,
) -> Result<SweepReport, StorageError> {
    store.begin_expiry_pass();
    let outcome = pass(store, now, stop).await;
    if outcome.is_err() || stop.is_cancelled() {
        // An unfinished pass saw only part of the store: the next expiry is unknown.
        store.note_expiry(0);
    }
    outcome
}

/// The body of [`sweep_once`].
async fn pass(
    store: &Store,
    now: u64,
    stop: &CancellationToken,
) -> Result<SweepReport, StorageError> {
    let mut report = SweepReport::default();
    let mut pages = store.pages(Space::Records, Bytes::new(), None, SWEEP_PAGE);
    while !stop.is_cancelled() {
        let Some(page) = pages.next().await? else { break };
        report.scanned += page.len() as u64;
        let expiries = page.iter().filter_map(|(key, value)| match expiry(value) {
            Ok(Some((version, at))) if at <= now => Some(Write::expire(key.clone(), version, now)),
            Ok(Some((_, at))) => {
                store.note_expiry(at);
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "ttl sweep skipped a damaged record");
                None
            }
        });
        for outcome in store.write_batch(expiries.collect()).await {
            report.expired += u64::from(outcome?.applied);
        }
    }
    Ok(report)
}

/// The version and expiry of a stored record that holds an expiring value.
fn expiry(value: &[u8]) -> Result<Option<(dynakv_core::Version, u64)>, dynakv_core::CodecError> {
    let (version, tombstone) = codec::decode_meta(value)?;
    let expires_at_ms = codec::decode_expires_at(value)?;
    Ok((!tombstone && expires_at_ms != 0).then_some((version, expires_at_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_core::{Record, Timestamp, Version, now_ms};
    use dynakv_storage::{MemoryStorage, StoreOptions};

    #[tokio::test]
    async fn sweeps_only_expired_values_across_pages() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        let version = Version::new(Timestamp(9), 1);
        let past = now_ms() - 1;
        let total = SWEEP_PAGE as u64 + 10;
        for i in 0..total {
            let expires_at_ms = match i % 3 {
                0 => past,
                1 => 0,
                _ => u64::MAX,
            };
            let record = Record { expires_at_ms, ..Record::value(version, Bytes::from("v")) };
            store.write(i, b"k", record).await.unwrap();
        }
        store.write(total, b"gone", Record::tombstone(version)).await.unwrap();
        let live = store.live_keys();
        let report = sweep_once(&store, now_ms(), &CancellationToken::new()).await.unwrap();
        let expected = total.div_ceil(3);
        assert_eq!(report, SweepReport { scanned: total + 1, expired: expected });
        assert_eq!(store.live_keys(), live - expected);
        let swept = store.read(0, b"k").await.unwrap().unwrap();
        assert_eq!(swept, Record { version, value: None, expires_at_ms: past });
        assert_eq!(store.next_expiry_ms(), u64::MAX, "the rest expire at the end of time");
        let again = sweep_once(&store, now_ms(), &CancellationToken::new()).await.unwrap();
        assert_eq!(again.expired, 0, "a swept record is not swept twice");
    }
}
