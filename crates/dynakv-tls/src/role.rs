//! [`Role`]: what a certificate's holder may do, and reading it from a peer certificate.

use std::fmt;

/// What the holder of a certificate may do. Data operations (reads, writes, batches, health)
/// take any role; dump, repair and handoff take [`Role::Admin`]; peer RPCs (digests, versions,
/// hint spans) take [`Role::Node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// An application or the data commands of the CLI.
    Client,
    /// An operator: data operations plus dump, repair, handoff and membership changes.
    Admin,
    /// A node of the cluster: data operations plus the peer RPCs.
    Node,
}

/// The prefix of the SAN URI a dynakv certificate carries its role in.
pub const ROLE_URI_PREFIX: &str = "dynakv:role:";

impl Role {
    /// The role's name, as in the SAN URI.
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Admin => "admin",
            Role::Node => "node",
        }
    }

    /// The SAN URI that gives a certificate this role, e.g. `dynakv:role:node`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.name())
    }

    fn from_uri(uri: &str) -> Option<Role> {
        match uri.strip_prefix(ROLE_URI_PREFIX)? {
            "client" => Some(Role::Client),
            "admin" => Some(Role::Admin),
            "node" => Some(Role::Node),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The role a DER certificate carries; `None` when it carries none (or several, or cannot be
/// parsed). Only call this on a certificate the TLS layer has already verified.
pub fn role_of(der: &[u8]) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    let mut roles = sans.value.general_names.iter().filter_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => Role::from_uri(uri),
        _ => None,
    });
    let role = roles.next()?;
    // A certificate naming two roles is malformed: refuse it rather than pick one.
    roles.next().is_none().then_some(role)
}
