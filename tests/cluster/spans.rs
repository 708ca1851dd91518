//! Tracing spans: each client operation and each request a node serves has a span with the op,
//! the key's ring token, the node id, the ring version and the quorum numbers, and the log lines
//! inside carry them. No value ever reaches the log.

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::support::TestCluster;

/// A log sink: every line written goes to the shared buffer.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn operations_and_requests_log_inside_spans_that_name_them() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("warn,dynakv_client=debug,dynakv_node=debug")
        .with_writer(move || writer.clone())
        .finish();
    // The subscriber is this thread's; a current-thread runtime runs every task (the nodes'
    // request handlers included) on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let cluster = TestCluster::start(3, 3, 2, 2).await;
            let client = cluster.client();
            client.put("traced-key", "secret-value-xyz").await.unwrap();
            client.settle().await;
            assert!(client.get("traced-key").await.unwrap().is_some());
            client.settle().await;
            cluster.shutdown().await;
        })
    });
    let log = String::from_utf8(sink.0.lock().clone()).unwrap();
    assert!(!log.contains("secret-value-xyz"), "a value reached the log:\n{log}");
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let token = format!("{:016x}", dynakv_ring::key_token(b"traced-key"));
    let with = |message: &'static str| {
        lines.iter().filter(move |line| line["fields"]["message"] == message).map(|l| &l["span"])
    };

    for op in ["put", "get"] {
        let span = with("operation done").find(|span| span["op"] == op);
        let span = span.unwrap_or_else(|| panic!("no {op} span:\n{log}"));
        assert_eq!(span["name"], "op");
        assert_eq!(span["token"], token.as_str(), "{span}");
        assert_eq!((span["quorum"].as_u64(), span["n"].as_u64()), (Some(2), Some(3)), "{span}");
        assert_eq!(span["ring_version"], 1, "{span}");
    }
    let mut writers: Vec<_> = with("request served")
        .filter(|span| span["rpc"] == "write" && span["token"] == token.as_str())
        .map(|span| {
            assert_eq!((&span["name"], &span["ring_version"]), (&"request".into(), &1.into()));
            span["node"].as_str().unwrap().to_string()
        })
        .collect();
    writers.sort();
    assert_eq!(writers, ["n1", "n2", "n3"], "each replica's write span names it:\n{log}");
}
