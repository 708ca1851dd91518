//! One node as the client sees it: a long-lived HTTP/2 channel, a deadline on every call, and
//! health accounting from every result, late ones included. Concurrent reads and writes to the
//! node are coalesced into batch RPCs (see the `coalesce` module); each keeps its own deadline,
//! result and health record.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::{Hlc, NodeHealth, Record, Timestamp};
use dynakv_proto::v1::{self, batch_op, replica_client::ReplicaClient};
use dynakv_ring::NodeSpec;

use crate::coalesce::{Answer, Link};
use crate::error::{ClientError, ReplicaError};
use crate::hedge::LatencyEstimate;
use crate::options::ClientOptions;
use crate::topology::RingSightings;

/// HTTP/2 flow-control window of the connection to a node: room for many values in flight.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of one request.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// A node's channel and health.
pub struct Replica {
    /// The node's id, for errors and logs.
    pub id: String,
    /// One multiplexed HTTP/2 connection, opened lazily and re-opened after failures, and the
    /// queue of operations waiting to share a batch RPC.
    link: Arc<Link>,
    /// What this client knows of the node's health.
    pub health: NodeHealth,
    /// Deadline of one call.
    timeout: Duration,
    /// The node's recent read latency at the hedging quantile, from every read reply it gave
    /// this client: how long a read waits for it before asking another replica.
    pub(crate) read_latency: LatencyEstimate,
    /// Reads and writes sent to the node (alone or in a batch), for the bench's per-request
    /// figures and for tests that count what a read asked.
    requests: AtomicU64,
    /// The client's clock, shared by every replica: it observes every timestamp a node reports
    /// (versions read, versions held after a write, the node's clock) through
    /// [`Replica::observe`] and nowhere else, bounded by the ring's `max_skew_ms`.
    clock: Arc<Hlc>,
    /// Where this node's ring version goes when it is newer than the client's (from every
    /// reply and every stale-ring refusal), so the client fetches the newer ring.
    sightings: Arc<RingSightings>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("id", &self.id).field("health", &self.health).finish()
    }
}

impl Replica {
    /// A handle on `node`; connects on first use.
    pub(crate) fn new(
        node: &NodeSpec,
        options: &ClientOptions,
        max_message: usize,
        clock: Arc<Hlc>,
        sightings: Arc<RingSightings>,
    ) -> Result<Self, ClientError> {
        let endpoint = dynakv_tls::endpoint(node, options.tls.as_ref(), &options.caller)?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(options.request_timeout.max(Duration::from_secs(1)))
            .keep_alive_while_idle(true)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .initial_stream_window_size(STREAM_WINDOW);
        let client = ReplicaClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        let link = Link::new(
            client,
            options.request_timeout,
            options.rpcs_in_flight_per_node,
            max_message,
        );
        Ok(Replica {
            id: node.id.clone(),
            link: Arc::new(link),
            health: NodeHealth::new(&options.health),
            timeout: options.request_timeout,
            read_latency: LatencyEstimate::new(options.hedge.quantile),
            requests: AtomicU64::new(0),
            clock,
            sightings,
        })
    }

    /// Reads the node's record for `key` (tombstones and expired records included), placed by
    /// ring `ring_version` (0: unversioned).
    pub async fn read(
        &self,
        key: Bytes,
        ring_version: u64,
    ) -> Result<Option<Record>, ReplicaError> {
        let sent = Instant::now();
        let op = batch_op::Op::Read(v1::ReadRequest { key, ring_version });
        let reply = match self.account(sent, self.timeout, self.submit(op)).await? {
            Answer::Read(reply) => reply,
            Answer::Write(_) => return Err(mismatched("read")),
        };
        self.read_latency.record(sent.elapsed());
        self.saw_ring(reply.ring_version);
        let Some(wire) = reply.record else { return Ok(None) };
        let record = Record::try_from(wire).map_err(|e| ReplicaError::malformed(e.to_string()))?;
        self.observe(record.version.timestamp);
        Ok(Some(record))
    }

    /// Offers `record` for `key`, placed by ring `ring_version` (0: unversioned); the node keeps
    /// it if it is newer than what it holds.
    pub async fn write(
        &self,
        key: Bytes,
        record: Record,
        ring_version: u64,
    ) -> Result<v1::WriteResponse, ReplicaError> {
        self.write_hinted(key, record, String::new(), ring_version).await
    }

    /// Offers `record` for `key`, asking the node to also keep it as a hint for the replica
    /// `hint_for` (empty: no hint), which is unreachable.
    pub async fn write_hinted(
        &self,
        key: Bytes,
        record: Record,
        hint_for: String,
        ring_version: u64,
    ) -> Result<v1::WriteResponse, ReplicaError> {
        let request = v1::WriteRequest { key, record: Some(record.into()), hint_for, ring_version };
        let reply = match self.call(batch_op::Op::Write(request)).await? {
            Answer::Write(reply) => reply,
            Answer::Read(_) => return Err(mismatched("write")),
        };
        self.saw_ring(reply.ring_version);
        if let Some(current) = &reply.current {
            self.observe(Timestamp(current.timestamp));
        }
        Ok(reply)
    }

    /// The node's identity, clocks and counters. Never coalesced; the caller decides what to
    /// make of the clocks.
    pub async fn health_check(&self) -> Result<v1::HealthResponse, ReplicaError> {
        let mut client = self.link.client();
        let reply = self.direct(self.timeout, client.health(v1::HealthRequest {})).await?;
        self.saw_ring(reply.ring_version);
        Ok(reply)
    }

