//! What one task of a run records: an HDR histogram of latencies and an error count per
//! operation kind, merged once the run is over, so recording takes no lock.

use std::fmt::Display;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::report::OpFigures;
use crate::workload::OpKind;

/// Longest latency a histogram holds (longer ones are recorded as this).
const MAX_LATENCY_NS: u64 = 120_000_000_000;

/// Latencies and errors per [`OpKind`], of one task or of a whole run once merged.
pub struct LatencyRecord {
    /// Nanosecond latencies of successful operations, indexed by [`OpKind`].
    latencies: [Histogram<u64>; 2],
    /// Failed operations, indexed by [`OpKind`].
    errors: [u64; 2],
    /// The first failure's message.
    first_error: Option<String>,
}

impl Default for LatencyRecord {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecord {
    /// An empty record.
    pub fn new() -> Self {
        LatencyRecord { latencies: [histogram(), histogram()], errors: [0; 2], first_error: None }
    }

    /// Counts a successful operation of `kind` that took `latency`.
    pub fn success(&mut self, kind: OpKind, latency: Duration) {
        self.latencies[kind as usize].saturating_record(latency.as_nanos() as u64);
    }

    /// Counts a failed operation of `kind`; the first failure's message is kept.
    pub fn failure(&mut self, kind: OpKind, error: impl Display) {
        self.errors[kind as usize] += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }

    /// Adds `other`'s operations to this record.
    pub fn merge(&mut self, other: LatencyRecord) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            mine.add(theirs).expect("histograms with equal bounds add");
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// Operations done, successful or not.
    pub fn done(&self) -> u64 {
        self.latencies.iter().map(Histogram::len).sum::<u64>() + self.errors.iter().sum::<u64>()
    }

    /// The first failure's message, if any operation failed.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// The figures of a run of `secs` seconds: one entry per kind that ran, then `all`.
    pub fn figures(&self, secs: f64) -> Vec<OpFigures> {
        let mut ops = Vec::new();
        let mut all = histogram();
        for kind in OpKind::ALL {
            let slot = kind as usize;
            let (latencies, errors) = (&self.latencies[slot], self.errors[slot]);
            if latencies.len() + errors > 0 {
                ops.push(OpFigures::new(kind.name(), latencies, errors, secs));
                all.add(latencies).expect("histograms with equal bounds add");
            }
        }
        ops.push(OpFigures::new("all", &all, self.errors.iter().sum(), secs));
        ops
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_records_report_every_kind_then_all() {
        let mut first = LatencyRecord::new();
        first.success(OpKind::Read, Duration::from_micros(100));
        first.failure(OpKind::Update, "timed out");
        let mut second = LatencyRecord::new();
        second.success(OpKind::Update, Duration::from_micros(300));
        second.failure(OpKind::Update, "later");
        first.merge(second);

        assert_eq!(first.done(), 4);
        assert_eq!(first.first_error(), Some("timed out"));
        let figures = first.figures(2.0);
        let names: Vec<&str> = figures.iter().map(|f| f.op.as_str()).collect();
        assert_eq!(names, ["read", "update", "all"]);
        assert_eq!((figures[1].count, figures[1].errors), (1, 2));
        assert_eq!((figures[2].count, figures[2].errors), (2, 2));
        assert_eq!(figures[2].ops_per_sec, 1.0);
    }
}
