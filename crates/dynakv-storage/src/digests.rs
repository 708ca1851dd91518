//! Digests of the records space kept current by the writer, so comparing a ring range with
//! another replica costs a walk over fixed buckets instead of a scan of every record.
//!
//! The token space is cut into [`BUCKETS`] buckets by the top [`BUCKET_BITS`] bits of the token.
//! Each bucket holds the [`Digest`] of its records (the XOR of [`entry_hash`] over them, and
//! their count) and the earliest time any of its records died ([`dynakv_core::dead_since`]).
//! XOR is its own inverse, so a write that replaces version `a` of a key by version `b` changes
//! its bucket by `h(k, a) ^ h(k, b)`, whatever order writes come in. The buckets know nothing of
//! the ring: a range of any bounds is the buckets it covers whole plus a scan of the records in
//! the two buckets its bounds cut, so a ring change needs nothing here.
//!
//! Every record counts, dead ones included: whether a tombstone is past a grace period depends on
//! the clock, not on a write, so that rule stays with the caller (anti-entropy in the node).
//! Hints live in their own space and never count.
//!
//! The buckets are exact once built: at open, from the same scan that counts live records, before
//! the writer takes its first write; after [`Store::recover`](crate::Store::recover), again, while
//! no write is taken. The writer applies a batch's changes after the engine committed it, so a
//! reader never sees a change the engine does not hold. A reader that overlaps a rebuild gets
//! `None` (the generation it started under has changed), never a digest of half-built buckets.
//! The earliest death of a bucket is only a lower bound (a removal cannot raise it): a reader of
//! dead records ([`Store::dead_before`](crate::Store::dead_before)) rescans the buckets it reads
//! and sets it again.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dynakv_core::{Record, Version, codec};
use xxhash_rust::xxh3::xxh3_64;

use crate::engine::{Space, Storage, StorageError};
use crate::pages::PageCursor;

/// Bits of the token that pick a bucket: 2^18 buckets, 8 MiB of counters (four columns), about 8 records per
/// bucket at 2 million keys (the scan at each cut bound of a range stays small).
pub const BUCKET_BITS: u32 = 18;
/// Buckets the token space is cut into.
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Records read per page when a bucket is scanned or the buckets are built.
const PAGE: usize = 1024;
/// Most cut parts of buckets whose digests are remembered (a node's ranges cut a few hundred);
/// past it they are forgotten at once, so odd spans asked for cannot grow it without bound.
const CUTS_REMEMBERED: usize = 65_536;

/// A record's contribution to a digest: a hash of its stored key and version.
pub fn entry_hash(stored_key: &[u8], version: Version) -> u64 {
    versioned(xxh3_64(stored_key), version)
}

/// [`entry_hash`] from the hash of the stored key.
fn versioned(key_hash: u64, version: Version) -> u64 {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&key_hash.to_be_bytes());
    buf[8..16].copy_from_slice(&version.timestamp.0.to_be_bytes());
    buf[16..].copy_from_slice(&version.writer.to_be_bytes());
    xxh3_64(&buf)
}

/// The digest of a set of records: independent of order and of how records are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    /// XOR of [`entry_hash`] over the records.
    pub hash: u64,
    /// Records covered.
    pub count: u64,
}

impl Digest {
    /// Adds one record.
    pub fn add(&mut self, stored_key: &[u8], version: Version) {
        self.hash ^= entry_hash(stored_key, version);
        self.count += 1;
    }

    /// Adds the records of `other`, a disjoint set.
    pub fn merge(&mut self, other: Digest) {
        self.hash ^= other.hash;
        self.count += other.count;
    }
}

/// The bucket of a token.
fn bucket(token: u64) -> usize {
    (token >> (64 - BUCKET_BITS)) as usize
}

/// The tokens of bucket `b`.
fn tokens_of(b: usize) -> RangeInclusive<u64> {
    let first = (b as u64) << (64 - BUCKET_BITS);
    first..=first | (u64::MAX >> BUCKET_BITS)
}

/// The token of a stored key (its first 8 bytes); 0 for a key too short to hold one.
fn token_of(stored: &[u8]) -> u64 {
    stored.first_chunk::<8>().map_or(0, |t| u64::from_be_bytes(*t))
}

/// What one committed write does to its bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change {
    bucket: usize,
    hash: u64,
    count: i64,
    dead_since: Option<u64>,
}

