//! Client settings and per-call overrides.

use std::time::Duration;

use dynakv_ring::Ring;

/// Default of [`ClientOptions::rpcs_in_flight_per_node`]: with two RPCs in flight a node always
/// has the next batch waiting while it answers one, and batches still form under load.
pub const DEFAULT_RPCS_IN_FLIGHT_PER_NODE: usize = 2;

/// Client-wide settings; [`ClientOptions::from_ring`] takes deadlines and limits from the ring file.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of one replica request, connection included.
    pub request_timeout: Duration,
    /// Deadline to open a connection to a node.
    pub connect_timeout: Duration,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Consecutive transport failures after which a node is considered down and skipped.
    pub failures_before_down: u32,
    /// First wait before a down node is tried again; doubles up to `max_retry_delay`.
    pub min_retry_delay: Duration,
    /// Longest wait before a down node is tried again.
    pub max_retry_delay: Duration,
    /// Most read repairs in flight; repairs beyond it are skipped (anti-entropy catches them).
    pub max_inflight_repairs: usize,
    /// RPCs in flight to one node before further operations to it wait and are then sent
    /// together as one batch RPC; 0 sends every operation as its own RPC (no coalescing).
    pub rpcs_in_flight_per_node: usize,
}

impl ClientOptions {
    /// The defaults, with deadlines and limits from the ring file.
    pub fn from_ring(ring: &Ring) -> Self {
        let config = ring.config();
        ClientOptions {
            request_timeout: Duration::from_millis(config.timeouts.request_ms),
            connect_timeout: Duration::from_millis(config.timeouts.connect_ms),
            max_value_bytes: config.limits.max_value_bytes,
            failures_before_down: 3,
            min_retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(5),
            max_inflight_repairs: 256,
            rpcs_in_flight_per_node: DEFAULT_RPCS_IN_FLIGHT_PER_NODE,
        }
    }
}

/// Overrides for one read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Replies to wait for; the ring's default R when `None`.
    pub r: Option<usize>,
}

/// Overrides for one write or delete.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Acknowledgements to wait for; the ring's default W when `None`.
    pub w: Option<usize>,
}
