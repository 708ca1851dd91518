//! Coalescing: concurrent operations to one node share batch RPCs.
//!
//! Each node allows a few RPCs in flight ([`ClientOptions::rpcs_in_flight_per_node`]). An
//! operation that finds a free slot is sent at once as its own `Read` or `Write` RPC, so a lone
//! caller waits for nothing. Operations that arrive while every slot is busy wait in the node's
//! queue; when a slot frees, everything queued (up to the size limits) goes out as one `Batch`
//! RPC. Under load, one HTTP/2 request, one node task and one storage commit then serve many
//! operations. Each operation keeps its own result: the node answers every batched operation
//! separately, and the caller applies its own deadline and health accounting as for a single RPC.
//!
//! [`ClientOptions::rpcs_in_flight_per_node`]: crate::ClientOptions::rpcs_in_flight_per_node

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dynakv_proto::v1::{self, batch_op, batch_result, replica_client::ReplicaClient};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::error::ReplicaError;

/// Most operations in one batch: a bound on how long the first of them waits for the last.
/// (The node accepts up to 10,000.)
const MAX_BATCH_OPS: usize = 512;

/// Protobuf framing allowed per operation on top of its key and value: tags, lengths, version.
const OP_OVERHEAD: usize = 64;

/// Value size assumed for a read's reply before any larger value has been seen from the node.
const ASSUMED_READ_VALUE: usize = 4 * 1024;

/// A node's answer to one operation.
pub(crate) enum Answer {
    /// The reply to a read.
    Read(v1::ReadResponse),
    /// The reply to a write.
    Write(v1::WriteResponse),
}

/// One operation's result, as its caller will see it.
type OpResult = Result<Answer, ReplicaError>;

/// An operation waiting for a batch.
struct Queued {
    op: batch_op::Op,
    /// Estimated bytes the operation adds to the request, and to the reply.
    request_bytes: usize,
    reply_bytes: usize,
    reply: oneshot::Sender<OpResult>,
}

#[derive(Default)]
struct State {
    /// RPCs (single or batch) in flight to the node.
    in_flight: usize,
    /// Operations waiting for a slot. Non-empty only while every slot is taken.
    queue: VecDeque<Queued>,
}

/// One node's connection and its queue of operations waiting to be batched.
pub(crate) struct Link {
    client: ReplicaClient<Channel>,
    /// Deadline of one RPC.
    timeout: Duration,
    /// Slots per node; 0 turns coalescing off.
    limit: usize,
    /// Largest request or reply a batch may reach: the gRPC message limit, less a margin.
    max_batch_bytes: usize,
    /// Largest value this node has returned to a read, to estimate the size of a batch's reply.
    largest_read_value: AtomicUsize,
    /// A std (`parking_lot`) mutex, not a tokio one: it is held for a few pointer moves, never
    /// across an await.
    state: Mutex<State>,
}

/// What [`Link::submit`] does with an operation.
enum Admission {
    /// A slot was free: send the operation now, alone.
    Send(batch_op::Op, SlotGuard),
    /// Every slot is busy: the answer arrives here once a batch carries it.
    Queued(oneshot::Receiver<OpResult>),
}

impl Link {
    /// A link over `client`.
    pub(crate) fn new(
        client: ReplicaClient<Channel>,
        timeout: Duration,
        limit: usize,
        max_message: usize,
    ) -> Self {
        Link {
            client,
            timeout,
            limit,
            max_batch_bytes: max_message.saturating_sub(64 * 1024).max(1),
            largest_read_value: AtomicUsize::new(ASSUMED_READ_VALUE),
            state: Mutex::new(State::default()),
        }
    }

    /// The channel, for calls that are never batched.
    pub(crate) fn client(&self) -> ReplicaClient<Channel> {
        self.client.clone()
    }

    /// Sends `op` alone or with the next batch, and returns the node's answer to it. Every RPC
    /// has the deadline; the caller applies its own on top, which covers the wait in the queue.
    pub(crate) async fn submit(self: &Arc<Self>, op: batch_op::Op) -> OpResult {
        match self.admit(op) {
            Admission::Send(op, slot) => {
                // Boxed: an RPC's future is large, and most operations under load never send
                // one themselves (they wait in the queue), so they should not carry its space.
                let result = Box::pin(self.send_one(op)).await;
                drop(slot);
                result
            }
            Admission::Queued(reply) => reply.await.unwrap_or_else(|_| {
                Err(ReplicaError::Unreachable("batch abandoned before it was answered".into()))
            }),
        }
    }

