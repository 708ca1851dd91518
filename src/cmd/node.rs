//! `dynakv node`: serve one node until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use dynakv_node::{Node, NodeConfig, StorageChoice};
use dynakv_ring::Ring;
use tokio::net::TcpListener;

use crate::cli::NodeArgs;

pub async fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let ring = Ring::load(&args.ring.ring)?;
    let listed = ring.node_index(&args.id).ok().map(|i| ring.nodes()[i].clone());
    let addr = match (args.addr, &listed, args.join) {
        (Some(addr), _, _) => addr,
        (None, Some(node), _) => node.addr,
        (None, None, Some(_)) => anyhow::bail!(
            "node {:?} is not in the ring file: give the address it serves at with --addr",
            args.id
        ),
        (None, None, None) => {
            ring.node_index(&args.id)?;
            unreachable!("an unlisted node id is an error")
        }
    };
    let storage = if args.memory {
        StorageChoice::Memory
    } else {
        let dir = args.data_dir.unwrap_or_else(|| std::path::Path::new("data").join(&args.id));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        StorageChoice::Fjall(dir)
    };
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let mut config = NodeConfig::new(Arc::new(ring), args.id, storage);
    config.inject_delay_ms = args.inject_delay_ms;
    config.insecure = args.insecure;
    config.join = args.join;
    config.metrics_addr = match &listed {
        Some(node) if node.addr == addr => node.metrics_addr(),
        _ => dynakv_ring::NodeSpec {
            id: String::new(),
            addr,
            metrics: None,
            state: Default::default(),
        }
        .metrics_addr(),
    };
    Node::serve(listener, config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
