//! The node's handle on its storage: the merge rule applied under per-key ordering, group
//! commit, and point reads served on the caller's thread or by reader threads.
//!
//! All writes go through one dedicated writer thread. It drains every request waiting in its
//! channel, merges each against the stored version (the higher version wins; an equal or older
//! one is refused), commits the whole drain as one batch (one fsync for all of them when syncing),
//! then answers each caller. One writer gives per-key ordering for free, and batching gives group
//! commit.
//!
//! Point reads run on the calling thread by default ([`StoreOptions::readers`] = 0): a read of a
//! key in the memtable, the block cache or the OS page cache takes a few microseconds, less than
//! the hop to another thread and back (about 7 us measured, `storage/memory/get_1KiB` in
//! `benches/micro.rs`). A read that misses every cache then holds its runtime thread for one disk
//! read; on disks where that is slow, reader threads take reads off the runtime instead.
//!
//! Many writes offered at once ([`Store::write_batch`]: a Batch RPC, a streamed chunk, a page of
//! hints) travel to the writer as one message and come back as one reply with an outcome per
//! write; inside the writer they are merged one by one and committed in its group commit like
//! any other writes. Many reads ([`Store::read_many`]) are read together, with reader threads as
//! one message to one reader.
//!
//! The same writer serves both spaces: the node's own records and the hints it keeps for other
//! nodes, the conditional removals (delivered hints, collected tombstones) that must never remove
//! a record newer than the one they were decided on, and the expiry rewrite of the TTL sweep.
//!
//! A failed commit makes the store *degraded* ([`Store::fault`]): from then on every write fails
//! at once with the same cause, without touching the engine, while reads go on. The node calls
//! [`Store::recover`] once the cause may have cleared: the engine is reopened (replaying its
//! journal) and a probe write must succeed before writes are taken again. Below the free-space
//! reserve ([`Store::set_reserve`]) new values are refused, while tombstones and removals still
//! go through, so the node can free space.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use dynakv_core::{Record, Version, codec};
use tokio::sync::oneshot;

use crate::digests::{Change, Digest, Digests};
use crate::engine::{
    Fault, FaultKind, Mutation, Space, Storage, StorageError, hint_key, stored_key,
};
use crate::pages::{PageCursor, Pages};

/// Tuning of a [`Store`].
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Fsync each batch before acknowledging it (survives power loss, not just a process crash).
    pub sync: bool,
    /// Most writes committed as one batch.
    pub max_batch: usize,
    /// Threads serving point reads; 0 serves them on the calling thread.
    pub readers: usize,
    /// Bytes of memory the writer may spend remembering the stored versions of recently read
    /// and written keys, so the merge rule does not read storage for them; 0 turns the cache
    /// off. Sound because the writer is the only thread that changes storage.
    pub version_cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync: false,
            max_batch: 1024,
            readers: 0,
            version_cache_bytes: 128 * 1024 * 1024,
        }
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

/// What the writer is asked to do.
enum WriteOp {
    /// Keep `record` under `key` in `space` if it is newer than what is stored there.
    Merge { space: Space, key: Bytes, record: Record },
    /// Remove `key` from `space` if the stored version is still exactly `version`.
    RemoveIf { space: Space, key: Bytes, version: Version },
    /// Replace the record under `key` by a tombstone of the same version and expiry, if it is
    /// still exactly `version`, holds a value, and has expired at `now_ms`.
    Expire { key: Bytes, version: Version, now_ms: u64 },
}

impl WriteOp {
    fn target(&self) -> (Space, &Bytes) {
        match self {
            WriteOp::Merge { space, key, .. } | WriteOp::RemoveIf { space, key, .. } => {
                (*space, key)
            }
            WriteOp::Expire { key, .. } => (Space::Records, key),
        }
    }
}

/// One write of a batch offered to the store at once ([`Store::write_batch`]); each does what the
/// single-write method of the same name does.
pub struct Write(WriteOp);

impl Write {
    /// Offers `record` for the key with ring token `token`, as [`Store::write`] does.
    pub fn record(token: u64, key: &[u8], record: Record) -> Write {
        Write(WriteOp::Merge { space: Space::Records, key: stored_key(token, key), record })
    }

    /// Offers `record` as a hint for the node whose id hashes to `owner`, as
    /// [`Store::write_hint`] does.
    pub fn hint(owner: u64, token: u64, key: &[u8], record: Record) -> Write {
        Write(WriteOp::Merge { space: Space::Hints, key: hint_key(owner, token, key), record })
    }

    /// Removes the entry under `key` in `space` if it is still exactly `version`, as
    /// [`Store::remove_if`] does.
    pub fn remove_if(space: Space, key: Bytes, version: Version) -> Write {
        Write(WriteOp::RemoveIf { space, key, version })
    }

    /// Turns the expired record under `stored` into a tombstone, as [`Store::expire`] does.
    pub fn expire(stored: Bytes, version: Version, now_ms: u64) -> Write {
        Write(WriteOp::Expire { key: stored, version, now_ms })
    }
}

/// What the writer knows of a stored entry without its value.
#[derive(Debug, Clone, Copy)]
struct Meta {
    version: Version,
    tombstone: bool,
    expires_at_ms: u64,
}

