//! The persistent engine: a fjall LSM tree. Every batch goes through fjall's journal, which is
//! handed to the OS before `commit` returns, and fsynced first when asked.
//!
//! fjall refuses every write once one has failed ("poisoned"), since it cannot know what reached
//! the disk. [`FjallStorage::reopen`] closes the database and opens it again, which replays the
//! journal: everything acknowledged before the failure is back, and writes are taken again.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::RwLock;

use crate::engine::{Fault, FaultKind, Mutation, Space, Storage, StorageError};

/// Records and hints on disk, in two fjall keyspaces sharing one journal.
pub struct FjallStorage {
    /// Where the database lives, to reopen it.
    dir: PathBuf,
    /// Block cache size asked for at open (`None`: fjall's default).
    cache_bytes: Option<u64>,
    /// The open database; `None` only while a reopen failed (every call then fails). A read
    /// lock per call; the write lock only to reopen.
    open: RwLock<Option<Open>>,
}

/// An open database and its two keyspaces.
struct Open {
    db: Database,
    records: Keyspace,
    hints: Keyspace,
}

impl Open {
    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Records => &self.records,
            Space::Hints => &self.hints,
        }
    }
}

impl FjallStorage {
    /// Opens (or creates) the database in `dir` with fjall's default block cache, replaying
    /// its journal.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache(dir, None)
    }

    /// Opens (or creates) the database in `dir` with a block cache of `cache_bytes` (fjall's
    /// default when `None`), replaying its journal.
    pub fn open_with_cache(dir: &Path, cache_bytes: Option<u64>) -> Result<Self, StorageError> {
        let open = open(dir, cache_bytes)?;
        Ok(FjallStorage { dir: dir.to_path_buf(), cache_bytes, open: RwLock::new(Some(open)) })
    }

    /// Runs `f` on the open database.
    fn with<T>(&self, f: impl FnOnce(&Open) -> Result<T, StorageError>) -> Result<T, StorageError> {
        match &*self.open.read() {
            Some(open) => f(open),
            None => Err(StorageError::Engine(Fault {
                kind: FaultKind::Io,
                detail: "the database could not be reopened; retrying".into(),
            })),
        }
    }
}

fn open(dir: &Path, cache_bytes: Option<u64>) -> Result<Open, StorageError> {
    // One background worker (flushes and compactions), not one per core: with two or more,
    // fjall's worker 0 hands compaction messages back to the queue and, while the other
    // workers are busy, picks them up again at once, spinning a core (fjall 3.1).
    let mut builder = Database::builder(dir).worker_threads(1);
    if let Some(bytes) = cache_bytes {
        builder = builder.cache_size(bytes);
    }
    let db = builder.open().map_err(engine_error)?;
    let records = db.keyspace("records", KeyspaceCreateOptions::default).map_err(engine_error)?;
    let hints = db.keyspace("hints", KeyspaceCreateOptions::default).map_err(engine_error)?;
    Ok(Open { db, records, hints })
}

impl Storage for FjallStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.with(|open| Ok(open.keyspace(space).get(key).map_err(engine_error)?.map(Bytes::from)))
    }

    fn commit(&self, batch: Vec<Mutation>, sync: bool) -> Result<(), StorageError> {
        self.with(|open| {
            // `Database::batch` flushes the journal to the OS on commit; `SyncData` adds an fsync.
            let mut writes = open.db.batch();
            if sync {
                writes = writes.durability(Some(PersistMode::SyncData));
            }
            for mutation in batch {
                match mutation {
                    Mutation::Put(space, key, value) => {
                        writes.insert(open.keyspace(space), key, value)
                    }
                    Mutation::Delete(space, key) => writes.remove(open.keyspace(space), key),
                }
            }
            writes.commit().map_err(engine_error)
        })
    }

    fn reopen(&self) -> Result<(), StorageError> {
        let mut slot = self.open.write();
        // The old database must be gone (its lock file released, its workers stopped) before
        // the new one opens.
        drop(slot.take());
        *slot = Some(open(&self.dir, self.cache_bytes)?);
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        self.with(|open| {
            let keyspace = open.keyspace(space);
            let iter = match to {
                Some(to) => keyspace.range(from..to),
                None => keyspace.range(from..),
            };
            iter.take(limit)
                .map(|guard| {
                    let (key, value) = guard.into_inner().map_err(engine_error)?;
                    Ok((Bytes::from(key), Bytes::from(value)))
                })
                .collect()
        })
    }
}

/// The fault a fjall error stands for.
fn engine_error(e: fjall::Error) -> StorageError {
    let fault = match &e {
        fjall::Error::Io(io) => Fault::from_io(io),
        fjall::Error::Storage(fjall::LsmError::Io(io)) => Fault::from_io(io),
        fjall::Error::Poisoned => Fault {
            kind: FaultKind::Poisoned,
            detail: "the engine refuses writes after an earlier failure".into(),
        },
        other => Fault { kind: FaultKind::Io, detail: format!("{other:?}") },
    };
    StorageError::Engine(fault)
}
