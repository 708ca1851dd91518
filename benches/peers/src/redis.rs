//! Redis: a primary, and optionally replicas that every write waits for with `WAIT`.
//!
//! Every in-flight operation has a connection of its own (the crate's async connection is
//! multiplexed, but each task owns one and sends one request at a time). Reads go to the
//! primary, as a Redis client does unless it opts into stale reads from replicas.

use std::time::Duration;

use anyhow::Context;
use dynakv_bench::DataSet;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

/// Longest wait for one reply; above any `WAIT` timeout, so a slow replica shows as `WAIT`'s
/// own answer and not as a dropped connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys per pipeline while loading the keyspace.
const PRELOAD_PIPELINE: usize = 500;

/// What every write waits for after its `SET`.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    /// Replicas that must acknowledge (`WAIT numreplicas`).
    pub replicas: usize,
    /// `WAIT`'s timeout, milliseconds.
    pub timeout_ms: u64,
}

/// A Redis primary and how many replicas follow it.
pub struct Redis {
    client: redis::Client,
    /// Replicas following the primary; preloading waits for all of them.
    replicas: usize,
    /// `None`: writes return once the primary has them.
    wait: Option<Wait>,
}

impl Redis {
    /// A Redis primary at `primary` (`host:port`) followed by `replicas` replicas.
    pub fn new(primary: &str, replicas: usize, wait: Option<Wait>) -> anyhow::Result<Self> {
        let client = redis::Client::open(format!("redis://{primary}/"))
            .with_context(|| format!("bad Redis address {primary}"))?;
        Ok(Redis { client, replicas, wait })
    }

    /// A new connection to the primary, for one task.
    pub async fn connect(&self) -> anyhow::Result<RedisConn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("cannot connect to the Redis primary")?;
        Ok(RedisConn { conn, wait: self.wait })
    }

    /// Writes every key in pipelines, then waits until every replica has all of them.
    pub async fn preload(&self, data: &DataSet) -> anyhow::Result<()> {
        let mut conn = self.connect().await?.conn;
        for chunk in data.keys.chunks(PRELOAD_PIPELINE) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("SET").arg(&key[..]).arg(&data.value[..]).ignore();
            }
            pipe.query_async::<()>(&mut conn).await.context("preload SET")?;
        }
        if self.replicas > 0 {
            let acked: usize = redis::cmd("WAIT")
                .arg(self.replicas)
                .arg(60_000)
                .query_async(&mut conn)
                .await
                .context("preload WAIT")?;
            anyhow::ensure!(
                acked >= self.replicas,
                "{acked} of {} replicas have the keyspace after 60 s",
                self.replicas
            );
        }
        Ok(())
    }
}

/// One task's connection to the primary.
pub struct RedisConn {
    conn: MultiplexedConnection,
    wait: Option<Wait>,
}

impl RedisConn {
    /// `GET key`.
    pub async fn get(&mut self, key: &[u8]) -> anyhow::Result<()> {
        redis::cmd("GET").arg(key).query_async::<Option<Vec<u8>>>(&mut self.conn).await?;
        Ok(())
    }

    /// `SET key value`, then `WAIT` when replicas must acknowledge: both in one pipeline, so
    /// the write costs one round trip plus the replicas' acknowledgement.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        let Some(wait) = self.wait else {
            redis::cmd("SET").arg(key).arg(value).query_async::<()>(&mut self.conn).await?;
            return Ok(());
        };
        let (acked,): (usize,) = redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .ignore()
            .cmd("WAIT")
            .arg(wait.replicas)
            .arg(wait.timeout_ms)
            .query_async(&mut self.conn)
            .await?;
        anyhow::ensure!(
            acked >= wait.replicas,
            "WAIT {}: {acked} replicas acknowledged within {} ms",
            wait.replicas,
            wait.timeout_ms
        );
        Ok(())
    }
}
