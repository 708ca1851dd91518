//! The figures of a run, as a table for people and JSON for scripts; the driver of
//! `benches/peers.sh` writes the same JSON for Redis and etcd, with `system` set.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::workload::WorkloadKind;

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
    /// Figures from a histogram of nanosecond latencies.
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

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// The system measured when it is not dynakv (`etcd`, `redis`, ...); absent for dynakv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The workload mix.
    pub workload: WorkloadKind,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Read quorum used.
    pub r: usize,
    /// Write quorum used.
    pub w: usize,
    /// True when every operation ran linearizably (then `r` and `w` are the strict majority).
    pub linearizable: bool,
    /// Replicas per key.
    pub n: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// RPCs in flight per node before further operations are coalesced into batch RPCs
    /// (0: every operation is its own RPC).
    pub rpcs_per_node: usize,
    /// How many replicas a read asked up front: `quorum` (R, plus hedges) or `all` (N); absent
    /// for other systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_fanout: Option<String>,
    /// Wall-clock seconds of the measured phase.
    pub elapsed_secs: f64,
    /// True when the run stopped at `--max-duration` before all operations were done.
    pub timed_out: bool,
    /// One entry per operation kind that ran, then `all`.
    pub ops: Vec<OpFigures>,
    /// The bench process's CPU (user + system) per operation, in microseconds.
    pub client_cpu_us_per_op: f64,
    /// Reads and writes the client sent to nodes per operation: N per write, R plus hedges per
    /// read (N with `read_fanout` all), plus read repairs; absent for other systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_requests_per_op: Option<f64>,
    /// Node CPU per replica request the client sent (`replica_requests_per_op` of them per
    /// operation), in microseconds; absent when no node process was found. For other systems:
    /// their servers' CPU per operation divided by `n`, whatever each operation touched.
    pub node_cpu_us_per_replica_op: Option<f64>,
    /// Node processes measured.
    pub node_pids: Vec<u32>,
    /// The first error seen, if any operation failed.
    pub first_error: Option<String>,
}

impl Measurement {
    /// The figures over every operation.
    pub fn all(&self) -> &OpFigures {
        self.ops.last().expect("a measurement always has an `all` row")
    }

    /// The figures of operation kind `op` (`read`, `update` or `all`), if it ran.
    pub fn op(&self, op: &str) -> Option<&OpFigures> {
        self.ops.iter().find(|figures| figures.op == op)
    }

    /// The final table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "workload {} | {} ops in {:.2} s{} | concurrency {} | N={} R={} W={}{}{} | {}-byte values | {} keys | {}",
            self.workload.name(),
            self.all().count + self.all().errors,
            self.elapsed_secs,
            if self.timed_out { " (stopped at --max-duration)" } else { "" },
            self.concurrency,
            self.n,
            self.r,
            self.w,
            if self.linearizable { " linearizable" } else { "" },
            match self.read_fanout.as_deref() {
                Some("all") => " | reads ask all N",
                Some(_) => " | reads ask R + hedges",
                None => "",
            },
            self.value_size,
            self.keys,
            match self.rpcs_per_node {
                0 => "one RPC per op".to_string(),
                n => format!("coalesced after {n} RPCs per node"),
            },
        );
        let _ = writeln!(
            out,
            "{:<7} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op", "count", "errors", "ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
        );
        for row in &self.ops {
            let _ = writeln!(
                out,
                "{:<7} {:>9} {:>7} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                row.op,
                row.count,
                row.errors,
                row.ops_per_sec,
                row.p50_us,
                row.p90_us,
                row.p99_us,
                row.p999_us,
                row.max_us
            );
        }
        let _ = write!(out, "client CPU {:.1} us/op", self.client_cpu_us_per_op);
        if let Some(requests) = self.replica_requests_per_op {
            let _ = write!(out, " | {requests:.2} replica requests/op");
        }
        match self.node_cpu_us_per_replica_op {
            Some(node) => {
                let _ = writeln!(
                    out,
                    " | node CPU {node:.1} us per replica request ({} node processes)",
                    self.node_pids.len()
                );
            }
            None => out.push_str(" | node CPU not measured (no `dynakv node` process found)\n"),
        }
        if let Some(error) = &self.first_error {
            let _ = writeln!(out, "first error: {error}");
        }
        out
    }
}
