//! An in-memory engine: sorted maps behind a read-write lock. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use parking_lot::RwLock;

use crate::engine::{Mutation, Space, Storage, StorageError};

/// Records and hints in memory, for tests and benchmarks that must not touch the disk.
#[derive(Default)]
pub struct MemoryStorage {
    /// A plain lock is right here: every critical section is short and never awaits.
    maps: RwLock<[BTreeMap<Bytes, Bytes>; 2]>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn slot(space: Space) -> usize {
    match space {
        Space::Records => 0,
        Space::Hints => 1,
    }
}

impl Storage for MemoryStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.maps.read()[slot(space)].get(key).cloned())
    }

    fn commit(&self, batch: Vec<Mutation>, _sync: bool) -> Result<(), StorageError> {
        let mut maps = self.maps.write();
        for mutation in batch {
            match mutation {
                Mutation::Put(space, key, value) => maps[slot(space)].insert(key, value),
                Mutation::Delete(space, key) => maps[slot(space)].remove(&key),
            };
        }
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let maps = self.maps.read();
        let upper = to.map_or(Bound::Unbounded, |to| Bound::Excluded(Bytes::copy_from_slice(to)));
        let range = (Bound::Included(Bytes::copy_from_slice(from)), upper);
        Ok(maps[slot(space)]
            .range(range)
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
