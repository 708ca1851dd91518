//! `dynakv-peers`: the workloads of `dynakv bench` run against Redis and etcd, and the table
//! that sets their figures beside dynakv's. `benches/peers.sh` starts the servers and calls it.
//!
//! # Layout
//! - [`peer`]: the measured systems behind one interface; [`redis`] and [`etcd`] are the two.
//! - [`run`]: the closed loop, one connection and one latency record per task.
//! - [`report`]: a run's figures as one line, and as the JSON of `dynakv bench --json`.
//! - [`cpu`]: client CPU from `getrusage`, server CPU from `/proc`.
//! - [`table`]: medians over runs, ratios, and the markdown table.
//!
//! The workloads, latency records and figures are the `dynakv-bench` crate's, as in
//! `dynakv bench`, so both write the same JSON.

mod cpu;
mod etcd;
mod peer;
mod redis;
mod report;
mod run;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dynakv_bench::{DataSet, WorkloadKind};

use peer::{Peer, System};
use run::RunSpec;

#[derive(Debug, Parser)]
#[command(about = "Runs the workloads of `dynakv bench` against Redis and etcd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one workload against one system and prints its figures.
    Run(RunArgs),
    /// Prints the side-by-side markdown table of the JSON files in a directory.
    Table(TableArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The system to drive.
    #[arg(long, value_enum)]
    system: System,
    /// Server addresses (`host:port`): the Redis primary then its replicas, or every etcd member.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Workload: a = 50/50 read/update, b = 95/5, c = read only, w = write only.
    #[arg(long, value_enum, default_value = "b")]
    workload: WorkloadKind,
    /// Operations to run.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Distinct keys, chosen uniformly at random.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Stop a run after this many seconds even if not all operations are done.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Skip loading the keyspace before the run (it is already loaded).
    #[arg(long)]
    no_preload: bool,
    /// Replicas every Redis write waits for (`WAIT numreplicas`), with `--system redis-wait`.
    #[arg(long, default_value_t = 1)]
    wait_replicas: usize,
    /// `WAIT`'s timeout in milliseconds; a write that times out counts as an error.
    #[arg(long, default_value_t = 1000)]
    wait_timeout_ms: u64,
    /// Server process ids whose CPU is measured.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Worker threads of the client's async runtime; 1 matches `dynakv bench --client-threads 1`.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TableArgs {
    /// The directory of `SYSTEM-WORKLOAD-cCONCURRENCY-RUN.json` files.
    dir: PathBuf,
    /// Runs per case.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.client_threads.max(1))
                .enable_all()
                .build()?;
            runtime.block_on(run(args))
        }
        Command::Table(args) => {
            print!("{}", table::render(&args.dir, args.runs));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Preloads unless told not to, runs the workload, prints and writes the figures; fails when
/// any operation failed.
async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let wait = redis::Wait { replicas: args.wait_replicas, timeout_ms: args.wait_timeout_ms };
    let peer = Peer::open(args.system, &args.endpoints, wait).await?;
    let data = Arc::new(DataSet::new(args.keys, args.value_size));
    if !args.no_preload {
        peer.preload(&data).await?;
    }
    let spec = RunSpec {
        workload: args.workload,
        ops: args.ops,
        concurrency: args.concurrency.max(1),
        max_duration: Duration::from_secs(args.max_secs),
    };
    let mut measurement = run::execute(&peer, &data, spec, &args.server_pids).await?;
    measurement.system = Some(args.system.name().to_string());
    println!("{}", report::summary(&measurement));
    if let Some(path) = &args.json {
        report::write(path, &measurement)?;
    }
    Ok(if measurement.all().errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
