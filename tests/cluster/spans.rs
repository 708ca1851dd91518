//! Tracing spans: each client operation and each request a node serves has a span with the op,
//! the key's ring token, the node id, the ring version and the quorum numbers, and the log lines
//! inside carry them. No value ever reaches the log. Real processes logging JSON (`--log-format
//! json`), so each has its own subscriber.

use serde_json::Value;

use crate::support::{
    NodeProcess, PATIENCE, client_for, eventually, ring_file_with_metrics, text, wait_until_up,
};

/// Debug lines of dynakv's own crates, as JSON.
const DEBUG: &str = "warn,dynakv_client=debug,dynakv_node=debug";

/// The span of every JSON log line whose message is `message`.
fn spans_of(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == message)
        .map(|line| line["span"].clone())
        .collect()
}

/// `dynakv <args>` with debug JSON logs; its stderr.
async fn logged(args: &[&str], ring: &std::path::Path) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
        .args(args)
        .args(["--log-format", "json", "--ring"])
        .arg(ring)
        .env("RUST_LOG", DEBUG)
        .output()
        .await
        .expect("run dynakv");
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_and_requests_log_inside_spans_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let (ring_path, ring, _) = ring_file_with_metrics(dir.path(), 3, 3, 2, 2);
    let logs: Vec<_> = (1..=3).map(|i| dir.path().join(format!("n{i}.log"))).collect();
    let _nodes: Vec<_> = (0..3)
        .map(|i| {
            let (id, data) = (format!("n{}", i + 1), dir.path().join(format!("n{}", i + 1)));
            NodeProcess::start_logging(&ring_path, &id, &data, DEBUG, &logs[i])
        })
        .collect();
    wait_until_up(&client_for(&ring)).await;
    let token = format!("{:016x}", dynakv_ring::key_token(b"traced-key"));

    let put = logged(&["put", "traced-key", "secret-value-xyz"], &ring_path).await;
    let get = logged(&["get", "traced-key"], &ring_path).await;
    for (op, log) in [("put", &put), ("get", &get)] {
        assert!(!log.contains("secret-value-xyz"), "a value reached the log:\n{log}");
        let spans = spans_of(log, "operation done");
        let span = spans.iter().find(|span| span["op"] == op);
        let span = span.unwrap_or_else(|| panic!("no {op} span:\n{log}"));
        assert_eq!(span["name"], "op");
        assert_eq!(span["token"], token.as_str(), "{span}");
        assert_eq!((span["quorum"].as_u64(), span["n"].as_u64()), (Some(2), Some(3)), "{span}");
        assert_eq!(span["ring_version"], 1, "{span}");
    }

    // Each replica served the put's write in a span that names the node, the key's token and
    // the ring version.
    for (i, log) in logs.iter().enumerate() {
        let id = format!("n{}", i + 1);
        eventually(PATIENCE, &format!("{id} logs the write it served"), || async {
            let log = std::fs::read_to_string(log).unwrap();
            spans_of(&log, "request served").iter().any(|span| {
                span["rpc"] == "write" && span["token"] == token.as_str() && span["node"] == id
            })
        })
        .await;
        let log = std::fs::read_to_string(log).unwrap();
        assert!(!log.contains("secret-value-xyz"), "a value reached {id}'s log:\n{log}");
        let span = &spans_of(&log, "request served")[0];
        assert_eq!((&span["name"], &span["ring_version"]), (&"request".into(), &1.into()));
    }
}
