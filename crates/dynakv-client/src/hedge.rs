//! Hedged reads: which replicas a read asks, and when it asks one more.
//!
//! A read asks R of the key's N replicas ([`ReadFanout::Quorum`], the default): the up ones
//! first, in preference order. When one of them fails, the next replica in that order is asked
//! at once; when one has not answered by its recent p95 read latency, the next one is asked too
//! (a hedged request, as Cassandra's speculative retry does). Each call is watched for lateness
//! once: a late call causes one hedge for its lateness (and one more if it then fails, while
//! a replica is left to ask).
//!
//! The p95 of each node comes from a `LatencyEstimate`: one number per node, moved by every
//! read reply that node gives, late ones included. [`HedgePolicy`] bounds the delay it gives, so
//! a cold or tiny estimate does not hedge every read, and a slow node is still hedged soon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dynakv_ring::NodeIndex;
use smallvec::SmallVec;
use tokio::time::Instant;

/// How many replicas a read asks up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFanout {
    /// R replicas, then one more for each that fails or is late ([`HedgePolicy`]); the default.
    #[default]
    Quorum,
    /// All N replicas at once: every read compares (and repairs) every replica, at N requests
    /// per read.
    All,
}

/// When a read sends a hedged request to one more replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// The quantile of a node's recent read latency after which a call to it counts as late.
    /// Default 0.95 (p95): about one read in twenty sends a hedge while nodes are steady.
    pub quantile: f64,
    /// Never hedge sooner than this after a call, whatever the estimate: on a fast network a
    /// hedge would cost more than it saves. Default 1 ms.
    pub min_delay: Duration,
    /// Hedge at the latest this long after a call, however slow the node has been, and this
    /// long for a node with no estimate yet (a new client). Default 100 ms.
    pub max_delay: Duration,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        HedgePolicy {
            quantile: 0.95,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(100),
        }
    }
}

impl HedgePolicy {
    /// How long after a call to a node with latency estimate `estimate` the read hedges.
    pub(crate) fn delay(&self, estimate: Option<Duration>) -> Duration {
        let max = self.max_delay.max(self.min_delay);
        estimate.map_or(max, |estimate| estimate.clamp(self.min_delay, max))
    }
}

/// Step size of the estimate, relative to its value: each sample above the estimate raises it
/// by `RATE * q` (4.75% for p95), each one below lowers it by `RATE * (1 - q)` (0.25%). It
/// settles where a fraction `1 - q` of samples lie above it, which is the q-quantile.
const RATE: f64 = 0.05;

/// A running estimate of one quantile of a node's read latency: a stochastic quantile tracker
/// (the multiplicative form of "frugal streaming", Ma, Muthukrishnan and Sandler, 2013), one
/// number and no history, so recording costs a load and a store.
#[derive(Debug)]
pub(crate) struct LatencyEstimate {
    /// The estimate in nanoseconds, as `f64` bits; 0 until the first sample. Updated with a
    /// plain load and store, not a compare-and-swap: two replies recorded at the same instant
    /// may lose one step, which an estimate can afford.
    nanos: AtomicU64,
    /// The quantile tracked, in (0, 1).
    quantile: f64,
}

impl LatencyEstimate {
    /// An estimate of the `quantile` (clamped to [0.5, 0.999]) with no sample yet.
    pub(crate) fn new(quantile: f64) -> Self {
        let quantile = if quantile.is_nan() { 0.95 } else { quantile.clamp(0.5, 0.999) };
        LatencyEstimate { nanos: AtomicU64::new(0), quantile }
    }

    /// Counts one reply that took `latency`.
    pub(crate) fn record(&self, latency: Duration) {
        let sample = (latency.as_nanos() as f64).max(1.0);
        let old = f64::from_bits(self.nanos.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            sample
        } else if sample > old {
            old * (1.0 + RATE * self.quantile)
        } else {
            (old * (1.0 - RATE * (1.0 - self.quantile))).max(1.0)
        };
        self.nanos.store(new.to_bits(), Ordering::Relaxed);
    }

    /// The current estimate; `None` before the first sample.
    pub(crate) fn get(&self) -> Option<Duration> {
        let nanos = f64::from_bits(self.nanos.load(Ordering::Relaxed));
        (nanos > 0.0).then(|| Duration::from_nanos(nanos as u64))
    }
}

