//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A leaderless, Dynamo-style replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "dynakv", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub ring: RingArg,
    pub key: String,
    pub value: String,
    /// Acknowledgements to wait for [default: the ring's w].
    #[arg(long)]
    pub w: Option<usize>,
    /// Count only the key's own replicas toward W (no sloppy quorum).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub ring: RingArg,
    pub key: String,
    /// Replies to wait for [default: the ring's r].
    #[arg(long)]
    pub r: Option<usize>,
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
pub struct StatusArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    #[command(flatten)]
    pub ring: RingArg,
    /// The node to run the round on [default: every node, one after another].
    #[arg(long)]
    pub node: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
