//! The node's handle on its storage: the merge rule applied under per-key ordering, group
//! commit, and reads that never block the async runtime.
//!
//! All writes go through one dedicated writer thread. It drains every request waiting in its
//! channel, merges each against the stored version (the higher version wins; an equal or older
//! one is refused), commits the whole drain as one batch (one fsync for all of them when syncing),
//! then answers each caller. One writer gives per-key ordering for free, and batching gives group
//! commit. Reads go to a small pool of reader threads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use dynakv_core::{Record, Version, codec};
use tokio::sync::oneshot;

use crate::engine::{Mutation, Storage, StorageError, stored_key};

/// Tuning of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Fsync each batch before acknowledging it (survives power loss, not just a process crash).
    pub sync: bool,
    /// Most writes committed as one batch.
    pub max_batch: usize,
    /// Threads serving reads.
    pub readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { sync: false, max_batch: 1024, readers: 2 }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    /// True when the offered record was newer and is now stored.
    pub applied: bool,
    /// The version stored for the key after the write.
    pub current: Version,
}

/// A write waiting for the writer thread.
struct WriteRequest {
    key: Bytes,
    change: Change,
    reply: oneshot::Sender<Result<WriteOutcome, StorageError>>,
}

/// What a queued write asks the writer thread to do.
enum Change {
    /// Store the record if it is newer than what is stored.
    Offer(Record),
    /// Replace the stored value by a tombstone of the same version and expiry, if the stored
    /// record is still exactly `version` and has expired at `now_ms`.
    Expire { version: Version, now_ms: u64 },
}

/// What the writer knows of a key's stored record without its value.
#[derive(Debug, Clone, Copy)]
struct Meta {
    version: Version,
    tombstone: bool,
    expires_at_ms: u64,
}

/// A read waiting for a reader thread.
struct ReadRequest {
    key: Bytes,
    reply: oneshot::Sender<Result<Option<Record>, StorageError>>,
}

/// The node's storage: an engine behind a merging, group-committing writer thread and reader threads.
pub struct Store {
    /// `None` once closing: dropping the senders tells the threads to finish and exit.
    writes: Option<Sender<WriteRequest>>,
    reads: Option<Sender<ReadRequest>>,
    /// Live (non-tombstone) records; signed because a batch may briefly net negative.
    live: Arc<AtomicI64>,
    /// Unix ms before which no stored value expires, as far as the store knows: lowered by every
    /// write of an expiring value, recomputed by each full sweep. 0 (at open): unknown.
    next_expiry: Arc<AtomicU64>,
    engine: Arc<dyn Storage>,
    threads: Vec<JoinHandle<()>>,
}

