//! What the client counts, through the `metrics` facade: an application that embeds the client
//! and installs a recorder (such as `metrics-exporter-prometheus`) exports these with its own.
//! Without a recorder every call here is a no-op.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `dynakv_client_quorum_duration_seconds` | histogram | op (read, write), outcome (met, missed) |
//! | `dynakv_client_replica_failures_total` | counter | node, cause (down, timeout, refused, unreachable, clock_skew, rejected) |
//! | `dynakv_client_stand_ins_total` | counter | keeper (stand_in: a non-replica node; replica: a live replica keeps the hint) |
//! | `dynakv_client_read_repairs_total` | counter | outcome (ok, failed) |
//! | `dynakv_client_read_hedges_total` | counter | cause (failed: a call failed; late: a call passed its node's hedge delay) |
//! | `dynakv_client_read_repairs_skipped_total` | counter | (none): too many in flight, left to anti-entropy |
//! | `dynakv_client_batch_size` | histogram | (none): operations per RPC the coalescer sent |

use std::time::Instant;

use metrics::{counter, histogram};

use crate::error::{Op, ReplicaError};
use crate::read::Hedge;

/// Records one quorum round of `op`, started at `started`, that met its quorum or missed it.
pub(crate) fn quorum(op: Op, started: Instant, met: bool) {
    let op = match op {
        Op::Read => "read",
        Op::Write => "write",
    };
    let outcome = if met { "met" } else { "missed" };
    histogram!("dynakv_client_quorum_duration_seconds", "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// Records a failed call to node `node`.
pub(crate) fn replica_failed(node: &str, cause: &ReplicaError) {
    let cause = match cause {
        ReplicaError::Down { .. } => "down",
        ReplicaError::Timeout { .. } => "timeout",
        ReplicaError::Refused => "refused",
        ReplicaError::Unreachable(_) => "unreachable",
        ReplicaError::ClockSkew { .. } => "clock_skew",
        ReplicaError::Rejected { .. } => "rejected",
        ReplicaError::StaleRing { .. } => "stale_ring",
        ReplicaError::Tls(_) => "tls",
    };
    counter!("dynakv_client_replica_failures_total", "node" => node.to_string(), "cause" => cause)
        .increment(1);
}

/// Records a write sent with a hint for an unreachable replica: to a non-replica stand-in, or to
/// a live replica that keeps the hint (`replica`).
pub(crate) fn stand_in(replica: bool) {
    let keeper = if replica { "replica" } else { "stand_in" };
    counter!("dynakv_client_stand_ins_total", "keeper" => keeper).increment(1);
}

/// Records a read asking one more replica than it did, and why.
pub(crate) fn hedge(why: Hedge) {
    let cause = match why {
        Hedge::Failed => "failed",
        Hedge::Late => "late",
    };
    counter!("dynakv_client_read_hedges_total", "cause" => cause).increment(1);
}

/// Records one read-repair write to a stale replica.
pub(crate) fn repair_sent(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!("dynakv_client_read_repairs_total", "outcome" => outcome).increment(1);
}

/// Records a read repair skipped because too many were in flight.
pub(crate) fn repair_skipped() {
    counter!("dynakv_client_read_repairs_skipped_total").increment(1);
}

/// Records one RPC of `size` operations sent by the coalescer.
pub(crate) fn batch_sent(size: usize) {
    histogram!("dynakv_client_batch_size").record(size as f64);
}
