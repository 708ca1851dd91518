//! Batched puts, gets and deletes: many keys per call, one outcome per operation.
//!
//! A batch is a thin layer over the single-key operations: every operation runs through the same
//! write or read round as [`Client::put`] or [`Client::get`] (stand-ins and hints for unreachable
//! replicas, strict quorums, retries that reuse the write's version, read repair), at most
//! [`ClientOptions::max_concurrent_batch_ops`](crate::ClientOptions::max_concurrent_batch_ops)
//! at a time. An operation keeps its place until all of its work is done: the replies after its
//! quorum and its read repair too, so a batch bounds everything it sets off and the call returns
//! with nothing of it left running. Packing operations into `Batch` RPCs is the coalescer's job
//! alone: concurrent operations to one node wait for a free RPC slot and then share one RPC,
//! within its size limits. Each operation reports its own outcome: some may miss their quorum
//! while others succeed.
//!
//! A batch is **not atomic** across keys: there is no moment at which all of its writes become
//! visible together, a failed operation does not undo the others, and a reader may see some of
//! a batch's writes and not others.

use std::time::Duration;

use bytes::Bytes;
use dynakv_core::{Record, validate_key};
use futures::StreamExt;

use crate::client::Client;
use crate::consistency::Level;
use crate::error::{ClientError, Op, Written};
use crate::options::{ReadOptions, WriteOptions};
use crate::quorum::Late;

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

/// The outcome of each operation of a batched put or delete, in request order: its version and
/// whether it is the key's value now.
pub type WriteResults = Vec<Result<Written, ClientError>>;

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
        let level = self.level(Op::Write, options.w, options.consistency)?;
        self.follow_cluster_time().await;
        // Versions are taken in request order, before anything is sent.
        let prepared: Vec<_> =
            puts.into_iter().map(|put| self.prepare_put(put.key, put.value, put.ttl)).collect();
        Ok(self.run_each(prepared, |item| self.write_item(item, level, options.strict)).await)
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
        let level = self.level(Op::Write, options.w, options.consistency)?;
        self.follow_cluster_time().await;
        let prepared: Vec<_> =
            keys.into_iter().map(|key| self.prepare_delete(key.into())).collect();
        Ok(self.run_each(prepared, |item| self.write_item(item, level, options.strict)).await)
    }

    /// Reads many keys with the default R; one outcome per key, in order: `None` when missing,
    /// deleted or expired. Stale replicas are repaired before the call returns.
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
        let level = self.level(Op::Read, options.r, options.consistency)?;
        let prepared: Vec<_> = keys
            .into_iter()
            .map(|key| {
                let key: Bytes = key.into();
                validate_key(&key)?;
                Ok(key)
            })
            .collect();
        Ok(self
            .run_each(prepared, |key| async move {
                let record = self.read_at(level, key, Late::Await).await?;
                Ok(record.and_then(|record| record.visible_value(self.now_ms()).cloned()))
            })
            .await)
    }

    /// Writes one prepared record of a batch: the single-key round, awaited to the end.
    async fn write_item(
        &self,
        (key, record): (Bytes, Record),
        level: Level,
        strict: bool,
    ) -> Result<Written, ClientError> {
        self.write_at(level, key, record, strict, Late::Await).await
    }

    /// Runs `operation` on every prepared item, at most `max_concurrent_batch_ops` at a time;
    /// items that failed preparation keep their error. One outcome per item, in order.
    async fn run_each<T, U, F, Fut>(
        &self,
        prepared: Vec<Result<T, ClientError>>,
        operation: F,
    ) -> Vec<Result<U, ClientError>>
    where
        F: Fn(T) -> Fut,
        Fut: Future<Output = Result<U, ClientError>>,
    {
        let mut outcomes: Vec<Option<Result<U, ClientError>>> = Vec::with_capacity(prepared.len());
        let mut valid = Vec::with_capacity(prepared.len());
        for (i, item) in prepared.into_iter().enumerate() {
            match item {
                Ok(item) => {
                    valid.push((i, item));
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let limit = self.shared.options.max_concurrent_batch_ops.max(1);
        let operation = &operation;
        let mut done = futures::stream::iter(valid)
            .map(|(i, item)| async move { (i, operation(item).await) })
            .buffer_unordered(limit);
        while let Some((i, outcome)) = done.next().await {
            outcomes[i] = Some(outcome);
        }
        outcomes.into_iter().map(|outcome| outcome.expect("every operation ran")).collect()
    }
}