impl Store {
    /// Starts the writer and reader threads over `engine`. Counts the live records first, which
    /// reads every record once.
    pub fn open(engine: Arc<dyn Storage>, options: StoreOptions) -> Result<Self, StorageError> {
        let live = Arc::new(AtomicI64::new(count_live(&*engine)?));
        let (writes, write_rx) = crossbeam_channel::unbounded();
        let (reads, read_rx) = crossbeam_channel::unbounded::<ReadRequest>();
        let mut threads = Vec::new();
        let next_expiry = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            engine: engine.clone(),
            live: live.clone(),
            next_expiry: next_expiry.clone(),
            options,
        };
        threads.push(spawn("dynakv-writer", move || writer.run(write_rx)));
        for i in 0..options.readers.max(1) {
            let engine = engine.clone();
            let read_rx = read_rx.clone();
            threads.push(spawn(&format!("dynakv-reader-{i}"), move || {
                for request in read_rx {
                    let _ = request.reply.send(read(&*engine, &request.key));
                }
            }));
        }
        Ok(Store { writes: Some(writes), reads: Some(reads), live, next_expiry, engine, threads })
    }

    /// Offers `record` for the key with ring token `token`; it is stored only if newer than what
    /// is there. Returns once the outcome is durable to the configured degree.
    pub async fn write(
        &self,
        token: u64,
        key: &[u8],
        record: Record,
    ) -> Result<WriteOutcome, StorageError> {
        self.submit(stored_key(token, key), Change::Offer(record)).await
    }

    /// Turns an expired record into a tombstone with the same version and expiry, dropping its
    /// value, through the writer thread so it is ordered with every other write to the key.
    ///
    /// Acts only if the record stored under `stored` (a key as [`stored_key`] builds it) is still
    /// exactly `version`, holds a value, and has expired at `now_ms`; returns whether it acted.
    /// Keeping the version (rather than deleting the key) means an older, unexpired copy on
    /// another replica can never be repaired back over it.
    pub async fn expire(
        &self,
        stored: Bytes,
        version: Version,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let outcome = self.submit(stored, Change::Expire { version, now_ms }).await?;
        Ok(outcome.applied)
    }

    /// Queues a change for the writer thread and waits for its outcome.
    async fn submit(&self, key: Bytes, change: Change) -> Result<WriteOutcome, StorageError> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(WriteRequest { key, change, reply })
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// The record stored for the key with ring token `token` (tombstones and expired records included).
    pub async fn read(&self, token: u64, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let (reply, rx) = oneshot::channel();
        let request = ReadRequest { key: stored_key(token, key), reply };
        self.reads
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(request)
            .map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// Up to `limit` stored entries (stored key, encoded record) with stored keys at or after
    /// `from`, in key order. The engine scan runs on the blocking pool, off the async runtime.
    /// Page through everything by passing [`next_page_start`] of the last key as the next `from`.
    pub async fn scan(
        &self,
        from: Bytes,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.scan(&from, limit))
            .await
            .map_err(|e| StorageError::Engine(format!("scan task failed: {e}")))?
    }

    /// Unix ms before which no stored value expires, as far as the store knows (`u64::MAX`:
    /// none expires; 0: unknown until a full pass). The TTL sweep skips passes before it.
    pub fn next_expiry_ms(&self) -> u64 {
        self.next_expiry.load(Ordering::Acquire)
    }

    /// Starts recomputing [`next_expiry_ms`](Self::next_expiry_ms) for a full pass over the
    /// store: from now on only writes lower it, plus what the pass reports through
    /// [`note_expiry`](Self::note_expiry). Writes during the pass are never missed: a record the
    /// pass read before it changed is replaced by a write that lowers the value itself.
    pub fn begin_expiry_pass(&self) {
        self.next_expiry.store(u64::MAX, Ordering::Release);
    }

    /// Reports a stored value expiring at `expires_at_ms`, seen by a pass; `0` makes the next
    /// expiry unknown again (e.g. after a failed pass).
    pub fn note_expiry(&self, expires_at_ms: u64) {
        self.next_expiry.fetch_min(expires_at_ms, Ordering::AcqRel);
    }

    /// Live (non-tombstone) records stored.
    pub fn live_keys(&self) -> u64 {
        self.live.load(Ordering::Relaxed).max(0) as u64
    }

    /// The engine underneath, for scans by background tasks.
    pub fn engine(&self) -> &Arc<dyn Storage> {
        &self.engine
    }
}

impl Drop for Store {
    /// Finishes queued requests, then stops and joins the threads.
    fn drop(&mut self) {
        self.writes.take();
        self.reads.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).expect("spawn storage thread")
}

