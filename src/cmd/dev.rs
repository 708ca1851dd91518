//! `dynakv dev`: a local cluster, one child process per node of the ring file. A node that dies
//! leaves the others serving; the console says which one died and the command that brings it
//! back. Ctrl-C (or SIGTERM) stops them all.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use dynakv_ring::Ring;
use tokio::process::{Child, Command};

use crate::cli::DevArgs;

/// How long nodes get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One node process of the dev cluster.
struct DevNode {
    id: String,
    /// The exact command that starts this node, as a user would type it.
    command: String,
    /// `None` once it has exited.
    child: Option<Child>,
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let mut ring = Ring::load(&args.ring.ring)?;
    if args.tls && ring.config().tls.is_none() {
        let out = args.data_root.join("certs");
        super::certs::make(&ring, &args.ring.ring, &out)?;
        ring = Ring::load(&args.ring.ring)?;
    }
    let exe = std::env::current_exe().context("cannot find the dynakv binary")?;
    let mut nodes = Vec::new();
    for spec in ring.nodes() {
        let data_dir = args.data_root.join(&spec.id);
        let child = Command::new(&exe)
            .arg("node")
            .arg("--ring")
            .arg(&args.ring.ring)
            .arg("--id")
            .arg(&spec.id)
            .arg("--data-dir")
            .arg(&data_dir)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {}", spec.id))?;
        let command = [
            exe.as_path(),
            Path::new("node"),
            Path::new("--ring"),
            &args.ring.ring,
            Path::new("--id"),
            Path::new(&spec.id),
            Path::new("--data-dir"),
            &data_dir,
        ]
        .map(shell_word)
        .join(" ");
        let metrics = spec.metrics_addr().map_or_else(|| "off".to_string(), |a| a.to_string());
        eprintln!(
            "dev: node {} pid {} at {}, dashboard and metrics at http://{metrics}/",
            spec.id,
            child.id().unwrap_or_default(),
            spec.addr
        );
        nodes.push(DevNode { id: spec.id.clone(), command, child: Some(child) });
    }
    eprintln!(
        "dev: {} nodes from {}, data under {}; Ctrl-C stops them",
        nodes.len(),
        args.ring.ring.display(),
        args.data_root.display()
    );

    let mut shutdown = std::pin::pin!(super::node::shutdown_signal());
    let all_died = loop {
        if nodes.iter().all(|node| node.child.is_none()) {
            break true;
        }
        tokio::select! {
            _ = &mut shutdown => break false,
            (i, status) = next_exit(&mut nodes) => {
                let node = &mut nodes[i];
                node.child = None;
                let alive = nodes.iter().filter(|n| n.child.is_some()).count();
                let node = &nodes[i];
                eprintln!(
                    "dev: node {} died ({status}); the other {alive} node(s) keep serving. \
                     Bring it back, from another terminal, with:\n    {}",
                    node.id, node.command
                );
            }
        }
    };
    if all_died {
        eprintln!("dev: every node has stopped; exiting");
        return Ok(ExitCode::from(2));
    }
    for node in &mut nodes {
        if let Some(child) = &mut node.child {
            stop(&node.id, child).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the next running child to exit; its index and how it ended.
async fn next_exit(nodes: &mut [DevNode]) -> (usize, String) {
    let waits = nodes.iter_mut().enumerate().filter_map(|(i, node)| {
        let child = node.child.as_mut()?;
        Some(Box::pin(async move {
            let status = child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
            (i, status)
        }))
    });
    futures::future::select_all(waits).await.0
}

/// A path as one shell word: as it is when it holds only safe characters, single-quoted otherwise.
fn shell_word(path: &Path) -> String {
    let text = path.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Asks a child to stop with SIGTERM, and kills it if it has not stopped within the grace period.
async fn stop(id: &str, child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned and still own; no memory is involved.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        eprintln!("dev: node {id} did not stop within {STOP_GRACE:?}; killing it");
        let _ = child.kill().await;
    }
}
