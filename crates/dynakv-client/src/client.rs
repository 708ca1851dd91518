//! [`Client`]: puts, gets and deletes against the ring, plus the operator views behind
//! `dynakv inspect` and `dynakv status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use dynakv_core::{
    Clock, HandoffReport, Hlc, Record, RepairReport, Timestamp, Version, validate_key,
    validate_value,
};
use dynakv_ring::{Ring, key_token};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::cluster_time;
use crate::error::{ClientError, Op, ReplicaError, WriteOutcome, Written};
use crate::options::{ClientOptions, ReadOptions, WriteOptions};
use crate::quorum::{self, Late};
use crate::replica::Replica;
use crate::retry;
use crate::topology::{Refresher, RingSightings, Topology};

/// What every clone of a client shares.
pub(crate) struct Shared {
    /// The live ring and a handle on each of its nodes, swapped whole when a newer ring
    /// arrives; each round loads it once ([`Shared::topology`]).
    pub(crate) topology: ArcSwap<Topology>,
    /// The newest ring version nodes have reported.
    pub(crate) sightings: Arc<RingSightings>,
    /// Runs one ring refresh at a time.
    pub(crate) refresher: Refresher,
    /// Stamps this client's writes; every replica handle observes what its node reports. Its
    /// wall clock follows `wall`, led forward to cluster time ([`cluster_time`]).
    pub(crate) clock: Arc<Hlc>,
    /// The wall clock this client was given (`ClientOptions::clock`), without the lead.
    pub(crate) wall: Clock,
    /// Set once the client has followed cluster time, before its first write.
    pub(crate) followed: tokio::sync::OnceCell<()>,
    /// This client's writer id: random, so two clients never produce equal versions.
    pub(crate) writer: u64,
    pub(crate) options: ClientOptions,
    /// Bounds read repairs in flight.
    pub(crate) repairs: Arc<Semaphore>,
    /// Late replies and repairs, so [`Client::settle`] can wait for them.
    pub(crate) background: TaskTracker,
}

/// A dynakv client. Cheap to clone; clones share channels, clock and node health.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

/// Builds a [`Client`] with non-default options.
pub struct ClientBuilder {
    ring: Ring,
    options: ClientOptions,
}

impl ClientBuilder {
    /// Replaces all options.
    pub fn options(mut self, options: ClientOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the deadline of one replica request.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// Presents `caller`'s `[tls]` certificate (the client's by default).
    pub fn caller(mut self, caller: dynakv_tls::Caller) -> Self {
        self.options.caller = caller;
        self
    }

    /// Creates the client. Connections open lazily, so this succeeds while nodes are down.
    pub fn build(self) -> Result<Client, ClientError> {
        let options = self.options;
        let clock = Arc::new(Hlc::bounded(options.clock.follower(), options.max_skew_ms));
        let sightings = Arc::new(RingSightings::default());
        let topology = Topology::build(self.ring, None, &options, &clock, &sightings)?;
        Ok(Client {
            shared: Arc::new(Shared {
                topology: ArcSwap::from_pointee(topology),
                sightings,
                refresher: Refresher::default(),
                clock,
                wall: options.clock.clone(),
                followed: tokio::sync::OnceCell::new(),
                writer: uuid::Uuid::new_v4().as_u64_pair().0,
                repairs: Arc::new(Semaphore::new(options.max_inflight_repairs.max(1))),
                options,
                background: TaskTracker::new(),
            }),
        })
    }
}

/// One node's health as this client tracks it (dereferences to [`NodeHealth`]); stays current
/// after the call that returned it.
///
/// [`NodeHealth`]: dynakv_core::NodeHealth
#[derive(Debug, Clone)]
pub struct LiveHealth(Arc<Replica>);

impl LiveHealth {
    /// Reads and writes this client has sent to the node, each operation of a batch counted
    /// once (read repairs and hedged reads included).
    pub fn requests_sent(&self) -> u64 {
        self.0.requests_sent()
    }

