//! Node-to-node calls: one lazily connected HTTP/2 channel per peer, a deadline on every call,
//! and the peer's health, probed again on an exponential schedule while it is down.

use std::future::Future;
use std::time::{Duration, Instant};

use dynakv_core::{HealthPolicy, NodeHealth};
use dynakv_proto::v1::replica_client::ReplicaClient;
use dynakv_ring::{NodeIndex, Ring};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Down after one failed call; tried again after 200 ms, doubling up to 5 s, so a recovered
/// peer is noticed within seconds.
const PEER_HEALTH: HealthPolicy = HealthPolicy {
    failures_before_down: 1,
    min_retry_delay: Duration::from_millis(200),
    max_retry_delay: Duration::from_secs(5),
};

/// One other node of the ring.
pub struct Peer {
    /// The peer's id.
    pub id: String,
    client: ReplicaClient<Channel>,
    /// What this node knows of the peer's health.
    pub health: NodeHealth,
    timeout: Duration,
}

impl Peer {
    /// Runs one call to the peer under the deadline, recording the result in its health.
    /// Errors the peer answered with (as opposed to transport failures) do not count against it.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnOnce(ReplicaClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, call(self.client.clone())).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!("peer {} timed out", self.id))),
        };
        match &result {
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                ) =>
            {
                self.health.record_failure()
            }
            _ => self.health.record_success(started.elapsed()),
        }
        result
    }
}

/// Every other node of the ring, indexed like [`Ring::nodes`].
pub struct Peers {
    peers: Vec<Option<Peer>>,
}

impl Peers {
    /// Channels to every node but `me`; they connect on first use.
    pub fn new(
        ring: &Ring,
        me: NodeIndex,
        max_message: usize,
    ) -> Result<Self, tonic::transport::Error> {
        let timeouts = ring.config().timeouts;
        let request_timeout = Duration::from_millis(timeouts.request_ms);
        let peers = ring
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| {
                if i == me {
                    return Ok(None);
                }
                let endpoint = Endpoint::from_shared(format!("http://{}", node.addr))?
                    .connect_timeout(Duration::from_millis(timeouts.connect_ms))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(request_timeout.max(Duration::from_secs(1)));
                let client = ReplicaClient::new(endpoint.connect_lazy())
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message);
                Ok(Some(Peer {
                    id: node.id.clone(),
                    client,
                    health: NodeHealth::new(&PEER_HEALTH),
                    // Anti-entropy pages are larger than client requests: give them room.
                    timeout: request_timeout.max(Duration::from_secs(10)),
                }))
            })
            .collect::<Result<_, _>>()?;
        Ok(Peers { peers })
    }

    /// The peer at `index`; `None` for this node itself.
    pub fn get(&self, index: NodeIndex) -> Option<&Peer> {
        self.peers.get(index).and_then(Option::as_ref)
    }
}
