//! `dynakv status`: every node's health and ring state, the moves in progress, and whether
//! every key range can still meet quorum (by the live ring, when a node can give it).

use std::process::ExitCode;
use std::time::Duration;

use dynakv_client::{NodeReport, NodeStatus};
use dynakv_ring::Ring;

use super::membership::{MoveTotals, mb};
use crate::cli::StatusArgs;

/// How many ranges of the ring have too few live replicas for the default quorums.
struct QuorumCheck {
    ranges: usize,
    below_read: usize,
    below_write: usize,
    /// Share of the key space in ranges below either quorum.
    share_below: f64,
}

/// `up`: the node answers (it can serve reads); `writable`: and its storage takes writes.
fn check_quorum(ring: &Ring, up: &[bool], writable: &[bool]) -> QuorumCheck {
    let replication = ring.replication();
    let mut check = QuorumCheck { ranges: 0, below_read: 0, below_write: 0, share_below: 0.0 };
    for range in ring.ranges() {
        let live = range.replicas.iter().filter(|&&node| up[node]).count();
        let takes_writes = range.replicas.iter().filter(|&&node| writable[node]).count();
        check.ranges += 1;
        check.below_read += usize::from(live < replication.r);
        check.below_write += usize::from(takes_writes < replication.w);
        if live < replication.r || takes_writes < replication.w {
            check.share_below += range.share();
        }
    }
    check
}

