//! The disk watch: keeps the free-space reserve, and brings failed storage back without a
//! restart.
//!
//! Every `[storage] check_interval_ms` the node
//! - measures the free space of its data directory; below `min_free_mb` the store refuses new
//!   values (deletes, hint handoff and compaction go on), at or above it takes them again;
//! - if a commit has failed (disk full, I/O error, poisoned engine) and the disk has room again,
//!   asks the store to recover: the engine is reopened in place, replaying its journal, and a
//!   probe write must succeed. Until then the node is DEGRADED: writes fail at once with the
//!   cause, reads are served from what is on disk, and health and `dynakv status` say why.
//!
//! This is Cassandra's `disk_failure_policy: best_effort` for writes, plus recovery in place: a
//! node whose disk filled up or failed once keeps serving reads and takes writes again by itself
//! once the cause clears. Nothing acknowledged is lost, as the journal holds it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::service::NodeState;

/// Watches the disk until the node stops.
pub async fn run(state: Arc<NodeState>) {
    let settings = state.ring().config().storage;
    let interval = Duration::from_millis(settings.check_interval_ms);
    loop {
        tokio::select! {
            _ = state.stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        check(&state, settings.min_free_mb).await;
    }
}

/// One check: the reserve, then recovery if storage failed and there is room.
pub async fn check(state: &NodeState, reserve_mb: u64) {
    let room = match &state.data_dir {
        Some(dir) => match free_mb(dir).await {
            Some(free) => {
                let was = state.store.fault();
                state.store.set_reserve(free, reserve_mb);
                let now = state.store.fault();
                if was != now && !state.store.engine_failed() {
                    match &now {
                        Some(fault) => {
                            tracing::warn!(node = %state.id, %fault, "refusing new values")
                        }
                        None => {
                            tracing::info!(node = %state.id, free_mb = free, "taking writes again")
                        }
                    }
                }
                // Some room even with the reserve off: a probe on a full disk could pass and let
                // the node flap between taking writes and failing them.
                free >= reserve_mb.max(1)
            }
            None => true,
        },
        None => true,
    };
    if room && state.store.engine_failed() {
        match state.store.recover().await {
            Ok(()) => tracing::info!(node = %state.id, "storage recovered: taking writes again"),
            Err(e) => tracing::debug!(node = %state.id, error = %e, "storage not recovered yet"),
        }
    }
}

/// Free space of the file system holding `dir`, in MiB; `None` if it cannot be measured.
async fn free_mb(dir: &Path) -> Option<u64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || fs4::available_space(&dir).ok())
        .await
        .ok()
        .flatten()
        .map(|bytes| bytes / (1024 * 1024))
}