impl Change {
    /// The change of replacing the record stored under `stored` (`before`: its version, if any)
    /// by `after` (its version and death time; `None`: removed).
    pub(crate) fn new(
        stored: &[u8],
        before: Option<Version>,
        after: Option<(Version, Option<u64>)>,
    ) -> Change {
        let key_hash = xxh3_64(stored);
        let hash = |v: Option<Version>| v.map_or(0, |v| versioned(key_hash, v));
        Change {
            bucket: bucket(token_of(stored)),
            hash: hash(before) ^ hash(after.map(|a| a.0)),
            count: i64::from(after.is_some()) - i64::from(before.is_some()),
            dead_since: after.and_then(|a| a.1),
        }
    }
}

/// The per-bucket digests of one store.
pub(crate) struct Digests {
    hash: Box<[AtomicU64]>,
    count: Box<[AtomicU64]>,
    /// Lower bound on the death time of every dead record in the bucket; `u64::MAX`: none.
    dead_since: Box<[AtomicU64]>,
    /// Changes applied to the bucket so far: raised after each change, never lowered, so a
    /// digest read from the engine while it stayed put holds until it moves again.
    changes: Box<[AtomicU64]>,
    /// Digests of parts of buckets that range bounds cut, by the part's first and last token,
    /// with the bucket's change count they were read at: an idle node reads them only once.
    cuts: parking_lot::Mutex<HashMap<(u64, u64), (u64, Digest)>>,
    /// Even while the buckets are exact; odd while they are being built. A reader that sees the
    /// same even value before and after its reads read exact buckets.
    generation: AtomicU64,
}

impl Digests {
    /// Buckets built from every record of `engine`; also returns the live (non-tombstone) count.
    pub(crate) fn build(engine: &dyn Storage) -> Result<(Digests, i64), StorageError> {
        let column = |v: u64| (0..BUCKETS).map(|_| AtomicU64::new(v)).collect();
        let digests = Digests {
            hash: column(0),
            count: column(0),
            dead_since: column(u64::MAX),
            changes: column(0),
            cuts: parking_lot::Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
        };
        let live = digests.fill(engine)?;
        digests.generation.store(2, Ordering::Release);
        Ok((digests, live))
    }

    /// Builds the buckets again from every record of `engine`; returns the live count. No write
    /// may be committed meanwhile: the caller holds the writer off.
    pub(crate) fn rebuild(&self, engine: &dyn Storage) -> Result<i64, StorageError> {
        // Odd while building (it already is after a rebuild that failed), even once built.
        self.generation.fetch_or(1, Ordering::AcqRel);
        for b in 0..BUCKETS {
            self.hash[b].store(0, Ordering::Relaxed);
            self.count[b].store(0, Ordering::Relaxed);
            self.dead_since[b].store(u64::MAX, Ordering::Relaxed);
        }
        // Left odd on failure: the digests are not trusted until a rebuild succeeds.
        let live = self.fill(engine)?;
        // Cut parts read before or during the rebuild may describe records the rebuild found
        // changed: moving every bucket on makes them stale.
        self.changes.iter().for_each(|c| _ = c.fetch_add(1, Ordering::AcqRel));
        self.cuts.lock().clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(live)
    }

    /// Adds every record of `engine` to the (empty) buckets; returns the live count.
    fn fill(&self, engine: &dyn Storage) -> Result<i64, StorageError> {
        let mut live = 0;
        each_record(engine, Bytes::new(), None, |stored, bytes| {
            let (version, tombstone) = codec::decode_meta(bytes)?;
            let expires_at_ms = codec::decode_expires_at(bytes)?;
            let dead = dynakv_core::dead_since(version, tombstone, expires_at_ms);
            self.apply(&[Change::new(stored, None, Some((version, dead)))]);
            live += i64::from(!tombstone);
            Ok(())
        })?;
        Ok(live)
    }

