//! A hybrid logical clock: timestamps that follow wall-clock time but never go backwards and
//! always move past any timestamp the clock has observed (Kulkarni et al., "Logical Physical
//! Clocks", OPODIS 2014).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Clock;

/// Bits of a timestamp that hold the logical counter; the rest hold wall-clock milliseconds.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock reading: 48 bits of Unix milliseconds, then 16 logical bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp at the start of the given millisecond, with a zero logical counter.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms << LOGICAL_BITS)
    }

    /// The wall-clock milliseconds part.
    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical counter part.
    pub fn logical(self) -> u16 {
        (self.0 & ((1 << LOGICAL_BITS) - 1)) as u16
    }
}

/// A thread-safe hybrid logical clock.
#[derive(Debug, Default)]
pub struct Hlc {
    /// The last timestamp handed out or observed; a single atomic so `now` takes no lock.
    last: AtomicU64,
    /// Where wall-clock time comes from.
    wall: Clock,
}

impl Hlc {
    /// A clock over the system time that has observed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock over `wall` that has observed nothing yet.
    pub fn with_clock(wall: Clock) -> Self {
        Hlc { last: AtomicU64::new(0), wall }
    }

    /// The wall clock this clock follows.
    pub fn wall(&self) -> &Clock {
        &self.wall
    }

    /// A timestamp greater than every one this clock has returned or observed.
    pub fn now(&self) -> Timestamp {
        let wall = Timestamp::from_millis(self.wall.now_ms()).0;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = if wall > last { wall } else { last + 1 };
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Timestamp(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a timestamp seen elsewhere, so the next [`now`](Self::now) is greater than it.
    pub fn observe(&self, seen: Timestamp) {
        self.last.fetch_max(seen.0, Ordering::AcqRel);
    }

    /// The latest timestamp handed out or observed, without advancing the clock.
    pub fn peek(&self) -> Timestamp {
        Timestamp(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::system_ms as wall_ms;

    #[test]
    fn never_goes_backwards() {
        let clock = Hlc::new();
        let mut prev = clock.now();
        for _ in 0..10_000 {
            let next = clock.now();
            assert!(next > prev);
            prev = next;
        }
    }

    #[test]
    fn moves_past_observed_timestamps() {
        let clock = Hlc::new();
        let future = Timestamp::from_millis(wall_ms() + 3_600_000);
        clock.observe(future);
        let next = clock.now();
        assert!(next > future);
        assert_eq!(next.millis(), future.millis());
        assert_eq!(next.logical(), 1);
    }

    #[test]
    fn follows_its_wall_clock() {
        let wall = Clock::skewed(3_600_000);
        let clock = Hlc::with_clock(wall.clone());
        assert!(clock.now().millis() >= wall_ms() + 3_599_000);
        wall.shift(3_600_000);
        assert!(clock.now().millis() >= wall_ms() + 7_199_000);
    }

    #[test]
    fn splits_wall_and_logical_parts() {
        let t = Timestamp(Timestamp::from_millis(1234).0 + 7);
        assert_eq!(t.millis(), 1234);
        assert_eq!(t.logical(), 7);
    }
}
