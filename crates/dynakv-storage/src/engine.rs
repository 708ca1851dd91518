//! The contract between a node and a storage engine: an ordered map of bytes with atomic,
//! optionally synced batches. Engines know nothing of records or versions.

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

/// One change in a batch.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Set `key` to `value`.
    Put(Bytes, Bytes),
    /// Remove `key` entirely (used only for records that are safe to forget).
    Delete(Bytes),
}

/// An ordered byte map with atomic batches: the interface every engine adapts to.
pub trait Storage: Send + Sync + 'static {
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError>;

    /// Applies all mutations atomically. Returns once they are in the engine's journal in the
    /// OS (they survive a crash of the process); with `sync`, once they are on stable storage.
    fn commit(&self, batch: Vec<Mutation>, sync: bool) -> Result<(), StorageError>;

    /// Up to `limit` entries with keys at or after `from`, in key order.
    fn scan(&self, from: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError>;
}

/// The stored key of a user key: its ring token (big-endian, so tokens sort numerically) then
/// the key itself.
pub fn stored_key(token: u64, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + key.len());
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
