//! Batched puts, gets and deletes: many keys per call, one `Batch` RPC per replica node.
//!
//! Each operation is placed on its key's replicas as a single call would be (node health
//! included), then the operations are grouped by node and each node gets one `Batch` RPC (split
//! above [`MAX_OPS_PER_CALL`] operations or [`MAX_BYTES_PER_CALL`] bytes). The quorum rule is
//! applied to every operation on its own, so each reports its own outcome: some may miss their
//! quorum while others succeed. Operations that fail retryably are retried together, with the
//! same versions, as single calls are ([`crate::retry`]).
//!
//! A batch is **not atomic** across keys: there is no moment at which all of its writes become
//! visible together, a failed operation does not undo the others, and a reader may see some of
//! a batch's writes and not others.
//!
//! Batched reads resolve each key by version like single reads and repair stale replicas in the
//! background, again one `Batch` RPC per node. A read call whose reply would exceed the message
//! limit (many large values) is split in two and sent again, until each part fits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dynakv_core::{Record, Timestamp, Version, now_ms, validate_key, validate_value};
use dynakv_proto::v1;
use dynakv_ring::{NodeIndex, PreferenceList, key_token};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::client::{Client, Shared, expiry};
use crate::error::{ClientError, Op, QuorumError, ReplicaError, ReplicaFailure};
use crate::options::{ReadOptions, WriteOptions};
use crate::quorum::{self, newest};
use crate::repair;
use crate::retry::{self, OutcomeMemory};

/// Most operations sent to one node in one `Batch` call; larger groups are split.
pub const MAX_OPS_PER_CALL: usize = 1000;

/// Most request bytes (keys and values) sent to one node in one call; a larger group is split.
/// Well under the message limit, which is the largest value plus 4 MiB.
pub const MAX_BYTES_PER_CALL: usize = 2 * 1024 * 1024;

/// Bytes counted per operation on top of its key and value: record header and framing.
const OP_OVERHEAD: usize = 64;

/// One put of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPut {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Time-to-live; `None` never expires (see [`Client::put_with_ttl`]).
    pub ttl: Option<Duration>,
}

impl BatchPut {
    /// A put that never expires.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        BatchPut { key: key.into(), value: value.into(), ttl: None }
    }

    /// The same put, expiring `ttl` after it is sent.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// The outcome of each operation of a batched put or delete, in request order: its version.
pub type WriteResults = Vec<Result<Version, ClientError>>;

/// The outcome of each operation of a batched get, in request order.
pub type ReadResults = Vec<Result<Option<Bytes>, ClientError>>;

impl Client {
    /// Stores many key-value pairs with the default W; one outcome per pair, in order. Not
    /// atomic: see the [module docs](crate::batch). Fails as a whole only for a bad quorum.
    pub async fn put_many<K: Into<Bytes>, V: Into<Bytes>>(
        &self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<WriteResults, ClientError> {
        let puts = pairs.into_iter().map(|(key, value)| BatchPut::new(key, value));
        self.put_many_with(puts, WriteOptions::default()).await
    }

    /// Stores many puts (each with an optional ttl), waiting for `options.w` acknowledgements
    /// per put. An invalid key, value or ttl fails only its own put, before anything is sent.
    pub async fn put_many_with(
        &self,
        puts: impl IntoIterator<Item = BatchPut>,
        options: WriteOptions,
    ) -> Result<WriteResults, ClientError> {
        let w = self.quorum(Op::Write, options.w)?;
        let max_value = self.shared.options.max_value_bytes;
        let items = puts.into_iter().map(|put| {
            validate_key(&put.key)?;
            validate_value(&put.value, max_value)?;
            let expires_at_ms = put.ttl.map(expiry).transpose()?.unwrap_or(0);
            let version = self.next_version();
            let record = Record { version, value: Some(put.value), expires_at_ms };
            Ok(Item { key: put.key, record: Some(record) })
        });
        Ok(self.write_items(items.collect(), w).await)
    }

    /// Deletes many keys with the default W; one outcome per key, in order. Not atomic.
    pub async fn delete_many<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<WriteResults, ClientError> {
        self.delete_many_with(keys, WriteOptions::default()).await
    }

    /// Deletes many keys, waiting for `options.w` acknowledgements per key.
    pub async fn delete_many_with<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        options: WriteOptions,
    ) -> Result<WriteResults, ClientError> {
        let w = self.quorum(Op::Write, options.w)?;
        let items = keys.into_iter().map(|key| {
            let key = key.into();
            validate_key(&key)?;
            Ok(Item { key, record: Some(Record::tombstone(self.next_version())) })
        });
        Ok(self.write_items(items.collect(), w).await)
    }

