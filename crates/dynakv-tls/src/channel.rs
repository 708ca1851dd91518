//! The client side: the channel settings used to reach a node, TLS included when the ring has a
//! `[tls]` table. Clients and nodes (for peer calls) both build their channels here.

use std::time::Duration;

use dynakv_ring::{NodeSpec, TlsSettings};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::TlsError;

/// Longest a TLS handshake may take before the connection attempt fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whose certificate a channel presents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Caller {
    /// The `[tls]` client certificate: data operations.
    #[default]
    Client,
    /// The `[tls]` admin certificate: data operations plus dump, repair, handoff.
    Admin,
    /// The node of this id, calling a peer with its own certificate.
    Node(String),
}

impl Caller {
    fn files(
        &self,
        tls: &TlsSettings,
    ) -> Result<(std::path::PathBuf, std::path::PathBuf), TlsError> {
        let (files, setting, who) = match self {
            Caller::Client => {
                (tls.client_files(), "client_cert and client_key", "a client".to_string())
            }
            Caller::Admin => {
                (tls.admin_files(), "admin_cert and admin_key", "an admin command".to_string())
            }
            Caller::Node(id) => {
                (tls.node_files(id), "node_cert and node_key", format!("node {id}"))
            }
        };
        files.ok_or(TlsError::NoCertificate { setting, who })
    }
}

/// The endpoint to reach `node`: plaintext `http://` without `tls`, otherwise `https://` with
/// the cluster CA as the only trust anchor, the node's address as the name its certificate must
/// carry, and `caller`'s certificate presented. Files are read and checked now; the caller adds
/// its own timeouts and windows, and connects.
pub fn endpoint(
    node: &NodeSpec,
    tls: Option<&TlsSettings>,
    caller: &Caller,
) -> Result<Endpoint, TlsError> {
    let Some(tls) = tls else {
        return Ok(Endpoint::from_shared(format!("http://{}", node.addr))?);
    };
    let ca = crate::read_certificates(&tls.ca_path(), "cluster CA")?;
    let identity = crate::identity(caller.files(tls)?, "certificate")?;
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(identity)
        .domain_name(node.addr.ip().to_string())
        .timeout(HANDSHAKE_TIMEOUT);
    Ok(Endpoint::from_shared(format!("https://{}", node.addr))?.tls_config(config)?)
}
