//! The friendlier CLI: values from files and stdin, values to files, `--json` on put, get and
//! delete, and a `dynakv dev` cluster that keeps serving when one of its nodes is kill -9'd.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::support::{
    PATIENCE, TestCluster, client_for, dynakv, eventually, ring_file_with_metrics, text,
    wait_until_up,
};

/// Runs `dynakv` with `args` and `--ring <ring>`, feeding `input` to its stdin.
async fn dynakv_stdin(args: &[&str], ring: &Path, input: &[u8]) -> Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
        .args(args)
        .arg("--ring")
        .arg(ring)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dynakv");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.expect("dynakv output")
}

/// The one JSON object a `--json` command printed.
fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: stdout {:?} stderr {}", text(&out.stdout), text(&out.stderr))
    })
}

#[tokio::test]
async fn binary_values_go_in_from_files_and_stdin_and_out_to_files() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let dir = cluster.dir.path();
    // 300 KiB of every byte value, newlines and NULs included.
    let value: Vec<u8> = (0..300 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let file = dir.join("value.bin");
    std::fs::write(&file, &value).unwrap();

    let put = dynakv(&["put", "blob", "--value-file", file.to_str().unwrap()], &ring).await;
    assert!(put.status.success(), "{}", text(&put.stderr));
    let out = dir.join("out.bin");
    let get = dynakv(&["get", "blob", "--output", out.to_str().unwrap()], &ring).await;
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert!(get.stdout.is_empty(), "the value goes to the file only");
    assert!(std::fs::read(&out).unwrap() == value, "the file holds the value byte for byte");

    let piped = dynakv_stdin(&["put", "piped", "--value-file", "-"], &ring, &value[..1000]).await;
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let got = cluster.client().get("piped").await.unwrap().unwrap();
    assert_eq!(got.as_ref(), &value[..1000]);

    // One byte over the limit: refused with the limit named, and nothing written.
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let put = dynakv(&["put", "big", "--value-file", big.to_str().unwrap()], &ring).await;
    assert_eq!(put.status.code(), Some(2));
    assert!(
        text(&put.stderr).contains("more than the 1048576-byte limit"),
        "{}",
        text(&put.stderr)
    );
    assert_eq!(cluster.client().get("big").await.unwrap(), None);

    let missing = dir.join("nope.bin");
    let put = dynakv(&["put", "k", "--value-file", missing.to_str().unwrap()], &ring).await;
    assert_eq!(put.status.code(), Some(2));
    assert!(text(&put.stderr).contains("cannot read value file"), "{}", text(&put.stderr));
    let both = dynakv(&["put", "k", "v", "--value-file", file.to_str().unwrap()], &ring).await;
    assert_eq!(both.status.code(), Some(2), "a value and a value file are refused together");
    cluster.shutdown().await;
}

#[tokio::test]
async fn json_output_of_put_get_and_delete() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();

    let put = dynakv(&["put", "color", "blue", "--json"], &ring).await;
    assert_eq!(put.status.code(), Some(0), "{}", text(&put.stderr));
    let doc = json(&put);
    assert_eq!((doc["key"].as_str(), doc["ok"].as_bool()), (Some("color"), Some(true)), "{doc}");
    assert_eq!(doc["outcome"], "applied", "{doc}");
    assert!(doc["version"].as_str().is_some_and(|v| !v.is_empty()), "{doc}");

    let get = dynakv(&["get", "color", "--json"], &ring).await;
    assert_eq!(get.status.code(), Some(0));
    let doc = json(&get);
    assert_eq!((doc["found"].as_bool(), doc["value"].as_str()), (Some(true), Some("blue")));
    assert_eq!(doc["bytes"], 4);

    cluster.client().put("raw", &b"a\xffb"[..]).await.unwrap();
    let doc = json(&dynakv(&["get", "raw", "--json"], &ring).await);
    assert_eq!(doc["value"], "a\\xffb", "non-UTF-8 bytes are escaped: {doc}");

    let delete = dynakv(&["delete", "color", "--json"], &ring).await;
    assert_eq!(delete.status.code(), Some(0));
    assert_eq!(json(&delete)["ok"], true);
    let missing = dynakv(&["get", "color", "--json"], &ring).await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(json(&missing)["found"], false);

    // A write that missed its quorum but reached some replicas: outcome unknown, exit 3.
    cluster.stop(2).await;
    let put = dynakv(&["put", "k", "v", "--w", "3", "--strict", "--json"], &ring).await;
    assert_eq!(put.status.code(), Some(3), "{}", text(&put.stderr));
    let doc = json(&put);
    assert_eq!((doc["ok"].as_bool(), doc["outcome"].as_str()), (Some(false), Some("unknown")));
    assert!(doc["error"].as_str().unwrap().contains("write quorum not met"), "{doc}");
    cluster.shutdown().await;
}