    /// The node's recent read latency at the hedging quantile (p95 by default), as this client
    /// measured it; `None` before its first read reply.
    pub fn read_latency(&self) -> Option<Duration> {
        self.0.read_latency.get()
    }
}

impl std::ops::Deref for LiveHealth {
    type Target = dynakv_core::NodeHealth;

    fn deref(&self) -> &dynakv_core::NodeHealth {
        &self.0.health
    }
}

/// A value with the version that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The winning version.
    pub version: Version,
}

/// What each replica of a key holds, for operators.
#[derive(Debug)]
pub struct Inspection {
    /// The key's token on the ring.
    pub token: u64,
    /// One entry per replica, primary first.
    pub replicas: Vec<ReplicaView>,
}

/// One replica's view of a key.
#[derive(Debug)]
pub struct ReplicaView {
    /// The node's id.
    pub node: String,
    /// The node's address.
    pub addr: SocketAddr,
    /// What it holds (`None`: nothing), or why it could not be asked.
    pub record: Result<Option<Record>, ReplicaError>,
}

/// One record of a node's dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRecord {
    /// The user key.
    pub key: Bytes,
    /// The key's ring token.
    pub token: u64,
    /// What the node stores for it.
    pub record: Record,
}

/// The absolute expiry (Unix ms) of a write made at `now_ms` with time-to-live `ttl`.
pub(crate) fn expiry(now_ms: u64, ttl: Duration) -> Result<u64, ClientError> {
    /// 9999-12-31, past which no expiry is accepted: nobody means that, and it stays far from
    /// the 48-bit limit of the clock's millisecond field.
    const LATEST_MS: u64 = 253_402_300_799_000;
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let at = now_ms.saturating_add(ms);
    if ms == 0 || at > LATEST_MS {
        return Err(ClientError::InvalidTtl { ttl });
    }
    Ok(at)
}

/// One node's health as reported by the node itself.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The node's id.
    pub id: String,
    /// The node's address.
    pub addr: SocketAddr,
    /// Round-trip time of the health call; `None` when the node did not answer.
    pub rtt: Option<Duration>,
    /// The node's answer, or why there was none.
    pub reply: Result<NodeReport, ReplicaError>,
}

/// What a node says of itself.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// Live keys stored.
    pub keys: u64,
    /// The ring version the node serves.
    pub ring_version: u64,
    /// Hints the node holds for other nodes.
    pub hints: u64,
    /// Hints the node failed to deliver although their owner answered, since it started.
    pub hint_failures: u64,
    /// Why the node's storage refuses writes (disk full, I/O error); `None` while it takes them.
    pub degraded: Option<String>,
    /// Time since the node started.
    pub uptime: Duration,
    /// How far the node's wall clock is ahead of this client's (negative: behind), in
    /// milliseconds, as read halfway through the health call.
    pub clock_offset_ms: i64,
}

impl Client {
    /// A client with the default options for this ring.
    pub fn connect(ring: Ring) -> Result<Client, ClientError> {
        Client::builder(ring).build()
    }

    /// A builder starting from the default options for this ring.
    pub fn builder(ring: Ring) -> ClientBuilder {
        let options = ClientOptions::from_ring(&ring);
        ClientBuilder { ring, options }
    }

    /// The live ring this client places keys by: the newest it has fetched from the cluster.
    pub fn ring(&self) -> Arc<Ring> {
        self.shared.topology.load().ring.clone()
    }

    /// Stores `value` under `key` with the default W; returns the write's version and whether
    /// it is the key's value now or a replica already held a newer one ([`Written`]).
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Written, ClientError> {
        self.put_with(key, value, WriteOptions::default()).await
    }

    /// Stores `value` under `key`, waiting for `options.w` acknowledgements.
    pub async fn put_with(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: WriteOptions,
    ) -> Result<Written, ClientError> {
        self.put_expiring(key.into(), value.into(), None, options).await
    }

