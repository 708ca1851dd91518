//! Client settings and per-call overrides.

use std::time::Duration;

use dynakv_core::{Clock, HealthPolicy};
use dynakv_ring::Ring;

use crate::consistency::Consistency;
use crate::hedge::{HedgePolicy, ReadFanout};

/// Default of [`ClientOptions::rpcs_in_flight_per_node`]: with two RPCs in flight a node always
/// has the next batch waiting while it answers one, and batches still form under load.
pub const DEFAULT_RPCS_IN_FLIGHT_PER_NODE: usize = 2;

/// Default of [`ClientOptions::max_concurrent_batch_ops`].
pub const DEFAULT_MAX_CONCURRENT_BATCH_OPS: usize = 1024;

/// Client-wide settings; [`ClientOptions::from_ring`] takes deadlines and limits from the ring file.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline of one replica request, connection included.
    pub request_timeout: Duration,
    /// Deadline to open a connection to a node.
    pub connect_timeout: Duration,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// When a node counts as down and how soon it is tried again.
    pub health: HealthPolicy,
    /// Most read repairs in flight; repairs beyond it are skipped (anti-entropy catches them).
    pub max_inflight_repairs: usize,
    /// Count only the key's own replicas toward W: no stand-ins for unreachable replicas.
    pub strict_quorum: bool,
    /// The consistency of every operation that does not set its own; default
    /// [`Consistency::Quorum`] (R and W from the ring file).
    pub consistency: Consistency,
    /// Attempts of one operation, the first included, when it fails with a retryable error
    /// ([`ClientError::is_retryable`](crate::ClientError::is_retryable)); 1 disables retries.
    /// A retried write reuses its version, so it can never become a second write. Default 3.
    pub max_attempts: usize,
    /// Wait before the first retry; doubles with each retry up to `backoff_max_delay`, and each
    /// wait gets random jitter so clients that failed together do not retry together. Default 50 ms.
    pub backoff_min_delay: Duration,
    /// Longest wait between two attempts. Default 1 s.
    pub backoff_max_delay: Duration,
    /// How long a membership change ([`Client::change_ring`](crate::Client::change_ring)) may
    /// take to be agreed by the cluster before the client gives up on the node. Default 30 s.
    pub membership_timeout: Duration,
    /// How many replicas a read asks up front: R, plus a hedge for each that fails or is late
    /// ([`ReadFanout::Quorum`], the default), or all N ([`ReadFanout::All`]).
    pub read_fanout: ReadFanout,
    /// When a read counts a call as late and asks one more replica (p95 of the node's recent
    /// read latency, within 1 ms and 100 ms by default).
    pub hedge: HedgePolicy,
    /// RPCs in flight to one node before further operations to it wait and are then sent
    /// together as one batch RPC; 0 sends every operation as its own RPC (no coalescing).
    pub rpcs_in_flight_per_node: usize,
    /// Operations of one `put_many`, `get_many` or `delete_many` call in flight at once; the
    /// rest wait their turn, so a huge batch neither floods the nodes nor holds memory for every
    /// operation's round at once. Default 1024: enough to fill the coalescer's batch RPCs.
    pub max_concurrent_batch_ops: usize,
    /// This client's wall clock: the system clock unless a test skews it. The client stamps
    /// writes by it, moved forward to cluster time when the nodes' clocks are ahead (it never
    /// moves back).
    pub clock: Clock,
    /// Timestamps more than this many milliseconds ahead of the client's clock are not observed
    /// (see [`Hlc::bounded`](dynakv_core::Hlc::bounded)); from the ring's `[clocks] max_skew_ms`.
    pub max_skew_ms: u64,
    /// The ring's `[tls]` table: `None` connects in plaintext.
    pub tls: Option<dynakv_ring::TlsSettings>,
    /// Whose `[tls]` certificate this client presents: the client's unless set (admin
    /// commands present the admin's).
    pub caller: dynakv_tls::Caller,
}

impl ClientOptions {
    /// The defaults, with deadlines and limits from the ring file.
    pub fn from_ring(ring: &Ring) -> Self {
        let config = ring.config();
        ClientOptions {
            request_timeout: Duration::from_millis(config.timeouts.request_ms),
            connect_timeout: Duration::from_millis(config.timeouts.connect_ms),
            max_value_bytes: config.limits.max_value_bytes,
            health: HealthPolicy::default(),
            max_inflight_repairs: 256,
            strict_quorum: false,
            consistency: Consistency::Quorum,
            max_attempts: 3,
            backoff_min_delay: Duration::from_millis(50),
            backoff_max_delay: Duration::from_secs(1),
            membership_timeout: Duration::from_secs(30),
            read_fanout: ReadFanout::Quorum,
            hedge: HedgePolicy::default(),
            rpcs_in_flight_per_node: DEFAULT_RPCS_IN_FLIGHT_PER_NODE,
            max_concurrent_batch_ops: DEFAULT_MAX_CONCURRENT_BATCH_OPS,
            clock: Clock::system(),
            max_skew_ms: config.clocks.max_skew_ms,
            tls: config.tls.clone(),
            caller: dynakv_tls::Caller::Client,
        }
    }
}

/// Overrides for one read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Replies to wait for; the consistency level's R when `None`.
    pub r: Option<usize>,
    /// This read's consistency; the client's [`ClientOptions::consistency`] when `None`.
    pub consistency: Option<Consistency>,
}

/// Overrides for one write or delete.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Acknowledgements to wait for; the consistency level's W when `None`.
    pub w: Option<usize>,
    /// This write's consistency; the client's [`ClientOptions::consistency`] when `None`.
    pub consistency: Option<Consistency>,
    /// Refuse a sloppy quorum for this write even if the client allows one.
    pub strict: bool,
}
