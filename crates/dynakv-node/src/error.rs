//! Why a node could not start or serve.

use thiserror::Error;

/// A node that could not start, or whose server failed.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The node's id is not in its ring.
    #[error(transparent)]
    Ring(#[from] dynakv_ring::RingError),
    /// Storage could not be opened.
    #[error("cannot open storage: {0}")]
    Storage(#[from] dynakv_storage::StorageError),
    /// The listener could not be used.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The `[tls]` table's certificates cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] dynakv_tls::TlsError),
    /// Asked to listen beyond loopback without TLS, and without `--insecure`.
    #[error(
        "refusing to listen on {addr} without TLS: anyone who reaches it could read and overwrite \
         every key. Add a [tls] table to the ring file (`dynakv certs init`), or start the node \
         with --insecure"
    )]
    Insecure {
        /// The non-loopback address.
        addr: std::net::SocketAddr,
    },
    /// The node's stored membership files could not be read or written.
    #[error("membership files: {0}")]
    Meta(std::io::Error),
    /// A node joining through a member could not learn the live ring from it.
    #[error("cannot join: {0}")]
    Join(String),
    /// The gRPC server failed, or a peer channel could not be built.
    #[error("server: {0}")]
    Server(#[from] tonic::transport::Error),
}
