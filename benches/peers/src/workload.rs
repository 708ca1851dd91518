//! The workloads of `dynakv bench`: a fixed keyspace of `bench-NNNNNNNNNN` keys chosen
//! uniformly at random, one random value, and each workload's share of reads.

use clap::ValueEnum;
use rand::Rng;
use serde::Serialize;

/// A YCSB-style operation mix, with the letters `dynakv bench` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// Reads only.
    C,
    /// Writes only.
    W,
}

impl Workload {
    /// The share of operations that are reads.
    pub fn read_fraction(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::W => 0.0,
        }
    }

    /// The workload's letter.
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::W => "w",
        }
    }
}

/// The kind of one operation, also its slot in a task's histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A get of a loaded key.
    Read = 0,
    /// A put over a loaded key.
    Update = 1,
}

impl OpKind {
    /// Both kinds, in report order.
    pub const ALL: [OpKind; 2] = [OpKind::Read, OpKind::Update];

    /// The name used in JSON, as `dynakv bench` names it.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
        }
    }
}

/// The keys and the one value of a run.
pub struct DataSet {
    /// Every key, built once so an operation allocates none.
    pub keys: Vec<Vec<u8>>,
    /// Random bytes, so no engine's compression flatters its numbers.
    pub value: Vec<u8>,
}

impl DataSet {
    /// `keys` keys named as `dynakv bench` names them and one random value of `value_size` bytes.
    pub fn new(keys: u64, value_size: usize) -> Self {
        let mut value = vec![0u8; value_size];
        rand::rng().fill(&mut value[..]);
        let keys = (0..keys.max(1)).map(|i| format!("bench-{i:010}").into_bytes()).collect();
        DataSet { keys, value }
    }

    /// The next operation of `workload`: its kind and a uniformly chosen key.
    pub fn next_op(&self, workload: Workload, rng: &mut impl Rng) -> (OpKind, &[u8]) {
        let key = &self.keys[rng.random_range(0..self.keys.len())];
        let kind =
            if rng.random_bool(workload.read_fraction()) { OpKind::Read } else { OpKind::Update };
        (kind, key)
    }
}
