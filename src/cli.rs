//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A leaderless, Dynamo-style replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "dynakv", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event, span fields included, for log shippers.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one node of the ring until SIGINT or SIGTERM.
    Node(NodeArgs),
    /// Run every node of a ring file on this machine (a local cluster) until Ctrl-C.
    Dev(DevArgs),
    /// Store a value.
    Put(PutArgs),
    /// Print a value; exit 1 if the key is not found.
    Get(GetArgs),
    /// Delete a key.
    Delete(DeleteArgs),
    /// Show a key's replicas and what each one holds.
    Inspect(InspectArgs),
    /// Show every node's health and whether every key range can meet quorum.
    Status(StatusArgs),
    /// Run one anti-entropy round now, on one node or on each node in turn.
    Repair(RepairArgs),
    /// Hand every hint off to its owner now, on one node or on each node in turn.
    Handoff(RepairArgs),
    /// Stream one node's records (key, version, value or tombstone, expiry) as JSON lines.
    Dump(DumpArgs),
    /// Show the ring, and plan membership changes before anything moves.
    #[command(subcommand)]
    Ring(RingCommand),
    /// Measure throughput and latency against a running cluster (YCSB-style workloads).
    Bench(Box<BenchArgs>),
    /// Make the certificates of a mutual-TLS cluster.
    #[command(subcommand)]
    Certs(CertsCommand),
}

/// `dynakv certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Make a cluster CA and, signed by it, a certificate per node of the ring (for its
    /// address), a client and an admin certificate; then add a `[tls]` table naming them to the
    /// ring file. Never overwrites a file.
    Init(CertsInitArgs),
}

#[derive(Debug, Args)]
pub struct CertsInitArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Directory the certificates and keys are written to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

/// The ring file every command starts from.
#[derive(Debug, Args)]
pub struct RingArg {
    /// The ring file.
    #[arg(long, default_value = "config/ring.toml")]
    pub ring: PathBuf,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// This node's id in the ring file.
    #[arg(long)]
    pub id: String,
    /// Where the node keeps its data [default: data/ID].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep data in memory only (lost when the node stops).
    #[arg(long, conflicts_with = "data_dir")]
    pub memory: bool,
    /// Add a random delay of MIN..MAX milliseconds to every replica request (for demonstrations).
    #[arg(long, value_name = "MIN..MAX", value_parser = parse_delay)]
    pub inject_delay_ms: Option<std::ops::RangeInclusive<u64>>,
    /// Serve a non-loopback address without TLS (the ring file has no `[tls]` table): anyone who
    /// reaches the port can then read and write every key.
    #[arg(long)]
    pub insecure: bool,
    /// Where to serve, for a node the ring file does not list yet (with --join).
    #[arg(long, requires = "join")]
    pub addr: Option<std::net::SocketAddr>,
    /// A member's address: learn the live ring from it before serving. The node serves no keys
    /// until `dynakv ring add ID ADDR` adds it.
    #[arg(long)]
    pub join: Option<std::net::SocketAddr>,
}

/// Parses `MIN..MAX` (or a single number) into an inclusive range of milliseconds.
fn parse_delay(text: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
    let (min, max) = text.split_once("..").unwrap_or((text, text));
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max {
        return Err(format!("{min} is larger than {max}"));
    }
    Ok(min..=max)
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Directory holding one data directory per node.
    #[arg(long, default_value = "data")]
    pub data_root: PathBuf,
    /// Serve mutual TLS: unless the ring file has a `[tls]` table already, make certificates
    /// under DATA_ROOT/certs and add a `[tls]` table naming them to the ring file.
    #[arg(long)]
    pub tls: bool,
}

/// `--consistency`: a named level for one command; `--r`/`--w` still override its quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// R = W = 1.
    One,
    /// R and W from the ring file.
    Quorum,
    /// R = W = N.
    All,
    /// Linearizable over strict majorities (ABD); takes no --r or --w.
    Linearizable,
}

impl From<ConsistencyArg> for dynakv_client::Consistency {
    fn from(level: ConsistencyArg) -> Self {
        match level {
            ConsistencyArg::One => Self::One,
            ConsistencyArg::Quorum => Self::Quorum,
            ConsistencyArg::All => Self::All,
            ConsistencyArg::Linearizable => Self::Linearizable,
        }
    }
}

/// `--read-fanout`: how many replicas a read asks up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadFanoutArg {
    /// R replicas, and one more for each that fails or is slower than its recent p95.
    Quorum,
    /// All N replicas at once.
    All,
}

