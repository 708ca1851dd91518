//! What a node needs to start.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dynakv_core::Clock;
use dynakv_ring::Ring;

/// Which engine holds the node's records.
#[derive(Clone)]
pub enum StorageChoice {
    /// The persistent fjall engine in this directory (created if missing).
    Fjall(PathBuf),
    /// In memory only: nothing survives the process. For tests and benchmarks.
    Memory,
    /// An engine the caller built, such as a [`dynakv_storage::FaultyStorage`] for failure
    /// tests. No free-space reserve applies: there is no data directory to measure.
    Engine(Arc<dyn dynakv_storage::Storage>),
}

/// A node's start-up configuration.
#[derive(Clone)]
pub struct NodeConfig {
    /// The ring this node serves; the node's own entry gives its id.
    pub ring: Arc<Ring>,
    /// This node's id in the ring.
    pub id: String,
    /// Where records are kept.
    pub storage: StorageChoice,
    /// Threads serving storage reads; 0 serves them on the runtime thread that asks.
    pub storage_readers: usize,
    /// Longest wait for open connections to finish at shutdown before the node stops anyway.
    pub drain_timeout: Duration,
    /// A random delay, in milliseconds, added to every replica request (for demonstrations).
    pub inject_delay_ms: Option<RangeInclusive<u64>>,
    /// The node's wall clock: the system clock unless a test shifts it.
    pub clock: Clock,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Serve a non-loopback address without TLS (no `[tls]` table); refused otherwise.
    pub insecure: bool,
    /// A member to learn the live ring from before serving, for a node that is not in its ring
    /// file yet (`dynakv node --join`); such a node serves no keys until a change adds it.
    pub join: Option<std::net::SocketAddr>,
}

impl NodeConfig {
    /// A configuration with the documented defaults: reads on the runtime, a 10 s drain, the
    /// system clock, no metrics endpoint, TLS required beyond loopback.
    pub fn new(ring: Arc<Ring>, id: impl Into<String>, storage: StorageChoice) -> Self {
        NodeConfig {
            ring,
            id: id.into(),
            storage,
            storage_readers: 0,
            drain_timeout: Duration::from_secs(10),
            inject_delay_ms: None,
            clock: Clock::system(),
            metrics_addr: None,
            insecure: false,
            join: None,
        }
    }
}
