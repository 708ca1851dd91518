//! The repair of one peer's differences: a differing span is split into sub-spans while it is
//! large (scanned digests), and the versions of a small one are exchanged; each side then gets
//! what it lacks, through the storage writer and its merge rule.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use dynakv_core::{Record, RepairReport, Version};
use dynakv_proto::v1::{self, batch_result::Result as Outcome};
use dynakv_ring::key_token;
use dynakv_storage::{Digest, StorageError, Write, split_stored_key};
use prost::Message;

use super::{Span, collectable, digests, for_each_record, reply_digests};
use crate::peers::{OpResult, Peer, SizedOp, chunks};
use crate::service::NodeState;

/// A span holding more records than this on either side is split before versions are exchanged.
const EXCHANGE_LIMIT: u64 = 512;
/// Sub-spans a differing span is split into.
const FANOUT: u64 = 16;
/// Deepest split below a vnode range.
const MAX_DEPTH: u32 = 4;

/// The repair of one peer's differences, span by span.
pub(super) struct Sync<'a> {
    pub(super) state: &'a NodeState,
    pub(super) peer: &'a Peer,
    pub(super) report: &'a mut RepairReport,
    /// Only take the peer's newer records; send nothing back (a new owner catching up).
    pub(super) pull_only: bool,
}

/// Pulls from `peer` every record of `span` it holds newer than this node (by Merkle digest,
/// as a round does, but one way): how a new owner picks up what its first holder lacked.
/// Returns the records received.
pub(crate) async fn pull_span(state: &NodeState, peer: &Peer, span: Span) -> Result<u64, String> {
    let mut report = RepairReport::default();
    let local =
        digests(state, &[span], &mut report.records_damaged).await.map_err(|e| e.to_string())?;
    let request = v1::DigestRequest { spans: vec![span.into()], all_records: false };
    let remote = peer
        .call(|mut c| async move { c.digest(request).await })
        .await
        .map_err(|s| s.message().to_string())?;
    let theirs = reply_digests(&remote, 1).map_or_else(Digest::default, |d| d[0]);
    if theirs == local[0] {
        return Ok(0);
    }
    let mut sync = Sync { state, peer, report: &mut report, pull_only: true };
    sync.span(span, local[0].count.max(theirs.count), 0).await.map_err(|e| e.to_string())?;
    Ok(report.keys_received)
}

/// A failure while syncing a span: local storage, the peer, or some of the records.
#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("peer: {0}")]
    Peer(#[from] tonic::Status),
    #[error("{failed} of {total} records could not be synced; first: {first}")]
    Records { failed: u64, total: u64, first: String },
}

