//! Who may call what: every RPC handler asks [`require`] for the access it needs, and the role is
//! read from the caller's TLS certificate (already verified against the cluster CA by the TLS
//! layer). Without TLS (no `[tls]` table) every caller is let through: the node then listens on
//! loopback only, or was started with `--insecure`.

use dynakv_tls::Role;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Status};

/// The access an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read, Write (hinted writes included), Batch, Health: any role.
    Data,
    /// Dump, Repair, Handoff and membership changes: admin.
    Admin,
    /// Digest, Versions, HintSpans: another node.
    Peer,
}

impl Access {
    fn allows(self, role: Role) -> bool {
        match self {
            Access::Data => true,
            Access::Admin => role == Role::Admin,
            Access::Peer => role == Role::Node,
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Access::Data => "a client, admin or node certificate",
            Access::Admin => "an admin certificate",
            Access::Peer => "a node certificate",
        }
    }
}

/// Lets the request through if its caller may have `access`; otherwise UNAUTHENTICATED (no
/// certificate, or one without a dynakv role) or PERMISSION_DENIED (the wrong role), with a
/// message that says what is needed.
pub fn require<T>(request: &Request<T>, rpc: &str, access: Access) -> Result<(), Status> {
    // Present exactly when the connection is TLS: a plaintext node has no [tls] table.
    let Some(tls) = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>() else {
        return Ok(());
    };
    let Some(certs) = tls.peer_certs() else {
        return Err(Status::unauthenticated(format!(
            "{rpc} refused: this node requires a client certificate signed by the cluster CA \
             ({} for {rpc}); set client_cert and client_key in the ring file's [tls] table",
            access.needs()
        )));
    };
    let Some(role) = certs.first().and_then(|cert| dynakv_tls::role_of(cert)) else {
        return Err(Status::unauthenticated(format!(
            "{rpc} refused: the client certificate carries no dynakv role (a SAN URI such as \
             {}); make certificates with `dynakv certs init`",
            Role::Client.uri()
        )));
    };
    if access.allows(role) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{rpc} needs {}; this caller's certificate has role {role}",
            access.needs()
        )))
    }
}
