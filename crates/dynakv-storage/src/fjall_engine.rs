//! The persistent engine: a fjall LSM tree. Every batch goes through fjall's journal, which is
//! handed to the OS before `commit` returns, and fsynced first when asked.

use std::path::Path;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::engine::{Mutation, Space, Storage, StorageError};

/// Records and hints on disk, in two fjall keyspaces sharing one journal.
pub struct FjallStorage {
    db: Database,
    records: Keyspace,
    hints: Keyspace,
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
        // One background worker (flushes and compactions), not one per core: with two or more,
        // fjall's worker 0 hands compaction messages back to the queue and, while the other
        // workers are busy, picks them up again at once, spinning a core (fjall 3.1).
        let mut builder = Database::builder(dir).worker_threads(1);
        if let Some(bytes) = cache_bytes {
            builder = builder.cache_size(bytes);
        }
        let db = builder.open().map_err(engine_error)?;
        let records =
            db.keyspace("records", KeyspaceCreateOptions::default).map_err(engine_error)?;
        let hints = db.keyspace("hints", KeyspaceCreateOptions::default).map_err(engine_error)?;
        Ok(FjallStorage { db, records, hints })
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Records => &self.records,
            Space::Hints => &self.hints,
        }
    }
}

impl Storage for FjallStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.keyspace(space).get(key).map_err(engine_error)?.map(Bytes::from))
    }

    fn commit(&self, batch: Vec<Mutation>, sync: bool) -> Result<(), StorageError> {
        // `Database::batch` flushes the journal to the OS on commit; `SyncData` adds an fsync.
        let mut writes = self.db.batch();
        if sync {
            writes = writes.durability(Some(PersistMode::SyncData));
        }
        for mutation in batch {
            match mutation {
                Mutation::Put(space, key, value) => writes.insert(self.keyspace(space), key, value),
                Mutation::Delete(space, key) => writes.remove(self.keyspace(space), key),
            }
        }
        writes.commit().map_err(engine_error)
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let keyspace = self.keyspace(space);
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
    }
}

fn engine_error(e: fjall::Error) -> StorageError {
    StorageError::Engine(e.to_string())
}
