//! Tracing spans of client operations: one per operation (single or batched, retries included),
//! carrying the op, the key's ring token, the ring version and the quorum numbers, so every log
//! line inside names them. Values are never logged.

use dynakv_ring::{Ring, key_token};
use tracing::Span;

/// The span of one operation on `key`: `op` is put, delete or get, `quorum` its W or R.
pub(crate) fn operation(op: &'static str, key: &[u8], quorum: usize, ring: &Ring) -> Span {
    let n = ring.config().replication.n;
    // Formatted only when a subscriber records the span: most operations run with it disabled.
    let token = tracing::field::display(Token(key_token(key)));
    tracing::info_span!("op", op, token, ring_version = ring.version(), quorum, n)
}

/// A key token as 16 hex digits.
struct Token(u64);

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Logs the end of an operation inside its span, at debug level.
pub(crate) fn done<T, E: std::fmt::Display>(result: &Result<T, E>) {
    match result {
        Ok(_) => tracing::debug!("operation done"),
        Err(e) => tracing::debug!(error = %e, "operation failed"),
    }
}
