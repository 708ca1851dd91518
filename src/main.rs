//! `dynakv`: run a node, a local dev cluster, and talk to a cluster from the shell.
//!
//! # Layout
//! - `cmd::node`: `dynakv node`, one node until SIGINT/SIGTERM.
//! - `cmd::dev`: `dynakv dev`, every node of a ring file as child processes.
//! - `cmd::kv`: `put`, `get`, `delete` and `inspect`.
//! - `cmd::batch`: `put --batch file.jsonl`, every line checked before anything is sent.
//! - `cmd::dump`: `dynakv dump`, one node's records as JSON lines.
//! - `cmd::status`: `dynakv status`, the ring's health at a glance.
//! - `cmd::ring`: `dynakv ring show` and `dynakv ring plan add|remove`, the ring and what a
//!   membership change would move (read-only).
//! - `cmd::repair`: `dynakv repair` and `dynakv handoff`, one anti-entropy round or hint delivery
//!   pass on demand.
//! - `cmd::bench`: `dynakv bench` and `dynakv bench sweep`, load generation and latency charts.
//! - `cmd::certs`: `dynakv certs init`, a cluster CA and every certificate of a ring, and the
//!   `[tls]` table that names them.
//! - `cli`: argument definitions shared by the commands.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{CertsCommand, Cli, Command, LogFormat, RingCommand};

/// Every process the binary runs (node, client, bench) allocates through mimalloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Nodes log dynakv's own events at INFO; dependencies (fjall, h2, tonic) only from WARN up.
    // RUST_LOG replaces this filter.
    let default_filter = match cli.command {
        Command::Node(_) | Command::Dev(_) => {
            "warn,dynakv=info,dynakv_node=info,dynakv_storage=info,dynakv_client=info"
        }
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Bench(args) = &cli.command
        && let Some(threads) = args.common().client_threads
    {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => cmd::node::run(args).await,
            Command::Dev(args) => cmd::dev::run(args).await,
            Command::Put(args) => cmd::kv::put(args).await,
            Command::Get(args) => cmd::kv::get(args).await,
            Command::Delete(args) => cmd::kv::delete(args).await,
            Command::Inspect(args) => cmd::kv::inspect(args).await,
            Command::Status(args) => cmd::status::run(args).await,
            Command::Repair(args) => cmd::repair::run(args).await,
            Command::Handoff(args) => cmd::repair::handoff(args).await,
            Command::Dump(args) => cmd::dump::run(args).await,
            Command::Ring(RingCommand::Show(args)) => cmd::ring::show(args).await,
            Command::Ring(RingCommand::Plan(change)) => cmd::ring::plan(change),
            Command::Ring(RingCommand::Add(args)) => cmd::membership::add(args).await,
            Command::Ring(RingCommand::Remove(args)) => cmd::membership::remove(args).await,
            Command::Ring(RingCommand::Replace(args)) => cmd::membership::replace(args).await,
            Command::Bench(args) => cmd::bench::run(*args).await,
            Command::Certs(CertsCommand::Init(args)) => cmd::certs::init(args),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, leaving out causes its message already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
