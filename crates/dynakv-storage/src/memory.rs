//! An in-memory engine: a sorted map behind a read-write lock. Nothing survives the process.

use std::collections::BTreeMap;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::engine::{Mutation, Storage, StorageError};

/// Records in memory, for tests and benchmarks that must not touch the disk.
#[derive(Default)]
pub struct MemoryStorage {
    /// A std-style lock is right here: every critical section is short and never awaits.
    map: RwLock<BTreeMap<Bytes, Bytes>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.map.read().get(key).cloned())
    }

    fn commit(&self, batch: Vec<Mutation>, _sync: bool) -> Result<(), StorageError> {
        let mut map = self.map.write();
        for mutation in batch {
            match mutation {
                Mutation::Put(key, value) => map.insert(key, value),
                Mutation::Delete(key) => map.remove(&key),
            };
        }
        Ok(())
    }

    fn scan(&self, from: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let map = self.map.read();
        let from = Bytes::copy_from_slice(from);
        Ok(map.range(from..).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}