    /// Takes a slot, or queues the operation when there is none.
    fn admit(self: &Arc<Self>, op: batch_op::Op) -> Admission {
        if self.limit == 0 {
            return Admission::Send(op, SlotGuard(None));
        }
        let mut state = self.state.lock();
        if state.in_flight < self.limit && state.queue.is_empty() {
            state.in_flight += 1;
            return Admission::Send(op, SlotGuard(Some(self.clone())));
        }
        let (reply, answer) = oneshot::channel();
        let (request_bytes, reply_bytes) = self.estimate(&op);
        state.queue.push_back(Queued { op, request_bytes, reply_bytes, reply });
        if state.in_flight < self.limit {
            // Not normally reached (a freed slot always takes the queue), but never strand it.
            state.in_flight += 1;
            drop(state);
            self.spawn_flush();
        }
        Admission::Queued(answer)
    }

    /// Bytes `op` adds to a batch request and to its reply.
    fn estimate(&self, op: &batch_op::Op) -> (usize, usize) {
        match op {
            batch_op::Op::Read(read) => {
                let value = self.largest_read_value.load(Ordering::Relaxed);
                (read.key.len() + OP_OVERHEAD, value + OP_OVERHEAD)
            }
            batch_op::Op::Write(write) => {
                let value = write.record.as_ref().map_or(0, |r| r.value.len());
                (write.key.len() + value + OP_OVERHEAD, OP_OVERHEAD)
            }
        }
    }

    /// Gives back a slot: hands it to a batch of the queued operations if there are any.
    fn release(self: &Arc<Self>) {
        let mut state = self.state.lock();
        if state.queue.is_empty() {
            state.in_flight -= 1;
        } else {
            drop(state);
            self.spawn_flush();
        }
    }

    /// Starts a task that owns one slot and sends batches until the queue is empty.
    fn spawn_flush(self: &Arc<Self>) {
        let link = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { link.flush().await });
            }
            // No runtime (it is shutting down): fail the waiting operations rather than strand them.
            Err(_) => {
                let mut state = link.state.lock();
                state.in_flight -= 1;
                state.queue.clear();
            }
        }
    }

    async fn flush(self: Arc<Self>) {
        loop {
            let batch = {
                let mut state = self.state.lock();
                let batch = self.take_batch(&mut state.queue);
                if batch.is_empty() {
                    state.in_flight -= 1;
                    return;
                }
                batch
            };
            self.send_batch(batch).await;
        }
    }

    /// The next batch from the front of the queue, within the limits; skips operations whose
    /// caller has stopped waiting (its deadline passed).
    fn take_batch(&self, queue: &mut VecDeque<Queued>) -> Vec<Queued> {
        let mut batch = Vec::new();
        let (mut request_bytes, mut reply_bytes) = (0, 0);
        while let Some(next) = queue.front() {
            if next.reply.is_closed() {
                queue.pop_front();
                continue;
            }
            let fits = request_bytes + next.request_bytes <= self.max_batch_bytes
                && reply_bytes + next.reply_bytes <= self.max_batch_bytes;
            if batch.len() == MAX_BATCH_OPS || (!batch.is_empty() && !fits) {
                break;
            }
            request_bytes += next.request_bytes;
            reply_bytes += next.reply_bytes;
            batch.extend(queue.pop_front());
        }
        batch
    }

    /// Sends one operation as its own RPC, under the RPC deadline: a flush task sends single
    /// operations too (a batch of one, or the parts of a batch whose reply was too large), and it
    /// holds a slot until the RPC ends, so a black-holed connection must not hold it longer.
    async fn send_one(&self, op: batch_op::Op) -> OpResult {
        let sent = Instant::now();
        let mut client = self.client.clone();
        let call = async {
            match op {
                batch_op::Op::Read(read) => client.read(read).await.map(|r| {
                    let reply = r.into_inner();
                    self.saw_read(&reply);
                    Answer::Read(reply)
                }),
                batch_op::Op::Write(write) => {
                    client.write(write).await.map(|r| Answer::Write(r.into_inner()))
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|status| self.status_error(status, sent)),
            Err(_) => Err(ReplicaError::Timeout { after: self.timeout }),
        }
    }

    /// Sends `batch` as one RPC and answers each of its operations.
    async fn send_batch(&self, batch: Vec<Queued>) {
        if batch.len() == 1 {
            let Queued { op, reply, .. } = batch.into_iter().next().expect("one operation");
            let result = self.send_one(op).await;
            let _ = reply.send(result);
            return;
        }
        let sent = Instant::now();
        let ops = batch.iter().map(|q| v1::BatchOp { op: Some(q.op.clone()) }).collect();
        let mut client = self.client.clone();
        let call = client.batch(v1::BatchRequest { ops });
        let results = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => reply.into_inner().results,
            Ok(Err(status)) if too_large(&status) => {
                // The estimate of the reply was wrong (values larger than any seen before):
                // send each operation alone. Reads and writes are idempotent, so a resend is safe.
                futures::future::join_all(batch.into_iter().map(|queued| async move {
                    let result = self.send_one(queued.op).await;
                    let _ = queued.reply.send(result);
                }))
                .await;
                return;
            }
            Ok(Err(status)) => {
                let error = self.status_error(status, sent);
                for queued in batch {
                    let _ = queued.reply.send(Err(error.clone()));
                }
                return;
            }
            Err(_) => {
                for queued in batch {
                    let _ = queued.reply.send(Err(ReplicaError::Timeout { after: self.timeout }));
                }
                return;
            }
        };
        if results.len() != batch.len() {
            let message =
                format!("batch reply has {} results for {} operations", results.len(), batch.len());
            for queued in batch {
                let _ = queued.reply.send(Err(ReplicaError::Rejected {
                    code: tonic::Code::Internal,
                    message: message.clone(),
                }));
            }
            return;
        }
        for (queued, result) in batch.into_iter().zip(results) {
            let answer = match result.result {
                Some(batch_result::Result::Read(read)) => {
                    self.saw_read(&read);
                    Ok(Answer::Read(read))
                }
                Some(batch_result::Result::Write(write)) => Ok(Answer::Write(write)),
                Some(batch_result::Result::Error(e)) => {
                    Err(ReplicaError::from_status(dynakv_proto::convert::op_error_status(e)))
                }
                None => Err(ReplicaError::Rejected {
                    code: tonic::Code::Internal,
                    message: "batch reply has an empty result".into(),
                }),
            };
            let _ = queued.reply.send(answer);
        }
    }

    /// Notes the size of a read's value, for estimating batch replies.
    fn saw_read(&self, reply: &v1::ReadResponse) {
        if let Some(record) = &reply.record {
            self.largest_read_value.fetch_max(record.value.len(), Ordering::Relaxed);
        }
    }

    /// Classifies a failed RPC sent at `sent`. tonic reports its own deadline as `Cancelled`.
    fn status_error(&self, status: tonic::Status, sent: Instant) -> ReplicaError {
        if status.code() == tonic::Code::Cancelled && sent.elapsed() >= self.timeout {
            ReplicaError::Timeout { after: self.timeout }
        } else {
            ReplicaError::from_status(status)
        }
    }
}

