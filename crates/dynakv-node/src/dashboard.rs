//! The live dashboard on a node's metrics address: one static page (`/`, embedded in the binary)
//! that polls `/api/cluster` every second.
//!
//! `/api/cluster` is the cluster as this node sees it: the ring (version, every vnode range and
//! its primary), and for every node its state (up or down, round-trip time, keys, hints, clock
//! offset, ring version) from a Health RPC through the node's peers ([`Topology`](crate::topology::Topology)),
//! plus what the node reports of itself at `/api/node`: its operation count, its request latency
//! histogram (cumulative, so the page turns two polls into ops/s and p99) and whether an
//! anti-entropy round or a hint delivery pass is running, and the ranges it is receiving in a
//! membership change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::{Html, IntoResponse};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::service::NodeState;

/// The page, served as it is.
const PAGE: &str = include_str!("dashboard.html");

/// How long gathering waits for one peer: the page polls every second.
const PEER_DEADLINE: Duration = Duration::from_millis(800);

/// RPCs whose latency the page charts: the ones clients wait on.
const CLIENT_RPCS: [&str; 3] = ["read", "write", "batch"];

/// What the dashboard's routes share.
#[derive(Clone)]
struct Dashboard {
    state: Arc<NodeState>,
    /// Fetches the peers' `/api/node`.
    http: HttpClient<HttpConnector, Empty<Bytes>>,
}

/// The dashboard's routes: `/`, `/api/cluster` and `/api/node`.
pub fn routes(state: Arc<NodeState>) -> axum::Router {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(PEER_DEADLINE));
    let http = HttpClient::builder(TokioExecutor::new()).build(connector);
    let dashboard = Dashboard { state, http };
    let (cluster, node) = (dashboard.clone(), dashboard);
    axum::Router::new()
        .route("/", axum::routing::get(|| async { Html(PAGE) }))
        .route("/api/cluster", axum::routing::get(move || gather(cluster.clone())))
        .route("/api/node", axum::routing::get(move || async move { as_json(own(&node.state)) }))
}

/// A JSON document as a response.
fn as_json(doc: Value) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string())
}

/// What this node reports of itself: operation count, latency histogram, running work.
fn own(state: &NodeState) -> Value {
    let text = crate::metrics::recorder().map(|h| h.render()).unwrap_or_default();
    let (ops, buckets) = figures(&text, &state.id);
    let moving: Vec<_> = crate::membership::moves::status(state)
        .ranges
        .iter()
        .filter(|range| !range.done)
        .map(|range| {
            let span = range.span.unwrap_or_default();
            json!({ "start": span.start, "end": span.end, "keys": range.keys,
                    "bytes": range.bytes, "keys_expected": range.keys_expected })
        })
        .collect();
    json!({
        "moving_in": moving,
        "id": state.id,
        "ops_total": ops,
        "latency_buckets": buckets,
        "repairing": state.anti_entropy.try_lock().is_err(),
        "handing_off": state.handoff.try_lock().is_err(),
    })
}

/// From Prometheus text: node `id`'s operations served, and its client-facing request latency
/// histogram as cumulative `[upper bound in seconds, count]` pairs (`+Inf` as null).
fn figures(text: &str, id: &str) -> (f64, Vec<(Option<f64>, f64)>) {
    let node = format!("node=\"{id}\"");
    let mut ops = 0.0;
    let mut buckets: Vec<(Option<f64>, f64)> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some((name, labels)) = series.split_once('{') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        if !labels.contains(&node) {
            continue;
        }
        match name {
            "dynakv_operations_total" => ops += value,
            "dynakv_request_duration_seconds_bucket" => {
                let client_rpc =
                    CLIENT_RPCS.iter().any(|rpc| labels.contains(&format!("rpc=\"{rpc}\"")));
                let Some(le) = label(labels, "le") else { continue };
                if !client_rpc {
                    continue;
                }
                let le = le.parse::<f64>().ok().filter(|le| le.is_finite());
                match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                    Some((_, count)) => *count += value,
                    None => buckets.push((le, value)),
                }
            }
            _ => {}
        }
    }
    buckets.sort_by(|a, b| a.0.unwrap_or(f64::MAX).total_cmp(&b.0.unwrap_or(f64::MAX)));
    (ops, buckets)
}