    /// Reads many keys with the default R; one outcome per key, in order: `None` when missing,
    /// deleted or expired. Stale replicas are repaired in the background.
    pub async fn get_many<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<ReadResults, ClientError> {
        self.get_many_with(keys, ReadOptions::default()).await
    }

    /// Reads many keys, waiting for `options.r` replies per key.
    pub async fn get_many_with<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
        options: ReadOptions,
    ) -> Result<ReadResults, ClientError> {
        let r = self.quorum(Op::Read, options.r)?;
        let prepared: Vec<Result<Item, ClientError>> = keys
            .into_iter()
            .map(|key| {
                let key = key.into();
                validate_key(&key)?;
                Ok(Item { key, record: None })
            })
            .collect();
        let now = now_ms();
        Ok(self
            .run_valid(prepared, Op::Read, r)
            .await
            .into_iter()
            .map(|outcome| Ok(outcome?.and_then(|record| record.visible_value(now).cloned())))
            .collect())
    }

    /// Runs prepared writes and reports each one's version.
    async fn write_items(
        &self,
        prepared: Vec<Result<Item, ClientError>>,
        w: usize,
    ) -> WriteResults {
        let versions: Vec<Option<Version>> = prepared
            .iter()
            .map(|item| item.as_ref().ok().and_then(|i| i.record.as_ref()).map(|r| r.version))
            .collect();
        self.run_valid(prepared, Op::Write, w)
            .await
            .into_iter()
            .zip(versions)
            .map(|(outcome, version)| {
                outcome?;
                Ok(version.expect("a valid write has a version"))
            })
            .collect()
    }

    /// Runs the valid items of a batch; invalid ones keep their error. One outcome per item.
    async fn run_valid(
        &self,
        prepared: Vec<Result<Item, ClientError>>,
        op: Op,
        quorum: usize,
    ) -> Vec<Result<Option<Record>, ClientError>> {
        let mut outcomes: Vec<Option<Result<Option<Record>, ClientError>>> = Vec::new();
        let mut items = Vec::new();
        for prepared in prepared {
            match prepared {
                Ok(item) => {
                    items.push(item);
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let mut results = run(&self.shared, Arc::new(items), op, quorum).await.into_iter();
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Some(invalid) => invalid,
                None => results.next().expect("one result per item").map_err(ClientError::from),
            })
            .collect()
    }
}

/// One operation as sent: its key and, for a write, its record (version included, so every
/// attempt offers the same write).
struct Item {
    key: Bytes,
    record: Option<Record>,
}

impl Item {
    /// Bytes this operation adds to a request.
    fn size(&self) -> usize {
        let value = self.record.as_ref().and_then(|r| r.value.as_ref()).map_or(0, Bytes::len);
        self.key.len() + value + OP_OVERHEAD
    }

    /// The operation on the wire.
    fn wire(&self) -> v1::BatchOp {
        use v1::batch_op::Op as WireOp;
        let key = self.key.clone();
        let op = match &self.record {
            None => WireOp::Read(v1::ReadRequest { key }),
            Some(record) => WireOp::Write(v1::WriteRequest {
                key,
                record: Some(record.clone().into()),
                hint_for: String::new(),
            }),
        };
        v1::BatchOp { op: Some(op) }
    }
}