/// True when an RPC failed because a message exceeded the gRPC size limit.
fn too_large(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::OutOfRange
        && status.message().contains("message length too large")
}

/// A slot taken by an operation sent alone; returned (or handed to the queue) when dropped, so a
/// caller that stops waiting never leaks it.
struct SlotGuard(Option<Arc<Link>>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(link) = self.0.take() {
            link.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tonic::transport::Endpoint;

    /// A listener that accepts connections and reads from them, but never answers: a node behind
    /// a black hole.
    async fn black_hole() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = tokio::io::sink();
                    let _ = tokio::io::copy(&mut socket, &mut sink).await;
                });
            }
        });
        addr
    }

    fn read(key: &'static str) -> batch_op::Op {
        batch_op::Op::Read(v1::ReadRequest {
            ring_version: 0,
            key: Bytes::from_static(key.as_bytes()),
        })
    }

    #[tokio::test]
    async fn a_flushed_single_operation_frees_its_slot_at_the_deadline() {
        let addr = black_hole().await;
        // No HTTP/2 keepalive: nothing but the RPC deadline can end a call to this node.
        let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let deadline = Duration::from_millis(200);
        let link = Arc::new(Link::new(ReplicaClient::new(channel), deadline, 1, 1 << 22));

        // `a` takes the only slot; `b` waits in the queue behind it.
        let Admission::Send(_, slot) = link.admit(read("a")) else { panic!("a slot is free") };
        let Admission::Queued(answer) = link.admit(read("b")) else { panic!("b must queue") };
        // `a`'s caller gives up: its slot passes to a flush task, which sends `b` alone.
        drop(slot);

        let answer = tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .expect("the flushed operation ends at its deadline, not never")
            .expect("answered");
        assert!(matches!(answer, Err(ReplicaError::Timeout { .. })), "b timed out");
        for _ in 0..600 {
            if link.state.lock().in_flight == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the flush task still holds the slot");
    }
}