    /// Stores `value` under `key` for `ttl`, with the default W; returns what became of it.
    ///
    /// The expiry is absolute (now + `ttl` by this machine's clock, computed once) and travels
    /// with the record, so every replica and every repaired copy expires at the same moment.
    /// Once expired the key reads as not found, and each node's sweep drops the value. A later
    /// put replaces both value and expiry (a put without ttl never expires).
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<Written, ClientError> {
        self.put_ttl_with(key, value, ttl, WriteOptions::default()).await
    }

    /// [`put_with_ttl`](Self::put_with_ttl), waiting for `options.w` acknowledgements.
    pub async fn put_ttl_with(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Duration,
        options: WriteOptions,
    ) -> Result<Written, ClientError> {
        self.put_expiring(key.into(), value.into(), Some(ttl), options).await
    }

    /// A put with an optional time-to-live.
    async fn put_expiring(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
        options: WriteOptions,
    ) -> Result<Written, ClientError> {
        let level = self.level(Op::Write, options.w, options.consistency)?;
        validate_key(&key)?;
        validate_value(&value, self.shared.options.max_value_bytes)?;
        self.follow_cluster_time().await;
        let (key, record) = self.prepare_put(key, value, ttl)?;
        self.write_at(level, key, record, options.strict, Late::Background).await
    }

    /// Moves this client's clock forward to cluster time if it has not yet (once per client):
    /// called before stamping writes.
    pub(crate) async fn follow_cluster_time(&self) {
        cluster_time::follow(&self.shared).await;
    }

