//! The operator's `Dump` stream: every record a node stores, paged out of storage.
//!
//! Records are sent in stored-key order (ring token, then key) through a bounded channel, so a
//! slow reader slows the scan instead of the node buffering its whole store. A prefix filters on
//! the user key; as stored keys begin with the key's token, filtering cannot narrow the scan and
//! a prefixed dump still reads every record.

use std::sync::Arc;

use bytes::Bytes;
use dynakv_core::codec;
use dynakv_proto::v1;
use dynakv_storage::{Space, split_stored_key};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::service::{NodeState, storage_status};

/// Stored records read per storage scan, and entries buffered ahead of the reader.
pub const DUMP_PAGE: usize = 256;

/// The stream a `Dump` call answers with.
pub type DumpStream = ReceiverStream<Result<v1::DumpEntry, Status>>;

/// Starts streaming the records `request` selects. The scan runs as a node background task: it
/// ends when every record is sent, the limit is reached, the caller goes away, or the node stops.
pub fn start(state: &Arc<NodeState>, request: v1::DumpRequest) -> DumpStream {
    let (tx, rx) = mpsc::channel(DUMP_PAGE);
    let task_state = state.clone();
    state.tasks.spawn(async move {
        tokio::select! {
            _ = task_state.stopping.cancelled() => {
                // Never wait here: a reader that stopped reading must not hold up shutdown.
                let _ = tx.try_send(Err(Status::unavailable("node is shutting down")));
            }
            _ = send_all(&task_state, request, &tx) => {}
        }
    });
    ReceiverStream::new(rx)
}

/// Pages through storage and sends each selected record; returns early if the caller is gone.
async fn send_all(
    state: &NodeState,
    request: v1::DumpRequest,
    tx: &mpsc::Sender<Result<v1::DumpEntry, Status>>,
) {
    let limit = if request.limit == 0 { u64::MAX } else { request.limit };
    let mut sent = 0u64;
    let mut pages = state.store.pages(Space::Records, Bytes::new(), None, DUMP_PAGE);
    loop {
        let page = match pages.next().await {
            Ok(Some(page)) => page,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(storage_status(e))).await;
                return;
            }
        };
        for (stored, value) in &page {
            let Some((token, key)) = split_stored_key(stored) else { continue };
            if !key.starts_with(&request.prefix) {
                continue;
            }
            let entry = codec::decode(value)
                .map(|record| v1::DumpEntry {
                    key: stored.slice(stored.len() - key.len()..),
                    token,
                    record: Some(record.into()),
                })
                .map_err(|e| Status::data_loss(format!("stored record is damaged: {e}")));
            let failed = entry.is_err();
            if tx.send(entry).await.is_err() || failed {
                return;
            }
            sent += 1;
            if sent >= limit {
                return;
            }
        }
    }
}
