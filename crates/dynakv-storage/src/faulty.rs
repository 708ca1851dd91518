//! [`FaultyStorage`]: an engine wrapper that fails on command, like a disk that fills up or
//! breaks, for tests and failure drills of the layers above.
//!
//! It behaves as fjall does: once a commit has failed, the engine is *poisoned* and refuses every
//! commit until it is reopened; reopening while the fault is still on succeeds, but the next
//! commit fails again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::engine::{Fault, FaultKind, Mutation, Space, Storage, StorageError};

/// Another engine, with failures switched on and off by the caller.
pub struct FaultyStorage {
    inner: Arc<dyn Storage>,
    /// While set, every commit fails with this kind of fault.
    failing: Mutex<Option<FaultKind>>,
    /// Set by a failed commit, cleared by `reopen`.
    poisoned: AtomicBool,
    /// While set, reads and scans fail with an I/O error.
    failing_reads: AtomicBool,
    /// While set, every commit reaches the inner engine and then fails, as a failed fsync does.
    failing_syncs: AtomicBool,
}

impl FaultyStorage {
    /// Wraps `inner`, with no fault on.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        FaultyStorage {
            inner,
            failing: Mutex::new(None),
            poisoned: AtomicBool::new(false),
            failing_reads: AtomicBool::new(false),
            failing_syncs: AtomicBool::new(false),
        }
    }

    /// From now on every commit fails with `kind` (`None`: commits work again, once reopened).
    pub fn fail_commits(&self, kind: Option<FaultKind>) {
        *self.failing.lock() = kind;
    }

    /// From now on every commit is written to the inner engine and then fails with an I/O error,
    /// like a journal written before its fsync failed (`false`: commits work again, once
    /// reopened).
    pub fn fail_syncs(&self, failing: bool) {
        self.failing_syncs.store(failing, Ordering::Release);
    }

    /// From now on reads and scans fail (`false`: they work again).
    pub fn fail_reads(&self, failing: bool) {
        self.failing_reads.store(failing, Ordering::Release);
    }

    fn read_fault(&self) -> Result<(), StorageError> {
        if self.failing_reads.load(Ordering::Acquire) {
            return Err(StorageError::Engine(Fault {
                kind: FaultKind::Io,
                detail: "injected read failure".into(),
            }));
        }
        Ok(())
    }
}

impl Storage for FaultyStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.read_fault()?;
        self.inner.get(space, key)
    }

    fn commit(&self, batch: Vec<Mutation>, sync: bool) -> Result<(), StorageError> {
        if let Some(kind) = *self.failing.lock() {
            self.poisoned.store(true, Ordering::Release);
            let detail = match kind {
                FaultKind::DiskFull => "No space left on device (os error 28), injected",
                FaultKind::Io => "Input/output error (os error 5), injected",
                FaultKind::Poisoned => "poisoned, injected",
            };
            return Err(StorageError::Engine(Fault { kind, detail: detail.into() }));
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Engine(Fault {
                kind: FaultKind::Poisoned,
                detail: "refusing writes after an earlier failure".into(),
            }));
        }
        if self.failing_syncs.load(Ordering::Acquire) {
            self.inner.commit(batch, sync)?;
            self.poisoned.store(true, Ordering::Release);
            return Err(StorageError::Engine(Fault {
                kind: FaultKind::Io,
                detail: "fsync failed after the write, injected".into(),
            }));
        }
        self.inner.commit(batch, sync)
    }

    fn reopen(&self) -> Result<(), StorageError> {
        self.inner.reopen()?;
        self.poisoned.store(false, Ordering::Release);
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        self.read_fault()?;
        self.inner.scan(space, from, to, limit)
    }
}
