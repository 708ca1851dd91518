//! The side-by-side table: medians over runs of each system's figures, and dynakv's ratios to
//! Redis with `WAIT` and to etcd, each ratio taken within one run and then the median of those.
//!
//! Files are named `SYSTEM-WORKLOAD-cCONCURRENCY-RUN.json`, SYSTEM being `dynakv` or a
//! [`System`](crate::peer::System) name, RUN counting from 1.

use std::fmt::Write as _;
use std::path::Path;

use crate::report;

/// The table's systems: file name prefix and column title.
const SYSTEMS: [(&str, &str); 4] = [
    ("dynakv", "dynakv"),
    ("etcd", "etcd, 3 members"),
    ("redis-wait", "Redis + 2 replicas, WAIT 1"),
    ("redis", "Redis single"),
];

/// What a row shows of a run.
#[derive(Clone, Copy)]
enum Figure {
    /// Successful operations per second, over every kind.
    Throughput,
    /// Median latency of one operation kind, microseconds.
    P50(&'static str),
}

/// A target on dynakv's ratio to Redis with `WAIT`.
#[derive(Clone, Copy)]
struct Target {
    /// The bound on the ratio.
    ratio: f64,
    /// True for "at least", false for "at most".
    at_least: bool,
}

/// One row: a case and the figure taken from it.
struct Row {
    label: &'static str,
    workload: &'static str,
    concurrency: usize,
    figure: Figure,
    target: Option<Target>,
}

const fn row(label: &'static str, workload: &'static str, concurrency: usize) -> Row {
    Row { label, workload, concurrency, figure: Figure::Throughput, target: None }
}

/// The rows, in print order.
const ROWS: [Row; 8] = [
    row("writes, c=1 (ops/s)", "w", 1),
    row("writes, c=16 (ops/s)", "w", 16),
    Row {
        target: Some(Target { ratio: 2.0, at_least: true }),
        ..row("writes, c=64 (ops/s)", "w", 64)
    },
    row("95% reads, c=1 (ops/s)", "b", 1),
    row("95% reads, c=16 (ops/s)", "b", 16),
    Row {
        target: Some(Target { ratio: 1.5, at_least: true }),
        ..row("95% reads, c=64 (ops/s)", "b", 64)
    },
    Row {
        figure: Figure::P50("update"),
        target: Some(Target { ratio: 1.5, at_least: false }),
        ..row("put p50, c=1 (us)", "w", 1)
    },
    Row {
        figure: Figure::P50("read"),
        target: Some(Target { ratio: 3.0, at_least: false }),
        ..row("get p50, c=1 (us)", "b", 1)
    },
];

/// The markdown table of the `runs` runs in `dir`, with a closing note.
pub fn render(dir: &Path, runs: usize) -> String {
    let mut out = String::new();
    let titles: Vec<&str> = SYSTEMS.iter().map(|(_, title)| *title).collect();
    let _ = writeln!(
        out,
        "| case | {} | dynakv / Redis WAIT 1 | dynakv / etcd | target vs Redis WAIT 1 |",
        titles.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---:|---:|---|", "---:|".repeat(SYSTEMS.len()));
    for row in &ROWS {
        // figures[system][run]
        let figures: Vec<Vec<Option<f64>>> = SYSTEMS
            .iter()
            .map(|(system, _)| (1..=runs).map(|run| figure(dir, system, row, run)).collect())
            .collect();
        let cells: Vec<String> = figures
            .iter()
            .map(|runs| format_figure(median(runs.iter().flatten().copied())))
            .collect();
        let ratio_to = |peer: usize| {
            median(figures[0].iter().zip(&figures[peer]).filter_map(|pair| match pair {
                (Some(ours), Some(theirs)) if *theirs > 0.0 => Some(ours / theirs),
                _ => None,
            }))
        };
        let (to_redis, to_etcd) = (ratio_to(2), ratio_to(1));
        let target = match (row.target, to_redis) {
            (Some(target), Some(ratio)) => {
                let met =
                    if target.at_least { ratio >= target.ratio } else { ratio <= target.ratio };
                let bound = if target.at_least { ">=" } else { "<=" };
                format!("{bound} {}x: {}", target.ratio, if met { "met" } else { "missed" })
            }
            (Some(target), None) => format!("{}x: not measured", target.ratio),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.label,
            cells.join(" | "),
            format_ratio(to_redis),
            format_ratio(to_etcd),
            target
        );
    }
    let _ = writeln!(
        out,
        "\nMedians of {runs} run{}. A ratio is dynakv's figure over the peer's, taken within each run, \
         then the median of those: above 1 is better for ops/s, below 1 is better for latencies.",
        if runs == 1 { "" } else { "s" }
    );
    out
}

/// The row's figure of one system's run, if its file is there and holds it.
fn figure(dir: &Path, system: &str, row: &Row, run: usize) -> Option<f64> {
    let path = dir.join(format!("{system}-{}-c{}-{run}.json", row.workload, row.concurrency));
    let measurement = report::read(&path).ok()?;
    match row.figure {
        Figure::Throughput => measurement.op("all").map(|all| all.ops_per_sec),
        Figure::P50(op) => measurement.op(op).map(|figures| figures.p50_us),
    }
}

/// The median, the mean of the middle two for an even count; `None` for no values.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

/// A figure rounded to a whole number with thousands separators, or `-`.
fn format_figure(value: Option<f64>) -> String {
    let Some(value) = value else { return "-".to_string() };
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A ratio with two decimals, or `-`.
fn format_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |ratio| format!("{ratio:.2}x"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
        assert_eq!(format_figure(Some(1234567.4)), "1,234,567");
        assert_eq!(format_figure(Some(999.0)), "999");
        assert_eq!(format_figure(None), "-");
        assert_eq!(format_ratio(Some(0.456)), "0.46x");
    }
}
