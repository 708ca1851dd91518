//! YCSB-style workloads: a fixed keyspace, one value, and the read/update mix of each workload.
//!
//! Keys are chosen uniformly at random (YCSB's default is zipfian; uniform spreads load evenly
//! over the ring and is the harder case for caches). Keys are built once, so generating an
//! operation allocates nothing.

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A YCSB-style workload mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// 100% reads.
    C,
    /// 100% writes.
    W,
}

impl WorkloadKind {
    /// The share of operations that are reads.
    pub fn read_fraction(self) -> f64 {
        match self {
            WorkloadKind::A => 0.5,
            WorkloadKind::B => 0.95,
            WorkloadKind::C => 1.0,
            WorkloadKind::W => 0.0,
        }
    }

    /// True when the workload reads, so the keyspace must be loaded first.
    pub fn reads(self) -> bool {
        self.read_fraction() > 0.0
    }

    /// The workload's letter.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::A => "a",
            WorkloadKind::B => "b",
            WorkloadKind::C => "c",
            WorkloadKind::W => "w",
        }
    }
}

/// The kind of one operation; its value is its slot in a [`LatencyRecord`](crate::LatencyRecord).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A get.
    Read = 0,
    /// A put of an existing key.
    Update = 1,
}

impl OpKind {
    /// Both kinds, in report order.
    pub const ALL: [OpKind; 2] = [OpKind::Read, OpKind::Update];

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
        }
    }
}

/// The keys and the value every run of one bench invocation uses.
pub struct DataSet {
    /// Every key, built once.
    pub keys: Vec<Bytes>,
    /// The value every write stores: random bytes, so compression cannot flatter the numbers.
    pub value: Bytes,
}

impl DataSet {
    /// `keys` keys named `bench-NNNNNNNNNN` and one random value of `value_size` bytes.
    pub fn new(keys: u64, value_size: usize) -> Self {
        let mut rng = rand::rng();
        let mut value = vec![0u8; value_size];
        rng.fill(&mut value[..]);
        DataSet {
            keys: (0..keys.max(1)).map(|i| Bytes::from(format!("bench-{i:010}"))).collect(),
            value: Bytes::from(value),
        }
    }

    /// The next operation of `workload`: its kind and a uniformly chosen key.
    pub fn next_op(&self, workload: WorkloadKind, rng: &mut impl Rng) -> (OpKind, Bytes) {
        let key = self.keys[rng.random_range(0..self.keys.len())].clone();
        let reads = workload.read_fraction();
        let kind = if rng.random_bool(reads) { OpKind::Read } else { OpKind::Update };
        (kind, key)
    }
}