/// The calls of one read that may still cause a hedge, each with the instant it becomes late.
#[derive(Debug, Default)]
pub(crate) struct Lateness {
    /// Inline room for the usual N = 3 and a hedge.
    watched: SmallVec<[(NodeIndex, Instant); 4]>,
}

impl Lateness {
    /// Watches the call just sent to `node`, late at `late_at`.
    pub(crate) fn sent(&mut self, node: NodeIndex, late_at: Instant) {
        self.watched.push((node, late_at));
    }

    /// The call to `node` ended: it causes no hedge any more.
    pub(crate) fn ended(&mut self, node: NodeIndex) {
        self.watched.retain(|(n, _)| *n != node);
    }

    /// When the first watched call becomes late, if any is watched.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.watched.iter().map(|&(_, at)| at).min()
    }

    /// Stops watching the call that became late first (it has caused its hedge).
    pub(crate) fn hedged(&mut self) {
        if let Some(first) = (0..self.watched.len()).min_by_key(|&i| self.watched[i].1) {
            self.watched.swap_remove(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_estimate_settles_on_the_95th_percentile() {
        let estimate = LatencyEstimate::new(0.95);
        assert_eq!(estimate.get(), None, "no estimate before the first reply");
        // Latencies 1..=100 ms in a shuffled but fixed order, over and over: p95 is 95 ms.
        for round in 0..200u64 {
            for i in 0..100u64 {
                let ms = (i * 37 + round) % 100 + 1;
                estimate.record(MS * ms as u32);
            }
        }
        let p95 = estimate.get().unwrap();
        assert!(p95 >= 90 * MS && p95 <= 100 * MS, "{p95:?}");
    }

    #[test]
    fn the_estimate_follows_a_slower_node_fast_and_a_faster_one_slowly() {
        let estimate = LatencyEstimate::new(0.95);
        for _ in 0..2000 {
            estimate.record(MS);
        }
        assert!(estimate.get().unwrap() <= 2 * MS);
        // Ten times slower: within 60 replies the estimate is there (4.75% per reply).
        for _ in 0..60 {
            estimate.record(10 * MS);
        }
        assert!(estimate.get().unwrap() >= 9 * MS, "{:?}", estimate.get());
        // Fast again: down by 0.25% per reply, about a thousand replies from 10 ms to 1 ms.
        for _ in 0..100 {
            estimate.record(MS);
        }
        assert!(estimate.get().unwrap() >= 7 * MS, "one fast reply in twenty is not a trend");
        for _ in 0..2000 {
            estimate.record(MS);
        }
        assert!(estimate.get().unwrap() <= 2 * MS, "{:?}", estimate.get());
    }

    #[test]
    fn the_delay_is_bounded_and_a_cold_node_waits_the_longest() {
        let policy = HedgePolicy::default();
        assert_eq!(policy.delay(None), 100 * MS, "no estimate: the cap");
        assert_eq!(policy.delay(Some(Duration::from_micros(80))), MS, "the floor");
        assert_eq!(policy.delay(Some(7 * MS)), 7 * MS);
        assert_eq!(policy.delay(Some(Duration::from_secs(3))), 100 * MS, "the cap");
        let inverted = HedgePolicy { min_delay: 5 * MS, max_delay: MS, ..policy };
        assert_eq!(inverted.delay(Some(2 * MS)), 5 * MS, "a floor above the cap wins");
    }

    #[tokio::test(start_paused = true)]
    async fn each_call_causes_at_most_one_hedge_earliest_first() {
        let start = Instant::now();
        let mut lateness = Lateness::default();
        assert_eq!(lateness.next(), None);
        lateness.sent(0, start + 5 * MS);
        lateness.sent(1, start + 3 * MS);
        assert_eq!(lateness.next(), Some(start + 3 * MS));
        tokio::time::sleep_until(lateness.next().unwrap()).await;
        assert_eq!(Instant::now(), start + 3 * MS);
        lateness.hedged();
        assert_eq!(lateness.next(), Some(start + 5 * MS), "node 1 hedged once, node 0 next");
        lateness.ended(0);
        assert_eq!(lateness.next(), None, "an answered call is not watched");
    }
}
