//! Everything a ring file, a node id or a proposed ring change can get wrong, each with the detail
//! needed to fix it.

use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

use crate::node_state::NodeState;

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
    /// N is larger than the number of nodes that own tokens (joining nodes own none yet).
    #[error("replication.n = {n} but only {owners} nodes own tokens ({joining} still joining)")]
    NAboveOwners {
        /// Replicas per key.
        n: usize,
        /// Nodes that own tokens.
        owners: usize,
        /// Nodes still joining.
        joining: usize,
    },
    /// A ring mid-change whose target placement would have fewer nodes than replicas per key.
    #[error("replication.n = {n} but only {target} nodes would own tokens after the change")]
    NAboveTarget {
        /// Replicas per key.
        n: usize,
        /// Nodes owning tokens in the target placement.
        target: usize,
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
    /// A `[tls]` certificate without its key, or a key without its certificate.
    #[error("the [tls] table sets {set} but not {missing}: set both or neither")]
    TlsUnpaired {
        /// The setting that is present.
        set: &'static str,
        /// The one that is missing.
        missing: &'static str,
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

/// A proposed membership change that cannot be made; the ring it was asked of is left as it was.
#[derive(Debug, Error)]
pub enum PlanError {
    /// The node to add is already in the ring (and not a joining node at that same address).
    #[error("node id {id:?} is already in the ring (at {addr}, {state})")]
    DuplicateId {
        /// The id asked for.
        id: String,
        /// Where the ring's node of that id serves.
        addr: SocketAddr,
        /// That node's state.
        state: NodeState,
    },
    /// The address of the node to add is already another node's.
    #[error("address {addr} is already used by node {id:?}")]
    DuplicateAddr {
        /// The address asked for.
        addr: SocketAddr,
        /// The node that serves there.
        id: String,
    },
    /// The node to remove is not in the ring.
    #[error("node id {id:?} is not in the ring (known: {known})")]
    UnknownNode {
        /// The id asked for.
        id: String,
        /// The ids the ring does list, comma-separated.
        known: String,
    },
    /// Removing the node would leave fewer nodes owning tokens than replicas per key.
    #[error(
        "cannot remove {id:?}: {remaining} nodes would remain, fewer than replication.n = {n} \
         replicas per key"
    )]
    BelowN {
        /// The node asked to be removed.
        id: String,
        /// Nodes owning tokens that would remain.
        remaining: usize,
        /// Replicas per key.
        n: usize,
    },
    /// A change is still moving ranges; changes are made one at a time.
    #[error(
        "ring version {version} is still moving ranges for the previous change; wait for it \
         (`dynakv ring show`) and try again"
    )]
    Busy {
        /// The version of the ring mid-change.
        version: u64,
    },
    /// The node to replace is not marked dead or is not in the ring as a normal node.
    #[error(
        "node {id:?} cannot be replaced: it is {state}; only a node that is gone for good can be"
    )]
    NotReplaceable {
        /// The node asked to be replaced.
        id: String,
        /// Its state.
        state: NodeState,
    },
    /// The ring after the change would be invalid for another reason (an empty id, say).
    #[error(transparent)]
    Ring(#[from] RingError),
}
