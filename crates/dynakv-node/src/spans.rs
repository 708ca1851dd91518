//! Tracing spans of node requests: one per RPC served, carrying the RPC, this node's id, the
//! ring version and, for single reads and writes, the key's ring token, so every log line
//! inside names them. Values are never logged.

use dynakv_ring::key_token;
use tracing::Span;

use crate::service::NodeState;

/// The span of one `rpc` served by this node, for `key` when it is a single-key request.
pub fn request(state: &NodeState, rpc: &'static str, key: Option<&[u8]>) -> Span {
    let span = tracing::info_span!(
        "request",
        rpc,
        node = %state.id,
        ring_version = state.ring_version(),
        n = state.ring().config().replication.n,
        token = tracing::field::Empty,
    );
    if let Some(key) = key {
        span.record("token", format!("{:016x}", key_token(key)));
    }
    span
}

/// Logs the end of a request inside its span, at debug level.
pub fn served<T>(result: &Result<T, tonic::Status>) {
    match result {
        Ok(_) => tracing::debug!("request served"),
        Err(status) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "request failed")
        }
    }
}
