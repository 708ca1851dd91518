//! The server side: what a node serves TLS with.

use std::time::Duration;

use dynakv_ring::TlsSettings;
use tonic::transport::{Certificate, ServerTlsConfig};

use crate::TlsError;

/// Longest a client may take over its TLS handshake before the node drops the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS a node serves with, `None` without a `[tls]` table: the node's certificate, and
/// client certificates checked against the cluster CA. A client may connect without a
/// certificate, so that the node can answer it with a clear UNAUTHENTICATED status instead of a
/// failed handshake; a certificate the CA did not sign fails the handshake.
pub fn server_config(
    tls: Option<&TlsSettings>,
    node_id: &str,
) -> Result<Option<ServerTlsConfig>, TlsError> {
    let Some(tls) = tls else { return Ok(None) };
    let files = tls.node_files(node_id).ok_or_else(|| TlsError::NoCertificate {
        setting: "node_cert and node_key",
        who: format!("node {node_id}"),
    })?;
    let identity = crate::identity(files, "node certificate")?;
    let ca = crate::read_certificates(&tls.ca_path(), "cluster CA")?;
    Ok(Some(
        ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT),
    ))
}
