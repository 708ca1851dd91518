//! One node as the client sees it: a long-lived HTTP/2 channel, a deadline on every call, and
//! health accounting from every result, late ones included.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::{NodeHealth, Record};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use dynakv_ring::NodeSpec;
use tonic::transport::{Channel, Endpoint};

use crate::error::{ClientError, ReplicaError};
use crate::options::ClientOptions;

/// HTTP/2 flow-control window of the connection to a node: room for many values in flight.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of one request.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// A node's channel and health.
#[derive(Debug)]
pub struct Replica {
    /// The node's id, for errors and logs.
    pub id: String,
    /// One multiplexed HTTP/2 connection, opened lazily and re-opened after failures.
    client: ReplicaClient<Channel>,
    /// What this client knows of the node's health.
    pub health: NodeHealth,
    /// Deadline of one call.
    timeout: Duration,
}

impl Replica {
    /// A handle on `node`; connects on first use.
    pub fn new(
        node: &NodeSpec,
        options: &ClientOptions,
        max_message: usize,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(format!("http://{}", node.addr))
            .map_err(|e| ClientError::Address { node: node.id.clone(), reason: e.to_string() })?
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
        Ok(Replica {
            id: node.id.clone(),
            client,
            health: NodeHealth::new(&options.health),
            timeout: options.request_timeout,
        })
    }

    /// Reads the node's record for `key` (tombstones and expired records included).
    pub async fn read(&self, key: Bytes) -> Result<Option<Record>, ReplicaError> {
        let mut client = self.client.clone();
        let reply = self.call(client.read(v1::ReadRequest { key })).await?;
        match reply.record {
            Some(wire) => Record::try_from(wire).map(Some).map_err(|e| ReplicaError::Rejected {
                code: tonic::Code::Internal,
                message: e.to_string(),
            }),
            None => Ok(None),
        }
    }

    /// Offers `record` for `key`; the node keeps it if it is newer than what it holds.
    pub async fn write(
        &self,
        key: Bytes,
        record: Record,
    ) -> Result<v1::WriteResponse, ReplicaError> {
        self.write_hinted(key, record, String::new()).await
    }

    /// Offers `record` for `key`, asking the node to also keep it as a hint for the replica
    /// `hint_for` (empty: no hint), which is unreachable.
    pub async fn write_hinted(
        &self,
        key: Bytes,
        record: Record,
        hint_for: String,
    ) -> Result<v1::WriteResponse, ReplicaError> {
        let mut client = self.client.clone();
        let request = v1::WriteRequest { key, record: Some(record.into()), hint_for };
        self.call(client.write(request)).await
    }

    /// The node's identity, clock and counters.
    pub async fn health_check(&self) -> Result<v1::HealthResponse, ReplicaError> {
        let mut client = self.client.clone();
        self.call(client.health(v1::HealthRequest {})).await
    }

    /// Sends many reads and writes to the node in one call; one result per operation, in order.
    pub async fn batch(
        &self,
        request: v1::BatchRequest,
    ) -> Result<v1::BatchResponse, ReplicaError> {
        let mut client = self.client.clone();
        self.call(client.batch(request)).await
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
        let mut client = self.client.clone();
        let stream = self.call(client.dump(v1::DumpRequest { prefix, limit })).await?;
        Ok(futures::StreamExt::map(stream, |entry| entry.map_err(ReplicaError::from_status)))
    }

    /// Runs one call under the deadline and records its result in the node's health.
    /// Asks the node to run one anti-entropy round now; waits up to `deadline` for its report.
    pub async fn repair(&self, deadline: Duration) -> Result<v1::RepairReport, ReplicaError> {
        let mut client = self.client.clone();
        self.call_within(deadline, client.repair(v1::RepairRequest {})).await
    }

    /// Runs one call under the request deadline and records its result in the node's health.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ReplicaError> {
        self.call_within(self.timeout, call).await
    }

    /// Runs one call under `deadline` and records its result in the node's health.
    async fn call_within<T>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ReplicaError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(deadline, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(ReplicaError::from_status(status)),
            Err(_) => Err(ReplicaError::Timeout { after: deadline }),
        };
        match &result {
            Ok(_) => self.health.record_success(started.elapsed()),
            Err(e) if e.counts_against_health() => self.health.record_failure(),
            Err(_) => self.health.record_success(started.elapsed()),
        }
        result
    }
}
