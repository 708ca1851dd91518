//! Starting and stopping a node.

use std::future::Future;

use arc_swap::ArcSwap;
use dynakv_ring::Ring;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynakv_core::Hlc;
use dynakv_proto::v1::replica_server::ReplicaServer;
use dynakv_ring::SyncPolicy;
use dynakv_storage::{FjallStorage, MemoryStorage, Storage, Store, StoreOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

use crate::config::{NodeConfig, StorageChoice};
use crate::error::NodeError;
use crate::membership::{self, Membership, meta::Meta};
use crate::service::{NodeState, ReplicaService, max_message_bytes};
use crate::topology::Topology;
use crate::{anti_entropy, disk, handoff, metrics, sweep};

/// Concurrent requests one connection may carry.
const MAX_STREAMS_PER_CONNECTION: u32 = 16 * 1024;
/// HTTP/2 flow-control window of a connection: room for many values in flight at once.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of one request.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// A dynakv node.
pub struct Node;

impl Node {
    /// Serves the node on `listener` until `shutdown` completes, then stops background tasks (hint
    /// delivery, anti-entropy, the TTL sweep, the disk watch, the metrics endpoint, dump streams), drains open
    /// connections and closes
    /// storage. Storage is opened
    /// before the first request is accepted.
    pub async fn serve(
        listener: TcpListener,
        config: NodeConfig,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), NodeError> {
        let data_dir = match &config.storage {
            StorageChoice::Fjall(dir) => Some(dir.clone()),
            StorageChoice::Memory | StorageChoice::Engine(_) => None,
        };
        let max = max_message_bytes(&config.ring);
        let meta = Meta::open(data_dir.as_deref()).map_err(NodeError::Meta)?;
        let membership = Membership::open(meta).map_err(NodeError::Meta)?;
        let ring = live_ring(&config, &membership, max).await?;
        let addr = listener.local_addr()?;
        let tls = config.ring.config().tls.as_ref();
        if tls.is_none() && !addr.ip().is_loopback() && !config.insecure {
            return Err(NodeError::Insecure { addr });
        }
        // Read and checked before storage opens: a bad certificate stops the node at once.
        let server_tls = dynakv_tls::server_config(tls, &config.id)?;
        let engine: Arc<dyn Storage> = match &config.storage {
            StorageChoice::Fjall(dir) => {
                let dir = dir.clone();
                let cache = config.ring.config().storage.cache_mb.saturating_mul(1024 * 1024);
                tokio::task::spawn_blocking(move || {
                    FjallStorage::open_with_cache(&dir, Some(cache))
                })
                .await
                .expect("storage open task panicked")
                .map(|e| Arc::new(e) as Arc<dyn Storage>)?
            }
            StorageChoice::Memory => Arc::new(MemoryStorage::new()),
            StorageChoice::Engine(engine) => engine.clone(),
        };
        let options = StoreOptions {
            sync: config.ring.config().storage.sync == SyncPolicy::Always,
            readers: config.storage_readers,
            ..StoreOptions::default()
        };
        let store = tokio::task::spawn_blocking(move || Store::open(engine, options))
            .await
            .expect("storage open task panicked")?;
        // Metrics are secondary: a node whose metrics address is taken still serves its data.
        let metrics_listener = match config.metrics_addr {
            Some(at) => match TcpListener::bind(at).await {
                Ok(listener) => Some(listener),
                Err(e) => {
                    tracing::error!(node = %config.id, %at, error = %e, "cannot serve metrics; serving without them");
                    None
                }
            },
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let topology = Topology::new(ring.clone(), &config.id, None, max)?;
        let state = Arc::new(NodeState {
            id: config.id.clone(),
            label: metrics::node_label(&config.id),
            topology: ArcSwap::from_pointee(topology),
            max_message: max,
            membership,
            store,
            clock: Hlc::bounded(config.clock.clone(), ring.config().clocks.max_skew_ms),
            wall: config.clock.clone(),
            data_dir,
            metrics_addr,
            started: Instant::now(),
            anti_entropy: tokio::sync::Mutex::new(()),
            handoff: tokio::sync::Mutex::new(()),
            hint_failures: Default::default(),
            inject_delay: config.inject_delay_ms.clone(),
            stopping: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let sweep_every = Duration::from_millis(ring.config().ttl.sweep_interval_ms);
        state.tasks.spawn(sweep::run(state.clone(), sweep_every));
        state.tasks.spawn(handoff::run(state.clone()));
        state.tasks.spawn(disk::run(state.clone()));
        state.tasks.spawn(membership::run(state.clone()));
        if let Some(listener) = metrics_listener {
            state.tasks.spawn(metrics::serve(listener, state.clone()));
        }
        if ring.config().anti_entropy.enabled {
            state.tasks.spawn(anti_entropy::run(state.clone()));
        }
        tracing::info!(node = %config.id, %addr, metrics = ?metrics_addr, tls = server_tls.is_some(), keys = state.store.live_keys(), "node serving");

        let service = ReplicaServer::new(ReplicaService::new(state.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = state.stopping.clone();
        let mut builder = tonic::transport::Server::builder();
        if let Some(server_tls) = server_tls {
            builder = builder.tls_config(server_tls)?;
        }
        let server = builder
            .tcp_nodelay(true)
            // A client multiplexes every request to this node over one connection; a burst can
            // open thousands of streams before it has seen this limit, and streams refused then
            // make the connection fail for all of them.
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_stream_window_size(STREAM_WINDOW)
            .add_service(service)
            // `tcp_nodelay` above only applies to listeners tonic binds itself; ours needs it set
            // on each accepted socket, or Nagle holds back reply frames until the client's
            // delayed ACK (~40 ms).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    shutdown.await;
                    stopping.cancel();
                    let _ = drained_tx.send(());
                },
            );
        let mut server = Box::pin(server);
        let result = tokio::select! {
            // Polled first: once the server has finished, its shutdown sender is gone too.
            biased;
            result = &mut server => result,
            _ = drained_rx => {
                tracing::info!(node = %config.id, "shutting down: draining connections");
                match tokio::time::timeout(config.drain_timeout, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(node = %config.id, "connections still open after the drain timeout; stopping anyway");
                        Ok(())
                    }
                }
            }
        };
        drop(server);
        state.stopping.cancel();
        state.tasks.close();
        state.tasks.wait().await;
        // The last reference closes storage, which joins its threads: keep that off the runtime.
        let _ = tokio::task::spawn_blocking(move || drop(state)).await;
        tracing::info!(node = %config.id, "node stopped");
        result.map_err(NodeError::from)
    }
}

/// The ring a node starts with: the newest of its ring file, the ring it stored, and (for a node
/// joining through a member) the member's. A node the ring does not list may start only when it
/// joins: it then serves no keys until a change adds it.
async fn live_ring(
    config: &NodeConfig,
    membership: &Membership,
    max_message: usize,
) -> Result<Arc<Ring>, NodeError> {
    let mut ring = config.ring.clone();
    let stored = membership.stored_ring();
    let stored_version = stored.as_ref().ok().and_then(|s| s.as_ref()).map(Ring::version);
    match stored {
        Ok(Some(stored)) if stored.version() > ring.version() => {
            tracing::info!(node = %config.id, file = ring.version(), stored = stored.version(), "serving the newer ring this node stored");
            ring = Arc::new(stored);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(node = %config.id, error = %e, "ignoring the stored ring"),
    }
    if let Some(member) = config.join {
        let fetched = membership::fetch_ring(member, &ring, &config.id, max_message)
            .await
            .map_err(NodeError::Join)?;
        if fetched.version() > ring.version() {
            tracing::info!(node = %config.id, %member, version = fetched.version(), "learned the live ring");
            ring = Arc::new(fetched);
        }
    } else {
        ring.node_index(&config.id)?;
    }
    if stored_version.is_none_or(|v| v < ring.version()) {
        membership.meta.write(membership::meta::RING, &ring.to_toml()).map_err(NodeError::Meta)?;
    }
    Ok(ring)
}