impl Meta {
    fn of(record: &Record) -> Meta {
        Meta {
            version: record.version,
            tombstone: record.is_tombstone(),
            expires_at_ms: record.expires_at_ms,
        }
    }

    /// What the digests need of the entry: its version and [`dynakv_core::dead_since`].
    fn digested(self) -> (Version, Option<u64>) {
        let dead = dynakv_core::dead_since(self.version, self.tombstone, self.expires_at_ms);
        (self.version, dead)
    }
}

/// The outcome of one write, or why it failed.
type WriteResult = Result<WriteOutcome, StorageError>;

/// The record stored under one key, or why it could not be read.
type ReadResult = Result<Option<Record>, StorageError>;

/// A message to the writer thread: one write, or a batch answered with one reply.
enum WriteRequest {
    One(WriteOp, oneshot::Sender<WriteResult>),
    Many(Vec<WriteOp>, oneshot::Sender<Vec<WriteResult>>),
}

impl WriteRequest {
    fn ops(&self) -> &[WriteOp] {
        match self {
            WriteRequest::One(op, _) => std::slice::from_ref(op),
            WriteRequest::Many(ops, _) => ops,
        }
    }

    /// Answers with the next outcomes of `outcomes`, one per operation.
    fn answer(self, outcomes: &mut impl Iterator<Item = WriteResult>) {
        match self {
            WriteRequest::One(_, reply) => {
                let _ = reply.send(outcomes.next().unwrap_or(Err(StorageError::Closed)));
            }
            WriteRequest::Many(ops, reply) => {
                let _ = reply.send(outcomes.take(ops.len()).collect());
            }
        }
    }

    /// Answers every operation with the error `fail` makes.
    fn fail(self, fail: impl Fn() -> StorageError) {
        let len = self.ops().len();
        self.answer(&mut std::iter::repeat_with(|| Err(fail())).take(len));
    }
}

/// A message to a reader thread: one key, or many answered with one reply (stored keys).
enum ReadRequest {
    One(Bytes, oneshot::Sender<ReadResult>),
    Many(Vec<Bytes>, oneshot::Sender<Vec<ReadResult>>),
}

/// Free space, in MiB, below which a failed engine is reported as a full disk: less than one
/// memtable flush (64 MiB in fjall) needs.
const FLUSH_ROOM_MB: u64 = 64;

/// Whether the store takes writes: shared by the handle, the writer and the node's disk watch.
#[derive(Default)]
struct Condition {
    /// Set by the writer when a commit fails; cleared by [`Store::recover`].
    fault: parking_lot::Mutex<Option<Fault>>,
    /// Set while free space is below the reserve: (free MiB, reserve MiB).
    reserve: parking_lot::Mutex<Option<(u64, u64)>>,
    /// Free space at the last check, in MiB (`None`: never measured).
    free_mb: parking_lot::Mutex<Option<u64>>,
}

/// Counters the writer keeps as it commits; signed because a batch may briefly net negative.
#[derive(Default)]
struct Counters {
    /// Live (non-tombstone) records.
    live: AtomicI64,
    /// Hints held for other nodes.
    hints: AtomicI64,
    /// Unix ms before which no stored value expires, as far as the store knows: lowered by every
    /// write of an expiring value, recomputed by each full sweep. 0 (at open): unknown.
    next_expiry: AtomicU64,
}

/// The node's storage: an engine behind a merging, group-committing writer thread and reader threads.
pub struct Store {
    /// `None` once closing: dropping the senders tells the threads to finish and exit.
    writes: Option<Sender<WriteRequest>>,
    /// `None` when reads run on the caller's thread, or once closing.
    reads: Option<Sender<ReadRequest>>,
    counters: Arc<Counters>,
    condition: Arc<Condition>,
    /// Per-bucket digests of the records, kept by the writer.
    digests: Arc<Digests>,
    engine: Arc<dyn Storage>,
    threads: Vec<JoinHandle<()>>,
}

impl Store {
    /// Starts the writer and reader threads over `engine`. Counts the live records and hints and
    /// builds the record digests first, which reads every entry once.
    pub fn open(engine: Arc<dyn Storage>, options: StoreOptions) -> Result<Self, StorageError> {
        let (digests, live) = Digests::build(&*engine)?;
        let digests = Arc::new(digests);
        let counters = Arc::new(Counters {
            live: AtomicI64::new(live),
            hints: AtomicI64::new(count(&*engine, Space::Hints, |_| true)?),
            next_expiry: AtomicU64::new(0),
        });
        let condition = Arc::new(Condition::default());
        let (writes, write_rx) = crossbeam_channel::unbounded();
        let (reads, read_rx) = crossbeam_channel::unbounded::<ReadRequest>();
        let mut threads = Vec::new();
        let writer = Writer {
            engine: engine.clone(),
            counters: counters.clone(),
            condition: condition.clone(),
            digests: digests.clone(),
            options,
            versions: (options.version_cache_bytes > 0).then(|| {
                let entries = (options.version_cache_bytes / VersionWeight::OVERHEAD) as usize;
                quick_cache::unsync::Cache::with_weighter(
                    entries,
                    options.version_cache_bytes,
                    VersionWeight,
                )
            }),
        };
        threads.push(spawn("dynakv-writer", move || writer.run(write_rx)));
        for i in 0..options.readers {
            let engine = engine.clone();
            let read_rx = read_rx.clone();
            threads.push(spawn(&format!("dynakv-reader-{i}"), move || {
                for request in read_rx {
                    match request {
                        ReadRequest::One(key, reply) => {
                            let _ = reply.send(read(&*engine, &key));
                        }
                        ReadRequest::Many(keys, reply) => {
                            let _ = reply.send(keys.iter().map(|k| read(&*engine, k)).collect());
                        }
                    }
                }
            }));
        }
        let reads = (options.readers > 0).then_some(reads);
        Ok(Store { writes: Some(writes), reads, counters, condition, digests, engine, threads })
    }