/// The value of label `name` in `a="1",b="2"}`.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// The cluster as this node sees it (see the module docs).
async fn gather(dashboard: Dashboard) -> impl IntoResponse {
    let state = &dashboard.state;
    let topology = state.topology();
    let ring = &topology.ring;
    let nodes = ring.nodes().iter().enumerate().map(|(i, spec)| {
        let (dashboard, topology) = (dashboard.clone(), topology.clone());
        async move {
            let state = &dashboard.state;
            let this = topology.me == Some(i);
            let mut view = json!({
                "id": spec.id, "addr": spec.addr.to_string(), "this": this,
            });
            let (health, rtt_ms) = if this {
                (Some(state.health()), 0.0)
            } else {
                let peer = topology.peer(i).expect("every other node is a peer");
                let started = Instant::now();
                let call =
                    peer.call(
                        |mut c| async move { c.health(dynakv_proto::v1::HealthRequest {}).await },
                    );
                match tokio::time::timeout(PEER_DEADLINE, call).await {
                    Ok(Ok(health)) => (Some(health), started.elapsed().as_secs_f64() * 1000.0),
                    Ok(Err(status)) => {
                        view["error"] = status.message().into();
                        (None, 0.0)
                    }
                    Err(_) => {
                        view["error"] = "timed out".into();
                        (None, 0.0)
                    }
                }
            };
            let Some(health) = health else {
                view["up"] = false.into();
                return view;
            };
            let offset_ms = health.wall_ms as f64 + rtt_ms / 2.0 - state.wall.now_ms() as f64;
            view["up"] = true.into();
            view["rtt_ms"] = rtt_ms.into();
            view["keys"] = health.keys.into();
            view["hints"] = health.hints.into();
            view["clock_offset_ms"] = if this { 0.0 } else { offset_ms }.into();
            view["ring_version"] = health.ring_version.into();
            view["degraded"] = health.degraded.into();
            let report = if this {
                Some(own(state))
            } else {
                fetch_node(&dashboard.http, &health.metrics_addr).await
            };
            view["report"] = report.unwrap_or(Value::Null);
            view
        }
    });
    let nodes = futures::future::join_all(nodes).await;
    let ranges: Vec<_> =
        ring.ranges().map(|r| json!([r.start, r.end, r.replicas.first().copied()])).collect();
    as_json(json!({
        "served_by": state.id,
        "wall_ms": state.wall.now_ms(),
        "ring": { "version": ring.version(), "n": ring.config().replication.n, "ranges": ranges },
        "nodes": nodes,
        // Range moves are reported per node (`report.moving_in`); kept for whole-change views.
        "moves": [],
    }))
}

/// A peer's `/api/node`, or `None` if it has no metrics address or does not answer in time.
async fn fetch_node(
    http: &HttpClient<HttpConnector, Empty<Bytes>>,
    metrics_addr: &str,
) -> Option<Value> {
    if metrics_addr.is_empty() {
        return None;
    }
    let uri: hyper::Uri = format!("http://{metrics_addr}/api/node").parse().ok()?;
    let fetch = async {
        let response = http.get(uri).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(PEER_DEADLINE, fetch).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_sum_one_nodes_operations_and_client_rpc_buckets() {
        let text = "# TYPE x counter\n\
            dynakv_operations_total{node=\"n1\",op=\"read\",outcome=\"found\"} 3\n\
            dynakv_operations_total{node=\"n1\",op=\"write\",outcome=\"applied\"} 4\n\
            dynakv_operations_total{node=\"n2\",op=\"write\",outcome=\"applied\"} 100\n\
            dynakv_request_duration_seconds_bucket{node=\"n1\",rpc=\"read\",le=\"0.001\"} 2\n\
            dynakv_request_duration_seconds_bucket{node=\"n1\",rpc=\"write\",le=\"0.001\"} 1\n\
            dynakv_request_duration_seconds_bucket{node=\"n1\",rpc=\"read\",le=\"+Inf\"} 5\n\
            dynakv_request_duration_seconds_bucket{node=\"n1\",rpc=\"repair\",le=\"0.001\"} 9\n";
        let (ops, buckets) = figures(text, "n1");
        assert_eq!(ops, 7.0);
        assert_eq!(buckets, [(Some(0.001), 3.0), (None, 5.0)]);
    }
}
