//! `dynakv repair` and `dynakv handoff`: one anti-entropy round, or one hint delivery pass, now,
//! on one node or on each node in turn.
//!
//! Exit codes: 0 when every pass completed; 1 when a pass ran but left work undone (a range that
//! failed to sync, a peer that could not be reached, hints that could not be delivered); 2 when a
//! node could not run its pass at all.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use dynakv_client::{Client, ClientError, HandoffReport, RepairReport};

use crate::cli::RepairArgs;

/// Longest a pass may take before the command gives up waiting for its report.
const PASS_DEADLINE: Duration = Duration::from_secs(3600);

/// `dynakv repair`.
pub async fn run(args: RepairArgs) -> anyhow::Result<ExitCode> {
    each_node(&args, |client, id| async move { client.repair(&id, PASS_DEADLINE).await }, |r: &RepairReport| {
        let text = format!(
            "{}: compared {} ranges ({} differed, {} failed); sent {} keys, received {}; {} bytes; \
             collected {} tombstones ({} ranges held for hints); {:.1}ms",
            r.node,
            r.ranges_compared,
            r.ranges_differing,
            r.ranges_failed,
            r.keys_sent,
            r.keys_received,
            r.bytes,
            r.tombstones_collected,
            r.ranges_held,
            r.elapsed.as_secs_f64() * 1e3
        );
        let json = serde_json::json!({
            "node": r.node,
            "complete": r.is_complete(),
            "ranges_compared": r.ranges_compared,
            "ranges_differing": r.ranges_differing,
            "ranges_failed": r.ranges_failed,
            "ranges_held": r.ranges_held,
            "keys_sent": r.keys_sent,
            "keys_received": r.keys_received,
            "bytes": r.bytes,
            "tombstones_collected": r.tombstones_collected,
            "records_damaged": r.records_damaged,
            "unreachable": r.unreachable,
            "errors": r.errors,
            "millis": r.elapsed.as_millis() as u64,
        });
        let mut notes = r.errors.clone();
        if !r.unreachable.is_empty() {
            notes.push(format!("unreachable, not compared: {}", r.unreachable.join(", ")));
        }
        if r.records_damaged > 0 {
            notes.push(format!("{} damaged records skipped (see the node's log)", r.records_damaged));
        }
        Pass { complete: r.is_complete(), text, json, notes }
    })
    .await
}

/// `dynakv handoff`.
pub async fn handoff(args: RepairArgs) -> anyhow::Result<ExitCode> {
    each_node(
        &args,
        |client, id| async move { client.hand_off(&id, PASS_DEADLINE).await },
        |r: &HandoffReport| {
            let text = format!(
                "{}: delivered {} hints, {} failed, {} pending; {:.1}ms",
                r.node,
                r.delivered,
                r.failed,
                r.pending,
                r.elapsed.as_secs_f64() * 1e3
            );
            let json = serde_json::json!({
                "node": r.node,
                "complete": r.failed == 0,
                "delivered": r.delivered,
                "failed": r.failed,
                "pending": r.pending,
                "errors": r.errors,
                "millis": r.elapsed.as_millis() as u64,
            });
            Pass { complete: r.failed == 0, text, json, notes: r.errors.clone() }
        },
    )
    .await
}

/// How one node's pass is shown.
struct Pass {
    /// False when the pass left work undone.
    complete: bool,
    /// One line for people.
    text: String,
    /// One JSON document for scripts.
    json: serde_json::Value,
    /// Indented lines after `text`: what was left undone and why.
    notes: Vec<String>,
}

/// Runs `pass` on the node named by `--node`, or on every node in turn, and prints each report.
async fn each_node<R, F, Fut>(
    args: &RepairArgs,
    pass: F,
    show: impl Fn(&R) -> Pass,
) -> anyhow::Result<ExitCode>
where
    F: Fn(Client, String) -> Fut,
    Fut: Future<Output = Result<R, ClientError>>,
{
    let client = super::admin_client(&args.ring)?;
    let nodes: Vec<String> = match &args.node {
        Some(id) => {
            client.ring().node_index(id)?;
            vec![id.clone()]
        }
        None => client.ring().nodes().iter().map(|n| n.id.clone()).collect(),
    };
    let (mut failed, mut incomplete) = (false, false);
    for id in nodes {
        match pass(client.clone(), id.clone()).await {
            Ok(report) => {
                let shown = show(&report);
                incomplete |= !shown.complete;
                if args.json {
                    println!("{}", serde_json::to_string(&shown.json)?);
                } else {
                    println!("{}", shown.text);
                    shown.notes.iter().for_each(|note| println!("  {note}"));
                }
            }
            Err(e) => {
                failed = true;
                if args.json {
                    let doc = serde_json::json!({ "node": id, "error": e.to_string() });
                    println!("{}", serde_json::to_string(&doc)?);
                } else {
                    eprintln!("{id}: failed: {e}");
                }
            }
        }
    }
    Ok(match (failed, incomplete) {
        (true, _) => ExitCode::from(2),
        (false, true) => ExitCode::from(1),
        (false, false) => ExitCode::SUCCESS,
    })
}
