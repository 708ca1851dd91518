//! Everything a ring file or a node id can get wrong, each with the detail needed to fix it.

use std::path::PathBuf;

use thiserror::Error;

/// A ring file that cannot be used, or a node id the ring does not know.
#[derive(Debug, Error)]
pub enum RingError {
    /// The file could not be read.
    #[error("cannot read ring file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the ring file's shape.
    #[error("malformed ring file: {0}")]
    Parse(#[from] toml::de::Error),
    /// The file lists no nodes.
    #[error("ring file lists no nodes")]
    NoNodes,
    /// A node id is empty.
    #[error("node #{0} has an empty id")]
    EmptyId(usize),
    /// Two nodes share an id.
    #[error("node id {0:?} appears more than once")]
    DuplicateId(String),
    /// Two nodes share an address.
    #[error("address {0} is used by more than one node")]
    DuplicateAddr(String),
    /// N, R or W is zero, or N is above the supported maximum.
    #[error("replication.{name} = {value} is out of range (1..={max})")]
    OutOfRange {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// R or W is larger than N.
    #[error("replication.{name} = {quorum} is larger than n = {n}")]
    QuorumAboveN {
        /// `r` or `w`.
        name: &'static str,
        /// The quorum asked for.
        quorum: usize,
        /// Replicas per key.
        n: usize,
    },
    /// N is larger than the number of nodes.
    #[error("replication.n = {n} but the ring has only {nodes} nodes")]
    NAboveNodes {
        /// Replicas per key.
        n: usize,
        /// Nodes in the ring.
        nodes: usize,
    },
    /// A setting outside the replication table has an unusable value.
    #[error("{name} = {value} is out of range ({range})")]
    Setting {
        /// The setting's path in the file.
        name: &'static str,
        /// Its value.
        value: u64,
        /// What is allowed.
        range: &'static str,
    },
    /// A node id that the ring does not list.
    #[error("node id {id:?} is not in the ring (known: {known})")]
    UnknownNode {
        /// The id asked for.
        id: String,
        /// The ids the ring does list, comma-separated.
        known: String,
    },
}