impl From<ReadFanoutArg> for dynakv_client::ReadFanout {
    fn from(fanout: ReadFanoutArg) -> Self {
        match fanout {
            ReadFanoutArg::Quorum => Self::Quorum,
            ReadFanoutArg::All => Self::All,
        }
    }
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The key (not with --batch).
    #[arg(required_unless_present = "batch")]
    pub key: Option<String>,
    /// The value (not with --batch or --value-file).
    #[arg(required_unless_present_any = ["batch", "value_file"])]
    pub value: Option<String>,
    /// Read the value from this file (`-`: standard input), byte for byte: for binary and large
    /// values. Refused, with nothing sent, when longer than the ring's `max_value_bytes`.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["value", "batch"])]
    pub value_file: Option<PathBuf>,
    /// Print the outcome as one JSON object on stdout (messages and exit codes as without it).
    #[arg(long, conflicts_with = "batch")]
    pub json: bool,
    /// Acknowledgements to wait for [default: the ring's w].
    #[arg(long)]
    pub w: Option<usize>,
    /// Count only the key's own replicas toward W (no sloppy quorum).
    #[arg(long)]
    pub strict: bool,
    /// Consistency level [default: quorum]; --w overrides its W.
    #[arg(long, value_enum)]
    pub consistency: Option<ConsistencyArg>,
    /// Expire the value this long after the put, e.g. `30s`, `5m`, `1h 30m` [default: never].
    /// With --batch, applies to lines that give no ttl of their own.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    /// Put every line of this JSON-lines file instead of one key: one object per line,
    /// `{"key": "k", "value": "v", "ttl": "30s"}` (ttl optional). Every line is checked before
    /// anything is sent; a bad line is reported by number and nothing is written. Not atomic
    /// across keys: some puts may fail while others succeed, each is reported.
    #[arg(long, conflicts_with_all = ["key", "value"])]
    pub batch: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub ring: RingArg,
    pub key: String,
    /// Replies to wait for [default: the ring's r].
    #[arg(long)]
    pub r: Option<usize>,
    /// Write the value to this file, byte for byte (no newline added), instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Print one JSON object on stdout: key, found, bytes, and the value as text (non-UTF-8
    /// bytes escaped as `\xNN`; left out with --output).
    #[arg(long)]
    pub json: bool,
    /// Consistency level [default: quorum]; --r overrides its R.
    #[arg(long, value_enum)]
    pub consistency: Option<ConsistencyArg>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub ring: RingArg,
    pub key: String,
    /// Acknowledgements to wait for [default: the ring's w].
    #[arg(long)]
    pub w: Option<usize>,
    /// Count only the key's own replicas toward W (no sloppy quorum).
    #[arg(long)]
    pub strict: bool,
    /// Print the outcome as one JSON object on stdout (messages and exit codes as without it).
    #[arg(long)]
    pub json: bool,
    /// Consistency level [default: quorum]; --w overrides its W.
    #[arg(long, value_enum)]
    pub consistency: Option<ConsistencyArg>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub ring: RingArg,
    pub key: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The node whose records to list.
    #[arg(long)]
    pub node: String,
    /// Only keys starting with this. The node still reads all its records: stored keys begin
    /// with the key's ring token, so a prefix cannot narrow the scan.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print at most this many records [default: all].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dynakv ring ...`: show the live ring, plan a change, and make one.
#[derive(Debug, Subcommand)]
pub enum RingCommand {
    /// Show the live ring (fetched from the cluster): its version, every node's state and
    /// shares, which ring version each node serves, and what is moving.
    Show(RingShowArgs),
    /// Show what a membership change would move (ranges, share of keys, per node), against the
    /// ideal. Only computes: nothing changes.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Add a node to the live cluster: it joins, the ranges it gains stream to it, then it serves.
    Add(RingAddArgs),
    /// Remove a node: decommission it (its ranges stream to their new owners before it leaves),
    /// or with --dead write it off (the survivors re-replicate its ranges).
    Remove(RingRemoveArgs),
    /// Put a new node in the place of one that is gone for good.
    Replace(RingReplaceArgs),
}

/// What `ring add|remove|replace` does once the cluster has agreed on the change.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until the change is done (every moved range synced), with a progress bar.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up waiting after this long (exit 1; the change goes on).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct RingAddArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The new node's id (the id it was started with).
    pub id: String,
    /// Where the new node serves, e.g. 127.0.0.1:7404.
    pub addr: std::net::SocketAddr,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RingRemoveArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The id of the node to remove.
    pub id: String,
    /// The node is gone for good: nothing is streamed from it.
    #[arg(long)]
    pub dead: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RingReplaceArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The node that is gone for good.
    pub dead: String,
    /// The new node's id.
    pub id: String,
    /// Where the new node serves.
    pub addr: std::net::SocketAddr,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RingShowArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The change to plan.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Plan adding a node (or placing a joining one); ideally it takes 1/(n+1) of the keys.
    Add(PlanAddArgs),
    /// Plan removing a node; ideally only what it holds moves.
    Remove(PlanRemoveArgs),
    /// Plan replacing a dead node by a new one; ideally only what the dead node held moves.
    Replace(PlanReplaceArgs),
}