pub async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    // The live ring when a node gives it; the ring file otherwise (status judges health).
    let _ = client.refresh_ring().await;
    let ring = client.ring();
    // The first call opens each connection; the second measures the round trip alone.
    client.node_statuses().await;
    let statuses = client.node_statuses().await;
    let moves = if ring.is_moving() { client.move_status().await } else { Vec::new() };
    // A node's ring state, by id (the statuses follow the live ring's nodes).
    let member = |id: &str| ring.node_index(id).map_or("-", |i| ring.nodes()[i].state.as_str());
    let pending = |id: &str| {
        moves.iter().find(|m| m.id == id).map(|m| MoveTotals::of(std::slice::from_ref(m)))
    };
    let up: Vec<bool> = statuses.iter().map(|s| s.reply.is_ok()).collect();
    let writable: Vec<bool> =
        statuses.iter().map(|s| s.reply.as_ref().is_ok_and(|r| r.degraded.is_none())).collect();
    let shares = ring.primary_shares();
    let check = check_quorum(&ring, &up, &writable);
    let healthy = check.below_read == 0 && check.below_write == 0;
    let replication = ring.replication();
    // A node whose clock is off by more than half the bound is flagged before writes are refused.
    let max_skew_ms = ring.config().clocks.max_skew_ms;
    let skewed = |r: &NodeReport| r.clock_offset_ms.unsigned_abs() > max_skew_ms / 2;

    if args.json {
        let nodes: Vec<_> = statuses
            .iter()
            .zip(&shares)
            .map(|(s, share)| {
                let mut item = node_json(s, *share);
                item["ring_state"] = member(&s.id).into();
                item["moving"] = pending(&s.id).map(|totals| totals.json(None)).into();
                if let Ok(r) = &s.reply {
                    item["clock_offset_ms"] = r.clock_offset_ms.into();
                    item["clock_skewed"] = skewed(r).into();
                }
                item
            })
            .collect();
        let doc = serde_json::json!({
            "ring_version": ring.version(),
            "ring_moving": ring.is_moving(),
            "replication": { "n": replication.n, "r": replication.r, "w": replication.w },
            "nodes": nodes,
            "max_skew_ms": max_skew_ms,
            "quorum": {
                "ok": healthy,
                "ranges": check.ranges,
                "ranges_below_r": check.below_read,
                "ranges_below_w": check.below_write,
                "share_below": check.share_below,
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{:<8} {:<21} {:<8} {:<8} {:>8} {:>9} {:>6} {:>10} {:>8} {:>5} {:>10}",
            "NODE",
            "ADDRESS",
            "STATE",
            "MEMBER",
            "RTT",
            "CLOCK",
            "OWNS",
            "KEYS",
            "HINTS",
            "RING",
            "UPTIME"
        );
        for (s, share) in statuses.iter().zip(&shares) {
            let (state, rtt, clock, keys, hints, ring_version, uptime) = match &s.reply {
                Ok(r) => (
                    if r.degraded.is_some() { "DEGRADED" } else { "UP" },
                    format!("{:.2}ms", s.rtt.unwrap_or_default().as_secs_f64() * 1e3),
                    format!("{:+}ms", r.clock_offset_ms),
                    r.keys.to_string(),
                    r.hints.to_string(),
                    format!("v{}", r.ring_version),
                    human(r.uptime),
                ),
                Err(_) => {
                    let none = || "-".to_string();
                    ("DOWN", none(), none(), none(), none(), none(), none())
                }
            };
            println!(
                "{:<8} {:<21} {:<8} {:<8} {:>8} {:>9} {:>5.1}% {:>10} {:>8} {:>5} {:>10}",
                s.id,
                s.addr.to_string(),
                state,
                member(&s.id),
                rtt,
                clock,
                share * 100.0,
                keys,
                hints,
                ring_version,
                uptime
            );
        }
        for s in &statuses {
            match &s.reply {
                Err(e) => println!("  {} is down: {e}", s.id),
                Ok(r) if r.degraded.is_some() => println!(
                    "  {} is degraded, refusing writes (reads go on): {}",
                    s.id,
                    r.degraded.as_deref().unwrap_or_default()
                ),
                Ok(r) if r.hint_failures > 0 => println!(
                    "  {}: {} hint deliveries failed since it started (causes in its log; \
                     `dynakv handoff --node {}` retries now)",
                    s.id, r.hint_failures, s.id
                ),
                Ok(_) => {}
            }
            if let Ok(r) = &s.reply
                && skewed(r)
            {
                let (by, way) = (r.clock_offset_ms.unsigned_abs(), r.clock_offset_ms);
                let way = if way > 0 { "ahead of" } else { "behind" };
                println!(
                    "  warning: {}'s clock is {by} ms {way} this machine's, more than \
                     max_skew_ms / 2 = {} ms: writes stamped by the faster clock are refused \
                     past {max_skew_ms} ms (clock skew); sync the clocks (NTP)",
                    s.id,
                    max_skew_ms / 2
                );
            }
        }
        if ring.is_moving() {
            println!(
                "ring v{} is changing; pending moves (ranges each node gains):",
                ring.version()
            );
            for s in &statuses {
                match pending(&s.id) {
                    Some(t) if !t.unanswered.is_empty() => {
                        println!("  {}: no answer ({})", s.id, t.unanswered.join("; "))
                    }
                    Some(t) if t.ranges > 0 => println!(
                        "  {}: {} of {} ranges done, {} keys and {} received, {}",
                        s.id,
                        t.done,
                        t.ranges,
                        t.keys,
                        mb(t.bytes),
                        t.left()
                    ),
                    _ => {}
                }
            }
        }
        let (n, r, w) = (replication.n, replication.r, replication.w);
        if healthy {
            println!(
                "quorum: OK: every one of {} ranges has at least R={r} live and W={w} writable replicas of N={n}",
                check.ranges
            );
        } else {
            println!(
                "quorum: DEGRADED: {} of {} ranges ({:.1}% of keys) below R={r} live or W={w} writable replicas of N={n} \
                 ({} below R, {} below W)",
                check.below_read.max(check.below_write),
                check.ranges,
                check.share_below * 100.0,
                check.below_read,
                check.below_write
            );
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn node_json(s: &NodeStatus, share: f64) -> serde_json::Value {
    let mut item = serde_json::json!({
        "id": s.id,
        "addr": s.addr.to_string(),
        "up": s.reply.is_ok(),
        "share": share,
    });
    match &s.reply {
        Ok(r) => {
            item["keys"] = r.keys.into();
            item["hints"] = r.hints.into();
            item["hint_failures"] = r.hint_failures.into();
            item["state"] = if r.degraded.is_some() { "degraded" } else { "up" }.into();
            item["degraded"] = r.degraded.clone().into();
            item["ring_version"] = r.ring_version.into();
            item["uptime_s"] = r.uptime.as_secs().into();
            item["rtt_ms"] = (s.rtt.unwrap_or_default().as_secs_f64() * 1e3).into();
        }
        Err(e) => {
            item["state"] = "down".into();
            item["keys"] = serde_json::Value::Null;
            item["hints"] = serde_json::Value::Null;
            item["error"] = e.to_string().into();
        }
    }
    item
}

/// A duration as `3d4h`, `5h2m`, `7m12s` or `42s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
