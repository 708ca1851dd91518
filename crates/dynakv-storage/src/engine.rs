//! The contract between a node and a storage engine: ordered maps of bytes (one per [`Space`])
//! with atomic, optionally synced batches. Engines know nothing of records or versions.

use bytes::Bytes;
use thiserror::Error;

/// A storage failure. Any of these means the operation did not take effect.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The engine failed (I/O error, corruption detected, poisoned after a failed fsync).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A stored record could not be decoded.
    #[error("stored record is damaged: {0}")]
    Codec(#[from] dynakv_core::CodecError),
    /// The store is shutting down and takes no more requests.
    #[error("store is closed")]
    Closed,
}

/// The separate keyspaces of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// The node's own replicas: `token ++ key` -> record.
    Records,
    /// Records held for other nodes (hinted handoff): `owner ++ token ++ key` -> record.
    Hints,
}

/// One change in a batch.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Set `key` to `value`.
    Put(Space, Bytes, Bytes),
    /// Remove `key` entirely.
    Delete(Space, Bytes),
}

/// Ordered byte maps with atomic batches: the interface every engine adapts to.
pub trait Storage: Send + Sync + 'static {
    /// The value stored under `key`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, StorageError>;

    /// Applies all mutations atomically. Returns once they are in the engine's journal in the
    /// OS (they survive a crash of the process); with `sync`, once they are on stable storage.
    fn commit(&self, batch: Vec<Mutation>, sync: bool) -> Result<(), StorageError>;

    /// Up to `limit` entries with keys in `[from, to)` (`to = None`: no upper bound), in key order.
    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError>;
}

/// The stored key of a user key: its ring token (big-endian, so tokens sort numerically) then
/// the key itself.
pub fn stored_key(token: u64, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(key);
    Bytes::from(out)
}

/// The stored key of a hint: the owner's 8-byte id hash, then the stored key of the user key,
/// so one owner's hints are one contiguous scan.
pub fn hint_key(owner: u64, token: u64, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(16 + key.len());
    out.extend_from_slice(&owner.to_be_bytes());
    out.extend_from_slice(&token.to_be_bytes());
    out.extend_from_slice(key);
    Bytes::from(out)
}

/// Splits a stored key into its ring token and the user key; `None` if it is too short to hold
/// a token.
pub fn split_stored_key(stored: &[u8]) -> Option<(u64, &[u8])> {
    let (token, key) = stored.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*token), key))
}
