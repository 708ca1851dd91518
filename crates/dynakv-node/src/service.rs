//! The `dynakv.v1.Replica` gRPC service: checks every request, then hands it to the store.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dynakv_core::{Clock, Hlc, Record, validate_key, validate_value};
use dynakv_proto::v1::{self, replica_server::Replica};
use dynakv_ring::{Ring, key_token};
use dynakv_storage::{FaultKind, StorageError, Store, Write, WriteOutcome};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use xxhash_rust::xxh3::xxh3_64;

use crate::anti_entropy::{self, Span};
use crate::auth::{self, Access};
use crate::topology::Topology;
use crate::{handoff, membership, metrics};

use crate::dump;

/// Most operations one batch may carry.
pub const MAX_BATCH_OPS: usize = 10_000;

/// The largest gRPC message a node accepts or sends for this ring.
pub fn max_message_bytes(ring: &Ring) -> usize {
    dynakv_proto::max_message_bytes(ring.config().limits.max_value_bytes)
}

/// Everything a running node shares between requests.
pub struct NodeState {
    /// This node's id.
    pub id: String,
    /// This node's id as a metric label, shared by every series it records.
    pub label: ::metrics::SharedString,
    /// The ring the node serves now and what derives from it; swapped whole on a ring change.
    pub topology: arc_swap::ArcSwap<Topology>,
    /// The largest gRPC message exchanged with other nodes.
    pub max_message: usize,
    /// The live ring: its durable copy, the agreement on the next one, and the moves.
    pub membership: crate::membership::Membership,
    /// The node's records.
    pub store: Store,
    /// Observes every version the node stores, so its health replies let callers move past them;
    /// bounded by the ring's `max_skew_ms`, so no request moves it further ahead of `wall`.
    pub clock: Hlc,
    /// Wall-clock time for expiry, tombstone grace and sweeps (the HLC follows it too).
    pub wall: Clock,
    /// Where the engine keeps its files, for the free-space reserve; `None` for engines with none.
    pub data_dir: Option<std::path::PathBuf>,
    /// Where the node serves Prometheus metrics, if it does.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// When the node started, for uptime.
    pub started: Instant,
    /// Held while an anti-entropy round runs, so rounds never overlap.
    pub anti_entropy: tokio::sync::Mutex<()>,
    /// Held while a hint delivery pass runs, so passes never overlap.
    pub handoff: tokio::sync::Mutex<()>,
    /// Hints whose delivery failed although their owner answered, since the node started.
    pub hint_failures: AtomicU64,
    /// A random delay added to every replica request, for demonstrations of slow nodes.
    pub inject_delay: Option<RangeInclusive<u64>>,
    /// Cancelled when the node starts shutting down; background tasks stop on it.
    pub stopping: CancellationToken,
    /// Background tasks (hint delivery, anti-entropy, TTL sweep, dump streams), so shutdown can
    /// wait for them to finish.
    pub tasks: TaskTracker,
}

/// The 8-byte hash a node's hints are filed under.
pub fn owner_hash(id: &str) -> u64 {
    xxh3_64(id.as_bytes())
}

impl NodeState {
    /// The ring the node serves now, with its peers.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }

    /// The ring the node serves now.
    pub fn ring(&self) -> Arc<Ring> {
        self.topology.load().ring.clone()
    }

    /// The ring version the node serves now.
    pub fn ring_version(&self) -> u64 {
        self.topology.load().ring.version()
    }

