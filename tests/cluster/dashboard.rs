//! The dashboard in a real browser: three `dynakv node` processes under traffic, the page of
//! one of them in headless Chromium. The charts update, a kill -9'd node shows as down, a
//! screenshot is saved, and no JavaScript error may occur. Without Chromium the test says so
//! loudly and checks only the page and its JSON over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::browser::{Browser, find_chromium};
use crate::support::{
    NodeProcess, PATIENCE, client_for, eventually, ring_file_with_metrics, wait_until_up,
};

/// The body of `GET <path>` at `addr`.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.0\r\nHost: dynakv\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live_and_a_killed_node_as_down() {
    let dir = tempfile::tempdir().unwrap();
    let (ring_path, ring, metrics) = ring_file_with_metrics(dir.path(), 3, 3, 2, 2);
    let start = |i: usize| {
        let data = dir.path().join(format!("n{}", i + 1));
        NodeProcess::start(&ring_path, &format!("n{}", i + 1), &data)
    };
    let mut nodes: Vec<_> = (0..3).map(|i| Some(start(i))).collect();
    let client = client_for(&ring);
    wait_until_up(&client).await;

    // The JSON the page polls: the ring and every node, gathered by n1 from its peers.
    let cluster: serde_json::Value =
        serde_json::from_str(&http_get(metrics[0], "/api/cluster").await).expect("JSON");
    assert_eq!(cluster["ring"]["ranges"].as_array().unwrap().len(), 3 * 32, "{cluster}");
    let up: Vec<_> = cluster["nodes"].as_array().unwrap().iter().map(|n| n["up"].clone()).collect();
    assert_eq!(up, [true, true, true], "{cluster}");
    assert!(cluster["nodes"][1]["report"]["ops_total"].is_number(), "n2 reports itself: {cluster}");
    let page = http_get(metrics[1], "/").await;
    assert!(page.contains("<title>dynakv dashboard</title>"), "every node serves the page");

    // Traffic for the charts, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let _ = client.put(format!("k{}", i % 500), "v").await;
                let _ = client.get(format!("k{}", (i + 7) % 500)).await;
            }
        }
    });

    let Some(chromium) = find_chromium() else {
        // Straight to the process's stderr, past the test harness's capture: never silent.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED the browser part of the dashboard test: Chromium not found \
             (apt-get install -y chromium, or set DYNAKV_CHROMIUM) ***\n"
        );
        stop.store(true, Ordering::Relaxed);
        traffic.await.unwrap();
        return;
    };
    let browser = Browser::launch(&chromium).await;
    browser.navigate(&format!("http://{}/", metrics[0])).await;
    eventually(PATIENCE, "the page draws the ring and three nodes up", || async {
        let drawn = "document.querySelectorAll('#ring path').length === 96 && \
                     document.querySelectorAll('[data-node][data-state=up]').length === 3";
        browser.eval(drawn).await == true
    })
    .await;
    eventually(PATIENCE, "both charts update, ops/s above zero", || async {
        let updated = "['ops', 'p99'].every(id => Number(document.getElementById(id).dataset.points) >= 3) \
                       && Number(document.getElementById('ops').dataset.last) > 0";
        browser.eval(updated).await == true
    })
    .await;

    nodes[1].take().unwrap().kill9();
    eventually(PATIENCE, "the page shows n2 down and the others up", || async {
        let state = |id: &str| format!("document.querySelector('[data-node={id}]').dataset.state");
        let states = format!("[{}, {}, {}]", state("n1"), state("n2"), state("n3"));
        browser.eval(&states).await == serde_json::json!(["up", "down", "up"])
    })
    .await;
    let shot = browser.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = std::env::var_os("DYNAKV_SCREENSHOT").map_or_else(
        || std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png"),
        std::path::PathBuf::from,
    );
    std::fs::write(&path, &shot).unwrap();
    eprintln!("dashboard screenshot: {}", path.display());

    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let errors = browser.errors.lock().clone();
    assert!(errors.is_empty(), "JavaScript errors on the page: {errors:#?}");
}
