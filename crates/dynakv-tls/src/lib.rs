//! Mutual TLS for dynakv: every connection, client to node and node to node, is TLS against one
//! cluster CA, and each certificate carries a role that nodes check on every RPC.
//!
//! Roles are encoded in the certificate as a SAN URI `dynakv:role:<role>` ([`Role`]). Node
//! certificates are also valid as TLS servers (for their address); client and admin
//! certificates are not, so they cannot stand in for a node.
//!
//! # Layout
//! - [`role`]: [`Role`], client, admin or node, and reading it from a peer certificate.
//! - [`channel`]: [`endpoint`], the channel settings a client or a node uses to reach a node,
//!   with the certificate of the [`Caller`] it speaks as.
//! - [`server`]: [`server_config`], what a node serves TLS with.
//! - [`issue`]: [`issue::init`], a cluster CA and every certificate a ring needs (`dynakv certs init`).
//! - [`error`]: [`TlsError`], naming the file or setting at fault.

#![warn(missing_docs)]

pub mod channel;
pub mod error;
pub mod issue;
pub mod role;
pub mod server;

pub use channel::{Caller, endpoint};
pub use error::TlsError;
pub use role::{Role, role_of};
pub use server::server_config;

use std::path::Path;

/// Reads a PEM file that must hold at least one certificate; returns its text.
pub(crate) fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = read(path, what)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: "no certificate in it".into(),
        }),
        Err(e) => Err(TlsError::Pem { what, path: path.to_path_buf(), reason: e.to_string() }),
    }
}

/// Reads a PEM file that must hold a private key; returns its text.
pub(crate) fn read_key(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject;
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(pem)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// A certificate and its key, read and checked: the identity a TLS side presents.
pub(crate) fn identity(
    (cert, key): (std::path::PathBuf, std::path::PathBuf),
    what: &'static str,
) -> Result<tonic::transport::Identity, TlsError> {
    let cert = read_certificates(&cert, what)?;
    let key = read_key(&key, what)?;
    Ok(tonic::transport::Identity::from_pem(cert, key))
}