    /// Applies the changes of a committed batch.
    pub(crate) fn apply(&self, changes: &[Change]) {
        for change in changes {
            let b = change.bucket;
            self.hash[b].fetch_xor(change.hash, Ordering::Relaxed);
            self.count[b].fetch_add(change.count as u64, Ordering::Relaxed);
            if let Some(since) = change.dead_since {
                self.dead_since[b].fetch_min(since, Ordering::AcqRel);
            }
            self.changes[b].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The digest of the records with tokens in each of `ranges`, or `None` while the buckets
    /// are being built. Buckets a range covers whole are summed; the records of the (at most
    /// two) buckets its bounds cut are read from `engine`, only the part inside the range, unless
    /// the bucket has not changed since that part was last read.
    ///
    /// A remembered part is sound: the writer commits before it counts a change, so a part read
    /// between two equal counts holds every change counted so far (and maybe one being counted,
    /// which moves the count and retires the part).
    pub(crate) fn of_ranges(
        &self,
        engine: &dyn Storage,
        ranges: &[RangeInclusive<u64>],
    ) -> Result<Option<Vec<Digest>>, StorageError> {
        let generation = self.generation.load(Ordering::Acquire);
        if generation % 2 == 1 {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(ranges.len());
        let mut cuts = self.cuts.lock();
        if cuts.len() > CUTS_REMEMBERED {
            cuts.clear();
        }
        for range in ranges {
            let mut digest = Digest::default();
            for b in bucket(*range.start())..=bucket(*range.end()) {
                let whole = tokens_of(b);
                let part = *whole.start().max(range.start())..=*whole.end().min(range.end());
                if part == whole {
                    digest.merge(Digest {
                        hash: self.hash[b].load(Ordering::Relaxed),
                        count: self.count[b].load(Ordering::Relaxed),
                    });
                    continue;
                }
                let changes = self.changes[b].load(Ordering::Acquire);
                let bounds = (*part.start(), *part.end());
                match cuts.get(&bounds) {
                    Some(&(at, cut)) if at == changes => digest.merge(cut),
                    _ => {
                        let mut cut = Digest::default();
                        each_in(engine, part, |stored, bytes| {
                            cut.add(stored, codec::decode_version(bytes)?);
                            Ok(())
                        })?;
                        if self.changes[b].load(Ordering::Acquire) == changes {
                            cuts.insert(bounds, (changes, cut));
                        }
                        digest.merge(cut);
                    }
                }
            }
            out.push(digest);
        }
        let unchanged = self.generation.load(Ordering::Acquire) == generation;
        Ok(unchanged.then_some(out))
    }

    /// The dead records with tokens in `range` whose death time ([`Record::dead_since`]) is
    /// before `before_ms`. Reads only the buckets whose earliest death is before it, whole, and
    /// sets each one's earliest death again from what it read.
    ///
    /// Sound with concurrent writes: a bucket's bound is raised to `u64::MAX` before its records
    /// are read, every record read lowers it again, and a write committed meanwhile lowers it
    /// itself, after its commit. A bucket whose read fails is left at 0 (read every time).
    pub(crate) fn dead_before(
        &self,
        engine: &dyn Storage,
        range: RangeInclusive<u64>,
        before_ms: u64,
    ) -> Result<Vec<(Bytes, Record)>, StorageError> {
        let mut out = Vec::new();
        let mut keep = |stored: &Bytes, record: Record| {
            let dead = record.dead_since();
            if dead.is_some_and(|since| since < before_ms) && range.contains(&token_of(stored)) {
                out.push((stored.clone(), record));
            }
            dead
        };
        if self.generation.load(Ordering::Acquire) % 2 == 1 {
            // Bounds being built mean nothing yet: read the whole range.
            each_in(engine, range.clone(), |stored, bytes| {
                keep(stored, codec::decode(bytes)?);
                Ok(())
            })?;
            return Ok(out);
        }
        for b in bucket(*range.start())..=bucket(*range.end()) {
            if self.dead_since[b].load(Ordering::Acquire) >= before_ms {
                continue;
            }
            self.dead_since[b].store(u64::MAX, Ordering::Release);
            let read = each_in(engine, tokens_of(b), |stored, bytes| {
                if let Some(since) = keep(stored, codec::decode(bytes)?) {
                    self.dead_since[b].fetch_min(since, Ordering::AcqRel);
                }
                Ok(())
            });
            if let Err(e) = read {
                self.dead_since[b].store(0, Ordering::Release);
                return Err(e);
            }
        }
        Ok(out)
    }
}

/// Calls `f` with every record with a token in `tokens`, in key order, reading in pages.
fn each_in(
    engine: &dyn Storage,
    tokens: RangeInclusive<u64>,
    f: impl FnMut(&Bytes, &Bytes) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let from = Bytes::copy_from_slice(&tokens.start().to_be_bytes());
    let to = tokens.end().checked_add(1).map(|t| Bytes::copy_from_slice(&t.to_be_bytes()));
    each_record(engine, from, to, f)
}

/// Calls `f` with every record with a stored key in `[from, to)`. A record that cannot be decoded
/// is skipped and logged (anti-entropy counts damaged records when it scans; the next write of
/// the key replaces it), so it never stops a build or a read.
fn each_record(
    engine: &dyn Storage,
    from: Bytes,
    to: Option<Bytes>,
    mut f: impl FnMut(&Bytes, &Bytes) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut cursor = PageCursor::new(from, to, PAGE);
    while let Some((from, to)) = cursor.next_bounds() {
        let page = engine.scan(Space::Records, &from, to.as_deref(), cursor.page_size())?;
        for (stored, bytes) in &page {
            match f(stored, bytes) {
                Ok(()) => {}
                Err(StorageError::Codec(e)) => {
                    tracing::error!(key = ?stored, error = %e, "damaged record left out of digests");
                }
                Err(e) => return Err(e),
            }
        }
        cursor.advance(&page);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dynakv_core::Timestamp;

    use super::*;
    use crate::{FaultyStorage, FjallStorage, MemoryStorage, Store, StoreOptions};

    fn version(ms: u64) -> Version {
        Version::new(Timestamp::from_millis(ms), 1)
    }

    /// Tokens near bucket edges and inside a few buckets, so ranges cut buckets with records on
    /// both sides of the cut.
    fn token(i: u64) -> u64 {
        let width = 1u64 << (64 - BUCKET_BITS);
        match i % 4 {
            0 => (i % 7) * width,
            1 => (i % 7 + 1) * width - 1,
            2 => (i % 7) * width + i,
            _ => u64::MAX - i,
        }
    }

    /// The digest of the records with tokens in `range`, by reading every record.
    async fn scanned(store: &Store, range: &RangeInclusive<u64>) -> Digest {
        let mut digest = Digest::default();
        for (stored, bytes) in
            store.scan(Space::Records, Bytes::new(), None, usize::MAX).await.unwrap()
        {
            if range.contains(&token_of(&stored)) {
                digest.add(&stored, codec::decode_version(&bytes).unwrap());
            }
        }
        digest
    }

    fn ranges() -> Vec<RangeInclusive<u64>> {
        let width = 1u64 << (64 - BUCKET_BITS);
        vec![
            0..=u64::MAX,
            0..=width - 1,
            1..=width,
            width / 2..=5 * width + 3,
            3 * width..=3 * width,
            u64::MAX - 50..=u64::MAX,
            2 * width + 1..=6 * width - 2,
        ]
    }

    async fn assert_kept_digests_match_a_scan(store: &Store, when: &str) {
        let kept = store.digests(ranges()).await.unwrap().expect("built");
        for (range, kept) in ranges().iter().zip(kept) {
            assert_eq!(kept, scanned(store, range).await, "{when}: range {range:?}");
        }
    }

    #[tokio::test]
    async fn kept_digests_equal_a_full_scan_through_every_kind_of_write_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        {
            let store = Store::open(
                Arc::new(FjallStorage::open(dir.path()).unwrap()),
                StoreOptions::default(),
            )
            .unwrap();
            for step in 0..600u64 {
                let i = next() % 60;
                let key = i.to_be_bytes();
                let at = 1_000 + step;
                match next() % 6 {
                    0 | 1 => {
                        store
                            .write(token(i), &key, Record::value(version(at), Bytes::from("v")))
                            .await
                            .unwrap();
                    }
                    // Older than anything written: refused, and must not count.
                    2 => {
                        store.write(token(i), &key, Record::tombstone(version(1))).await.unwrap();
                    }
                    3 => {
                        store.write(token(i), &key, Record::tombstone(version(at))).await.unwrap();
                    }
                    4 => {
                        let expiring = Record {
                            expires_at_ms: at,
                            ..Record::value(version(at), Bytes::from("t"))
                        };
                        store.write(token(i), &key, expiring).await.unwrap();
                        store
                            .expire(crate::stored_key(token(i), &key), version(at), at)
                            .await
                            .unwrap();
                    }
                    _ => {
                        let stored = crate::stored_key(token(i), &key);
                        if let Some(record) = store.read(token(i), &key).await.unwrap() {
                            store.remove_if(Space::Records, stored, record.version).await.unwrap();
                        }
                    }
                }
                // Hints never count.
                store
                    .write_hint(9, token(i), &key, Record::value(version(at), Bytes::from("h")))
                    .await
                    .unwrap();
                // Often, so remembered parts of cut buckets are met both changed and unchanged.
                if step % 25 == 24 {
                    assert_kept_digests_match_a_scan(&store, &format!("step {step}")).await;
                }
                if step % 100 == 99 {
                    assert_kept_digests_match_a_scan(&store, &format!("again at {step}")).await;
                }
            }
        }
        let store =
            Store::open(Arc::new(FjallStorage::open(dir.path()).unwrap()), StoreOptions::default())
                .unwrap();
        assert_kept_digests_match_a_scan(&store, "after a reopen").await;
    }

    /// The dead records of one range, as [`Store::dead_before`] finds them.
    async fn dead(
        store: &Store,
        range: RangeInclusive<u64>,
        before_ms: u64,
    ) -> Vec<(Bytes, Record)> {
        store.dead_before(vec![range], before_ms).await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn dead_records_are_read_only_where_one_may_be_due() {
        let engine = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let store = Store::open(engine.clone(), StoreOptions::default()).unwrap();
        let width = 1u64 << (64 - BUCKET_BITS);
        store.write(5, b"live", Record::value(version(100), Bytes::from("v"))).await.unwrap();
        store.write(6, b"old", Record::tombstone(version(100))).await.unwrap();
        store.write(7, b"new", Record::tombstone(version(5_000))).await.unwrap();
        let expiring =
            Record { expires_at_ms: 300, ..Record::value(version(100), Bytes::from("t")) };
        store.write(width + 1, b"ttl", expiring.clone()).await.unwrap();

        let all = 0..=u64::MAX;
        let keys =
            |dead: Vec<(Bytes, Record)>| dead.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(dead(&store, all.clone(), 1_000).await),
            vec![crate::stored_key(6, b"old"), crate::stored_key(width + 1, b"ttl")]
        );
        assert_eq!(
            keys(dead(&store, 0..=width - 1, 1_000).await),
            vec![crate::stored_key(6, b"old")]
        );
        // The expiring value counts from its expiry (300), the tombstone from its write (100).
        assert_eq!(keys(dead(&store, all.clone(), 250).await), vec![crate::stored_key(6, b"old")]);
        assert_eq!(dead(&store, all.clone(), 100).await, vec![]);

        // Once read, a bucket whose dead records are removed is not read again: the reads below
        // would fail if it were.
        store.remove_if(Space::Records, crate::stored_key(6, b"old"), version(100)).await.unwrap();
        store
            .remove_if(Space::Records, crate::stored_key(width + 1, b"ttl"), version(100))
            .await
            .unwrap();
        assert_eq!(dead(&store, all.clone(), 1_000).await, vec![]);
        engine.fail_reads(true);
        assert_eq!(dead(&store, all.clone(), 1_000).await, vec![]);
        // A write lowers its bucket's bound at once, so the next read meets it.
        engine.fail_reads(false);
        store.write(8, b"gone", Record::tombstone(version(200))).await.unwrap();
        assert_eq!(
            keys(dead(&store, all.clone(), 1_000).await),
            vec![crate::stored_key(8, b"gone")]
        );
        assert_eq!(
            keys(dead(&store, all, 10_000).await),
            vec![crate::stored_key(7, b"new"), crate::stored_key(8, b"gone")],
            "old enough now"
        );
    }

    /// A store that holds `a`, and whose commit of `b` reached the engine but failed its fsync.
    async fn a_store_after_a_failed_sync() -> (Arc<FaultyStorage>, Store) {
        let engine = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let store = Store::open(engine.clone(), StoreOptions::default()).unwrap();
        store.write(1, b"a", Record::value(version(1), Bytes::from("v"))).await.unwrap();
        engine.fail_syncs(true);
        store.write(2, b"b", Record::value(version(1), Bytes::from("v"))).await.unwrap_err();
        engine.fail_syncs(false);
        (engine, store)
    }

    #[tokio::test]
    async fn kept_digests_are_trusted_again_after_a_failed_rebuild_and_a_good_one() {
        let (engine, store) = a_store_after_a_failed_sync().await;
        // The rebuild's scan fails: recovery fails, and the digests are not trusted.
        engine.fail_reads(true);
        store.recover().await.unwrap_err();
        engine.fail_reads(false);
        assert_eq!(store.digests(vec![0..=u64::MAX]).await.unwrap(), None);
        store.recover().await.unwrap();
        assert_kept_digests_match_a_scan(&store, "after a failed rebuild and a good one").await;
        let all = store.digests(vec![0..=u64::MAX]).await.unwrap().expect("trusted again");
        assert_eq!(all[0].count, 2);
    }

    #[tokio::test]
    async fn a_commit_that_failed_but_reached_the_engine_is_digested_after_recovery() {
        let (_, store) = a_store_after_a_failed_sync().await;
        assert_eq!(store.live_keys(), 1, "the writer did not count the failed batch");
        store.recover().await.unwrap();
        store.write(3, b"c", Record::value(version(1), Bytes::from("v"))).await.unwrap();
        assert_kept_digests_match_a_scan(&store, "after recovery").await;
        let all = store.digests(vec![0..=u64::MAX]).await.unwrap().unwrap();
        assert_eq!((all[0].count, store.live_keys()), (3, 3));
    }
}
