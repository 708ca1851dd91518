//! `dynakv repair`: one anti-entropy round now, on one node or on each node in turn.

use std::process::ExitCode;
use std::time::Duration;

use dynakv_client::RepairReport;

use crate::cli::RepairArgs;

/// Longest a round may take before the command gives up waiting for its report.
const ROUND_DEADLINE: Duration = Duration::from_secs(3600);

pub async fn run(args: RepairArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let nodes: Vec<String> = match args.node {
        Some(id) => {
            client.ring().node_index(&id)?;
            vec![id]
        }
        None => client.ring().nodes().iter().map(|n| n.id.clone()).collect(),
    };
    let mut failed = false;
    for id in nodes {
        match client.repair(&id, ROUND_DEADLINE).await {
            Ok(report) if args.json => println!("{}", serde_json::to_string(&json(&report))?),
            Ok(report) => print(&report),
            Err(e) => {
                failed = true;
                if args.json {
                    let doc = serde_json::json!({ "node": id, "error": e.to_string() });
                    println!("{}", serde_json::to_string(&doc)?);
                } else {
                    eprintln!("{id}: repair failed: {e}");
                }
            }
        }
    }
    Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

fn print(r: &RepairReport) {
    println!(
        "{}: compared {} ranges ({} differed); sent {} keys, received {}; {} bytes; \
         collected {} tombstones; {:.1}ms",
        r.node,
        r.ranges_compared,
        r.ranges_differing,
        r.keys_sent,
        r.keys_received,
        r.bytes,
        r.tombstones_collected,
        r.elapsed.as_secs_f64() * 1e3
    );
    if !r.unreachable.is_empty() {
        println!("  unreachable, not compared: {}", r.unreachable.join(", "));
    }
}

fn json(r: &RepairReport) -> serde_json::Value {
    serde_json::json!({
        "node": r.node,
        "ranges_compared": r.ranges_compared,
        "ranges_differing": r.ranges_differing,
        "keys_sent": r.keys_sent,
        "keys_received": r.keys_received,
        "bytes": r.bytes,
        "tombstones_collected": r.tombstones_collected,
        "unreachable": r.unreachable,
        "millis": r.elapsed.as_millis() as u64,
    })
}