    /// Milliseconds since the Unix epoch by this client's clock (led to cluster time).
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.clock.wall().now_ms()
    }

    /// A put checked and stamped with a fresh version, ready to send (and to resend as is).
    pub(crate) fn prepare_put(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(Bytes, Record), ClientError> {
        validate_key(&key)?;
        validate_value(&value, self.shared.options.max_value_bytes)?;
        let expires_at_ms = ttl.map(|ttl| expiry(self.now_ms(), ttl)).transpose()?.unwrap_or(0);
        let version = self.next_version();
        Ok((key, Record { version, value: Some(value), expires_at_ms }))
    }

    /// A delete checked and stamped with a fresh version: the tombstone to send.
    pub(crate) fn prepare_delete(&self, key: Bytes) -> Result<(Bytes, Record), ClientError> {
        validate_key(&key)?;
        Ok((key, Record::tombstone(self.next_version())))
    }

    /// Writes one record, retrying retryable failures with the same record (same version).
    /// `strict` (or the client's `strict_quorum`) refuses a sloppy quorum; `late` says what
    /// becomes of the calls still in flight once the quorum is met.
    pub(crate) async fn write_retrying(
        &self,
        key: Bytes,
        record: Record,
        w: usize,
        strict: bool,
        late: Late,
    ) -> Result<WriteOutcome, ClientError> {
        let strict = strict || self.shared.options.strict_quorum;
        let op = if record.is_tombstone() { "delete" } else { "put" };
        let span = crate::spans::operation(op, &key, w, &self.shared.topology().ring);
        let write = || quorum::write(&self.shared, key.clone(), record.clone(), w, strict, late);
        let result = retry::retrying(&self.shared.options, || self.refresh_stale(), write)
            .instrument(span.clone())
            .await;
        span.in_scope(|| crate::spans::done(&result));
        Ok(result?)
    }

    /// Deletes `key` (writes a tombstone) with the default W; returns the delete's version and
    /// whether a replica already held a newer write ([`Written`]).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Written, ClientError> {
        self.delete_with(key, WriteOptions::default()).await
    }

    /// Deletes `key`, waiting for `options.w` acknowledgements.
    pub async fn delete_with(
        &self,
        key: impl Into<Bytes>,
        options: WriteOptions,
    ) -> Result<Written, ClientError> {
        let level = self.level(Op::Write, options.w, options.consistency)?;
        let key = key.into();
        validate_key(&key)?;
        self.follow_cluster_time().await;
        let (key, record) = self.prepare_delete(key)?;
        self.write_at(level, key, record, options.strict, Late::Background).await
    }

    /// The value under `key` with the default R; `None` when missing, deleted or expired.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        self.get_with(key, ReadOptions::default()).await
    }

    /// The value under `key`, waiting for `options.r` replies.
    pub async fn get_with(
        &self,
        key: impl Into<Bytes>,
        options: ReadOptions,
    ) -> Result<Option<Bytes>, ClientError> {
        Ok(self.get_versioned_with(key, options).await?.map(|v| v.value))
    }

    /// The value under `key` and the version that wrote it, with the default R.
    pub async fn get_versioned(
        &self,
        key: impl Into<Bytes>,
    ) -> Result<Option<Versioned>, ClientError> {
        self.get_versioned_with(key, ReadOptions::default()).await
    }

    /// The value under `key` and the version that wrote it, waiting for `options.r` replies.
    pub async fn get_versioned_with(
        &self,
        key: impl Into<Bytes>,
        options: ReadOptions,
    ) -> Result<Option<Versioned>, ClientError> {
        let key = key.into();
        validate_key(&key)?;
        let level = self.level(Op::Read, options.r, options.consistency)?;
        let record = self.read_at(level, key, Late::Background).await?;
        Ok(record.and_then(|record| {
            let value = record.visible_value(self.now_ms())?.clone();
            Some(Versioned { value, version: record.version })
        }))
    }

    /// Reads one key with quorum `r`, retrying retryable failures: the newest record among the
    /// replies (tombstones and expired records included). Stale replicas are repaired, as
    /// `late` says.
    pub(crate) async fn read_retrying(
        &self,
        key: Bytes,
        r: usize,
        late: Late,
    ) -> Result<Option<Record>, ClientError> {
        let span = crate::spans::operation("get", &key, r, &self.shared.topology().ring);
        let read = || crate::read::read(&self.shared, key.clone(), r, late);
        let result = retry::retrying(&self.shared.options, || self.refresh_stale(), read)
            .instrument(span.clone())
            .await;
        span.in_scope(|| crate::spans::done(&result));
        Ok(result?)
    }

    /// After a stale-ring refusal: fetches the newer ring; true when the live ring changed.
    pub(crate) async fn refresh_stale(&self) -> bool {
        let before = self.shared.topology.load().version();
        match self.shared.refresh(false).await {
            Ok(ring) => ring.version() > before,
            Err(e) => {
                tracing::debug!(error = %e, "ring refresh after a stale-ring refusal failed");
                false
            }
        }
    }

    /// What every replica of `key` holds right now, asked directly (node health is ignored).
    pub async fn inspect(&self, key: impl Into<Bytes>) -> Result<Inspection, ClientError> {
        let key = key.into();
        validate_key(&key)?;
        let token = key_token(&key);
        let topology = self.shared.topology();
        let nodes = topology.ring.preference_list(token);
        let topology = &topology;
        let reads = nodes.iter().map(|&node| {
            let replica = &topology.replicas[node];
            let key = key.clone();
            async move {
                ReplicaView {
                    node: replica.id.clone(),
                    addr: topology.ring.nodes()[node].addr,
                    record: replica.read(key, 0).await,
                }
            }
        });
        Ok(Inspection { token, replicas: futures::future::join_all(reads).await })
    }

    /// Streams every record node `node` stores (tombstones and expired records included) whose key
    /// starts with `prefix`, at most `limit` of them (`None`: all), in stored-key order (ring
    /// token, then key). The node pages through its storage; a prefix still makes it read every
    /// record, as stored keys begin with the key's token. For operators and debugging.
    pub async fn dump(
        &self,
        node: &str,
        prefix: impl Into<Bytes>,
        limit: Option<u64>,
    ) -> Result<BoxStream<'static, Result<DumpedRecord, ClientError>>, ClientError> {
        let replica = self.node(node)?;
        let failed = |cause| ClientError::Node { node: node.to_string(), cause };
        let stream = replica.dump(prefix.into(), limit.unwrap_or(0)).await.map_err(failed)?;
        let node = node.to_string();
        Ok(stream
            .map(move |entry| {
                let failed = |cause| ClientError::Node { node: node.clone(), cause };
                let entry = entry.map_err(failed)?;
                let record = entry
                    .record
                    .ok_or_else(|| failed(ReplicaError::malformed("dump entry has no record")))?;
                let record = Record::try_from(record)
                    .map_err(|e| failed(ReplicaError::malformed(e.to_string())))?;
                Ok(DumpedRecord { key: entry.key, token: entry.token, record })
            })
            .boxed())
    }

    /// Asks every node of the ring for its health and clocks, concurrently; the client's clock
    /// observes each node's hybrid clock (within the skew bound).
    pub async fn node_statuses(&self) -> Vec<NodeStatus> {
        let topology = self.shared.topology();
        let calls =
            topology.replicas.iter().zip(topology.ring.nodes()).map(|(replica, node)| async move {
                let (sent, started) = (self.shared.wall.now_ms(), Instant::now());
                let reply = replica.health_check().await;
                let rtt = reply.is_ok().then(|| started.elapsed());
                if let Ok(health) = &reply {
                    replica.observe(Timestamp(health.clock));
                }
                NodeStatus {
                    id: node.id.clone(),
                    addr: node.addr,
                    rtt,
                    reply: reply.map(|h| NodeReport {
                        keys: h.keys,
                        ring_version: h.ring_version,
                        hints: h.hints,
                        hint_failures: h.hint_failures,
                        degraded: Some(h.degraded).filter(|cause| !cause.is_empty()),
                        uptime: Duration::from_millis(h.uptime_ms),
                        clock_offset_ms: cluster_time::offset_ms(
                            sent,
                            rtt.unwrap_or_default(),
                            h.wall_ms,
                        ),
                    }),
                }
            });
        futures::future::join_all(calls).await
    }

    /// Runs one anti-entropy round on the node `id` now, waiting up to `deadline` for it.
    pub async fn repair(&self, id: &str, deadline: Duration) -> Result<RepairReport, ClientError> {
        let report = self
            .node(id)?
            .repair(deadline)
            .await
            .map_err(|cause| ClientError::Node { node: id.to_string(), cause })?;
        Ok(report.into())
    }

    /// Runs one hint delivery pass on the node `id` now, waiting up to `deadline` for it.
    pub async fn hand_off(
        &self,
        id: &str,
        deadline: Duration,
    ) -> Result<HandoffReport, ClientError> {
        let report = self
            .node(id)?
            .hand_off(deadline)
            .await
            .map_err(|cause| ClientError::Node { node: id.to_string(), cause })?;
        Ok(report.into())
    }

    /// The handle on the node `id` in the live ring.
    pub(crate) fn node(&self, id: &str) -> Result<Arc<Replica>, ClientError> {
        self.shared
            .topology()
            .replica(id)
            .cloned()
            .ok_or_else(|| ClientError::UnknownNode(id.to_string()))
    }

    /// How many replicas this client's reads ask up front.
    pub fn read_fanout(&self) -> crate::ReadFanout {
        self.shared.options.read_fanout
    }

    /// This client's view of each node's health, in the order of the live ring's nodes.
    pub fn health(&self) -> Vec<(String, LiveHealth)> {
        let topology = self.shared.topology();
        topology.replicas.iter().map(|r| (r.id.clone(), LiveHealth(r.clone()))).collect()
    }

    /// Waits until every background task has finished: late replies and read repairs.
    /// Call before exiting a short-lived process so repairs are not cut off.
    pub async fn settle(&self) {
        self.shared.background.close();
        self.shared.background.wait().await;
        self.shared.background.reopen();
    }

    /// A fresh version for one write of this client.
    pub(crate) fn next_version(&self) -> Version {
        Version::new(self.shared.clock.now(), self.shared.writer)
    }
}