fn read(engine: &dyn Storage, key: &[u8]) -> Result<Option<Record>, StorageError> {
    match engine.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// The smallest stored key after `last`: where the page after the one ending at `last` starts.
pub fn next_page_start(last: &[u8]) -> Bytes {
    let mut from = Vec::with_capacity(last.len() + 1);
    from.extend_from_slice(last);
    from.push(0);
    Bytes::from(from)
}

/// Counts live records by scanning the whole engine in pages.
fn count_live(engine: &dyn Storage) -> Result<i64, StorageError> {
    const PAGE: usize = 4096;
    let mut live = 0;
    let mut from = Vec::new();
    loop {
        let page = engine.scan(&from, PAGE)?;
        for (_, value) in &page {
            if !codec::decode_meta(value)?.1 {
                live += 1;
            }
        }
        match page.last() {
            Some((last, _)) if page.len() == PAGE => from = next_page_start(last).to_vec(),
            _ => return Ok(live),
        }
    }
}

/// The single writer: owns ordering, merging and batching.
struct Writer {
    engine: Arc<dyn Storage>,
    live: Arc<AtomicI64>,
    next_expiry: Arc<AtomicU64>,
    options: StoreOptions,
}

impl Writer {
    fn run(self, requests: Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while let Ok(first) = requests.recv() {
            batch.push(first);
            while batch.len() < self.options.max_batch {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.apply(&mut batch);
        }
    }

    /// Merges, commits and answers one drained batch.
    fn apply(&self, batch: &mut Vec<WriteRequest>) {
        // What this batch has already staged per key, so two writes to one key in a batch merge too.
        let mut staged: HashMap<Bytes, Meta> = HashMap::new();
        let mut mutations = Vec::with_capacity(batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut live_delta = 0i64;
        let mut expiring = u64::MAX;
        for request in batch.iter() {
            let current = match staged.get(&request.key) {
                Some(&meta) => Ok(Some(meta)),
                None => self.stored_meta(&request.key),
            };
            let outcome = current.map(|current| {
                let Some(record) = decide(&request.change, current) else {
                    let stored = current.map(|meta| meta.version).unwrap_or_default();
                    return WriteOutcome { applied: false, current: stored };
                };
                let tombstone = record.is_tombstone();
                if !tombstone && record.expires_at_ms != 0 {
                    expiring = expiring.min(record.expires_at_ms);
                }
                let was_live = current.is_some_and(|meta| !meta.tombstone);
                live_delta += i64::from(!tombstone) - i64::from(was_live);
                let meta = Meta {
                    version: record.version,
                    tombstone,
                    expires_at_ms: record.expires_at_ms,
                };
                staged.insert(request.key.clone(), meta);
                let value = Bytes::from(codec::encode(&record));
                mutations.push(Mutation::Put(request.key.clone(), value));
                WriteOutcome { applied: true, current: record.version }
            });
            outcomes.push(outcome);
        }
        let committed = if mutations.is_empty() {
            Ok(())
        } else {
            self.engine.commit(mutations, self.options.sync)
        };
        match committed {
            Ok(()) => {
                self.live.fetch_add(live_delta, Ordering::Relaxed);
                self.next_expiry.fetch_min(expiring, Ordering::AcqRel);
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "storage commit failed");
                let message = e.to_string();
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(StorageError::Engine(message.clone())));
                }
            }
        }
    }

    fn stored_meta(&self, key: &[u8]) -> Result<Option<Meta>, StorageError> {
        match self.engine.get(key)? {
            Some(bytes) => {
                let (version, tombstone) = codec::decode_meta(&bytes)?;
                let expires_at_ms = codec::decode_expires_at(&bytes)?;
                Ok(Some(Meta { version, tombstone, expires_at_ms }))
            }
            None => Ok(None),
        }
    }
}

