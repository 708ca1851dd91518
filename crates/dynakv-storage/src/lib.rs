//! Where a node keeps its records: a small [`Storage`] trait, its engines, and the [`Store`]
//! that puts the merge rule and group commit in front of them.
//!
//! Stored keys are `token (u64, big-endian) ++ key`, where the token is the key's ring hash, so a
//! ring range is one contiguous scan. Values are records in the [`dynakv_core::codec`] encoding.
//!
//! # Layout
//! - [`engine`]: the [`Storage`] trait every engine implements, its keyspaces ([`Space`]: records
//!   and hints), [`Mutation`], [`StorageError`], and the stored-key layouts.
//! - [`fjall_engine`]: [`FjallStorage`], the persistent default (an LSM tree with a journal).
//! - [`memory`]: [`MemoryStorage`], an in-memory engine for tests and benchmarks.
//! - [`faulty`]: [`FaultyStorage`], a wrapper that fails on command (full disk, I/O errors), for
//!   tests and failure drills.
//! - [`store`]: [`Store`], the node's handle: one writer thread that merges, removes
//!   conditionally, rewrites expired records and group-commits, taking a batch of writes
//!   ([`Write`]) as one message; reader threads; live key and
//!   hint counts; the degraded state after a failed commit, the free-space reserve, and recovery.
//! - [`digests`]: per-bucket digests of the records ([`Digest`], [`entry_hash`]), kept by the
//!   writer as it commits, so a range is compared without reading every record in it.
//! - [`pages`]: paged scans of a key range ([`Pages`], [`PageCursor`]): the one paging loop.

#![warn(missing_docs)]

pub mod digests;
pub mod engine;
pub mod faulty;
pub mod fjall_engine;
pub mod memory;
pub mod pages;
pub mod store;

pub use digests::{Digest, entry_hash};
pub use engine::{
    Fault, FaultKind, Mutation, Space, Storage, StorageError, hint_key, split_stored_key,
    stored_key,
};
pub use faulty::FaultyStorage;
pub use fjall_engine::FjallStorage;
pub use memory::MemoryStorage;
pub use pages::{PageCursor, Pages, next_page_start};
pub use store::{Store, StoreOptions, Write, WriteOutcome};