/// A `dynakv dev` process and the node processes it reported, killed if the test ends early.
struct DevCluster {
    dev: tokio::process::Child,
    /// Everything dev and its nodes wrote to stderr so far.
    console: Arc<parking_lot::Mutex<String>>,
    /// Node processes this test started itself.
    extra: Vec<std::process::Child>,
}

impl DevCluster {
    fn console(&self) -> String {
        self.console.lock().clone()
    }

    /// The pid dev reported for node `id`.
    fn pid(&self, id: &str) -> Option<i32> {
        let console = self.console();
        let prefix = format!("dev: node {id} pid ");
        let line = console.lines().find_map(|line| line.strip_prefix(&prefix))?;
        line.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        for id in ["n1", "n2", "n3"] {
            if let Some(pid) = self.pid(id) {
                // SAFETY: kill(2) on a pid dev reported; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.dev.start_kill();
        for child in &mut self.extra {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_keeps_serving_when_a_node_is_killed_and_says_how_to_restart_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ring_path, ring, _) = ring_file_with_metrics(dir.path(), 3, 3, 2, 2);
    let data = dir.path().join("data");
    let mut dev = tokio::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
        .args(["dev", "--ring", ring_path.to_str().unwrap(), "--data-root"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start dynakv dev");
    let console = Arc::new(parking_lot::Mutex::new(String::new()));
    let mut lines = tokio::io::BufReader::new(dev.stderr.take().unwrap()).lines();
    let sink = console.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut console = sink.lock();
            console.push_str(&line);
            console.push('\n');
        }
    });
    let mut cluster = DevCluster { dev, console, extra: Vec::new() };
    let client = client_for(&ring);
    wait_until_up(&client).await;
    let n2 = cluster.pid("n2").expect("dev reports each node's pid");

    // SAFETY: kill(2) on the pid dev reported for n2; no memory is involved.
    assert_eq!(unsafe { libc::kill(n2, libc::SIGKILL) }, 0);
    eventually(PATIENCE, "dev reports n2's death", || async {
        cluster.console().contains("dev: node n2 died")
    })
    .await;
    let console = cluster.console();
    assert!(console.contains("the other 2 node(s) keep serving"), "{console}");
    let command = console
        .lines()
        .skip_while(|line| !line.starts_with("dev: node n2 died"))
        .nth(1)
        .expect("the restart command follows")
        .trim()
        .to_string();
    assert!(command.contains(" node --ring ") && command.contains("--id n2"), "{command}");

    let put = dynakv(&["put", "while-n2-is-down", "v"], &ring_path).await;
    assert!(put.status.success(), "the others take writes: {}", text(&put.stderr));
    assert!(cluster.dev.try_wait().unwrap().is_none(), "dev is still running:\n{console}");

    // The exact command brings n2 back on its data, and its hint reaches it.
    let words: Vec<_> = command.split_whitespace().collect();
    let restarted = std::process::Command::new(words[0])
        .args(&words[1..])
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("run the printed command");
    cluster.extra.push(restarted);
    wait_until_up(&client).await;
    eventually(PATIENCE, "n2 holds the write it missed", || async {
        let inspection = client.inspect("while-n2-is-down").await.unwrap();
        let n2 = inspection.replicas.iter().find(|view| view.node == "n2").unwrap();
        matches!(&n2.record, Ok(Some(record)) if record.value.is_some())
    })
    .await;

    // Ctrl-C stops dev and the nodes it still runs.
    let pid = cluster.dev.id().unwrap() as i32;
    // SAFETY: kill(2) on the dev process this test started; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = cluster.dev.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dev did not stop:\n{}", cluster.console());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}:\n{}", cluster.console());
    for id in ["n1", "n3"] {
        let pid = cluster.pid(id).unwrap();
        // SAFETY: signal 0 only checks whether the process exists.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "{id} was stopped with dev");
    }
}