    /// The ring the node serves (its version, and the ring as ring-file TOML).
    pub async fn get_ring(&self) -> Result<v1::RingReply, ReplicaError> {
        let mut client = self.link.client();
        self.direct(self.timeout, client.get_ring(v1::GetRingRequest {})).await
    }

    /// Asks the node to make a membership change, waiting up to `deadline` for the cluster to
    /// agree on it; the reply is the new (moving) ring.
    pub async fn change_ring(
        &self,
        request: v1::ChangeRingRequest,
        deadline: Duration,
    ) -> Result<v1::RingReply, ReplicaError> {
        let mut client = self.link.client();
        self.direct(deadline, client.change_ring(request)).await
    }

    /// The progress of every span the node gains in the change in progress.
    pub async fn move_status(&self) -> Result<v1::MoveStatusReply, ReplicaError> {
        let mut client = self.link.client();
        let reply = self.direct(self.timeout, client.move_status(v1::MoveStatusRequest {})).await?;
        self.saw_ring(reply.ring_version);
        Ok(reply)
    }

    /// Reads and writes this client has sent to the node so far, each operation of a batch
    /// counted once.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Notes the ring version the node reported, so a newer one gets fetched.
    fn saw_ring(&self, version: u64) {
        self.sightings.saw(&self.id, version);
    }

    /// Moves the client's clock past a timestamp this node reported, unless it is more than
    /// the skew bound ahead of the client's clock (a node whose clock runs far ahead must not
    /// drag this client's writes into the future).
    pub(crate) fn observe(&self, seen: Timestamp) {
        if let Err(skew) = self.clock.admit(seen) {
            tracing::debug!(node = %self.id, %skew, "timestamp beyond the skew bound not observed");
        }
    }

    /// Sends many reads and writes to the node in one call; one result per operation, in order.
    pub async fn batch(
        &self,
        request: v1::BatchRequest,
    ) -> Result<v1::BatchResponse, ReplicaError> {
        let mut client = self.link.client();
        let reply = self.direct(self.timeout, client.batch(request)).await?;
        self.saw_ring(reply.ring_version);
        Ok(reply)
    }

    /// Starts streaming the node's records whose key starts with `prefix` (at most `limit`; 0 =
    /// all). The deadline covers the start of the stream, not the whole of it.
    pub async fn dump(
        &self,
        prefix: Bytes,
        limit: u64,
    ) -> Result<
        impl futures::Stream<Item = Result<v1::DumpEntry, ReplicaError>> + use<>,
        ReplicaError,
    > {
        let mut client = self.link.client();
        let stream =
            self.direct(self.timeout, client.dump(v1::DumpRequest { prefix, limit })).await?;
        Ok(futures::StreamExt::map(stream, |entry| entry.map_err(ReplicaError::from_status)))
    }

    /// Asks the node to run one anti-entropy round now; waits up to `deadline` for its report.
    pub async fn repair(&self, deadline: Duration) -> Result<v1::RepairReport, ReplicaError> {
        let mut client = self.link.client();
        self.direct(deadline, client.repair(v1::RepairRequest {})).await
    }

    /// Asks the node to run one hint delivery pass now; waits up to `deadline` for its report.
    pub async fn hand_off(&self, deadline: Duration) -> Result<v1::HandoffReport, ReplicaError> {
        let mut client = self.link.client();
        self.direct(deadline, client.handoff(v1::HandoffRequest {})).await
    }

    /// Runs one call of its own (not coalesced) under `deadline`, recording the result in the
    /// node's health.
    async fn direct<T>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ReplicaError> {
        let call = async {
            call.await.map(tonic::Response::into_inner).map_err(ReplicaError::from_status)
        };
        self.account(Instant::now(), deadline, call).await
    }

    /// Runs one operation (alone or in a batch) under the deadline and records its result in the
    /// node's health.
    async fn call(&self, op: batch_op::Op) -> Result<Answer, ReplicaError> {
        self.account(Instant::now(), self.timeout, self.submit(op)).await
    }

    /// Counts `op` as sent to the node and hands it to the link.
    fn submit(&self, op: batch_op::Op) -> impl Future<Output = Result<Answer, ReplicaError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.link.submit(op)
    }

    /// Awaits `call`, started at `started`, under `deadline`, and records the result in the
    /// node's health.
    async fn account<T>(
        &self,
        started: Instant,
        deadline: Duration,
        call: impl Future<Output = Result<T, ReplicaError>>,
    ) -> Result<T, ReplicaError> {
        let result = match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(ReplicaError::Timeout { after: deadline }),
        };
        if let Err(ReplicaError::StaleRing { ring_version }) = &result {
            self.saw_ring(*ring_version);
        }
        if let Err(e) = &result {
            crate::metrics::replica_failed(&self.id, e);
        }
        match &result {
            Ok(_) => self.health.record_success(started.elapsed()),
            Err(e) if e.counts_against_health() => self.health.record_failure(),
            Err(_) => self.health.record_success(started.elapsed()),
        }
        result
    }
}

/// The node answered an operation with the reply to another kind.
fn mismatched(op: &str) -> ReplicaError {
    ReplicaError::malformed(format!("the node answered a {op} with the reply to another operation"))
}
