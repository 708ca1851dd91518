//! A loopback TCP proxy in front of one node, to inject faults without killing the node:
//! added latency, dropped connections, or a black hole that accepts bytes and forwards none.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Forward everything after this delay per chunk.
    Delay(Duration),
    /// Close every connection, and every new one at once.
    Drop,
    /// Keep connections open but forward nothing, in either direction, until the fault changes.
    Blackhole,
}

/// A proxy listening on a loopback port and forwarding to `target`.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: SocketAddr,
    fault: watch::Sender<Fault>,
    /// The accept loop and every connection; aborted when the proxy closes or is dropped.
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (fault, watcher) = watch::channel(Fault::None);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept(listener, target, watcher));
        Proxy { addr, target, fault, tasks }
    }

    /// Stops listening and closes every connection, so connecting is refused, as it is to a
    /// stopped node.
    pub async fn close(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Listens again on the same address after [`close`](Self::close).
    pub async fn reopen(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("rebinding proxy {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind proxy {}: {e}", self.addr),
            }
        };
        self.tasks.spawn(accept(listener, self.target, self.fault.subscribe()));
    }

    /// Changes what the proxy does, for existing connections and new ones.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, fault: watch::Receiver<Fault>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((inbound, _)) = listener.accept().await else { return };
        if *fault.borrow() == Fault::Drop {
            continue;
        }
        let fault = fault.clone();
        connections.spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            // When either direction ends, both sockets close.
            tokio::select! {
                _ = pump(in_read, out_write, fault.clone()) => {}
                _ = pump(out_read, in_write, fault) => {}
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Copies bytes one way, applying the current fault to each chunk.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut fault: watch::Receiver<Fault>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = fault.changed() => {
                if changed.is_err() || *fault.borrow() == Fault::Drop {
                    return;
                }
                continue;
            }
        };
        loop {
            let current = *fault.borrow_and_update();
            match current {
                Fault::None => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Drop => return,
                Fault::Blackhole => {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