    /// Offers `record` for the key with ring token `token`; it is stored only if newer than what
    /// is there. Returns once the outcome is durable to the configured degree.
    pub async fn write(
        &self,
        token: u64,
        key: &[u8],
        record: Record,
    ) -> Result<WriteOutcome, StorageError> {
        self.submit(WriteOp::Merge { space: Space::Records, key: stored_key(token, key), record })
            .await
    }

    /// Keeps `record` as a hint for the node whose id hashes to `owner`, unless a newer hint for
    /// the same key is already kept for it.
    pub async fn write_hint(
        &self,
        owner: u64,
        token: u64,
        key: &[u8],
        record: Record,
    ) -> Result<WriteOutcome, StorageError> {
        let key = hint_key(owner, token, key);
        self.submit(WriteOp::Merge { space: Space::Hints, key, record }).await
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
        Ok(self.submit(WriteOp::Expire { key: stored, version, now_ms }).await?.applied)
    }

    /// Removes the entry stored under `key` in `space` if its version is still exactly
    /// `version`; `applied` says whether it was removed.
    pub async fn remove_if(
        &self,
        space: Space,
        key: Bytes,
        version: Version,
    ) -> Result<WriteOutcome, StorageError> {
        self.submit(WriteOp::RemoveIf { space, key, version }).await
    }

    /// Offers every write of `writes` to the writer as one message, merged and committed in
    /// its group commit with the same durability as single writes, and answered with one
    /// outcome per write, in order. The batch is queued when this is called, so a caller may
    /// have several in flight; they are applied in the order queued.
    pub fn write_batch(
        &self,
        writes: Vec<Write>,
    ) -> impl Future<Output = Vec<Result<WriteOutcome, StorageError>>> + use<> {
        let len = writes.len();
        let (reply, rx) = oneshot::channel();
        let ops = writes.into_iter().map(|write| write.0).collect();
        let sent = len > 0
            && self
                .writes
                .as_ref()
                .is_some_and(|writes| writes.send(WriteRequest::Many(ops, reply)).is_ok());
        async move {
            match sent {
                true => rx.await.unwrap_or_else(|_| closed(len)),
                false => closed(len),
            }
        }
    }

    /// Offers one [`Write`] on its own, as the single-write method of its kind does.
    pub async fn write_one(&self, write: Write) -> Result<WriteOutcome, StorageError> {
        self.submit(write.0).await
    }

