//! The `dynakv.v1.Replica` gRPC service: checks every request, then hands it to the store.

use std::sync::Arc;
use std::time::Instant;

use dynakv_core::{Hlc, Record, validate_key, validate_value};
use dynakv_proto::v1::{self, replica_server::Replica};
use dynakv_ring::{NodeIndex, Ring, key_token};
use dynakv_storage::{StorageError, Store};
use tonic::{Request, Response, Status};

/// Bytes of protobuf framing allowed on top of the largest key and value.
const MESSAGE_OVERHEAD: usize = 128 * 1024;

/// The largest gRPC message a node or client accepts for this ring.
pub fn max_message_bytes(ring: &Ring) -> usize {
    ring.config().limits.max_value_bytes + MESSAGE_OVERHEAD
}

/// Everything a running node shares between requests.
pub struct NodeState {
    /// This node's id.
    pub id: String,
    /// This node's position in the ring's node list.
    pub index: NodeIndex,
    /// The ring the node serves.
    pub ring: Arc<Ring>,
    /// The node's records.
    pub store: Store,
    /// Observes every version the node stores, so its health replies let callers move past them.
    pub clock: Hlc,
    /// When the node started, for uptime.
    pub started: Instant,
}

impl NodeState {
    /// The key's token, once the key is valid and this node is one of its replicas.
    fn route(&self, key: &[u8]) -> Result<u64, Status> {
        validate_key(key).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let token = key_token(key);
        if !self.ring.preference_list(token).contains(&self.index) {
            return Err(Status::failed_precondition(format!(
                "misrouted: node {} is not a replica of this key in ring version {}",
                self.id,
                self.ring.version()
            )));
        }
        Ok(token)
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

fn storage_status(e: StorageError) -> Status {
    match e {
        StorageError::Closed => Status::unavailable("node is shutting down"),
        e => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn read(
        &self,
        request: Request<v1::ReadRequest>,
    ) -> Result<Response<v1::ReadResponse>, Status> {
        let state = &self.state;
        let key = request.into_inner().key;
        let token = state.route(&key)?;
        let record = state.store.read(token, &key).await.map_err(storage_status)?;
        Ok(Response::new(v1::ReadResponse {
            record: record.map(Into::into),
            ring_version: state.ring.version(),
        }))
    }

    async fn write(
        &self,
        request: Request<v1::WriteRequest>,
    ) -> Result<Response<v1::WriteResponse>, Status> {
        let state = &self.state;
        let request = request.into_inner();
        let token = state.route(&request.key)?;
        let wire = request.record.ok_or_else(|| Status::invalid_argument("write has no record"))?;
        let record = Record::try_from(wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(value) = &record.value {
            validate_value(value, state.ring.config().limits.max_value_bytes)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        state.clock.observe(record.version.timestamp);
        let outcome =
            state.store.write(token, &request.key, record).await.map_err(storage_status)?;
        Ok(Response::new(v1::WriteResponse {
            applied: outcome.applied,
            current: Some(outcome.current.into()),
            ring_version: state.ring.version(),
        }))
    }

    async fn health(
        &self,
        _request: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        let state = &self.state;
        Ok(Response::new(v1::HealthResponse {
            node_id: state.id.clone(),
            ring_version: state.ring.version(),
            uptime_ms: state.started.elapsed().as_millis() as u64,
            keys: state.store.live_keys(),
            clock: state.clock.now().0,
        }))
    }
}
