//! The contract between a node and a storage engine: ordered maps of bytes (one per [`Space`])
//! with atomic, optionally synced batches. Engines know nothing of records or versions.

use bytes::Bytes;
use thiserror::Error;

/// A storage failure. Any of these means the operation did not take effect.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The engine failed (disk full, I/O error, poisoned after a failed write); the store is
    /// degraded until the cause clears.
    #[error("storage {0}")]
    Engine(Fault),
    /// Free disk space is below the configured reserve: new values are refused (deletes and
    /// removals still go through, so space can be freed).
    #[error("disk full: {free_mb} MiB free, below the reserve of {reserve_mb} MiB")]
    Reserve {
        /// Free space left, in MiB.
        free_mb: u64,
        /// The reserve, in MiB (`[storage] min_free_mb`).
        reserve_mb: u64,
    },
    /// A stored record could not be decoded.
    #[error("stored record is damaged: {0}")]
    Codec(#[from] dynakv_core::CodecError),
    /// The store is shutting down and takes no more requests.
    #[error("store is closed")]
    Closed,
}

impl StorageError {
    /// The fault behind this error, if it says the disk or the engine is failing.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            StorageError::Engine(fault) => Some(fault.clone()),
            StorageError::Reserve { free_mb, reserve_mb } => Some(Fault {
                kind: FaultKind::DiskFull,
                detail: format!("{free_mb} MiB free, below the reserve of {reserve_mb} MiB"),
            }),
            StorageError::Codec(_) | StorageError::Closed => None,
        }
    }
}

/// What kind of failure a degraded store suffers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The disk has no room left (or less than the reserve).
    DiskFull,
    /// Reading or writing failed for another reason.
    Io,
    /// The engine refuses writes after an earlier failure, until it is reopened.
    Poisoned,
}

impl FaultKind {
    /// The words operators see: "disk full", "I/O error", "storage poisoned".
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::DiskFull => "disk full",
            FaultKind::Io => "I/O error",
            FaultKind::Poisoned => "storage poisoned",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A storage failure as a node reports it: its kind and the engine's own words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind}: {detail}")]
pub struct Fault {
    /// The kind, for codes and states.
    pub kind: FaultKind,
    /// What the engine said.
    pub detail: String,
}

impl Fault {
    /// The fault an I/O error stands for: disk full for `ENOSPC`/`EDQUOT`, an I/O error otherwise.
    pub fn from_io(e: &std::io::Error) -> Fault {
        let kind = match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                FaultKind::DiskFull
            }
            _ => FaultKind::Io,
        };
        Fault { kind, detail: e.to_string() }
    }
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

    /// Closes and opens the engine again, after a failure that left it refusing writes. Engines
    /// that never refuse writes after a failure have nothing to do.
    fn reopen(&self) -> Result<(), StorageError> {
        Ok(())
    }

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