    async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StorageError> {
        let (reply, rx) = oneshot::channel();
        let writes = self.writes.as_ref().ok_or(StorageError::Closed)?;
        writes.send(WriteRequest::One(op, reply)).map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// The record stored for the key with ring token `token` (tombstones and expired records included).
    pub async fn read(&self, token: u64, key: &[u8]) -> Result<Option<Record>, StorageError> {
        let Some(reads) = &self.reads else {
            let key = stored_key(token, key);
            return self.on_engine(move |engine| read(engine, &key)).await?;
        };
        let (reply, rx) = oneshot::channel();
        let request = ReadRequest::One(stored_key(token, key), reply);
        reads.send(request).map_err(|_| StorageError::Closed)?;
        rx.await.map_err(|_| StorageError::Closed)?
    }

    /// The records stored for many keys (ring token and key each), read where [`Store::read`]
    /// reads (on the calling thread, or by one reader thread as one message): one result per
    /// key, in order.
    pub async fn read_many<'a>(
        &self,
        keys: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Vec<Result<Option<Record>, StorageError>> {
        let keys: Vec<Bytes> =
            keys.into_iter().map(|(token, key)| stored_key(token, key)).collect();
        let len = keys.len();
        let Some(reads) = &self.reads else {
            let reads =
                move |engine: &dyn Storage| keys.iter().map(|key| read(engine, key)).collect();
            return self.on_engine(reads).await.unwrap_or_else(|_| closed(len));
        };
        if len == 0 {
            return Vec::new();
        }
        let (reply, rx) = oneshot::channel();
        if reads.send(ReadRequest::Many(keys, reply)).is_err() {
            return closed(len);
        }
        rx.await.unwrap_or_else(|_| closed(len))
    }

    /// Runs `f` on the engine on the calling thread, or off the runtime while the engine has
    /// failed: recovery may then hold it for a whole journal replay.
    async fn on_engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Storage) -> T + Send + 'static,
    ) -> Result<T, StorageError> {
        if !self.engine_failed() {
            return Ok(f(&*self.engine));
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&*engine)).await.map_err(|_| StorageError::Closed)
    }

    /// The entries of `space` with stored keys in `[from, to)`, `page_size` at a time: the way to
    /// read a range of any size.
    pub fn pages(
        &self,
        space: Space,
        from: Bytes,
        to: Option<Bytes>,
        page_size: usize,
    ) -> Pages<'_> {
        Pages::new(self, space, from, to, page_size)
    }

    /// The digest of the records with tokens in each of `ranges`, every record counted (dead ones
    /// too), read off the runtime; `None` while the digests are being rebuilt after a failure.
    /// Costs a walk over the buckets plus a scan of the few records where a range's bounds cut
    /// a bucket, whatever the store holds.
    pub async fn digests(
        &self,
        ranges: Vec<RangeInclusive<u64>>,
    ) -> Result<Option<Vec<Digest>>, StorageError> {
        let (engine, digests) = (self.engine.clone(), self.digests.clone());
        tokio::task::spawn_blocking(move || digests.of_ranges(&*engine, &ranges))
            .await
            .map_err(|_| StorageError::Closed)?
    }

    /// For each of `ranges` (inclusive token bounds), the dead records (tombstones and expiring
    /// values, see [`Record::dead_since`]) in it that have been dead since before `before_ms`,
    /// read off the runtime. Reads only the parts of the store that may hold one, so a store with
    /// none due reads nothing.
    pub async fn dead_before(
        &self,
        ranges: Vec<RangeInclusive<u64>>,
        before_ms: u64,
    ) -> Result<Vec<Vec<(Bytes, Record)>>, StorageError> {
        let (engine, digests) = (self.engine.clone(), self.digests.clone());
        tokio::task::spawn_blocking(move || {
            let dead = |range| digests.dead_before(&*engine, range, before_ms);
            ranges.into_iter().map(dead).collect()
        })
        .await
        .map_err(|_| StorageError::Closed)?
    }

    /// Up to `limit` entries of `space` with stored keys in `[from, to)`, read off the runtime.
    pub async fn scan(
        &self,
        space: Space,
        from: Bytes,
        to: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.scan(space, &from, to.as_deref(), limit))
            .await
            .map_err(|_| StorageError::Closed)?
    }

    /// Unix ms before which no stored value expires, as far as the store knows (`u64::MAX`:
    /// none expires; 0: unknown until a full pass). The TTL sweep skips passes before it.
    pub fn next_expiry_ms(&self) -> u64 {
        self.counters.next_expiry.load(Ordering::Acquire)
    }

    /// Starts recomputing [`next_expiry_ms`](Self::next_expiry_ms) for a full pass over the
    /// store: from now on only writes lower it, plus what the pass reports through
    /// [`note_expiry`](Self::note_expiry). Writes during the pass are never missed: a record the
    /// pass read before it changed is replaced by a write that lowers the value itself.
    pub fn begin_expiry_pass(&self) {
        self.counters.next_expiry.store(u64::MAX, Ordering::Release);
    }

    /// Reports a stored value expiring at `expires_at_ms`, seen by a pass; `0` makes the next
    /// expiry unknown again (e.g. after a failed pass).
    pub fn note_expiry(&self, expires_at_ms: u64) {
        self.counters.next_expiry.fetch_min(expires_at_ms, Ordering::AcqRel);
    }

    /// Why the store does not take every write, if it does not: a failed engine (no writes at
    /// all until [`recover`](Self::recover)), or free space below the reserve (no new values).
    pub fn fault(&self) -> Option<Fault> {
        let engine = self.condition.fault.lock().clone().map(|fault| {
            // An engine poisoned by a background write (a flush) says nothing of why; with less
            // room on the disk than one memtable flush needs, that is most likely why.
            match *self.condition.free_mb.lock() {
                Some(free) if free < FLUSH_ROOM_MB && fault.kind != FaultKind::DiskFull => Fault {
                    kind: FaultKind::DiskFull,
                    detail: format!("{free} MiB free, too little to flush ({fault})"),
                },
                _ => fault,
            }
        });
        engine.or_else(|| {
            let (free_mb, reserve_mb) = (*self.condition.reserve.lock())?;
            StorageError::Reserve { free_mb, reserve_mb }.fault()
        })
    }

    /// True when a failed commit left the engine refusing writes (as opposed to the reserve).
    pub fn engine_failed(&self) -> bool {
        self.condition.fault.lock().is_some()
    }

    /// Reports free space: below `reserve_mb`, new values are refused; at or above, taken again.
    pub fn set_reserve(&self, free_mb: u64, reserve_mb: u64) {
        let below = (free_mb < reserve_mb).then_some((free_mb, reserve_mb));
        *self.condition.reserve.lock() = below;
        *self.condition.free_mb.lock() = Some(free_mb);
    }

    /// After a failed commit: reopens the engine and writes a probe through it. On success the
    /// store takes writes again; on failure it stays degraded, with the new cause. Nothing
    /// acknowledged is lost either way: the engine's journal holds it.
    pub async fn recover(&self) -> Result<(), StorageError> {
        if !self.engine_failed() {
            return Ok(());
        }
        let (engine, condition) = (self.engine.clone(), self.condition.clone());
        let (digests, counters) = (self.digests.clone(), self.counters.clone());
        tokio::task::spawn_blocking(move || {
            // One byte past any hint owner's id hash, so no hint scan ever meets it; put and
            // removed in one atomic batch, so it is never seen at all.
            let probe = Bytes::from_static(b"\xff\xff\xff\xff\xff\xff\xff\xff\xffprobe");
            let result = engine.reopen().and_then(|()| {
                let batch = vec![
                    Mutation::Put(Space::Hints, probe.clone(), Bytes::new()),
                    Mutation::Delete(Space::Hints, probe),
                ];
                engine.commit(batch, true)?;
                // A failed commit may have reached the journal the reopen replayed: count and
                // digest what the engine holds now, while the writer still refuses writes.
                counters.live.store(digests.rebuild(&*engine)?, Ordering::Relaxed);
                counters.hints.store(count(&*engine, Space::Hints, |_| true)?, Ordering::Relaxed);
                Ok(())
            });
            let mut fault = condition.fault.lock();
            match &result {
                Ok(()) => *fault = None,
                Err(e) => *fault = e.fault().or(fault.take()),
            }
            result
        })
        .await
        .map_err(|_| StorageError::Closed)?
    }

    /// Live (non-tombstone) records stored.
    pub fn live_keys(&self) -> u64 {
        self.counters.live.load(Ordering::Relaxed).max(0) as u64
    }

    /// Hints held for other nodes.
    pub fn pending_hints(&self) -> u64 {
        self.counters.hints.load(Ordering::Relaxed).max(0) as u64
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

/// `len` results of a store that is closing.
fn closed<T>(len: usize) -> Vec<Result<T, StorageError>> {
    (0..len).map(|_| Err(StorageError::Closed)).collect()
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.to_string()).spawn(f).expect("spawn storage thread")
}