/// Runs every item with retries of retryable failures; for reads each success is the newest
/// record among the replies, for writes `None`.
async fn run(
    shared: &Arc<Shared>,
    items: Arc<Vec<Item>>,
    op: Op,
    quorum: usize,
) -> Vec<Result<Option<Record>, QuorumError>> {
    let mut results: Vec<Option<Result<Option<Record>, QuorumError>>> =
        items.iter().map(|_| None).collect();
    let mut memories: Vec<OutcomeMemory> = items.iter().map(|_| OutcomeMemory::default()).collect();
    let mut pending: Vec<usize> = (0..items.len()).collect();
    let mut delays = retry::schedule(&shared.options);
    while !pending.is_empty() {
        let outcomes =
            Round::start(shared, &items, pending.clone(), op, quorum).finish(shared).await;
        let mut again = Vec::new();
        for (i, outcome) in pending.into_iter().zip(outcomes) {
            if let Err(failure) = &outcome {
                memories[i].remember(failure);
                if failure.is_retryable() {
                    again.push(i);
                }
            }
            results[i] = Some(outcome);
        }
        pending = match (again.is_empty(), delays.next()) {
            (false, Some(delay)) => {
                tracing::debug!(operations = again.len(), ?delay, "retrying batched operations");
                retry::pause(delay).await;
                again
            }
            _ => Vec::new(),
        };
    }
    results
        .into_iter()
        .zip(memories)
        .map(|(result, memory)| result.expect("every item ran").map_err(|e| memory.report(e)))
        .collect()
}

/// A batch call in flight: the node, the positions (in the round) of its operations, the reply.
type Call = BoxFuture<'static, (NodeIndex, Vec<usize>, Result<v1::BatchResponse, ReplicaError>)>;

/// One attempt at a set of items: every item's progress towards its quorum.
struct Round {
    op: Op,
    quorum: usize,
    items: Arc<Vec<Item>>,
    /// The items of this round (indices into `items`); states and calls use positions in it.
    members: Vec<usize>,
    states: Vec<OpState>,
    calls: FuturesUnordered<Call>,
}

/// One operation's progress.
struct OpState {
    replicas: PreferenceList,
    /// Successful replies: for reads the record (if any), for writes `None`.
    replies: Vec<(NodeIndex, Option<Record>)>,
    failures: Vec<ReplicaFailure>,
    /// Replicas asked that have not answered yet.
    outstanding: usize,
    /// The quorum is reached, or can no longer be.
    decided: bool,
}

impl OpState {
    /// True once the outcome is known: the quorum is reached, or it can no longer be and, for a
    /// write, no request is left in flight (one could still land, and the failure must then say
    /// the outcome is unknown).
    fn is_decided(&self, op: Op, quorum: usize) -> bool {
        let got = self.replies.len();
        let hopeless = got + self.outstanding < quorum;
        got >= quorum || self.outstanding == 0 || (hopeless && op == Op::Read)
    }
}

impl Round {
    /// Places every member on its replicas and sends one call per node (or more, split).
    fn start(
        shared: &Arc<Shared>,
        items: &Arc<Vec<Item>>,
        members: Vec<usize>,
        op: Op,
        quorum: usize,
    ) -> Round {
        let mut per_node: BTreeMap<NodeIndex, Vec<usize>> = BTreeMap::new();
        let states = members
            .iter()
            .enumerate()
            .map(|(position, &i)| {
                let replicas = shared.ring.preference_list(key_token(&items[i].key));
                let (targets, failures) = quorum::targets(shared, &replicas, quorum);
                for &node in &targets {
                    per_node.entry(node).or_default().push(position);
                }
                let decided = targets.len() < quorum;
                OpState {
                    replicas,
                    replies: Vec::new(),
                    failures,
                    outstanding: targets.len(),
                    decided,
                }
            })
            .collect();
        let calls = per_node
            .into_iter()
            .flat_map(|(node, positions)| {
                split(positions, |&p| items[members[p]].size())
                    .into_iter()
                    .map(move |chunk| (node, chunk))
            })
            .map(|(node, chunk)| {
                let ops = chunk.iter().map(|&p| items[members[p]].wire()).collect();
                send(shared, node, chunk, v1::BatchRequest { ops })
            })
            .collect();
        Round { op, quorum, items: items.clone(), members, states, calls }
    }

