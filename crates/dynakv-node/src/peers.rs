//! Node-to-node calls: one lazily connected HTTP/2 channel per peer, a deadline on every call,
//! the peer's health, probed again on an exponential schedule while it is down, and batches
//! bounded by count and by bytes.
//!
//! Every node-to-node batch (hint delivery, anti-entropy pulls and pushes) is planned with
//! [`chunks`] and sent with [`Peer::batch`]: calls stay within the gRPC message limit on both the
//! request and the expected reply, a call the peer or the transport still refuses as too large is
//! split in two and sent again, and an operation that cannot fit even alone is reported as a
//! failed operation, never skipped.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::{HealthPolicy, NodeHealth, Record};
use dynakv_proto::v1::replica_client::ReplicaClient;
use dynakv_proto::v1::{self, batch_op::Op, batch_result::Result as Outcome};
use dynakv_ring::{NodeSpec, Ring};
use prost::Message;
use tonic::Status;
use tonic::transport::Channel;

/// Down after one failed call; tried again after 200 ms, doubling up to 5 s, so a recovered
/// peer is noticed within seconds.
const PEER_HEALTH: HealthPolicy = HealthPolicy {
    failures_before_down: 1,
    min_retry_delay: Duration::from_millis(200),
    max_retry_delay: Duration::from_secs(5),
};

/// Most operations in one node-to-node batch call.
pub const MAX_PEER_BATCH_OPS: usize = 512;

/// Room kept free in every batch call below the message limit, for framing and headers.
const MESSAGE_MARGIN: usize = 64 * 1024;

/// Bytes a reply spends on one operation besides its value: tags, lengths, version, ring version.
const REPLY_OVERHEAD: usize = 64;

/// One operation of a node-to-node batch, with its size in the request and in the reply.
#[derive(Debug, Clone)]
pub struct SizedOp {
    /// The operation.
    pub op: v1::BatchOp,
    /// Bytes it adds to the request.
    pub request_bytes: usize,
    /// Bytes it is expected to add to the reply.
    pub reply_bytes: usize,
}

impl SizedOp {
    /// A read of `key` whose stored value is about `value_bytes` long.
    pub fn read(key: Bytes, value_bytes: usize) -> Self {
        let reply_bytes = key.len() + value_bytes + REPLY_OVERHEAD;
        Self::new(Op::Read(v1::ReadRequest { key, ring_version: 0 }), reply_bytes)
    }

    /// A write of `record` under `key` (no hint).
    pub fn write(key: Bytes, record: Record) -> Self {
        let request = v1::WriteRequest {
            key,
            record: Some(record.into()),
            hint_for: String::new(),
            ring_version: 0,
        };
        Self::new(Op::Write(request), REPLY_OVERHEAD)
    }

    fn new(op: Op, reply_bytes: usize) -> Self {
        let op = v1::BatchOp { op: Some(op) };
        // The op's own bytes, plus its field tag and length prefix in the batch.
        let request_bytes = op.encoded_len() + 16;
        SizedOp { op, request_bytes, reply_bytes }
    }
}