/// The record a change stores over `current`, or `None` when it changes nothing.
fn decide(change: &Change, current: Option<Meta>) -> Option<Record> {
    match *change {
        Change::Offer(ref record) => match current {
            Some(meta) if meta.version >= record.version => None,
            _ => Some(record.clone()),
        },
        Change::Expire { version, now_ms } => {
            let meta = current?;
            let expired = meta.expires_at_ms != 0 && meta.expires_at_ms <= now_ms;
            (meta.version == version && !meta.tombstone && expired).then(|| Record {
                version,
                value: None,
                expires_at_ms: meta.expires_at_ms,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FjallStorage, MemoryStorage};
    use dynakv_core::Timestamp;

    fn version(ts: u64) -> Version {
        Version::new(Timestamp(ts), 1)
    }

    fn value(ts: u64, v: &'static str) -> Record {
        Record::value(version(ts), Bytes::from_static(v.as_bytes()))
    }

    #[tokio::test]
    async fn older_versions_never_overwrite_newer_ones() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        assert!(store.write(7, b"k", value(5, "five")).await.unwrap().applied);
        let late = store.write(7, b"k", value(3, "three")).await.unwrap();
        assert_eq!(late, WriteOutcome { applied: false, current: version(5) });
        let again = store.write(7, b"k", value(5, "five")).await.unwrap();
        assert!(!again.applied, "an equal version is the same write");
        assert_eq!(store.read(7, b"k").await.unwrap(), Some(value(5, "five")));
        assert_eq!(store.read(8, b"k").await.unwrap(), None, "the token is part of the key");
    }

    #[tokio::test]
    async fn concurrent_writes_to_one_key_keep_the_highest_version() {
        let store =
            Arc::new(Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap());
        let writes = (1..=200u64).rev().map(|ts| {
            let store = store.clone();
            tokio::spawn(async move { store.write(1, b"k", value(ts, "v")).await.unwrap() })
        });
        let applied = futures_count(writes).await;
        assert!(applied >= 1);
        assert_eq!(store.read(1, b"k").await.unwrap().unwrap().version, version(200));
    }

    async fn futures_count(
        handles: impl Iterator<Item = tokio::task::JoinHandle<WriteOutcome>>,
    ) -> usize {
        let mut applied = 0;
        for handle in handles {
            applied += usize::from(handle.await.unwrap().applied);
        }
        applied
    }

    #[tokio::test]
    async fn counts_live_keys_across_deletes_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Arc::new(FjallStorage::open(dir.path()).unwrap());
            let store =
                Store::open(engine, StoreOptions { sync: true, ..Default::default() }).unwrap();
            for (i, key) in [b"a", b"b", b"c"].iter().enumerate() {
                store.write(i as u64, *key, value(1, "x")).await.unwrap();
            }
            store.write(1, b"b", Record::tombstone(version(2))).await.unwrap();
            assert_eq!(store.live_keys(), 2);
        }
        let engine = Arc::new(FjallStorage::open(dir.path()).unwrap());
        let store = Store::open(engine, StoreOptions::default()).unwrap();
        assert_eq!(store.live_keys(), 2);
        assert_eq!(store.read(1, b"b").await.unwrap(), Some(Record::tombstone(version(2))));
        assert_eq!(store.read(0, b"a").await.unwrap(), Some(value(1, "x")));
    }

    #[tokio::test]
    async fn expire_keeps_the_version_and_only_acts_on_that_expired_version() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        let expiring = |ts: u64, at: u64| Record { expires_at_ms: at, ..value(ts, "payload") };
        store.write(1, b"k", expiring(5, 1_000)).await.unwrap();
        store.write(2, b"other", value(1, "x")).await.unwrap();
        assert_eq!(store.live_keys(), 2);
        let key = stored_key(1, b"k");

        assert!(!store.expire(key.clone(), version(5), 999).await.unwrap(), "not yet expired");
        assert!(!store.expire(key.clone(), version(4), 1_000).await.unwrap(), "another version");
        assert!(store.expire(key.clone(), version(5), 1_000).await.unwrap());
        let swept = store.read(1, b"k").await.unwrap().unwrap();
        assert_eq!(swept, Record { value: None, ..expiring(5, 1_000) });
        assert_eq!(store.live_keys(), 1);
        assert!(!store.expire(key.clone(), version(5), 2_000).await.unwrap(), "already swept");

        // The swept tombstone still wins over older copies, and a newer write replaces it.
        assert!(!store.write(1, b"k", value(3, "older")).await.unwrap().applied);
        assert!(store.write(1, b"k", value(6, "newer")).await.unwrap().applied);
        assert!(!store.expire(key, version(5), 2_000).await.unwrap(), "overwritten since");
        assert_eq!(store.read(1, b"k").await.unwrap(), Some(value(6, "newer")));
        assert_eq!(store.live_keys(), 2);

        assert_eq!(store.next_expiry_ms(), 0, "unknown until a full pass");
        store.begin_expiry_pass();
        assert_eq!(store.next_expiry_ms(), u64::MAX);
        store.write(3, b"x", expiring(7, 5_000)).await.unwrap();
        store.note_expiry(9_000);
        assert_eq!(store.next_expiry_ms(), 5_000);
    }

    #[tokio::test]
    async fn scans_page_through_every_entry() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        for i in 0..10u64 {
            store.write(i, b"k", value(1, "x")).await.unwrap();
        }
        let (mut seen, mut from) = (0, Bytes::new());
        loop {
            let page = store.scan(from, 3).await.unwrap();
            seen += page.len();
            match page.last() {
                Some((last, _)) if page.len() == 3 => from = next_page_start(last),
                _ => break,
            }
        }
        assert_eq!(seen, 10);
    }
}