    /// Waits until every operation is decided and returns one outcome per member. Calls still in
    /// flight finish in the background; for reads, they feed read repair.
    async fn finish(mut self, shared: &Arc<Shared>) -> Vec<Result<Option<Record>, QuorumError>> {
        let mut undecided = self.states.iter().filter(|s| !s.decided).count();
        while undecided > 0 {
            let Some((node, positions, reply)) = self.calls.next().await else { break };
            undecided -= self.absorb(shared, node, positions, reply);
        }
        let outcomes = self.states.iter().map(|state| self.outcome(state)).collect();
        let shared = shared.clone();
        match self.op {
            Op::Read => {
                shared.background.clone().spawn(async move { self.repair(&shared).await });
            }
            Op::Write if !self.calls.is_empty() => {
                let mut calls = self.calls;
                shared.background.spawn(async move { while calls.next().await.is_some() {} });
            }
            Op::Write => {}
        }
        outcomes
    }

    /// One member's outcome from its replies so far.
    fn outcome(&self, state: &OpState) -> Result<Option<Record>, QuorumError> {
        if state.replies.len() < self.quorum {
            return Err(QuorumError {
                op: self.op,
                needed: self.quorum,
                got: state.replies.len(),
                replicas: state.replicas.len(),
                failures: state.failures.clone(),
            });
        }
        Ok(newest(&state.replies).cloned())
    }

    /// Records a node's reply for each operation it carried; returns how many became decided.
    ///
    /// A reply too large for one message (batched reads of large values: the request cannot
    /// know their sizes) is not a failure: the call is split in two and each half sent again.
    fn absorb(
        &mut self,
        shared: &Arc<Shared>,
        node: NodeIndex,
        positions: Vec<usize>,
        reply: Result<v1::BatchResponse, ReplicaError>,
    ) -> usize {
        let results: Vec<Result<Option<Record>, ReplicaError>> = match reply {
            Err(cause) if positions.len() > 1 && too_large(&cause) => {
                let (first, second) = positions.split_at(positions.len() / 2);
                for half in [first.to_vec(), second.to_vec()] {
                    let ops = half.iter().map(|&p| self.items[self.members[p]].wire()).collect();
                    self.calls.push(send(shared, node, half, v1::BatchRequest { ops }));
                }
                return 0;
            }
            Ok(reply) if reply.results.len() == positions.len() => {
                reply.results.into_iter().map(|result| op_result(shared, result)).collect()
            }
            Ok(reply) => {
                let cause = ReplicaError::malformed(format!(
                    "node answered {} results for {} operations",
                    reply.results.len(),
                    positions.len()
                ));
                vec![Err(cause); positions.len()]
            }
            Err(cause) => vec![Err(cause); positions.len()],
        };
        let mut newly_decided = 0;
        for (position, result) in positions.into_iter().zip(results) {
            let state = &mut self.states[position];
            state.outstanding -= 1;
            match result {
                Ok(record) => {
                    if let Some(record) = &record {
                        shared.clock.observe(record.version.timestamp);
                    }
                    state.replies.push((node, record));
                }
                Err(cause) => state
                    .failures
                    .push(ReplicaFailure { node: shared.replicas[node].id.clone(), cause }),
            }
            if !state.decided && state.is_decided(self.op, self.quorum) {
                state.decided = true;
                newly_decided += 1;
            }
        }
        newly_decided
    }

