//! `dynakv bench sweep`: the same workload at every (R, W) quorum setting and concurrency level,
//! one run per point, summarised as a table, JSON and optionally a PNG chart.

use std::process::ExitCode;

use anyhow::Context;

use super::run::RunSpec;
use super::{Setup, plot};
use crate::cli::BenchSweepArgs;
use dynakv_bench::Measurement;

/// Runs every point of the sweep.
pub async fn run(args: BenchSweepArgs) -> anyhow::Result<ExitCode> {
    let setup = Setup::new(&args.common).await?;
    let n = setup.client.ring().replication().n;
    let quorums = quorums(&args.quorums, n)?;
    let levels: Vec<usize> = args.concurrency.iter().map(|&c| c.max(1)).collect();
    anyhow::ensure!(!levels.is_empty(), "--concurrency needs at least one level");
    if args.workload.reads() && !args.common.no_preload {
        setup.preload(levels.iter().copied().max().unwrap_or(1), args.common.max_duration).await?;
    }
    let mut points: Vec<Measurement> = Vec::new();
    println!(
        "{:>2} {:>2} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "R", "W", "conc", "ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "errors"
    );
    for &(r, w) in &quorums {
        for &concurrency in &levels {
            let spec = RunSpec {
                workload: args.workload,
                ops: args.ops,
                concurrency,
                r,
                w,
                linearizable: false,
                max_duration: args.common.max_duration,
            };
            let point = setup.execute(spec).await?;
            let all = point.all();
            println!(
                "{r:>2} {w:>2} {concurrency:>5} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7}",
                all.ops_per_sec, all.p50_us, all.p90_us, all.p99_us, all.p999_us, all.errors
            );
            points.push(point);
        }
    }
    if let Some(path) = &args.json {
        super::write_json(path, &points)?;
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &points).with_context(|| format!("cannot draw {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    let failed = points.iter().any(|p| p.all().errors > 0);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The (R, W) pairs to sweep: `R:W` strings, or every pair from 1 to `n`.
fn quorums(asked: &[String], n: usize) -> anyhow::Result<Vec<(usize, usize)>> {
    if asked.is_empty() {
        return Ok((1..=n).flat_map(|r| (1..=n).map(move |w| (r, w))).collect());
    }
    asked
        .iter()
        .map(|pair| {
            let (r, w) =
                pair.split_once(':').with_context(|| format!("quorum {pair:?} is not R:W"))?;
            let (r, w): (usize, usize) = (r.trim().parse()?, w.trim().parse()?);
            anyhow::ensure!(
                (1..=n).contains(&r) && (1..=n).contains(&w),
                "quorum {pair:?}: R and W must be between 1 and n = {n}"
            );
            Ok((r, w))
        })
        .collect()
}
