//! `dynakv bench`: YCSB-style load against a running cluster, with HDR latency percentiles per
//! operation type, throughput, and client and node CPU per operation; `dynakv bench sweep` runs
//! it across quorum settings and concurrency levels and can draw the percentiles as a PNG.
//!
//! # Layout
//! - [`run`](mod@run): preloading and running one workload under its operation and time bounds.
//! - [`cpu`]: client CPU from `getrusage`, node CPU from `/proc`.
//! - [`sweep`]: one run per (R, W, concurrency) point.
//! - [`plot`]: the sweep drawn as a PNG, with a bundled font.
//!
//! The workloads, latency records and figures (and so the JSON) are the `dynakv-bench` crate's,
//! shared with the driver of `benches/peers.sh`.

mod cpu;
mod plot;
mod run;
mod sweep;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use dynakv_bench::{DataSet, Measurement};
use dynakv_client::{Client, ClientOptions};
use dynakv_ring::Ring;
use serde::Serialize;

use crate::cli::{BenchArgs, BenchCommand, BenchCommon, ConsistencyArg};
use run::RunSpec;

/// Runs `dynakv bench` or `dynakv bench sweep`.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(BenchCommand::Sweep(sweep)) = args.sweep {
        return sweep::run(sweep).await;
    }
    let args = args.run;
    let setup = Setup::new(&args.common).await?;
    let replication = setup.client.ring().replication();
    let spec = RunSpec {
        workload: args.workload,
        ops: args.ops,
        concurrency: args.concurrency.max(1),
        r: args.r.unwrap_or(replication.r),
        w: args.w.unwrap_or(replication.w),
        linearizable: args.consistency == Some(ConsistencyArg::Linearizable),
        max_duration: args.common.max_duration,
    };
    let spec = match args.consistency {
        Some(ConsistencyArg::Linearizable) => {
            anyhow::ensure!(
                args.r.is_none() && args.w.is_none(),
                "--consistency linearizable uses strict majorities: it takes no --r or --w"
            );
            let majority = replication.n / 2 + 1;
            RunSpec { r: majority, w: majority, ..spec }
        }
        Some(ConsistencyArg::One) => {
            RunSpec { r: args.r.unwrap_or(1), w: args.w.unwrap_or(1), ..spec }
        }
        Some(ConsistencyArg::All) => RunSpec {
            r: args.r.unwrap_or(replication.n),
            w: args.w.unwrap_or(replication.n),
            ..spec
        },
        Some(ConsistencyArg::Quorum) | None => spec,
    };
    if args.workload.reads() && !args.common.no_preload {
        setup.preload(spec.concurrency, args.common.max_duration).await?;
    }
    let measurement = setup.execute(spec).await?;
    print!("{}", measurement.table());
    if let Some(path) = &args.json {
        write_json(path, &measurement)?;
    }
    Ok(if measurement.all().errors == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// What every run of one invocation shares: the client, the data set and the node processes.
struct Setup {
    client: Client,
    data: Arc<DataSet>,
    node_pids: Vec<u32>,
    /// RPCs in flight per node before coalescing (0: none).
    rpcs_per_node: usize,
}

impl Setup {
    /// Builds the client and data set, finds the node processes, and checks every node answers.
    async fn new(common: &BenchCommon) -> anyhow::Result<Setup> {
        let ring = Ring::load(&common.ring.ring)?;
        let mut options = ClientOptions::from_ring(&ring);
        if common.no_coalesce {
            options.rpcs_in_flight_per_node = 0;
        } else if let Some(rpcs) = common.rpcs_per_node {
            options.rpcs_in_flight_per_node = rpcs;
        }
        options.read_fanout = common.read_fanout.into();
        let rpcs_per_node = options.rpcs_in_flight_per_node;
        let client =
            Client::builder(ring).options(options).build().context("cannot create client")?;
        for status in client.node_statuses().await {
            if let Err(e) = status.reply {
                anyhow::bail!("node {} at {} does not answer: {e}", status.id, status.addr);
            }
        }
        let node_pids = if common.node_pids.is_empty() {
            cpu::find_nodes(&common.ring.ring)
        } else {
            common.node_pids.clone()
        };
        Ok(Setup {
            client,
            data: Arc::new(DataSet::new(common.keys, common.value_size)),
            node_pids,
            rpcs_per_node,
        })
    }

    /// Loads every key, at least 32 writes at a time.
    async fn preload(
        &self,
        concurrency: usize,
        max_duration: std::time::Duration,
    ) -> anyhow::Result<()> {
        run::preload(&self.client, &self.data, concurrency.max(32), max_duration).await
    }

    /// Runs and measures one workload.
    async fn execute(&self, spec: RunSpec) -> anyhow::Result<Measurement> {
        run::execute(&self.client, &self.data, spec, &self.node_pids, self.rpcs_per_node).await
    }
}

/// Writes `value` as pretty JSON to `path`.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}
