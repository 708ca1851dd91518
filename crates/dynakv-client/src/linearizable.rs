//! Linearizable gets, puts and deletes of single keys over plain quorums: the ABD algorithm
//! (Attiya, Bar-Noy and Dolev, JACM 1995), with no leader and no log.
//!
//! Every round goes to a strict majority of the key's own replicas (`N / 2 + 1`; stand-ins and
//! hints never count), so any two rounds share a replica.
//!
//! - **Put or delete**: read the key from a majority, then write the record (a tombstone for a
//!   delete) with a version above the newest one read (the client's clock observes it, then
//!   ticks), and return once a majority has acknowledged it. Every write that finished before
//!   this one began is in the majority read, so this one orders after it.
//! - **Get**: read the key from a majority. When the replies all hold the newest version, return
//!   it at once; otherwise write that record back to a majority first. A record a get returned
//!   is then on a majority, so every later get sees it or something newer: no get ever returns
//!   a value a later get could un-see.
//!
//! Failed rounds are retried like any other operation (a put's record keeps its version across
//! retries); a missed majority is [`ClientError::Linearizable`], which names the round and says
//! whether a put or delete may have been applied. Each round is one of the ordinary quorum
//! rounds (`read::read` and `quorum::write` with `strict`), so batching, health accounting
//! and read repair behave as for any operation.

use bytes::Bytes;
use dynakv_core::{Record, Timestamp, Version};

use crate::client::Client;
use crate::consistency::majority;
use crate::error::{ClientError, Op, QuorumError, Round, Written};
use crate::quorum::{self, Late};
use crate::retry;

impl Client {
    /// Writes a prepared record (a value or a tombstone) linearizably: its version is replaced
    /// by one above the newest version a majority holds, then a majority must acknowledge it.
    pub(crate) async fn write_linearizable(
        &self,
        key: Bytes,
        mut record: Record,
        late: Late,
    ) -> Result<Written, ClientError> {
        let majority = self.majority();
        let read = || crate::read::read(&self.shared, key.clone(), majority, late);
        let newest = retry::retrying(&self.shared.options, || self.refresh_stale(), read)
            .await
            .map_err(failed(Op::Write, Round::ReadVersions))?;
        record.version = self.version_above(newest.map(|r| r.version));
        let version = record.version;
        let write =
            || quorum::write(&self.shared, key.clone(), record.clone(), majority, true, late);
        let outcome = retry::retrying(&self.shared.options, || self.refresh_stale(), write)
            .await
            .map_err(failed(Op::Write, Round::Write))?;
        Ok(Written { version, outcome })
    }

    /// Reads a key linearizably: the newest record of a majority, written back to a majority
    /// first unless the majority already holds it.
    pub(crate) async fn read_linearizable(
        &self,
        key: Bytes,
        late: Late,
    ) -> Result<Option<Record>, ClientError> {
        let majority = self.majority();
        let read = || crate::read::read_agreeing(&self.shared, key.clone(), majority, late);
        let (newest, agreeing) =
            retry::retrying(&self.shared.options, || self.refresh_stale(), read)
                .await
                .map_err(failed(Op::Read, Round::ReadVersions))?;
        if let Some(record) = &newest
            && agreeing < majority
        {
            let write =
                || quorum::write(&self.shared, key.clone(), record.clone(), majority, true, late);
            retry::retrying(&self.shared.options, || self.refresh_stale(), write)
                .await
                .map_err(failed(Op::Read, Round::WriteBack))?;
        }
        Ok(newest)
    }

    /// A strict majority of the key's replicas.
    fn majority(&self) -> usize {
        majority(self.shared.topology().ring.replication().n)
    }

    /// A fresh version of this client above `seen`. The client's clock has observed `seen`
    /// unless it is beyond the skew bound; then the version is put just above it, and nodes
    /// whose clocks are too far behind refuse it (a clock skew error: not applied).
    fn version_above(&self, seen: Option<Version>) -> Version {
        let mut version = self.next_version();
        if let Some(seen) = seen
            && !version.supersedes(seen)
        {
            version.timestamp = Timestamp(seen.timestamp.0.saturating_add(1));
        }
        version
    }
}

/// Wraps a missed quorum of one round of a linearizable operation.
fn failed(op: Op, round: Round) -> impl FnOnce(QuorumError) -> ClientError {
    move |quorum| ClientError::Linearizable { op, round, quorum }
}
