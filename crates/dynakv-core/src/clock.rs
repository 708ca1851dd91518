//! Wall-clock time as a value a node or client is given, so a test can skew one node's clock or
//! move a whole cluster hours ahead without sleeping.
//!
//! Everything that reads the wall clock for a decision (HLC timestamps, expiry, tombstone grace,
//! sweeps) reads it through a [`Clock`]. A clock is the system time plus an offset; clones share
//! the offset, so shifting a clock shifts every holder of it at once, while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock shifted by an adjustable offset; cheap to clone, clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time. Shared, so a test can move a running node's time.
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system clock shifted by `offset_ms` (negative: behind).
    pub fn skewed(offset_ms: i64) -> Self {
        Clock { offset_ms: Arc::new(AtomicI64::new(offset_ms)) }
    }

    /// Moves this clock (and every clone of it) by `delta_ms`, forwards or backwards.
    pub fn shift(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::AcqRel);
    }

    /// The current offset from the system clock, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Acquire)
    }

    /// Milliseconds since the Unix epoch by this clock (0 before 1970).
    pub fn now_ms(&self) -> u64 {
        system_ms().saturating_add_signed(self.offset_ms())
    }
}

/// Milliseconds since the Unix epoch by the system clock (0 if it is before 1970).
pub fn system_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_shifts() {
        let clock = Clock::skewed(-60_000);
        let seen_by_node = clock.clone();
        let before = seen_by_node.now_ms();
        assert!(before + 59_000 < system_ms(), "a minute behind");
        clock.shift(3_600_000);
        assert!(seen_by_node.now_ms() > system_ms() + 3_500_000, "moved for every clone");
        assert_eq!(seen_by_node.offset_ms(), 3_540_000);
    }

    #[test]
    fn never_goes_below_the_epoch() {
        assert_eq!(Clock::skewed(i64::MIN).now_ms(), 0);
        assert!(Clock::skewed(i64::MAX).now_ms() > i64::MAX as u64, "no overflow");
    }
}
