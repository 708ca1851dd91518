//! Wall-clock time as a value a node or client is given, so a test can skew one node's clock or
//! move a whole cluster hours ahead without sleeping.
//!
//! Everything that reads the wall clock for a decision (HLC timestamps, expiry, tombstone grace,
//! sweeps) reads it through a [`Clock`]. A clock is the system time plus an offset; clones share
//! the offset, so shifting a clock shifts every holder of it at once, while it runs.
//!
//! A [`follower`](Clock::follower) reads its clock plus a lead of its own that only moves
//! forward: a client whose clock is behind the cluster's follows cluster time that way, without
//! moving the clock it was given.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock shifted by an adjustable offset; cheap to clone, clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time. Shared, so a test can move a running node's time.
    offset_ms: Arc<AtomicI64>,
    /// Milliseconds a follower reads ahead of the clock it follows; never negative, only raised.
    /// Shared by the follower's clones, not with the clock it was made from.
    lead_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Self {
        Self::default()
    }

    /// The system clock shifted by `offset_ms` (negative: behind).
    pub fn skewed(offset_ms: i64) -> Self {
        Clock { offset_ms: Arc::new(AtomicI64::new(offset_ms)), lead_ms: Arc::default() }
    }

    /// A clock that reads this one (shifts included) plus a lead of its own, 0 until
    /// [`lead_by`](Self::lead_by) raises it.
    pub fn follower(&self) -> Self {
        Clock { offset_ms: self.offset_ms.clone(), lead_ms: Arc::default() }
    }

    /// Raises this follower's lead to `lead_ms` if it is below it; a lead never goes down, so
    /// a follower never goes back.
    pub fn lead_by(&self, lead_ms: i64) {
        self.lead_ms.fetch_max(lead_ms, Ordering::AcqRel);
    }

    /// How far this clock reads ahead of the one it follows, in milliseconds (0 if none).
    pub fn lead_ms(&self) -> i64 {
        self.lead_ms.load(Ordering::Acquire)
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
        system_ms().saturating_add_signed(self.offset_ms().saturating_add(self.lead_ms()))
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
    fn a_follower_leads_on_its_own_and_never_goes_back() {
        let clock = Clock::skewed(-60_000);
        let follower = clock.follower();
        follower.lead_by(50_000);
        follower.lead_by(10_000);
        assert_eq!(follower.lead_ms(), 50_000, "a lead only moves forward");
        assert_eq!(clock.lead_ms(), 0, "the followed clock does not move");
        let (ahead, base) = (follower.now_ms(), clock.now_ms());
        assert!((49_000..=51_000).contains(&(ahead - base)), "{ahead} vs {base}");
        clock.shift(60_000);
        assert!(follower.now_ms() >= system_ms() + 49_000, "shifts reach the follower");
    }

    #[test]
    fn never_goes_below_the_epoch() {
        assert_eq!(Clock::skewed(i64::MIN).now_ms(), 0);
        assert!(Clock::skewed(i64::MAX).now_ms() > i64::MAX as u64, "no overflow");
    }
}
