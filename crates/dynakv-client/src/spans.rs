//! Tracing spans of client operations: one per operation (single or batched, retries included),
//! carrying the op, the key's ring token, the ring version and the quorum numbers, so every log
//! line inside names them. Values are never logged.

use dynakv_ring::{Ring, key_token};
use tracing::Span;

/// The span of one operation on `key`: `op` is put, delete or get, `quorum` its W or R.
pub(crate) fn operation(op: &'static str, key: &[u8], quorum: usize, ring: &Ring) -> Span {
    let token = format!("{:016x}", key_token(key));
    let n = ring.config().replication.n;
    tracing::info_span!("op", op, token, ring_version = ring.version(), quorum, n)
}

/// Logs the end of an operation inside its span, at debug level.
pub(crate) fn done<T, E: std::fmt::Display>(result: &Result<T, E>) {
    match result {
        Ok(_) => tracing::debug!("operation done"),
        Err(e) => tracing::debug!(error = %e, "operation failed"),
    }
}