fn read(engine: &dyn Storage, key: &[u8]) -> Result<Option<Record>, StorageError> {
    match engine.get(Space::Records, key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Counts the entries of `space` whose tombstone flag passes `counted`, scanning in pages.
fn count(
    engine: &dyn Storage,
    space: Space,
    counted: impl Fn(bool) -> bool,
) -> Result<i64, StorageError> {
    let mut total = 0;
    let mut cursor = PageCursor::new(Bytes::new(), None, 4096);
    while let Some((from, to)) = cursor.next_bounds() {
        let page = engine.scan(space, &from, to.as_deref(), cursor.page_size())?;
        for (key, value) in &page {
            match codec::decode_meta(value) {
                Ok((_, tombstone)) => total += i64::from(counted(tombstone)),
                // A damaged record must not keep the node from starting: anti-entropy skips it
                // too, and the next write of the key replaces it.
                Err(e) => tracing::error!(?space, key = ?key, error = %e, "damaged record at open"),
            }
        }
        cursor.advance(&page);
    }
    Ok(total)
}

/// The single writer: owns ordering, merging and batching.
struct Writer {
    engine: Arc<dyn Storage>,
    counters: Arc<Counters>,
    condition: Arc<Condition>,
    /// Updated after each commit with what the batch changed in the records space.
    digests: Arc<Digests>,
    options: StoreOptions,
    /// What is stored for recently read or written keys (`None`: nothing), as of the last
    /// commit. Only this thread changes storage, so the cache never goes stale.
    versions: Option<quick_cache::unsync::Cache<(Space, Bytes), Option<Meta>, VersionWeight>>,
}

/// Weighs a version-cache entry by the memory it holds: its key plus a fixed overhead.
#[derive(Clone)]
struct VersionWeight;

impl VersionWeight {
    /// Bytes an entry costs besides its key: the cache slot, the key's handle and the metadata.
    const OVERHEAD: u64 = 96;
}

impl quick_cache::Weighter<(Space, Bytes), Option<Meta>> for VersionWeight {
    fn weight(&self, key: &(Space, Bytes), _: &Option<Meta>) -> u64 {
        key.1.len() as u64 + Self::OVERHEAD
    }
}

/// What a batch has staged for one key, or `None` once removed.
type Staged = HashMap<(Space, Bytes), Option<Meta>>;

impl Writer {
    fn run(mut self, requests: Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(self.options.max_batch);
        while let Ok(first) = requests.recv() {
            // Bounded by operations, not messages; a batch message larger than the bound is
            // still committed whole.
            let mut ops = first.ops().len();
            batch.push(first);
            while ops < self.options.max_batch {
                match requests.try_recv() {
                    Ok(next) => {
                        ops += next.ops().len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.apply(&mut batch);
        }
    }

    /// Merges, commits and answers one drained batch.
    fn apply(&mut self, batch: &mut Vec<WriteRequest>) {
        // A degraded engine is not asked again: every write fails at once with its cause.
        if let Some(fault) = self.condition.fault.lock().clone() {
            for request in batch.drain(..) {
                request.fail(|| StorageError::Engine(fault.clone()));
            }
            return;
        }
        let reserve = *self.condition.reserve.lock();
        // What this batch has already staged per key, so two writes to one key in a batch merge too.
        let mut staged: Staged = HashMap::new();
        let ops = batch.iter().map(|request| request.ops().len()).sum();
        let mut mutations = Vec::with_capacity(ops);
        let mut outcomes = Vec::with_capacity(ops);
        let (mut live_delta, mut hints_delta) = (0i64, 0i64);
        let mut expiring = u64::MAX;
        let mut changes = Vec::with_capacity(ops);
        for op in batch.iter().flat_map(WriteRequest::ops) {
            if let (Some((free_mb, reserve_mb)), WriteOp::Merge { record, .. }) = (reserve, op)
                && !record.is_tombstone()
            {
                outcomes.push(Err(StorageError::Reserve { free_mb, reserve_mb }));
                continue;
            }
            let (space, key) = op.target();
            let current = match staged.get(&(space, key.clone())) {
                Some(&meta) => Ok(meta),
                None => self.stored_meta(space, key),
            };
            let outcome = current.map(|current| {
                let Some(effect) = decide(op, current) else {
                    let stored = current.map(|meta| meta.version).unwrap_or_default();
                    return WriteOutcome { applied: false, current: stored };
                };
                let next = effect.as_ref().map(Meta::of);
                let is_live = |meta: Option<Meta>| meta.is_some_and(|m| !m.tombstone);
                match space {
                    Space::Records => {
                        live_delta += i64::from(is_live(next)) - i64::from(is_live(current));
                        let before = current.map(|meta| meta.version);
                        changes.push(Change::new(key, before, next.map(Meta::digested)));
                    }
                    Space::Hints => {
                        hints_delta += i64::from(next.is_some()) - i64::from(current.is_some())
                    }
                }
                staged.insert((space, key.clone()), next);
                let version = match &effect {
                    Some(record) => {
                        if space == Space::Records
                            && !record.is_tombstone()
                            && record.expires_at_ms != 0
                        {
                            expiring = expiring.min(record.expires_at_ms);
                        }
                        let value = Bytes::from(codec::encode(record));
                        mutations.push(Mutation::Put(space, key.clone(), value));
                        record.version
                    }
                    None => {
                        mutations.push(Mutation::Delete(space, key.clone()));
                        current.map(|meta| meta.version).unwrap_or_default()
                    }
                };
                WriteOutcome { applied: true, current: version }
            });
            outcomes.push(outcome);
        }
        let committed = if mutations.is_empty() {
            Ok(())
        } else {
            let (writes, started) = (mutations.len(), std::time::Instant::now());
            let committed = self.engine.commit(mutations, self.options.sync);
            let sync = if self.options.sync { "always" } else { "os" };
            metrics::histogram!("dynakv_storage_commit_batch_size").record(writes as f64);
            metrics::histogram!("dynakv_storage_commit_duration_seconds", "sync" => sync)
                .record(started.elapsed().as_secs_f64());
            committed
        };
        match committed {
            Ok(()) => {
                if let Some(versions) = &mut self.versions {
                    for (key, meta) in staged {
                        versions.insert(key, meta);
                    }
                }
                self.counters.live.fetch_add(live_delta, Ordering::Relaxed);
                self.counters.hints.fetch_add(hints_delta, Ordering::Relaxed);
                self.counters.next_expiry.fetch_min(expiring, Ordering::AcqRel);
                self.digests.apply(&changes);
                let mut outcomes = outcomes.into_iter();
                for request in batch.drain(..) {
                    request.answer(&mut outcomes);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = outcomes.len(), "storage commit failed: refusing writes until it recovers");
                let fault = e
                    .fault()
                    .unwrap_or_else(|| Fault { kind: FaultKind::Io, detail: e.to_string() });
                self.condition.fault.lock().get_or_insert(fault.clone());
                // The failed batch may have reached the journal that recovery replays: what the
                // cache remembers of its keys may be older than what the engine will hold.
                if let Some(versions) = &mut self.versions {
                    versions.clear();
                }
                for request in batch.drain(..) {
                    request.fail(|| StorageError::Engine(fault.clone()));
                }
            }
        }
    }

    /// What is stored under `key`, from the cache or else from storage (then cached).
    fn stored_meta(&mut self, space: Space, key: &Bytes) -> Result<Option<Meta>, StorageError> {
        let cache_key = (space, key.clone());
        if let Some(meta) = self.versions.as_ref().and_then(|v| v.get(&cache_key)) {
            return Ok(*meta);
        }
        let meta = match self.engine.get(space, key)? {
            Some(bytes) => match (codec::decode_meta(&bytes), codec::decode_expires_at(&bytes)) {
                (Ok((version, tombstone)), Ok(expires_at_ms)) => {
                    Some(Meta { version, tombstone, expires_at_ms })
                }
                // Nothing can be read from a damaged record, so any write may replace it: that
                // is how repair heals it. It is not counted as live.
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(?space, key = ?key, error = %e, "replacing a damaged record");
                    None
                }
            },
            None => None,
        };
        if let Some(versions) = &mut self.versions {
            versions.insert(cache_key, meta);
        }
        Ok(meta)
    }
}

/// What an operation does to the entry stored now (`current`): `None` when nothing changes,
/// `Some(Some(record))` to store a record, `Some(None)` to remove the entry.
fn decide(op: &WriteOp, current: Option<Meta>) -> Option<Option<Record>> {
    match op {
        WriteOp::Merge { record, .. } => match current {
            Some(meta) if !record.version.supersedes(meta.version) => None,
            _ => Some(Some(record.clone())),
        },
        WriteOp::RemoveIf { version, .. } => {
            current.filter(|meta| meta.version == *version).map(|_| None)
        }
        WriteOp::Expire { version, now_ms, .. } => {
            let meta = current?;
            let expired = meta.expires_at_ms != 0 && meta.expires_at_ms <= *now_ms;
            (meta.version == *version && !meta.tombstone && expired).then(|| {
                Some(Record { version: *version, value: None, expires_at_ms: meta.expires_at_ms })
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
        assert_eq!(store.live_keys(), 1);
        let late = store.write(7, b"k", value(3, "three")).await.unwrap();
        assert_eq!(late, WriteOutcome { applied: false, current: version(5) });
        let again = store.write(7, b"k", value(5, "five")).await.unwrap();
        assert!(!again.applied, "an equal version is the same write");
        assert_eq!(store.read(7, b"k").await.unwrap(), Some(value(5, "five")));
        assert_eq!(store.read(8, b"k").await.unwrap(), None, "the token is part of the key");
    }

    #[tokio::test]
    async fn a_delete_whose_fsync_failed_is_not_overwritten_by_an_older_write_after_recovery() {
        let engine = Arc::new(crate::FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let store = Store::open(engine.clone(), StoreOptions::default()).unwrap();
        store.write(7, b"k", value(5, "five")).await.unwrap();
        // The delete reaches the journal, but its fsync fails: it is refused.
        engine.fail_syncs(true);
        store.write(7, b"k", Record::tombstone(version(7))).await.unwrap_err();
        engine.fail_syncs(false);
        store.recover().await.unwrap();
        // Recovery found the delete in the engine: a write older than it must not apply.
        let late = store.write(7, b"k", value(6, "six")).await.unwrap();
        assert_eq!(late, WriteOutcome { applied: false, current: version(7) });
        assert_eq!(store.read(7, b"k").await.unwrap(), Some(Record::tombstone(version(7))));
        assert_eq!(store.live_keys(), 0);

        // Likewise a hint: counted once recovery finds it.
        engine.fail_syncs(true);
        store.write_hint(9, 7, b"h", value(5, "five")).await.unwrap_err();
        engine.fail_syncs(false);
        store.recover().await.unwrap();
        assert_eq!(store.pending_hints(), 1);
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

    #[tokio::test]
    async fn hints_merge_and_are_removed_only_at_the_version_delivered() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        store.write_hint(9, 1, b"k", value(2, "two")).await.unwrap();
        assert!(!store.write_hint(9, 1, b"k", value(1, "one")).await.unwrap().applied);
        store.write_hint(8, 1, b"k", value(1, "one")).await.unwrap();
        assert_eq!((store.pending_hints(), store.live_keys()), (2, 0));

        // Delivered version 2, but a newer hint arrived meanwhile: it must stay.
        store.write_hint(9, 1, b"k", value(3, "three")).await.unwrap();
        let key = hint_key(9, 1, b"k");
        assert!(!store.remove_if(Space::Hints, key.clone(), version(2)).await.unwrap().applied);
        assert_eq!(store.pending_hints(), 2);
        assert!(store.remove_if(Space::Hints, key.clone(), version(3)).await.unwrap().applied);
        assert_eq!(store.pending_hints(), 1);
        let left = store.scan(Space::Hints, Bytes::new(), None, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(&left[0].0[..8], &8u64.to_be_bytes());
    }

    #[tokio::test]
    async fn tombstones_are_removed_only_if_unchanged() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        store.write(1, b"k", Record::tombstone(version(4))).await.unwrap();
        let key = stored_key(1, b"k");
        assert!(!store.remove_if(Space::Records, key.clone(), version(3)).await.unwrap().applied);
        assert!(store.remove_if(Space::Records, key, version(4)).await.unwrap().applied);
        assert_eq!(store.read(1, b"k").await.unwrap(), None);
        assert_eq!(store.live_keys(), 0);
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
    async fn a_batch_is_one_message_with_an_outcome_per_write() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        store.write(1, b"a", value(5, "five")).await.unwrap();
        store.write_hint(9, 2, b"h", value(2, "two")).await.unwrap();
        let outcomes = store
            .write_batch(vec![
                Write::record(1, b"a", value(4, "older")),
                Write::record(2, b"b", value(1, "new")),
                // Two writes to one key in one batch merge too, in order.
                Write::record(3, b"c", value(7, "seven")),
                Write::record(3, b"c", value(6, "six")),
                Write::record(3, b"c", value(8, "eight")),
                Write::remove_if(Space::Hints, hint_key(9, 2, b"h"), version(1)),
                Write::remove_if(Space::Hints, hint_key(9, 2, b"h"), version(2)),
                Write::hint(8, 4, b"d", value(3, "three")),
            ])
            .await;
        let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
        let applied: Vec<bool> = outcomes.iter().map(|o| o.applied).collect();
        assert_eq!(applied, [false, true, true, false, true, false, true, true]);
        assert_eq!(outcomes[0].current, version(5), "the newer stored version is reported");
        assert_eq!(outcomes[3].current, version(7));
        assert_eq!((store.live_keys(), store.pending_hints()), (3, 1));

        let keys: [(u64, &[u8]); 4] = [(1, b"a"), (3, b"c"), (4, b"d"), (2, b"b")];
        let records: Vec<_> = store.read_many(keys).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            records,
            [Some(value(5, "five")), Some(value(8, "eight")), None, Some(value(1, "new"))]
        );
        assert!(store.write_batch(Vec::new()).await.is_empty());
        assert!(store.read_many([]).await.is_empty());
    }

    #[tokio::test]
    async fn a_batch_fails_write_by_write_below_the_reserve_and_whole_on_a_failed_commit() {
        use crate::{FaultKind, FaultyStorage};
        let engine = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let store = Store::open(engine.clone(), StoreOptions::default()).unwrap();
        store.write(1, b"k", value(1, "v")).await.unwrap();
        store.set_reserve(10, 100);
        let batch = || {
            vec![
                Write::record(2, b"new", value(2, "v")),
                Write::record(1, b"k", Record::tombstone(version(2))),
            ]
        };
        let outcomes = store.write_batch(batch()).await;
        assert!(matches!(outcomes[0], Err(StorageError::Reserve { free_mb: 10, reserve_mb: 100 })));
        assert!(outcomes[1].as_ref().unwrap().applied, "a tombstone frees space");
        store.set_reserve(200, 100);

        engine.fail_commits(Some(FaultKind::DiskFull));
        let outcomes = store.write_batch(batch()).await;
        assert_eq!(outcomes.len(), 2);
        for outcome in outcomes {
            assert_eq!(outcome.unwrap_err().fault().map(|f| f.kind), Some(FaultKind::DiskFull));
        }
        assert_eq!(store.read(2, b"new").await.unwrap(), None, "nothing of a failed batch stays");
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
    async fn a_failed_commit_degrades_the_store_until_it_recovers() {
        use crate::{FaultKind, FaultyStorage};
        let engine = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let store = Store::open(engine.clone(), StoreOptions::default()).unwrap();
        store.write(1, b"before", value(1, "kept")).await.unwrap();

        engine.fail_commits(Some(FaultKind::DiskFull));
        let failed = store.write(1, b"k", value(2, "lost")).await.unwrap_err();
        assert!(failed.to_string().contains("disk full"), "{failed}");
        assert_eq!(store.fault().map(|f| f.kind), Some(FaultKind::DiskFull));
        // The engine is not asked again: the same cause, even for deletes.
        let refused = store.write(1, b"before", Record::tombstone(version(3))).await.unwrap_err();
        assert_eq!(refused.fault().map(|f| f.kind), Some(FaultKind::DiskFull));
        assert_eq!(store.read(1, b"before").await.unwrap(), Some(value(1, "kept")), "reads go on");

        assert!(store.recover().await.is_err(), "the disk is still full");
        assert!(store.engine_failed());
        engine.fail_commits(None);
        store.recover().await.unwrap();
        assert_eq!(store.fault(), None);
        assert!(store.write(1, b"k", value(4, "after")).await.unwrap().applied);
        assert_eq!(store.live_keys(), 2);
        assert_eq!(store.scan(Space::Hints, Bytes::new(), None, 10).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn below_the_reserve_only_new_values_are_refused() {
        let store = Store::open(Arc::new(MemoryStorage::new()), StoreOptions::default()).unwrap();
        store.write(1, b"k", value(1, "v")).await.unwrap();
        store.write_hint(9, 2, b"h", value(1, "v")).await.unwrap();
        store.set_reserve(10, 100);
        assert_eq!(store.fault().map(|f| f.kind), Some(crate::FaultKind::DiskFull));
        let refused = store.write(2, b"new", value(2, "v")).await.unwrap_err();
        assert!(refused.to_string().contains("10 MiB free, below the reserve of 100 MiB"));
        assert!(store.write_hint(9, 3, b"h2", value(2, "v")).await.is_err(), "no new hints");
        // Deletes and removals free space, so they go through.
        assert!(store.write(1, b"k", Record::tombstone(version(2))).await.unwrap().applied);
        let hint = hint_key(9, 2, b"h");
        assert!(store.remove_if(Space::Hints, hint, version(1)).await.unwrap().applied);
        store.set_reserve(200, 100);
        assert_eq!(store.fault(), None);
        assert!(store.write(2, b"new", value(3, "v")).await.unwrap().applied);
    }

    #[tokio::test]
    async fn the_version_cache_never_lets_an_older_write_through() {
        // Off; room for about two entries (constant eviction); room for all of them.
        for version_cache_bytes in [0, 250, 1 << 20] {
            let options = StoreOptions { version_cache_bytes, ..StoreOptions::default() };
            let store = Store::open(Arc::new(MemoryStorage::new()), options).unwrap();
            for round in 1..=3u64 {
                for k in 0..50u64 {
                    let key = k.to_be_bytes();
                    assert!(store.write(k, &key, value(round * 10, "v")).await.unwrap().applied);
                    let stale = store.write(k, &key, value(round * 10 - 1, "old")).await.unwrap();
                    assert!(
                        !stale.applied,
                        "cache of {version_cache_bytes} B: older write accepted"
                    );
                }
            }
            store
                .remove_if(Space::Records, stored_key(7, &7u64.to_be_bytes()), version(30))
                .await
                .unwrap();
            assert!(store.write(7, &7u64.to_be_bytes(), value(1, "back")).await.unwrap().applied);
            assert_eq!(store.live_keys(), 50);
        }
    }
}
