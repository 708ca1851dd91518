//! A run's figures for people (one line) and for scripts (the JSON of `dynakv bench --json`,
//! read back by the table).

use std::path::Path;

use anyhow::Context;
use dynakv_bench::Measurement;

/// One line: throughput, latencies and errors per operation kind, and client CPU.
pub fn summary(measurement: &Measurement) -> String {
    let mut line = format!(
        "{} {} c={}:",
        measurement.system.as_deref().unwrap_or("dynakv"),
        measurement.workload.name(),
        measurement.concurrency
    );
    for figures in &measurement.ops {
        line += &format!(
            " {} {:.0}/s p50 {:.0} us p99 {:.0} us ({} errors);",
            figures.op, figures.ops_per_sec, figures.p50_us, figures.p99_us, figures.errors
        );
    }
    line += &format!(" client CPU {:.1} us/op", measurement.client_cpu_us_per_op);
    if let Some(error) = &measurement.first_error {
        line += &format!("; first error: {error}");
    }
    line
}

/// Reads a measurement written by this tool or by `dynakv bench --json`.
pub fn read(path: &Path) -> anyhow::Result<Measurement> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("bad measurement in {}", path.display()))
}

/// Writes `measurement` as pretty JSON to `path`.
pub fn write(path: &Path, measurement: &Measurement) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(measurement)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
