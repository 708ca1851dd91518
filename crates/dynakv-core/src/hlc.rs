//! A hybrid logical clock: timestamps that follow wall-clock time but never go backwards and
//! always move past any timestamp the clock has observed (Kulkarni et al., "Logical Physical
//! Clocks", OPODIS 2014).
//!
//! Observation is bounded: a clock with a skew bound ([`Hlc::bounded`]) never moves past its
//! wall time plus the bound, whatever it is shown, so one timestamp from a far-off clock cannot
//! drag every later write into the future. [`Hlc::admit`] says how far off such a timestamp is.
//! The arithmetic saturates: no timestamp, however large, makes the clock overflow.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use crate::clock::Clock;

/// Bits of a timestamp that hold the logical counter; the rest hold wall-clock milliseconds.
const LOGICAL_BITS: u32 = 16;

/// The largest millisecond a timestamp can hold (48 bits: the year 10889).
pub const MAX_MILLIS: u64 = u64::MAX >> LOGICAL_BITS;

/// A timestamp stamped further ahead of a clock than its skew bound allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("timestamp is {ahead_ms} ms ahead of the clock, more than max_skew_ms = {max_skew_ms}")]
pub struct ClockSkew {
    /// How far the timestamp is ahead of the clock's wall time, in milliseconds.
    pub ahead_ms: u64,
    /// The bound it passed.
    pub max_skew_ms: u64,
}

/// A hybrid logical clock reading: 48 bits of Unix milliseconds, then 16 logical bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp at the start of the given millisecond, with a zero logical counter;
    /// milliseconds past [`MAX_MILLIS`] are taken as `MAX_MILLIS`.
    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms.min(MAX_MILLIS) << LOGICAL_BITS)
    }

    /// The last timestamp of the given millisecond (the highest logical counter).
    fn end_of_millis(ms: u64) -> Self {
        Timestamp(Self::from_millis(ms).0 | ((1 << LOGICAL_BITS) - 1))
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
#[derive(Debug)]
pub struct Hlc {
    /// The last timestamp handed out or observed; a single atomic so `now` takes no lock.
    last: AtomicU64,
    /// Where wall-clock time comes from.
    wall: Clock,
    /// Timestamps more than this many milliseconds ahead of `wall` are not observed.
    max_skew_ms: u64,
}

impl Default for Hlc {
    fn default() -> Self {
        Hlc::with_clock(Clock::system())
    }
}

impl Hlc {
    /// A clock over the system time that has observed nothing yet, with no skew bound.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock over `wall` that has observed nothing yet, with no skew bound.
    pub fn with_clock(wall: Clock) -> Self {
        Hlc::bounded(wall, u64::MAX)
    }

    /// A clock over `wall` that never observes a timestamp more than `max_skew_ms` ahead of it.
    pub fn bounded(wall: Clock, max_skew_ms: u64) -> Self {
        Hlc { last: AtomicU64::new(0), wall, max_skew_ms }
    }

    /// The wall clock this clock follows.
    pub fn wall(&self) -> &Clock {
        &self.wall
    }

    /// How far ahead of the wall clock an observed timestamp may be.
    pub fn max_skew_ms(&self) -> u64 {
        self.max_skew_ms
    }

    /// A timestamp greater than every one this clock has returned or observed (at the end of
    /// time, the last timestamp again: it saturates rather than wrap).
    pub fn now(&self) -> Timestamp {
        let wall = Timestamp::from_millis(self.wall.now_ms()).0;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = if wall > last { wall } else { last.saturating_add(1) };
            match self.last.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Timestamp(next),
                Err(seen) => last = seen,
            }
        }
    }

    /// Records a timestamp seen elsewhere, so the next [`now`](Self::now) is greater than it;
    /// ignored if it is beyond the skew bound (see [`admit`](Self::admit)).
    pub fn observe(&self, seen: Timestamp) {
        let _ = self.admit(seen);
    }

    /// Records `seen` like [`observe`](Self::observe), or, if it is more than the skew bound
    /// ahead of the wall clock, leaves the clock as it is and says how far ahead it is.
    pub fn admit(&self, seen: Timestamp) -> Result<(), ClockSkew> {
        let wall = self.wall.now_ms();
        let limit = Timestamp::end_of_millis(wall.saturating_add(self.max_skew_ms));
        if seen > limit {
            let ahead_ms = seen.millis().saturating_sub(wall);
            return Err(ClockSkew { ahead_ms, max_skew_ms: self.max_skew_ms });
        }
        self.last.fetch_max(seen.0, Ordering::AcqRel);
        Ok(())
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
    fn never_observes_past_its_skew_bound() {
        let wall = Clock::system();
        let clock = Hlc::bounded(wall.clone(), 500);
        let near = Timestamp::from_millis(wall_ms() + 200);
        assert_eq!(clock.admit(near), Ok(()));
        assert!(clock.now() > near);
        let far = Timestamp::from_millis(wall_ms() + 3_600_000);
        let skew = clock.admit(far).unwrap_err();
        assert_eq!(skew.max_skew_ms, 500);
        assert!((3_599_000..=3_600_000).contains(&skew.ahead_ms), "{skew}");
        clock.observe(far);
        assert!(clock.now() < far, "an hour ahead is neither admitted nor observed");
        // Once the wall clock has caught up, the same timestamp is fine.
        wall.shift(3_600_000);
        assert_eq!(clock.admit(far), Ok(()));
    }

    #[test]
    fn saturates_at_the_end_of_time() {
        let clock = Hlc::new();
        clock.observe(Timestamp(u64::MAX));
        assert_eq!(clock.now(), Timestamp(u64::MAX), "no overflow, no wrap");
        assert_eq!(clock.now(), Timestamp(u64::MAX));
        let bounded = Hlc::bounded(Clock::skewed(i64::MAX), u64::MAX);
        assert_eq!(bounded.admit(Timestamp(u64::MAX)), Ok(()));
        assert_eq!(Timestamp::from_millis(u64::MAX).millis(), MAX_MILLIS);
    }

    #[test]
    fn splits_wall_and_logical_parts() {
        let t = Timestamp(Timestamp::from_millis(1234).0 + 7);
        assert_eq!(t.millis(), 1234);
        assert_eq!(t.logical(), 7);
    }
}
