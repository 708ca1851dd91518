//! The systems measured beside dynakv, behind one small interface: connect, get, put, preload.

use std::sync::Arc;

use clap::ValueEnum;
use dynakv_bench::DataSet;

use crate::etcd::{Etcd, EtcdConn};
use crate::redis::{Redis, RedisConn, Wait};

/// Which system a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// Redis, every `SET` followed by `WAIT` for replicas; endpoints: the primary, then replicas.
    RedisWait,
    /// Redis without replicas or `WAIT`; endpoint: the one server.
    Redis,
    /// An etcd cluster; endpoints: every member's client address.
    Etcd,
}

impl System {
    /// The name in JSON files and tables.
    pub fn name(self) -> &'static str {
        match self {
            System::RedisWait => "redis-wait",
            System::Redis => "redis",
            System::Etcd => "etcd",
        }
    }
}

/// How a system replicates, in the terms of `dynakv bench`'s report.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    /// Copies of each key.
    pub n: usize,
    /// Copies a read consults.
    pub r: usize,
    /// Copies a write waits for, the writer's own included.
    pub w: usize,
    /// True when every operation is linearizable.
    pub linearizable: bool,
}

/// A connected system.
pub enum Peer {
    /// A Redis primary, with or without replicas.
    Redis(Redis, Replication),
    /// An etcd cluster.
    Etcd(Box<Etcd>, Replication),
}

impl Peer {
    /// Opens `system` at `endpoints`; `wait` is the Redis `WAIT` of every write.
    pub async fn open(system: System, endpoints: &[String], wait: Wait) -> anyhow::Result<Peer> {
        anyhow::ensure!(!endpoints.is_empty(), "no endpoints given");
        let members = endpoints.len();
        Ok(match system {
            System::RedisWait => {
                let replicas = members - 1;
                anyhow::ensure!(
                    wait.replicas <= replicas,
                    "WAIT {} needs as many replicas, {replicas} given",
                    wait.replicas
                );
                let replication =
                    Replication { n: members, r: 1, w: 1 + wait.replicas, linearizable: false };
                Peer::Redis(Redis::new(&endpoints[0], replicas, Some(wait))?, replication)
            }
            System::Redis => {
                let replication = Replication { n: 1, r: 1, w: 1, linearizable: false };
                Peer::Redis(Redis::new(&endpoints[0], members - 1, None)?, replication)
            }
            System::Etcd => {
                let majority = members / 2 + 1;
                let replication =
                    Replication { n: members, r: majority, w: majority, linearizable: true };
                Peer::Etcd(Box::new(Etcd::new(endpoints).await?), replication)
            }
        })
    }

    /// How this system replicates.
    pub fn replication(&self) -> Replication {
        match self {
            Peer::Redis(_, replication) | Peer::Etcd(_, replication) => *replication,
        }
    }

    /// A connection for one task.
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        Ok(match self {
            Peer::Redis(redis, _) => Conn::Redis(redis.connect().await?),
            Peer::Etcd(etcd, _) => Conn::Etcd(Box::new(etcd.connect())),
        })
    }

    /// Writes every key of `data`; returns once Redis replicas all hold it, or etcd committed it.
    pub async fn preload(&self, data: &Arc<DataSet>) -> anyhow::Result<()> {
        match self {
            Peer::Redis(redis, _) => redis.preload(data).await,
            Peer::Etcd(etcd, _) => etcd.preload(data).await,
        }
    }
}

/// One task's connection.
pub enum Conn {
    /// To a Redis primary.
    Redis(RedisConn),
    /// On the etcd client.
    Etcd(Box<EtcdConn>),
}

impl Conn {
    /// Reads `key`.
    pub async fn get(&mut self, key: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Redis(conn) => conn.get(key).await,
            Conn::Etcd(conn) => conn.get(key).await,
        }
    }

    /// Writes `value` under `key`.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
        match self {
            Conn::Redis(conn) => conn.put(key, value).await,
            Conn::Etcd(conn) => conn.put(key, value).await,
        }
    }
}