    /// Read repair for the whole round: waits for the late replies, then writes each key's
    /// newest record to its stale replicas that are up, one batch call per node. Skipped when
    /// too many repairs are in flight (anti-entropy catches up).
    async fn repair(mut self, shared: &Arc<Shared>) {
        let Ok(_permit) = shared.repairs.clone().try_acquire_owned() else {
            tracing::debug!("batched read repair skipped: too many in flight");
            while self.calls.next().await.is_some() {}
            return;
        };
        while let Some((node, positions, reply)) = self.calls.next().await {
            self.absorb(shared, node, positions, reply);
        }
        let mut per_node: BTreeMap<NodeIndex, Vec<Item>> = BTreeMap::new();
        for (state, &i) in self.states.iter().zip(&self.members) {
            let Some(best) = newest(&state.replies) else { continue };
            for node in repair::stale(&state.replicas, &state.replies, best) {
                if shared.replicas[node].health.is_up() {
                    let item = Item { key: self.items[i].key.clone(), record: Some(best.clone()) };
                    per_node.entry(node).or_default().push(item);
                }
            }
        }
        let mut writes: FuturesUnordered<Call> = per_node
            .into_iter()
            .flat_map(|(node, items)| split(items, Item::size).into_iter().map(move |c| (node, c)))
            .map(|(node, chunk)| {
                let ops = chunk.iter().map(Item::wire).collect();
                send(shared, node, Vec::new(), v1::BatchRequest { ops })
            })
            .collect();
        while let Some((node, _, reply)) = writes.next().await {
            if let Err(e) = reply {
                tracing::debug!(node = %shared.replicas[node].id, error = %e, "batched read repair failed");
            }
        }
    }
}

/// Sends one batch call to `node`.
fn send(
    shared: &Arc<Shared>,
    node: NodeIndex,
    positions: Vec<usize>,
    request: v1::BatchRequest,
) -> Call {
    let shared = shared.clone();
    Box::pin(async move {
        let reply = shared.replicas[node].batch(request).await;
        (node, positions, reply)
    })
}

/// Splits `ops` into chunks of at most [`MAX_OPS_PER_CALL`] operations and, unless a single
/// operation is larger on its own, [`MAX_BYTES_PER_CALL`] bytes.
fn split<T>(ops: Vec<T>, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let op_size = size(&op);
        if !chunk.is_empty()
            && (chunk.len() == MAX_OPS_PER_CALL || bytes + op_size > MAX_BYTES_PER_CALL)
        {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += op_size;
        chunk.push(op);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// One operation's result from a node's batch reply.
fn op_result(shared: &Shared, result: v1::BatchResult) -> Result<Option<Record>, ReplicaError> {
    use v1::batch_result::Result as Outcome;
    match result.result {
        Some(Outcome::Read(read)) => match read.record {
            Some(wire) => {
                Record::try_from(wire).map(Some).map_err(|e| ReplicaError::malformed(e.to_string()))
            }
            None => Ok(None),
        },
        Some(Outcome::Write(write)) => {
            if let Some(current) = write.current {
                shared.clock.observe(Timestamp(current.timestamp));
            }
            Ok(None)
        }
        Some(Outcome::Error(e)) => {
            Err(ReplicaError::Rejected { code: tonic::Code::from(e.code), message: e.message })
        }
        None => Err(ReplicaError::malformed("batch result is empty")),
    }
}

/// True when a call failed because its request or reply exceeded the gRPC message limit.
fn too_large(cause: &ReplicaError) -> bool {
    matches!(cause, ReplicaError::Rejected { code: tonic::Code::OutOfRange, message }
        if message.contains("message length too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_count_and_by_bytes() {
        let sizes = |chunks: &Vec<Vec<usize>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        let small = split(vec![1usize; 2500], |&s| s);
        assert_eq!(sizes(&small), [1000, 1000, 500]);
        let big = split(vec![MAX_BYTES_PER_CALL / 2 + 1; 3], |&s| s);
        assert_eq!(sizes(&big), [1, 1, 1], "two of them would pass the byte limit");
        let huge = split(vec![MAX_BYTES_PER_CALL * 2], |&s| s);
        assert_eq!(sizes(&huge), [1], "an operation larger than the limit goes alone");
        assert!(split(Vec::<usize>::new(), |&s| s).is_empty());
    }
}
