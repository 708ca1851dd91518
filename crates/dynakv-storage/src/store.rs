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
use std::sync::atomic::{AtomicI64, Ordering};
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
    record: Record,
    reply: oneshot::Sender<Result<WriteOutcome, StorageError>>,
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
        let writer = Writer { engine: engine.clone(), live: live.clone(), options };
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
        Ok(Store { writes: Some(writes), reads: Some(reads), live, engine, threads })
    }

    /// Offers `record` for the key with ring token `token`; it is stored only if newer than what
    /// is there. Returns once the outcome is durable to the configured degree.
    pub async fn write(
        &self,
        token: u64,
        key: &[u8],
        record: Record,
    ) -> Result<WriteOutcome, StorageError> {
        let (reply, rx) = oneshot::channel();
        let request = WriteRequest { key: stored_key(token, key), record, reply };
        self.writes
            .as_ref()
            .ok_or(StorageError::Closed)?
            .send(request)
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
            Some((last, _)) if page.len() == PAGE => {
                from = last.to_vec();
                from.push(0);
            }
            _ => return Ok(live),
        }
    }
}

/// The single writer: owns ordering, merging and batching.
struct Writer {
    engine: Arc<dyn Storage>,
    live: Arc<AtomicI64>,
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
        let mut staged: HashMap<Bytes, (Version, bool)> = HashMap::new();
        let mut mutations = Vec::with_capacity(batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut live_delta = 0i64;
        for request in batch.iter() {
            let current = match staged.get(&request.key) {
                Some(&meta) => Ok(Some(meta)),
                None => self.stored_meta(&request.key),
            };
            let outcome = current.map(|current| {
                let version = request.record.version;
                match current {
                    Some((stored, _)) if stored >= version => {
                        WriteOutcome { applied: false, current: stored }
                    }
                    _ => {
                        let tombstone = request.record.is_tombstone();
                        let was_live = matches!(current, Some((_, false)));
                        live_delta += i64::from(!tombstone) - i64::from(was_live);
                        staged.insert(request.key.clone(), (version, tombstone));
                        let value = Bytes::from(codec::encode(&request.record));
                        mutations.push(Mutation::Put(request.key.clone(), value));
                        WriteOutcome { applied: true, current: version }
                    }
                }
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

    fn stored_meta(&self, key: &[u8]) -> Result<Option<(Version, bool)>, StorageError> {
        match self.engine.get(key)? {
            Some(bytes) => Ok(Some(codec::decode_meta(&bytes)?)),
            None => Ok(None),
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
}
