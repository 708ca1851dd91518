//! Why TLS could not be set up, naming the file or setting at fault.

use std::path::PathBuf;

use thiserror::Error;

/// A TLS setting, file or certificate that cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        /// What the file was to hold (e.g. "cluster CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A file does not hold the PEM it should.
    #[error("the {what} file {path} is not usable PEM: {reason}")]
    Pem {
        /// What the file was to hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The ring file's `[tls]` table names no certificate for this kind of caller.
    #[error("the ring file's [tls] table sets no {setting}, which {who} needs")]
    NoCertificate {
        /// The missing setting (e.g. "admin_cert and admin_key").
        setting: &'static str,
        /// Who needed it (e.g. "node n1").
        who: String,
    },
    /// A certificate could not be made.
    #[error("cannot make the {what} certificate: {source}")]
    Issue {
        /// Which certificate.
        what: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// A certificate file already exists; nothing is overwritten.
    #[error("{0} already exists; choose another --out directory or remove it")]
    Exists(PathBuf),
    /// A certificate file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why writing failed.
        source: std::io::Error,
    },
    /// The channel or server refused the TLS settings.
    #[error("TLS settings refused: {0}")]
    Transport(#[from] tonic::transport::Error),
}
