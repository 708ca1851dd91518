//! What one anti-entropy round did: produced by the node that ran it, read by operators.

use std::time::Duration;

/// What one anti-entropy round on a node did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The node that ran the round.
    pub node: String,
    /// Ranges compared with another replica (a range shared with two peers counts twice).
    pub ranges_compared: u64,
    /// Of those, ranges whose digests differed.
    pub ranges_differing: u64,
    /// Records the node pushed to peers.
    pub keys_sent: u64,
    /// Records the node pulled from peers and stored.
    pub keys_received: u64,
    /// Protobuf bytes the node sent and received for the round.
    pub bytes: u64,
    /// Collectable tombstones removed after the round.
    pub tombstones_collected: u64,
    /// Peers that could not be reached; their ranges were not compared.
    pub unreachable: Vec<String>,
    /// How long the round took.
    pub elapsed: Duration,
}
