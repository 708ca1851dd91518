//! `dynakv ring show` and `dynakv ring plan add|remove`: the ring, and what a membership change
//! would move before anything moves. Both only read the ring file (`show` also asks each node
//! for its health); nothing changes.

use std::process::ExitCode;

use dynakv_ring::{Change, NodeShift, Plan, RangeMove, Ring};

use crate::cli::{PlanCommand, RingShowArgs};

/// What `show` says of ranges in motion until membership changes are live.
const NOTHING_MOVING: &str = "nothing (membership changes are not live yet)";

/// Moving ranges the text plan lists; `--json` lists them all.
const RANGES_SHOWN: usize = 20;

/// `dynakv ring show`: exit 0 whether or not the nodes answer (`status` judges health).
pub async fn show(args: RingShowArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let ring = client.ring().clone();
    let statuses = client.node_statuses().await;
    let primary = ring.primary_shares();
    let replica = ring.replica_shares();
    let replication = ring.replication();

    if args.json {
        let nodes: Vec<_> = ring
            .nodes()
            .iter()
            .zip(&statuses)
            .enumerate()
            .map(|(i, (node, status))| {
                serde_json::json!({
                    "id": node.id,
                    "addr": node.addr.to_string(),
                    "state": node.state.as_str(),
                    "primary_share": primary[i],
                    "replica_share": replica[i],
                    "answers": status.reply.is_ok(),
                    "ring_version": status.reply.as_ref().ok().map(|r| r.ring_version),
                    "error": status.reply.as_ref().err().map(ToString::to_string),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "version": ring.version(),
            "vnodes": ring.config().vnodes,
            "replication": { "n": replication.n, "r": replication.r, "w": replication.w },
            "nodes": nodes,
            "moving": [],
            "moving_note": NOTHING_MOVING,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }

    println!(
        "ring v{}: {} nodes ({} own tokens), N={} R={} W={}, {} vnodes per node",
        ring.version(),
        ring.nodes().len(),
        ring.placed_nodes(),
        replication.n,
        replication.r,
        replication.w,
        ring.config().vnodes
    );
    println!(
        "{:<8} {:<21} {:<8} {:>8} {:>8} {:>8} {:>7}",
        "NODE", "ADDRESS", "STATE", "PRIMARY", "REPLICA", "ANSWERS", "SERVES"
    );
    for (i, (node, status)) in ring.nodes().iter().zip(&statuses).enumerate() {
        let (answers, serves) = match &status.reply {
            Ok(reply) => ("yes", format!("v{}", reply.ring_version)),
            Err(_) => ("no", "-".to_string()),
        };
        println!(
            "{:<8} {:<21} {:<8} {:>8} {:>8} {:>8} {:>7}",
            node.id,
            node.addr.to_string(),
            node.state.as_str(),
            percent(primary[i]),
            percent(replica[i]),
            answers,
            serves
        );
    }
    for status in &statuses {
        match &status.reply {
            Err(e) => println!("  {} does not answer: {e}", status.id),
            Ok(reply) if reply.ring_version != ring.version() => println!(
                "  {} serves ring v{}, this ring file is v{}",
                status.id,
                reply.ring_version,
                ring.version()
            ),
            Ok(_) => {}
        }
    }
    println!("moving: {NOTHING_MOVING}");
    Ok(ExitCode::SUCCESS)
}

/// `dynakv ring plan add|remove`: exit 0 with the plan, or 2 (through the error) when the change
/// cannot be made.
pub fn plan(command: PlanCommand) -> anyhow::Result<ExitCode> {
    let (ring_arg, change, json) = match command {
        PlanCommand::Add(args) => {
            (args.ring, Change::Add { id: args.id, addr: args.addr }, args.json)
        }
        PlanCommand::Remove(args) => {
            (args.ring, Change::Remove { id: args.id, dead: false }, args.json)
        }
    };
    let ring = Ring::load(&ring_arg.ring)?;
    let plan = Plan::new(&ring, change)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan_json(&plan))?);
    } else {
        print_plan(&plan);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(plan: &Plan) {
    let (before, after) = (&plan.before, &plan.after);
    let replication = before.replication();
    let (what, ideal_replicas, ideal_primary) = match &plan.change {
        Change::Add { id, addr } => {
            let owners = after.placed_nodes();
            (
                format!("add {id} at {addr}"),
                format!("N/(n+1) = {}/{owners}", replication.n),
                format!("1/(n+1) = 1/{owners}"),
            )
        }
        Change::Remove { id, .. } => {
            (format!("remove {id}"), format!("what {id} holds"), format!("what {id} leads"))
        }
        Change::Replace { dead, id, addr } => (
            format!("replace {dead} by {id} at {addr}"),
            format!("what {dead} holds"),
            format!("what {dead} leads"),
        ),
    };
    println!(
        "plan: {what}: ring v{} ({} nodes own tokens) -> v{} ({} nodes own tokens), N={}, {} vnodes per node",
        before.version(),
        before.placed_nodes(),
        after.version(),
        after.placed_nodes(),
        replication.n,
        before.config().vnodes
    );
    println!("nothing has changed: this is a plan, and membership changes are not live yet");
    println!();
    println!(
        "keys moving (replica set changes): {:>6} of the key space; ideal {ideal_replicas} = {}{}",
        percent(plan.moved_replicas),
        percent(plan.ideal_replicas),
        ratio_text(plan.replica_ratio())
    );
    println!(
        "primaries changing:                {:>6} of the key space; ideal {ideal_primary} = {}{}",
        percent(plan.moved_primary),
        percent(plan.ideal_primary),
        ratio_text(plan.primary_ratio())
    );
    println!();
    println!(
        "{:<8} {:<21} {:<18} {:>17} {:>17} {:>8} {:>8}",
        "NODE", "ADDRESS", "STATE", "PRIMARY", "REPLICA", "GAINS", "LOSSES"
    );
    for shift in &plan.nodes {
        println!(
            "{:<8} {:<21} {:<18} {:>17} {:>17} {:>8} {:>8}",
            shift.id,
            shift.addr.to_string(),
            state_change(shift),
            format!("{} -> {}", percent(shift.primary_before), percent(shift.primary_after)),
            format!("{} -> {}", percent(shift.replica_before), percent(shift.replica_after)),
            signed('+', shift.gains),
            signed('-', shift.losses),
        );
    }
    if plan.moves.is_empty() {
        println!();
        println!("ranges moving: none");
        return;
    }
    println!();
    println!("transfers (old replica -> new replica):");
    for transfer in &plan.transfers {
        println!(
            "  {} -> {}: {} of the key space in {} ranges",
            transfer.from,
            transfer.to,
            percent(transfer.share),
            transfer.ranges
        );
    }
    println!();
    println!(
        "ranges moving: {} (of {} ranges after the change)",
        plan.moves.len(),
        after.ranges().count()
    );
    println!("  {:<18} {:<18} {:>7}  FROM -> TO", "START (excl.)", "END (incl.)", "SHARE");
    for span in plan.moves.iter().take(RANGES_SHOWN) {
        println!(
            "  {:<18} {:<18} {:>7}  {} -> {}",
            token(span.start),
            token(span.end),
            percent(span.share()),
            span.from.join(","),
            span.to.join(",")
        );
    }
    if plan.moves.len() > RANGES_SHOWN {
        println!("  ... and {} more (--json lists every range)", plan.moves.len() - RANGES_SHOWN);
    }
}

fn plan_json(plan: &Plan) -> serde_json::Value {
    let change = match &plan.change {
        Change::Add { id, addr } => {
            serde_json::json!({ "kind": "add", "id": id, "addr": addr.to_string() })
        }
        Change::Remove { id, dead } => {
            serde_json::json!({ "kind": "remove", "id": id, "dead": dead })
        }
        Change::Replace { dead, id, addr } => {
            serde_json::json!({ "kind": "replace", "dead": dead, "id": id, "addr": addr.to_string() })
        }
    };
    let replication = plan.before.replication();
    let nodes: Vec<_> = plan
        .nodes
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "addr": s.addr.to_string(),
                "state_before": s.state_before.map(|state| state.as_str()),
                "state_after": s.state_after.map(|state| state.as_str()),
                "primary_before": s.primary_before,
                "primary_after": s.primary_after,
                "replica_before": s.replica_before,
                "replica_after": s.replica_after,
                "gains": s.gains,
                "losses": s.losses,
            })
        })
        .collect();
    let transfers: Vec<_> = plan
        .transfers
        .iter()
        .map(|t| {
            serde_json::json!({ "from": t.from, "to": t.to, "share": t.share, "ranges": t.ranges })
        })
        .collect();
    let ranges: Vec<_> = plan.moves.iter().map(range_json).collect();
    serde_json::json!({
        "change": change,
        "before": { "version": plan.before.version(), "nodes_owning_tokens": plan.before.placed_nodes() },
        "after": { "version": plan.after.version(), "nodes_owning_tokens": plan.after.placed_nodes() },
        "replication": { "n": replication.n, "r": replication.r, "w": replication.w },
        "vnodes": plan.before.config().vnodes,
        "moved_share": plan.moved_replicas,
        "ideal_share": plan.ideal_replicas,
        "ratio": plan.replica_ratio(),
        "moved_primary_share": plan.moved_primary,
        "ideal_primary_share": plan.ideal_primary,
        "primary_ratio": plan.primary_ratio(),
        "nodes": nodes,
        "transfers": transfers,
        "ranges": ranges,
    })
}

/// A moving range; tokens as hex strings, which JSON readers that parse numbers as doubles
/// cannot round.
fn range_json(span: &RangeMove) -> serde_json::Value {
    serde_json::json!({
        "start": token(span.start),
        "end": token(span.end),
        "share": span.share(),
        "from": span.from,
        "to": span.to,
    })
}

/// `normal`, `new -> normal`, `joining -> normal` or `normal -> removed`.
fn state_change(shift: &NodeShift) -> String {
    match (shift.state_before, shift.state_after) {
        (Some(before), Some(after)) if before == after => before.to_string(),
        (Some(before), Some(after)) => format!("{before} -> {after}"),
        (None, Some(after)) => format!("new -> {after}"),
        (Some(before), None) => format!("{before} -> removed"),
        (None, None) => "-".to_string(),
    }
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map(|r| format!(" ({r:.2} x ideal)")).unwrap_or_default()
}

/// A gain or loss with its sign, and no sign when it is nothing.
fn signed(sign: char, share: f64) -> String {
    if share == 0.0 { percent(share) } else { format!("{sign}{}", percent(share)) }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn token(token: u64) -> String {
    format!("{token:#018x}")
}
