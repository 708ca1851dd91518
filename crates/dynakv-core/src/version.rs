//! Versions order every write to a key: the higher version wins.

use crate::hlc::Timestamp;

/// The identity of one write: when (a hybrid logical clock timestamp) and by whom.
///
/// Ordered by timestamp, then by writer id, so two distinct writes never compare equal and
/// every replica picks the same winner. Equal versions are the same write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// When the write was made; compared first.
    pub timestamp: Timestamp,
    /// Which writer made it; breaks ties between writers whose clocks agree.
    pub writer: u64,
}

impl Version {
    /// A version from its two parts.
    pub fn new(timestamp: Timestamp, writer: u64) -> Self {
        Version { timestamp, writer }
    }

    /// The merge rule on versions: true when a record written at `self` replaces one written at
    /// `other`, that is when `self` is strictly higher. Equal versions are the same write.
    pub fn supersedes(self, other: Version) -> bool {
        self > other
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}@{:016x}", self.timestamp.millis(), self.timestamp.logical(), self.writer)
    }
}