    /// Waits the injected delay, if any.
    async fn delay(&self) {
        if let Some(range) = &self.inject_delay {
            let ms = rand::random_range(range.clone());
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// The key's token, once the key is valid, the request was placed by a ring no older than
    /// the node's, and this node is one of the key's replicas in either placement of its ring.
    fn route(&self, topology: &Topology, key: &[u8], ring_version: u64) -> Result<u64, Status> {
        validate_key(key).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.check_ring_version(topology, ring_version)?;
        let token = key_token(key);
        if !topology.holds(token) {
            return Err(dynakv_proto::convert::stale_ring_status(
                format!(
                    "misrouted: node {} is not a replica of this key in ring version {}",
                    self.id,
                    topology.ring.version()
                ),
                topology.ring.version(),
            ));
        }
        Ok(token)
    }

    /// Refuses a request placed by an older ring than the node serves (0: unversioned, from
    /// peers and operator tools), and learns of a newer one.
    fn check_ring_version(&self, topology: &Topology, ring_version: u64) -> Result<(), Status> {
        let mine = topology.ring.version();
        if ring_version != 0 && ring_version < mine {
            return Err(dynakv_proto::convert::stale_ring_status(
                format!(
                    "stale ring: the request was placed by ring version {ring_version}, node {} \
                     serves version {mine}",
                    self.id
                ),
                mine,
            ));
        }
        if ring_version > mine {
            self.membership.heard_of(ring_version);
        }
        Ok(())
    }
}

/// The gRPC service of one node.
pub struct ReplicaService {
    state: Arc<NodeState>,
}

impl ReplicaService {
    /// A service over the node's shared state.
    pub fn new(state: Arc<NodeState>) -> Self {
        ReplicaService { state }
    }
}

/// The gRPC status of a storage failure: a full disk is RESOURCE_EXHAUSTED, other engine faults
/// UNAVAILABLE (both retryable, and elsewhere), a damaged record INTERNAL.
pub(crate) fn storage_status(e: StorageError) -> Status {
    match e.fault() {
        Some(fault) if fault.kind == FaultKind::DiskFull => {
            Status::resource_exhausted(format!("storage degraded: {fault}"))
        }
        Some(fault) => Status::unavailable(format!("storage degraded: {fault}")),
        None => match e {
            StorageError::Closed => Status::unavailable("node is shutting down"),
            e => Status::internal(e.to_string()),
        },
    }
}

/// A write that passed every check: what the store is to write for it.
struct AdmittedWrite {
    /// The hint (if any) first, then the node's own record (if it is a replica).
    writes: Vec<Write>,
    /// True when the write came with `hint_for` another replica.
    hint: bool,
}

impl NodeState {
    /// Serves one read.
    pub async fn read(&self, request: v1::ReadRequest) -> Result<v1::ReadResponse, Status> {
        let topology = self.topology();
        let token = self.route(&topology, &request.key, request.ring_version)?;
        self.read_reply(&topology, self.store.read(token, &request.key).await)
    }

    /// The reply to a read, from what the store read. Counts it.
    fn read_reply(
        &self,
        topology: &Topology,
        record: Result<Option<Record>, StorageError>,
    ) -> Result<v1::ReadResponse, Status> {
        let outcome = match &record {
            Ok(Some(_)) => "found",
            Ok(None) => "missing",
            Err(_) => "error",
        };
        metrics::operation(&self.label, "read", outcome);
        Ok(v1::ReadResponse {
            record: record.map_err(storage_status)?.map(Into::into),
            ring_version: topology.ring.version(),
        })
    }

    /// Serves one write: validated, then offered to the store, which keeps it only if newer.
    /// With `hint_for`, the node also (or, if it is not a replica, only) keeps it as a hint for
    /// that replica.
    pub async fn write(&self, request: v1::WriteRequest) -> Result<v1::WriteResponse, Status> {
        let _admitted = self.membership.admission.read().await;
        let topology = self.topology();
        let admitted = self.admit_write(&topology, request)?;
        let outcome = match admitted.writes.len() {
            1 => {
                let write = admitted.writes.into_iter().next().expect("one write");
                vec![self.store.write_one(write).await]
            }
            _ => self.store.write_batch(admitted.writes).await,
        };
        self.written(&topology, admitted.hint, outcome)
    }

    /// Checks one write under `topology` (key, ring version, the replica or hint owner, record,
    /// value size, clock) and returns what the store is to write for it.
    fn admit_write(
        &self,
        topology: &Topology,
        request: v1::WriteRequest,
    ) -> Result<AdmittedWrite, Status> {
        let ring = &topology.ring;
        let hint_for = match request.hint_for.as_str() {
            "" => None,
            owner => {
                let owner =
                    ring.node_index(owner).map_err(|e| Status::invalid_argument(e.to_string()))?;
                Some(owner).filter(|&owner| Some(owner) != topology.me)
            }
        };
        let (token, replica) = match hint_for {
            None => (self.route(topology, &request.key, request.ring_version)?, true),
            Some(owner) => {
                validate_key(&request.key).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.check_ring_version(topology, request.ring_version)?;
                let token = key_token(&request.key);
                if !ring.holds(token, owner) {
                    return Err(dynakv_proto::convert::stale_ring_status(
                        format!(
                            "hint for {}, which is not a replica of this key in ring version {}",
                            request.hint_for,
                            ring.version()
                        ),
                        ring.version(),
                    ));
                }
                (token, topology.holds(token))
            }
        };
        let wire = request.record.ok_or_else(|| Status::invalid_argument("write has no record"))?;
        let record = Record::try_from(wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(value) = &record.value {
            validate_value(value, ring.config().limits.max_value_bytes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        // The one check that keeps a fast clock from putting writes in the future: a timestamp
        // too far ahead of this node's clock is refused, and the clock does not move.
        self.clock
            .admit(record.version.timestamp)
            .map_err(|skew| dynakv_proto::convert::clock_skew_status(&self.id, skew))?;
        let key = &request.key;
        let writes = match hint_for {
            None => vec![Write::record(token, key, record)],
            Some(owner) => {
                let hint =
                    Write::hint(owner_hash(&ring.nodes()[owner].id), token, key, record.clone());
                match replica {
                    true => vec![hint, Write::record(token, key, record)],
                    false => vec![hint],
                }
            }
        };
        Ok(AdmittedWrite { writes, hint: hint_for.is_some() })
    }

    /// The reply to an admitted write, from its store outcomes (the hint's first, if any): a
    /// failed hint fails the write, else the node's own outcome (or the hint's, if it kept
    /// only a hint) is the answer. Counts it.
    fn written(
        &self,
        topology: &Topology,
        hint: bool,
        outcomes: Vec<Result<WriteOutcome, StorageError>>,
    ) -> Result<v1::WriteResponse, Status> {
        let outcome = outcomes
            .into_iter()
            .reduce(|first, next| first.and(next))
            .unwrap_or(Err(StorageError::Closed))
            .map_err(storage_status);
        let counted = match &outcome {
            Ok(o) if o.applied => "applied",
            Ok(_) => "stale",
            Err(_) => "error",
        };
        metrics::operation(&self.label, if hint { "hint" } else { "write" }, counted);
        let outcome = outcome?;
        Ok(v1::WriteResponse {
            applied: outcome.applied,
            current: Some(outcome.current.into()),
            ring_version: topology.ring.version(),
        })
    }

    /// Serves a batch: its writes go to the storage writer as one message (so they share one
    /// commit), its reads to a reader as another, and each operation gets its own result.
    pub async fn batch(&self, request: v1::BatchRequest) -> Result<v1::BatchResponse, Status> {
        use v1::batch_op::Op;
        use v1::batch_result::Result as Outcome;
        if request.ops.len() > MAX_BATCH_OPS {
            return Err(Status::invalid_argument(format!(
                "batch has {} operations, more than the limit of {MAX_BATCH_OPS}",
                request.ops.len()
            )));
        }
        // Every write of the batch is checked and stored under one admission, as a single
        // write is: a new ring is not reported before they are stored.
        let _admitted = self.membership.admission.read().await;
        let topology = self.topology();
        let mut results: Vec<Option<Result<Outcome, Status>>> =
            Vec::with_capacity(request.ops.len());
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        // Per admitted write: its slot in `results`, whether it is a hint, its store writes.
        let mut admitted = Vec::new();
        for op in request.ops {
            let slot = results.len();
            results.push(None);
            match op.op {
                Some(Op::Read(read)) => match self.route(&topology, &read.key, read.ring_version) {
                    Ok(token) => reads.push((slot, token, read.key)),
                    Err(status) => results[slot] = Some(Err(status)),
                },
                Some(Op::Write(write)) => match self.admit_write(&topology, write) {
                    Ok(write) => {
                        admitted.push((slot, write.hint, write.writes.len()));
                        writes.extend(write.writes);
                    }
                    Err(status) => results[slot] = Some(Err(status)),
                },
                None => {
                    results[slot] = Some(Err(Status::invalid_argument("batch operation is empty")))
                }
            }
        }
        let stored = self.store.write_batch(writes);
        let keys = reads.iter().map(|(_, token, key)| (*token, &key[..]));
        let (records, stored) = tokio::join!(self.store.read_many(keys), stored);
        for ((slot, _, _), record) in reads.iter().zip(records) {
            results[*slot] = Some(self.read_reply(&topology, record).map(Outcome::Read));
        }
        let mut stored = stored.into_iter();
        for (slot, hint, len) in admitted {
            let outcomes = stored.by_ref().take(len).collect();
            results[slot] = Some(self.written(&topology, hint, outcomes).map(Outcome::Write));
        }
        let results = results
            .into_iter()
            .map(|result| {
                let result =
                    result.unwrap_or_else(|| Err(Status::internal("batch operation lost")));
                let outcome = result.unwrap_or_else(|status| {
                    Outcome::Error(dynakv_proto::convert::status_op_error(&status))
                });
                v1::BatchResult { result: Some(outcome) }
            })
            .collect();
        Ok(v1::BatchResponse { results, ring_version: topology.ring.version() })
    }

    /// The node's identity, clock and counters.
    pub fn health(&self) -> v1::HealthResponse {
        v1::HealthResponse {
            node_id: self.id.clone(),
            ring_version: self.ring_version(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            keys: self.store.live_keys(),
            clock: self.clock.now().0,
            hints: self.store.pending_hints(),
            hint_failures: self.hint_failures.load(Ordering::Relaxed),
            degraded: self.store.fault().map(|f| f.to_string()).unwrap_or_default(),
            metrics_addr: self.metrics_addr.map(|a| a.to_string()).unwrap_or_default(),
            wall_ms: self.wall.now_ms(),
        }
    }

    /// Digests of this node's records in each span.
    pub async fn digest(&self, request: v1::DigestRequest) -> Result<v1::DigestResponse, Status> {
        anti_entropy::answer(self, request).await.map_err(storage_status)
    }

    /// The key and version of every record in a span.
    pub async fn versions(
        &self,
        request: v1::VersionsRequest,
    ) -> Result<v1::VersionsResponse, Status> {
        let span =
            request.span.ok_or_else(|| Status::invalid_argument("versions request has no span"))?;
        let entries = anti_entropy::versions(self, span.into())
            .await
            .map_err(storage_status)?
            .into_iter()
            .map(|e| v1::KeyVersion { key: e.key, version: Some(e.version.into()), size: e.size })
            .collect();
        Ok(v1::VersionsResponse { entries, ring_version: self.ring_version() })
    }

    /// For each span, whether this node holds hints for a key in it.
    pub async fn hint_spans(
        &self,
        request: v1::HintSpansRequest,
    ) -> Result<v1::HintSpansResponse, Status> {
        let spans: Vec<Span> = request.spans.into_iter().map(Span::from).collect();
        let ignore: Vec<u64> = request.ignore_owners.iter().map(|id| owner_hash(id)).collect();
        let held = handoff::hinted_spans(self, &spans, &ignore).await.map_err(storage_status)?;
        Ok(v1::HintSpansResponse { held, ring_version: self.ring_version() })
    }
}

impl ReplicaService {
    /// Runs one RPC's handler in its span and counts it: outcome code and latency.
    async fn counted<T>(
        &self,
        rpc: &'static str,
        handler: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        self.counted_key(rpc, None, handler).await
    }

    /// [`Self::counted`] for a request about one key, whose token the span carries.
    async fn counted_key<T>(
        &self,
        rpc: &'static str,
        key: Option<&[u8]>,
        handler: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let span = crate::spans::request(&self.state, rpc, key);
        let started = Instant::now();
        let result = tracing::Instrument::instrument(handler, span.clone()).await;
        span.in_scope(|| crate::spans::served(&result));
        metrics::request(&self.state.label, rpc, started, &result);
        result.map(Response::new)
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn read(
        &self,
        request: Request<v1::ReadRequest>,
    ) -> Result<Response<v1::ReadResponse>, Status> {
        auth::require(&request, "read", Access::Data)?;
        self.state.delay().await;
        let request = request.into_inner();
        let key = request.key.clone();
        self.counted_key("read", Some(&key), self.state.read(request)).await
    }

    async fn write(
        &self,
        request: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        auth::require(&request, "write", Access::Data)?;
        self.state.delay().await;
        let request = request.into_inner();
        let key = request.key.clone();
        self.counted_key("write", Some(&key), self.state.write(request)).await
    }

    async fn batch(
        &self,
        request: Request<v1::BatchRequest>,
    ) -> Result<Response<v1::BatchResponse>, Status> {
        auth::require(&request, "batch", Access::Data)?;
        self.state.delay().await;
        self.counted("batch", self.state.batch(request.into_inner())).await
    }

    async fn health(
        &self,
        request: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        auth::require(&request, "health", Access::Data)?;
        self.counted("health", async { Ok(self.state.health()) }).await
    }

    async fn digest(
        &self,
        request: Request<v1::DigestRequest>,
    ) -> Result<Response<v1::DigestResponse>, Status> {
        auth::require(&request, "digest", Access::Peer)?;
        self.counted("digest", self.state.digest(request.into_inner())).await
    }

    async fn versions(
        &self,
        request: Request<v1::VersionsRequest>,
    ) -> Result<Response<v1::VersionsResponse>, Status> {
        auth::require(&request, "versions", Access::Peer)?;
        self.counted("versions", self.state.versions(request.into_inner())).await
    }

    async fn repair(
        &self,
        request: Request<v1::RepairRequest>,
    ) -> Result<Response<v1::RepairReport>, Status> {
        auth::require(&request, "repair", Access::Admin)?;
        let round = async {
            let report = anti_entropy::round(&self.state).await.map_err(storage_status)?;
            Ok(report.into())
        };
        self.counted("repair", round).await
    }

    async fn hint_spans(
        &self,
        request: Request<v1::HintSpansRequest>,
    ) -> Result<Response<v1::HintSpansResponse>, Status> {
        auth::require(&request, "hint_spans", Access::Peer)?;
        self.counted("hint_spans", self.state.hint_spans(request.into_inner())).await
    }

    async fn handoff(
        &self,
        request: Request<v1::HandoffRequest>,
    ) -> Result<Response<v1::HandoffReport>, Status> {
        auth::require(&request, "handoff", Access::Admin)?;
        let pass = async {
            let report = handoff::deliver(&self.state, true).await.map_err(storage_status)?;
            Ok(report.into())
        };
        self.counted("handoff", pass).await
    }

    type DumpStream = dump::DumpStream;

    async fn dump(
        &self,
        request: Request<v1::DumpRequest>,
    ) -> Result<Response<Self::DumpStream>, Status> {
        auth::require(&request, "dump", Access::Admin)?;
        Ok(Response::new(dump::start(&self.state, request.into_inner())))
    }

    async fn get_ring(
        &self,
        request: Request<v1::GetRingRequest>,
    ) -> Result<Response<v1::RingReply>, Status> {
        auth::require(&request, "get_ring", Access::Data)?;
        self.counted("get_ring", async { Ok(membership::get_ring(&self.state)) }).await
    }

    async fn change_ring(
        &self,
        request: Request<v1::ChangeRingRequest>,
    ) -> Result<Response<v1::RingReply>, Status> {
        auth::require(&request, "change_ring", Access::Admin)?;
        self.counted("change_ring", membership::change_ring(&self.state, request.into_inner()))
            .await
    }

    async fn prepare(
        &self,
        request: Request<v1::PrepareRequest>,
    ) -> Result<Response<v1::PrepareReply>, Status> {
        auth::require(&request, "prepare", Access::Peer)?;
        self.counted("prepare", async { self.state.prepare(request.into_inner()) }).await
    }

    async fn accept(
        &self,
        request: Request<v1::AcceptRequest>,
    ) -> Result<Response<v1::AcceptReply>, Status> {
        auth::require(&request, "accept", Access::Peer)?;
        self.counted("accept", async { self.state.accept(request.into_inner()) }).await
    }

    async fn commit(
        &self,
        request: Request<v1::CommitRequest>,
    ) -> Result<Response<v1::RingReply>, Status> {
        auth::require(&request, "commit", Access::Peer)?;
        let commit = membership::commit_request(&self.state, request.into_inner());
        self.counted("commit", commit).await
    }

    async fn move_status(
        &self,
        request: Request<v1::MoveStatusRequest>,
    ) -> Result<Response<v1::MoveStatusReply>, Status> {
        auth::require(&request, "move_status", Access::Data)?;
        self.counted("move_status", async { Ok(membership::moves::status(&self.state)) }).await
    }

    type StreamSpanStream = futures::stream::BoxStream<'static, Result<v1::StreamChunk, Status>>;

    async fn stream_span(
        &self,
        request: Request<v1::StreamSpanRequest>,
    ) -> Result<Response<Self::StreamSpanStream>, Status> {
        auth::require(&request, "stream_span", Access::Peer)?;
        membership::moves::serve_stream(&self.state, request.into_inner()).map(Response::new)
    }
}
