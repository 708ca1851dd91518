//! `dynakv certs init`: a cluster CA and every certificate a ring needs, made with rcgen.
//!
//! Files written to the output directory (keys readable by their owner only):
//! `ca.pem`, `ca.key` (keep the key safe: it signs new certificates), `<id>.pem` and
//! `<id>.key` per node (valid for the node's address, role node), `client.pem`/`client.key`
//! (role client) and `admin.pem`/`admin.key` (role admin).

use std::io::Write;
use std::path::{Path, PathBuf};

use dynakv_ring::{Ring, TlsSettings};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{Role, TlsError};

/// One certificate to make: its file stem, role, and the address it serves at (nodes only).
struct Subject {
    stem: String,
    role: Role,
    name: String,
    serves_at: Option<std::net::IpAddr>,
}

/// Makes a new cluster CA in `out` (created if missing) and, signed by it, a certificate per
/// node of `ring`, a client certificate and an admin certificate. Refuses to overwrite any
/// existing file, before writing anything. Returns the `[tls]` settings that name the files,
/// as absolute paths.
pub fn init(ring: &Ring, out: &Path) -> Result<TlsSettings, TlsError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let out = std::path::absolute(out).map_err(write_err(out))?;
    let mut subjects: Vec<Subject> = ring
        .nodes()
        .iter()
        .map(|node| Subject {
            stem: node.id.clone(),
            role: Role::Node,
            name: format!("dynakv node {}", node.id),
            serves_at: Some(node.addr.ip()),
        })
        .collect();
    for role in [Role::Client, Role::Admin] {
        let name = format!("dynakv {role}");
        subjects.push(Subject { stem: role.name().to_string(), role, name, serves_at: None });
    }
    let mut files = vec![out.join("ca.pem"), out.join("ca.key")];
    for subject in &subjects {
        files.push(out.join(format!("{}.pem", subject.stem)));
        files.push(out.join(format!("{}.key", subject.stem)));
    }
    if let Some(taken) = files.iter().find(|f| f.exists()) {
        return Err(TlsError::Exists(taken.clone()));
    }

    let issue_err = |what: &str| {
        let what = what.to_string();
        move |source| TlsError::Issue { what, source }
    };
    let ca_key = KeyPair::generate().map_err(issue_err("CA"))?;
    let mut ca_params = CertificateParams::default();
    // A name of its own per CA (from its key), so two clusters' CAs are never mistaken for
    // each other while a chain is built.
    let tag: String =
        ca_key.public_key_raw().iter().rev().take(4).map(|b| format!("{b:02x}")).collect();
    ca_params.distinguished_name.push(DnType::CommonName, format!("dynakv cluster CA {tag}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(issue_err("CA"))?;
    write(&out.join("ca.pem"), ca_cert.pem().as_bytes(), false)?;
    write(&out.join("ca.key"), ca_key.serialize_pem().as_bytes(), true)?;
    let ca = Issuer::new(ca_params, ca_key);

    for subject in &subjects {
        let key = KeyPair::generate().map_err(issue_err(&subject.name))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, subject.name.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let uri = subject.role.uri().try_into().map_err(issue_err(&subject.name))?;
        params.subject_alt_names.push(SanType::URI(uri));
        if let Some(ip) = subject.serves_at {
            // Only node certificates are valid for serving TLS, at the node's address.
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        let cert = params.signed_by(&key, &ca).map_err(issue_err(&subject.name))?;
        write(&out.join(format!("{}.pem", subject.stem)), cert.pem().as_bytes(), false)?;
        write(&out.join(format!("{}.key", subject.stem)), key.serialize_pem().as_bytes(), true)?;
    }
    Ok(settings_for(&out))
}

/// The `[tls]` settings naming the files [`init`] writes in `dir`.
pub fn settings_for(dir: &Path) -> TlsSettings {
    let at = |name: &str| Some(dir.join(name));
    TlsSettings {
        ca: dir.join("ca.pem"),
        node_cert: at("{id}.pem"),
        node_key: at("{id}.key"),
        client_cert: at("client.pem"),
        client_key: at("client.key"),
        admin_cert: at("admin.pem"),
        admin_key: at("admin.key"),
        base_dir: PathBuf::new(),
    }
}

/// `settings` as a `[tls]` table of a ring file.
pub fn tls_table(settings: &TlsSettings) -> String {
    #[derive(serde::Serialize)]
    struct Table<'a> {
        tls: &'a TlsSettings,
    }
    toml::to_string(&Table { tls: settings }).expect("TLS settings serialize as TOML")
}

/// Writes a new file (never an existing one); `secret` files are readable by their owner only.
fn write(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => TlsError::Exists(path.to_path_buf()),
            _ => err(e),
        })?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: &str = r#"
        [replication]
        n = 1
        r = 1
        w = 1
        [[nodes]]
        id = "n1"
        addr = "127.0.0.1:7401"
        [[nodes]]
        id = "n2"
        addr = "10.0.0.2:7402"
    "#;

    #[test]
    fn issues_one_role_per_certificate_and_never_overwrites() {
        let ring = Ring::parse(RING).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = init(&ring, dir.path()).unwrap();
        let der = |path: &Path| {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_file(path).unwrap()
        };
        let (n2, n2_key) = settings.node_files("n2").unwrap();
        assert_eq!(crate::role_of(&der(&n2)), Some(Role::Node));
        assert_eq!(crate::role_of(&der(&settings.client_files().unwrap().0)), Some(Role::Client));
        assert_eq!(crate::role_of(&der(&settings.admin_files().unwrap().0)), Some(Role::Admin));
        assert_eq!(crate::role_of(&der(&settings.ca_path())), None, "the CA has no role");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(n2_key).unwrap().permissions().mode() & 0o777, 0o600);

        let ca_before = std::fs::read(settings.ca_path()).unwrap();
        let again = init(&ring, dir.path()).unwrap_err().to_string();
        assert!(again.contains("ca.pem already exists"), "{again}");
        assert_eq!(std::fs::read(settings.ca_path()).unwrap(), ca_before);

        let table = tls_table(&settings);
        let parsed = dynakv_ring::RingConfig::parse(&format!("{table}\n{RING}")).unwrap();
        assert_eq!(parsed.tls.unwrap(), settings);
    }
}
