//! The figures of a run, in the JSON shape of `dynakv bench --json`, so one table reads both.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency figures of one kind of operation (or of all of them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpFigures {
    /// `read`, `update` or `all`.
    pub op: String,
    /// Operations that succeeded (their latencies are the percentiles).
    pub count: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Successful operations per second of the run.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 90th percentile latency, microseconds.
    pub p90_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: f64,
    /// Slowest operation, microseconds.
    pub max_us: f64,
}

impl OpFigures {
    /// Figures from a histogram of nanosecond latencies over a run of `secs` seconds.
    pub fn new(op: &str, latencies: &Histogram<u64>, errors: u64, secs: f64) -> Self {
        let us = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
        OpFigures {
            op: op.to_string(),
            count: latencies.len(),
            errors,
            ops_per_sec: latencies.len() as f64 / secs.max(1e-9),
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: latencies.max() as f64 / 1000.0,
        }
    }
}

/// Everything one run measured; the fields of `dynakv bench --json`, plus `system`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// `redis-wait`, `redis` or `etcd`; absent in `dynakv bench`'s files.
    #[serde(default)]
    pub system: Option<String>,
    /// The workload's letter.
    pub workload: String,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Copies a read consults.
    pub r: usize,
    /// Copies a write waits for.
    pub w: usize,
    /// True when every operation is linearizable.
    pub linearizable: bool,
    /// Copies of each key.
    pub n: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// dynakv's coalescing setting; 0 here, every operation is its own request.
    pub rpcs_per_node: usize,
    /// Wall-clock seconds of the measured phase.
    pub elapsed_secs: f64,
    /// True when the run stopped at its time bound before all operations were done.
    pub timed_out: bool,
    /// One entry per operation kind that ran, then `all`.
    pub ops: Vec<OpFigures>,
    /// This process's CPU (user + system) per operation, in microseconds.
    pub client_cpu_us_per_op: f64,
    /// Server CPU divided by operations x n, in microseconds; absent without server pids.
    pub node_cpu_us_per_replica_op: Option<f64>,
    /// Server processes measured.
    pub node_pids: Vec<u32>,
    /// The first error seen, if any operation failed.
    pub first_error: Option<String>,
}

impl Measurement {
    /// The figures of operation kind `op` (`read`, `update` or `all`), if it ran.
    pub fn op(&self, op: &str) -> Option<&OpFigures> {
        self.ops.iter().find(|figures| figures.op == op)
    }

    /// One line for people: throughput, latencies and errors.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} {} c={}:",
            self.system.as_deref().unwrap_or("dynakv"),
            self.workload,
            self.concurrency
        );
        for figures in &self.ops {
            line += &format!(
                " {} {:.0}/s p50 {:.0} us p99 {:.0} us ({} errors);",
                figures.op, figures.ops_per_sec, figures.p50_us, figures.p99_us, figures.errors
            );
        }
        line += &format!(" client CPU {:.1} us/op", self.client_cpu_us_per_op);
        if let Some(error) = &self.first_error {
            line += &format!("; first error: {error}");
        }
        line
    }

    /// Reads a measurement written by this tool or by `dynakv bench --json`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("bad measurement in {}", path.display()))
    }

    /// Writes the measurement as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