impl Sync<'_> {
    /// Brings `span` into agreement: splits it while it is large, exchanges versions when small.
    pub(super) async fn span(
        &mut self,
        span: Span,
        records: u64,
        depth: u32,
    ) -> Result<(), SyncError> {
        if records > EXCHANGE_LIMIT && depth < MAX_DEPTH {
            let parts = span.split(FANOUT);
            let local = digests(self.state, &parts, &mut 0).await?;
            let request = v1::DigestRequest {
                spans: parts.iter().map(|&s| s.into()).collect(),
                all_records: false,
            };
            self.report.bytes += request.encoded_len() as u64;
            let remote = self.peer.call(|mut c| async move { c.digest(request).await }).await?;
            self.report.bytes += remote.encoded_len() as u64;
            let theirs = reply_digests(&remote, parts.len()).unwrap_or_default();
            for (k, part) in parts.into_iter().enumerate() {
                let theirs = theirs.get(k).copied().unwrap_or_default();
                if theirs != local[k] {
                    Box::pin(self.span(part, local[k].count.max(theirs.count), depth + 1)).await?;
                }
            }
            return Ok(());
        }
        self.exchange(span).await
    }

    /// Compares every key's version in `span` with the peer's; pulls what the peer has newer and
    /// pushes what this node has newer.
    async fn exchange(&mut self, span: Span) -> Result<(), SyncError> {
        let request = v1::VersionsRequest { span: Some(span.into()) };
        self.report.bytes += request.encoded_len() as u64;
        let remote = self.peer.call(|mut c| async move { c.versions(request).await }).await?;
        self.report.bytes += remote.encoded_len() as u64;
        let theirs: HashMap<Bytes, (Version, u64)> = remote
            .entries
            .into_iter()
            .filter_map(|e| Some((e.key, (e.version?.into(), e.size))))
            .collect();
        let (now, grace) =
            (self.state.wall.now_ms(), self.state.ring().config().tombstones.grace_ms);
        let mut mine: HashMap<Bytes, Record> = HashMap::new();
        // Damaged records were counted by the round's first digests; a second count would not
        // be news.
        for_each_record(self.state, span, |stored, record| {
            if let Some((_, key)) = split_stored_key(stored) {
                mine.insert(Bytes::copy_from_slice(key), record.clone());
            }
        })
        .await?;
        let pulls: Vec<SizedOp> = theirs
            .iter()
            .filter(|(key, (version, _))| mine.get(*key).is_none_or(|r| r.version < *version))
            .map(|(key, &(_, size))| SizedOp::read(key.clone(), size as usize))
            .collect();
        let pushes: Vec<SizedOp> = mine
            .into_iter()
            .filter(|_| !self.pull_only)
            .filter(|(key, record)| match theirs.get(key) {
                Some((version, _)) => record.version > *version,
                // Nothing there is the same as a collectable tombstone: no need to send it.
                None => !collectable(record, now, grace),
            })
            .map(|(key, record)| SizedOp::write(key, record))
            .collect();
        let total = (pulls.len() + pushes.len()) as u64;
        let mut failures = Failures::default();
        self.pull(pulls, &mut failures).await?;
        self.push(pushes, &mut failures).await?;
        match failures.first {
            None => Ok(()),
            Some(first) => Err(SyncError::Records { failed: failures.count, total, first }),
        }
    }

    /// Reads `ops` from the peer and offers each record to the store (the merge rule decides).
    async fn pull(&mut self, ops: Vec<SizedOp>, failures: &mut Failures) -> Result<(), SyncError> {
        for chunk in chunks(ops, self.peer.batch_budget()) {
            let keys: Vec<Bytes> =
                chunk.iter().map(|op| op_key(&op.op).unwrap_or_default()).collect();
            let results = self.send(chunk).await?;
            let state = self.state;
            // Offered to the store as one message, so the chunk shares one group commit.
            let mut writes = Vec::with_capacity(keys.len());
            for (key, result) in keys.iter().zip(results) {
                match result {
                    Ok(Outcome::Read(read)) => match read.record.map(Record::try_from) {
                        Some(Ok(record)) => {
                            state.clock.observe(record.version.timestamp);
                            writes.push(Write::record(key_token(key), key, record));
                        }
                        Some(Err(e)) => failures.note(format_args!("pulled record: {e}")),
                        // Collected on the peer since it listed it: nothing to pull.
                        None => {}
                    },
                    Ok(_) => failures.note("peer answered a read with another reply"),
                    Err(status) => failures.note(format_args!("pull: {status}")),
                }
            }
            let pulled = writes.len();
            for outcome in state.store.write_batch(writes).await {
                if outcome?.applied {
                    self.report.keys_received += 1;
                }
            }
            self.pace(pulled).await;
        }
        Ok(())
    }

    /// Offers `ops` (writes of this node's newer records) to the peer.
    async fn push(&mut self, ops: Vec<SizedOp>, failures: &mut Failures) -> Result<(), SyncError> {
        for chunk in chunks(ops, self.peer.batch_budget()) {
            let sent = chunk.len();
            for result in self.send(chunk).await? {
                match result {
                    Ok(Outcome::Write(w)) => self.report.keys_sent += u64::from(w.applied),
                    Ok(_) => failures.note("peer answered a write with another reply"),
                    Err(status) => failures.note(format_args!("push: {status}")),
                }
            }
            self.pace(sent).await;
        }
        Ok(())
    }

    /// Sends one planned chunk to the peer, counting its bytes.
    async fn send(&mut self, chunk: Vec<SizedOp>) -> Result<Vec<OpResult>, SyncError> {
        self.report.bytes += chunk.iter().map(|op| op.request_bytes as u64).sum::<u64>();
        let results = self.peer.batch(chunk).await?;
        self.report.bytes += results
            .iter()
            .map(|r| match r {
                Ok(Outcome::Read(read)) => read.encoded_len(),
                Ok(Outcome::Write(write)) => write.encoded_len(),
                _ => 0,
            } as u64)
            .sum::<u64>();
        Ok(results)
    }

    /// Sleeps long enough to keep to `anti_entropy.max_keys_per_sec`.
    async fn pace(&self, keys: usize) {
        let rate = self.state.ring().config().anti_entropy.max_keys_per_sec.max(1);
        tokio::time::sleep(Duration::from_secs_f64(keys as f64 / rate as f64)).await;
    }
}

/// Records of one exchange that could not be synced: how many, and the first cause.
#[derive(Default)]
struct Failures {
    count: u64,
    first: Option<String>,
}

impl Failures {
    fn note(&mut self, cause: impl std::fmt::Display) {
        self.count += 1;
        self.first.get_or_insert_with(|| cause.to_string());
    }
}

/// The key a batch operation reads or writes.
fn op_key(op: &v1::BatchOp) -> Option<Bytes> {
    use v1::batch_op::Op;
    match op.op.as_ref()? {
        Op::Read(read) => Some(read.key.clone()),
        Op::Write(write) => Some(write.key.clone()),
    }
}