#[derive(Debug, Args)]
pub struct PlanReplaceArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The node that is gone for good.
    pub dead: String,
    /// The new node's id.
    pub id: String,
    /// Where the new node serves.
    pub addr: std::net::SocketAddr,
    /// Print JSON (every moving range) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanAddArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The new node's id; its tokens derive from it.
    pub id: String,
    /// Where the new node serves, e.g. 127.0.0.1:7404.
    pub addr: std::net::SocketAddr,
    /// Print JSON (every moving range) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanRemoveArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The id of the node to remove.
    pub id: String,
    /// Print JSON (every moving range) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The node to run the pass on [default: every node, one after another].
    #[arg(long)]
    pub node: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `dynakv bench`: one run, or `dynakv bench sweep`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub sweep: Option<BenchCommand>,
    #[command(flatten)]
    pub run: BenchRunArgs,
}

impl BenchArgs {
    /// The settings every bench mode shares.
    pub fn common(&self) -> &BenchCommon {
        match &self.sweep {
            Some(BenchCommand::Sweep(sweep)) => &sweep.common,
            None => &self.run.common,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Latency percentiles across quorum settings and concurrency levels, optionally as a PNG.
    Sweep(BenchSweepArgs),
}

/// A YCSB-style workload mix (shared with the peers driver).
pub use dynakv_bench::WorkloadKind;

/// What every bench run shares: the cluster, the data set and the bounds.
#[derive(Debug, Args)]
pub struct BenchCommon {
    #[command(flatten)]
    pub ring: RingArg,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Distinct keys, chosen uniformly at random.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Stop a run after this long even if not all operations are done.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub max_duration: Duration,
    /// Skip loading the keyspace before read workloads (it is already loaded).
    #[arg(long)]
    pub no_preload: bool,
    /// Send every operation as its own RPC instead of coalescing concurrent ones per node
    /// (the same as `--rpcs-per-node 0`).
    #[arg(long, conflicts_with = "rpcs_per_node")]
    pub no_coalesce: bool,
    /// RPCs in flight per node before further operations are coalesced into batch RPCs
    /// [default: the client's default].
    #[arg(long)]
    pub rpcs_per_node: Option<usize>,
    /// How many replicas a read asks up front: R plus hedges (quorum), or all N (all).
    #[arg(long, value_enum, default_value = "quorum")]
    pub read_fanout: ReadFanoutArg,
    /// Worker threads of the bench client's async runtime [default: one per core]. On a machine
    /// shared with the nodes, 1 leaves them the other cores and saves cross-thread wake-ups.
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Node process ids to measure CPU of [default: every `dynakv node` process serving this
    /// ring file, found in /proc].
    #[arg(long, value_delimiter = ',')]
    pub node_pids: Vec<u32>,
}

#[derive(Debug, Args)]
pub struct BenchRunArgs {
    #[command(flatten)]
    pub common: BenchCommon,
    /// Workload: a = 50/50 read/update, b = 95/5, c = read only, w = write only.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: WorkloadKind,
    /// Operations to run.
    #[arg(long, default_value_t = 100_000)]
    pub ops: u64,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Read quorum [default: the ring's r].
    #[arg(long)]
    pub r: Option<usize>,
    /// Write quorum [default: the ring's w].
    #[arg(long)]
    pub w: Option<usize>,
    /// Consistency level of every operation [default: quorum]; --r and --w override its
    /// quorums, except with linearizable, which takes neither.
    #[arg(long, value_enum)]
    pub consistency: Option<ConsistencyArg>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchSweepArgs {
    #[command(flatten)]
    pub common: BenchCommon,
    /// Workload of every point.
    #[arg(long, value_enum, default_value = "a")]
    pub workload: WorkloadKind,
    /// Operations per point.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    /// Quorum settings as R:W pairs [default: every R and W from 1 to 3].
    #[arg(long, value_delimiter = ',')]
    pub quorums: Vec<String>,
    /// Draw the percentiles as a PNG chart to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also write every point's figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
