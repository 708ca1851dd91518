//! Prometheus metrics: what a node counts, and the `/metrics` endpoint it serves them on.
//!
//! Counters and histograms go through the `metrics` facade, recorded by one Prometheus recorder
//! per process ([`recorder`]), and every series carries the node's id as `node`. The endpoint
//! sets the gauges (keys, hints, ring version, storage state) from the node's state at each
//! scrape, then renders everything in the Prometheus text format.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `dynakv_requests_total` | counter | node, rpc, code |
//! | `dynakv_request_duration_seconds` | histogram | node, rpc |
//! | `dynakv_operations_total` | counter | node, op (read, write, hint), outcome (applied, stale, found, missing, error) |
//! | `dynakv_storage_commit_batch_size` | histogram | (none) |
//! | `dynakv_storage_commit_duration_seconds` | histogram | sync (os, always) |
//! | `dynakv_keys`, `dynakv_hints_pending`, `dynakv_ring_version`, `dynakv_storage_degraded` | gauge | node |
//! | `dynakv_hints_delivered_total`, `dynakv_hints_failed_total` | counter | node |
//! | `dynakv_anti_entropy_rounds_total`, `dynakv_anti_entropy_ranges_compared_total`, `dynakv_anti_entropy_ranges_differing_total`, `dynakv_anti_entropy_ranges_failed_total`, `dynakv_anti_entropy_keys_sent_total`, `dynakv_anti_entropy_keys_received_total`, `dynakv_tombstones_collected_total` | counter | node |
//! | `dynakv_anti_entropy_round_duration_seconds` | histogram | node |
//! | `dynakv_anti_entropy_records_scanned_total` | counter | node |
//! | `dynakv_ttl_expired_total` | counter | node |

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use dynakv_core::{HandoffReport, RepairReport};
use metrics::{SharedString, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::service::NodeState;

/// Latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Batch-size buckets, in writes per commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The process's Prometheus recorder, installed as the global `metrics` recorder on first use;
/// `None` when the embedding program installed another recorder first (its own then counts).
pub fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("batch_size".into()), BATCH_BUCKETS)
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed: /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Serves `GET /metrics` and the dashboard on `listener` until the node stops.
pub async fn serve(listener: TcpListener, state: Arc<NodeState>) {
    recorder();
    let stopping = state.stopping.clone();
    let dashboard = crate::dashboard::routes(state.clone());
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(move || scrape(state.clone())))
        .merge(dashboard);
    if let Err(e) =
        axum::serve(listener, app).with_graceful_shutdown(stopping.cancelled_owned()).await
    {
        tracing::warn!(error = %e, "metrics endpoint failed");
    }
}

/// One scrape: the gauges from the node's state, then everything rendered.
async fn scrape(state: Arc<NodeState>) -> impl IntoResponse {
    let node = state.label.clone();
    gauge!("dynakv_keys", "node" => node.clone()).set(state.store.live_keys() as f64);
    gauge!("dynakv_hints_pending", "node" => node.clone()).set(state.store.pending_hints() as f64);
    gauge!("dynakv_ring_version", "node" => node.clone()).set(state.ring_version() as f64);
    let degraded = f64::from(u8::from(state.store.fault().is_some()));
    gauge!("dynakv_storage_degraded", "node" => node).set(degraded);
    match recorder() {
        Some(handle) => {
            handle.run_upkeep();
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], handle.render())
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "another metrics recorder is installed in this process\n".to_string(),
        ),
    }
}

/// A node's id as a metric label: built once, cloned without allocating (it shares an `Arc`).
pub fn node_label(id: &str) -> SharedString {
    SharedString::from_shared(Arc::from(id))
}

/// Counts one RPC: its outcome code and its latency.
pub fn request<T>(
    node: &SharedString,
    rpc: &'static str,
    started: Instant,
    result: &Result<T, tonic::Status>,
) {
    let code = match result {
        Ok(_) => "ok",
        Err(status) => code_name(status.code()),
    };
    counter!("dynakv_requests_total", "node" => node.clone(), "rpc" => rpc, "code" => code)
        .increment(1);
    histogram!("dynakv_request_duration_seconds", "node" => node.clone(), "rpc" => rpc)
        .record(started.elapsed().as_secs_f64());
}

/// Counts one replica operation (alone or in a batch) by what it did.
pub fn operation(node: &SharedString, op: &'static str, outcome: &'static str) {
    counter!("dynakv_operations_total", "node" => node.clone(), "op" => op, "outcome" => outcome)
        .increment(1);
}

/// Counts what a hint delivery pass did.
pub fn handoff(node: &SharedString, report: &HandoffReport) {
    counter!("dynakv_hints_delivered_total", "node" => node.clone()).increment(report.delivered);
    counter!("dynakv_hints_failed_total", "node" => node.clone()).increment(report.failed);
}

/// Counts what an anti-entropy round did.
pub fn repair(node: &SharedString, r: &RepairReport) {
    let n = || node.clone();
    counter!("dynakv_anti_entropy_rounds_total", "node" => n()).increment(1);
    counter!("dynakv_anti_entropy_ranges_compared_total", "node" => n())
        .increment(r.ranges_compared);
    counter!("dynakv_anti_entropy_ranges_differing_total", "node" => n())
        .increment(r.ranges_differing);
    counter!("dynakv_anti_entropy_ranges_failed_total", "node" => n()).increment(r.ranges_failed);
    counter!("dynakv_anti_entropy_keys_sent_total", "node" => n()).increment(r.keys_sent);
    counter!("dynakv_anti_entropy_keys_received_total", "node" => n()).increment(r.keys_received);
    counter!("dynakv_tombstones_collected_total", "node" => n()).increment(r.tombstones_collected);
    histogram!("dynakv_anti_entropy_round_duration_seconds", "node" => n())
        .record(r.elapsed.as_secs_f64());
}

/// Counts records anti-entropy read by scanning storage, for this node's rounds or a peer's
/// (scanned digests, version lists); an idle round reads none.
pub fn scanned(node: &SharedString, records: u64) {
    counter!("dynakv_anti_entropy_records_scanned_total", "node" => node.clone())
        .increment(records);
}

/// Counts records the TTL sweep expired.
/// Counts records and bytes a new owner received by streaming during a membership change.
pub fn moved(node: &SharedString, records: u64, bytes: u64) {
    counter!("dynakv_move_records_received_total", "node" => node.clone()).increment(records);
    counter!("dynakv_move_bytes_received_total", "node" => node.clone()).increment(bytes);
}

/// Records the ring version a node has just adopted.
pub fn ring_version(node: &SharedString, version: u64) {
    gauge!("dynakv_ring_version", "node" => node.clone()).set(version as f64);
}

/// Counts records expired by the TTL sweep.
pub fn expired(node: &SharedString, records: u64) {
    counter!("dynakv_ttl_expired_total", "node" => node.clone()).increment(records);
}

/// The snake_case name of a gRPC code, as a label value.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
