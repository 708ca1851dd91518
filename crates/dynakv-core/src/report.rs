//! What one anti-entropy round or hint delivery pass did: produced by the node that ran it,
//! read by operators.

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
    /// Ranges whose sync with a reachable peer failed part-way.
    pub ranges_failed: u64,
    /// Why syncs failed, one line each (the first few).
    pub errors: Vec<String>,
    /// Ranges that agreed and had tombstones to collect, but kept them: some node holds hints
    /// for them, or could not be asked.
    pub ranges_held: u64,
    /// Stored records that could not be decoded; skipped and logged.
    pub records_damaged: u64,
    /// How long the round took.
    pub elapsed: Duration,
}

impl RepairReport {
    /// True when every range this node shares was compared and synced.
    pub fn is_complete(&self) -> bool {
        self.unreachable.is_empty() && self.ranges_failed == 0
    }
}

/// What one hint delivery pass on a node did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HandoffReport {
    /// The node that ran the pass.
    pub node: String,
    /// Hints their owner acknowledged, now removed.
    pub delivered: u64,
    /// Hints that could not be delivered although their owner answered; kept.
    pub failed: u64,
    /// Hints still held after the pass.
    pub pending: u64,
    /// Why deliveries failed, one line each (the first few).
    pub errors: Vec<String>,
    /// How long the pass took.
    pub elapsed: Duration,
}

/// Most failure lines a report carries; the counts cover the rest.
pub const MAX_REPORTED_ERRORS: usize = 8;

/// Adds `error` to `errors` unless it already holds [`MAX_REPORTED_ERRORS`] lines.
pub fn note_error(errors: &mut Vec<String>, error: impl std::fmt::Display) {
    if errors.len() < MAX_REPORTED_ERRORS {
        errors.push(error.to_string());
    }
}