/// Splits `ops` into consecutive batch calls of at most [`MAX_PEER_BATCH_OPS`] operations whose
/// request and expected reply each stay within `budget` bytes. An operation over the budget on
/// its own goes alone (the peer then refuses it, and [`Peer::batch`] reports it).
pub fn chunks(ops: Vec<SizedOp>, budget: usize) -> Vec<Vec<SizedOp>> {
    let mut chunks = Vec::new();
    let mut chunk: Vec<SizedOp> = Vec::new();
    let (mut request, mut reply) = (0, 0);
    for op in ops {
        let full = chunk.len() == MAX_PEER_BATCH_OPS
            || request + op.request_bytes > budget
            || reply + op.reply_bytes > budget;
        if full && !chunk.is_empty() {
            chunks.push(std::mem::take(&mut chunk));
            (request, reply) = (0, 0);
        }
        request += op.request_bytes;
        reply += op.reply_bytes;
        chunk.push(op);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// True when a call failed because a message exceeded the gRPC size limit, on either side. The
/// code is `OutOfRange` when the limit is met while decoding, but an encoding failure on the
/// sending side may reach the caller wrapped in another code: the message tells.
pub fn too_large(status: &Status) -> bool {
    status.message().contains("message length too large")
}

/// True when a failure says the peer could not be reached at all (as opposed to an answer).
pub fn unreachable(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// One operation's result in a batch: the peer's answer, or why the operation failed.
pub type OpResult = Result<Outcome, Status>;

/// One other node of the ring.
pub struct Peer {
    /// The peer's id.
    pub id: String,
    /// Where the peer serves; a ring change that moves the node gets a new channel.
    pub addr: std::net::SocketAddr,
    client: ReplicaClient<Channel>,
    /// What this node knows of the peer's health.
    pub health: NodeHealth,
    timeout: Duration,
    /// Largest gRPC message either side accepts.
    max_message: usize,
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

    /// Bytes a batch call's request, or its reply, may hold: the message limit less a margin.
    pub fn batch_budget(&self) -> usize {
        self.max_message.saturating_sub(MESSAGE_MARGIN).max(1)
    }

    /// Sends one planned chunk (see [`chunks`]) and returns one result per operation, in order.
    /// A call refused as too large is split in two and each half sent again; an operation too
    /// large on its own fails with `OutOfRange`. `Err` is a failure of a whole call (the peer is
    /// unreachable, or refused the call): the operations after it were not sent either.
    pub async fn batch(&self, chunk: Vec<SizedOp>) -> Result<Vec<OpResult>, Status> {
        let mut results = Vec::with_capacity(chunk.len());
        // Parts still to send, first on top.
        let mut parts = vec![chunk];
        while let Some(part) = parts.pop() {
            let request_bytes: usize = part.iter().map(|op| op.request_bytes).sum();
            let ops: Vec<v1::BatchOp> = part.iter().map(|op| op.op.clone()).collect();
            let sent = ops.len();
            match self.call(|mut c| async move { c.batch(v1::BatchRequest { ops }).await }).await {
                Ok(reply) if reply.results.len() == sent => {
                    results.extend(reply.results.into_iter().map(|r| {
                        r.result.ok_or_else(|| Status::internal("batch result is empty")).and_then(
                            |outcome| match outcome {
                                Outcome::Error(e) => {
                                    Err(Status::new(tonic::Code::from(e.code), e.message))
                                }
                                outcome => Ok(outcome),
                            },
                        )
                    }));
                }
                Ok(reply) => {
                    return Err(Status::internal(format!(
                        "peer {} answered {} results for {sent} operations",
                        self.id,
                        reply.results.len()
                    )));
                }
                Err(status) if too_large(&status) && part.len() > 1 => {
                    let mut part = part;
                    let second = part.split_off(part.len() / 2);
                    parts.push(second);
                    parts.push(part);
                }
                Err(status) if too_large(&status) => {
                    results.push(Err(Status::out_of_range(format!(
                        "a record of {request_bytes} bytes cannot be sent to {} in one message \
                         (limit {} bytes): {}",
                        self.id,
                        self.max_message,
                        status.message()
                    ))));
                }
                Err(status) => return Err(status),
            }
        }
        Ok(results)
    }
}

impl Peer {
    /// A channel to `node`, with the deadlines of `ring`, presenting node `me`'s certificate when
    /// the ring has a `[tls]` table; it connects on first use.
    pub fn connect(
        node: &NodeSpec,
        ring: &Ring,
        me: &str,
        max_message: usize,
    ) -> Result<Peer, dynakv_tls::TlsError> {
        let timeouts = ring.config().timeouts;
        let request_timeout = Duration::from_millis(timeouts.request_ms);
        let caller = dynakv_tls::Caller::Node(me.to_string());
        let endpoint = dynakv_tls::endpoint(node, ring.config().tls.as_ref(), &caller)?
            .connect_timeout(Duration::from_millis(timeouts.connect_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(request_timeout.max(Duration::from_secs(1)));
        let client = ReplicaClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        Ok(Peer {
            id: node.id.clone(),
            addr: node.addr,
            client,
            health: NodeHealth::new(&PEER_HEALTH),
            // Anti-entropy pages are larger than client requests: give them room.
            timeout: request_timeout.max(Duration::from_secs(10)),
            max_message,
        })
    }

    /// A client for calls without the per-call deadline (streams), sharing the channel.
    pub fn raw(&self) -> ReplicaClient<Channel> {
        self.client.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(bytes: usize) -> SizedOp {
        SizedOp { op: v1::BatchOp { op: None }, request_bytes: bytes, reply_bytes: 10 }
    }

    #[test]
    fn chunks_by_count_and_by_bytes() {
        let lens = |c: &Vec<Vec<SizedOp>>| c.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(lens(&chunks((0..1200).map(|_| op(1)).collect(), 1 << 20)), [512, 512, 176]);
        // 40,000-byte values in a 5 MiB budget: 131 per call, never the 256 a count allows.
        let big = chunks((0..300).map(|_| op(40_000)).collect(), 5 << 20);
        assert!(big.iter().all(|c| c.iter().map(|o| o.request_bytes).sum::<usize>() <= 5 << 20));
        assert_eq!(lens(&big), [131, 131, 38]);
        assert_eq!(lens(&chunks(vec![op(10), op(100), op(10)], 50)), [1, 1, 1], "alone if too big");
        let replies =
            vec![SizedOp { reply_bytes: 30, ..op(1) }, SizedOp { reply_bytes: 30, ..op(1) }];
        assert_eq!(lens(&chunks(replies, 50)), [1, 1], "the expected reply counts too");
        assert!(chunks(Vec::new(), 10).is_empty());
    }
}
