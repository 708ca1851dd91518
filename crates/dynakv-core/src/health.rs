//! What one node knows of another's health: consecutive failures, latency, and when a down node
//! may be tried again (an exponential schedule with jitter). Clients track every node this way,
//! and nodes track their peers.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use parking_lot::Mutex;

/// When a node counts as down and how soon it is tried again.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolicy {
    /// Consecutive transport failures after which the node is considered down and skipped.
    pub failures_before_down: u32,
    /// First wait before a down node is tried again; doubles (with jitter) up to the maximum.
    pub min_retry_delay: Duration,
    /// Longest wait before a down node is tried again.
    pub max_retry_delay: Duration,
}

impl Default for HealthPolicy {
    /// Down after 3 failures in a row; retried after 100 ms, doubling up to 5 s.
    fn default() -> Self {
        HealthPolicy {
            failures_before_down: 3,
            min_retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(5),
        }
    }
}

/// One node's health as seen by a caller. Every call's result updates it, late replies included.
#[derive(Debug)]
pub struct NodeHealth {
    /// The instant the other times are measured from.
    epoch: Instant,
    /// Transport failures since the last success.
    failures: AtomicU32,
    /// Microseconds since `epoch` until which the node is skipped; 0 when it is up.
    down_until_us: AtomicU64,
    /// Smoothed round-trip time in microseconds (EWMA, 1/8 weight to each new sample).
    rtt_us: AtomicU64,
    /// The retry schedule of a down node; reset when it answers. A lock, as it is touched only
    /// on failures.
    retry: Mutex<ExponentialBackoff>,
    /// Makes a fresh schedule when the node recovers.
    builder: ExponentialBuilder,
    /// Longest skip, used if the schedule ever runs dry.
    max_retry_delay: Duration,
    failures_before_down: u32,
}

impl NodeHealth {
    /// A node that is presumed up.
    pub fn new(options: &HealthPolicy) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(options.min_retry_delay)
            .with_max_delay(options.max_retry_delay)
            .with_jitter()
            .without_max_times();
        NodeHealth {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            down_until_us: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            retry: Mutex::new(builder.build()),
            builder,
            max_retry_delay: options.max_retry_delay,
            failures_before_down: options.failures_before_down.max(1),
        }
    }

    /// `None` if requests may go to the node now; otherwise how long until its next retry.
    pub fn retry_in(&self) -> Option<Duration> {
        let until = self.down_until_us.load(Ordering::Relaxed);
        if until == 0 {
            // Up: asked for every replica of every operation, so skip reading the clock.
            return None;
        }
        let now = self.now_us();
        (until > now).then(|| Duration::from_micros(until - now))
    }

    /// True when the node is not being skipped.
    pub fn is_up(&self) -> bool {
        self.retry_in().is_none()
    }

    /// Transport failures since the node last answered.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Smoothed round-trip time of successful calls.
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us.load(Ordering::Relaxed))
    }

    /// Records an answer that took `rtt`: the node is up.
    pub fn record_success(&self, rtt: Duration) {
        let sample = rtt.as_micros() as u64;
        let old = self.rtt_us.load(Ordering::Relaxed);
        let smoothed = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.rtt_us.store(smoothed, Ordering::Relaxed);
        if self.failures.swap(0, Ordering::Relaxed) != 0 {
            self.down_until_us.store(0, Ordering::Relaxed);
            *self.retry.lock() = self.builder.build();
        }
    }

    /// Records a transport failure; enough in a row mark the node down until its next retry.
    pub fn record_failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.failures_before_down {
            let delay = self.retry.lock().next().unwrap_or(self.max_retry_delay);
            self.down_until_us.store(self.now_us() + delay.as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> HealthPolicy {
        HealthPolicy {
            failures_before_down: 2,
            min_retry_delay: Duration::from_secs(60),
            max_retry_delay: Duration::from_secs(600),
        }
    }

    #[test]
    fn down_after_consecutive_failures_and_up_after_a_success() {
        let health = NodeHealth::new(&options());
        assert!(health.is_up());
        health.record_failure();
        assert!(health.is_up(), "one failure is not enough");
        health.record_failure();
        let wait = health.retry_in().expect("down after two failures");
        assert!(wait > Duration::from_secs(30) && wait <= Duration::from_secs(120), "{wait:?}");
        health.record_success(Duration::from_micros(800));
        assert!(health.is_up());
        assert_eq!(health.consecutive_failures(), 0);
        assert_eq!(health.rtt(), Duration::from_micros(800));
    }

    #[test]
    fn retry_delays_grow() {
        let health = NodeHealth::new(&options());
        health.record_failure();
        health.record_failure();
        let first = health.retry_in().unwrap();
        health.record_failure();
        let second = health.retry_in().unwrap();
        assert!(second > first, "{second:?} should exceed {first:?}");
    }
}
