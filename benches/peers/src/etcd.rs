//! etcd: one client over every member's endpoint, as an etcd application connects.
//!
//! The client's gRPC channel balances requests over the endpoints and carries every in-flight
//! request of every task (HTTP/2 streams), the way etcd clients share one connection. Gets are
//! etcd's default, linearizable reads; puts return once a majority has the entry in its log.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dynakv_bench::DataSet;
use etcd_client::{Client, ConnectOptions, KvClient, Txn, TxnOp};

/// Deadline of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Puts per transaction while loading the keyspace (etcd's `--max-txn-ops` default is 128).
const PRELOAD_TXN: usize = 64;
/// Transactions in flight while loading the keyspace.
const PRELOAD_TASKS: usize = 8;

/// An etcd cluster.
pub struct Etcd {
    client: Client,
}

impl Etcd {
    /// Connects to the members at `endpoints` (`host:port` each).
    pub async fn new(endpoints: &[String]) -> anyhow::Result<Self> {
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(REQUEST_TIMEOUT);
        let client = Client::connect(&urls, Some(options))
            .await
            .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))?;
        Ok(Etcd { client })
    }

    /// A handle for one task on the shared channel.
    pub fn connect(&self) -> EtcdConn {
        EtcdConn { kv: self.client.kv_client() }
    }

    /// Writes every key in transactions of [`PRELOAD_TXN`] puts.
    pub async fn preload(&self, data: &Arc<DataSet>) -> anyhow::Result<()> {
        let chunks = data.keys.len().div_ceil(PRELOAD_TXN);
        let tasks: Vec<_> = (0..PRELOAD_TASKS)
            .map(|task| {
                let (mut kv, data) = (self.client.kv_client(), data.clone());
                tokio::spawn(async move {
                    for chunk in (task..chunks).step_by(PRELOAD_TASKS) {
                        let start = chunk * PRELOAD_TXN;
                        let keys = &data.keys[start..(start + PRELOAD_TXN).min(data.keys.len())];
                        let puts: Vec<_> = keys
                            .iter()
                            .map(|k| TxnOp::put(k.to_vec(), data.value.to_vec(), None))
                            .collect();
                        kv.txn(Txn::new().and_then(puts)).await?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await?.context("preload")?;
        }
        Ok(())
    }
}

/// One task's handle on the etcd client.
pub struct EtcdConn {
    kv: KvClient,
}

impl EtcdConn {
    /// A linearizable range read of one key.
    pub async fn get(&mut self, key: &[u8]) -> anyhow::Result<()> {
        self.kv.get(key, None).await?;
        Ok(())
    }

    /// A put of one key.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        self.kv.put(key, value, None).await?;
        Ok(())
    }
}
