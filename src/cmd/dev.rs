//! `dynakv dev`: a local cluster, one child process per node of the ring file, stopped together.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use dynakv_ring::Ring;
use tokio::process::{Child, Command};

use crate::cli::DevArgs;

/// How long nodes get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let mut ring = Ring::load(&args.ring.ring)?;
    if args.tls && ring.config().tls.is_none() {
        let out = args.data_root.join("certs");
        super::certs::make(&ring, &args.ring.ring, &out)?;
        ring = Ring::load(&args.ring.ring)?;
    }
    let exe = std::env::current_exe().context("cannot find the dynakv binary")?;
    let mut children = Vec::new();
    for node in ring.nodes() {
        let data_dir = args.data_root.join(&node.id);
        let child = Command::new(&exe)
            .arg("node")
            .arg("--ring")
            .arg(&args.ring.ring)
            .arg("--id")
            .arg(&node.id)
            .arg("--data-dir")
            .arg(&data_dir)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {}", node.id))?;
        children.push((node.id.clone(), child));
    }
    eprintln!(
        "dev cluster: {} nodes from {}, data under {}; Ctrl-C stops them",
        children.len(),
        args.ring.ring.display(),
        args.data_root.display()
    );

    let exited = tokio::select! {
        _ = super::node::shutdown_signal() => None,
        (id, status) = first_exit(&mut children) => Some((id, status)),
    };
    if let Some((id, status)) = &exited {
        eprintln!("node {id} exited ({status}); stopping the others");
    }
    for (id, child) in &mut children {
        stop(id, child).await;
    }
    Ok(if exited.is_some() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Waits for the first child to exit.
async fn first_exit(children: &mut [(String, Child)]) -> (String, String) {
    let waits = children.iter_mut().map(|(id, child)| {
        Box::pin(async move {
            let status = child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
            (id.clone(), status)
        })
    });
    futures::future::select_all(waits).await.0
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
        eprintln!("node {id} did not stop within {STOP_GRACE:?}; killing it");
        let _ = child.kill().await;
    }
}
