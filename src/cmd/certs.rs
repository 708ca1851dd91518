//! `dynakv certs init`: a cluster CA, every certificate of a ring, and the `[tls]` table that
//! names them, added to the ring file (also used by `dynakv dev --tls`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use dynakv_ring::Ring;

use crate::cli::CertsInitArgs;

pub fn init(args: CertsInitArgs) -> anyhow::Result<ExitCode> {
    let ring = Ring::load(&args.ring.ring)?;
    make(&ring, &args.ring.ring, &args.out)?;
    Ok(ExitCode::SUCCESS)
}

/// Makes the certificates of `ring` in `out` and adds a `[tls]` table naming them to the ring
/// file at `ring_path`. Refuses a ring file that has a `[tls]` table already.
pub fn make(ring: &Ring, ring_path: &Path, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        ring.config().tls.is_none(),
        "{} already has a [tls] table; remove it first to make new certificates",
        ring_path.display()
    );
    let settings = dynakv_tls::issue::init(ring, out)?;
    let mut text = std::fs::read_to_string(ring_path)
        .with_context(|| format!("cannot read {}", ring_path.display()))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text += &format!(
        "\n# Mutual TLS, added by `dynakv certs init`: the CA and certificates in {}.\n{}",
        out.display(),
        dynakv_tls::issue::tls_table(&settings)
    );
    // The new text must still be a valid ring before it replaces the old one, atomically.
    dynakv_ring::RingConfig::parse(&text).context("the ring file with its [tls] table")?;
    let staged = ring_path.with_extension("toml.tls-new");
    std::fs::write(&staged, &text).with_context(|| format!("cannot write {}", staged.display()))?;
    std::fs::rename(&staged, ring_path)
        .with_context(|| format!("cannot replace {}", ring_path.display()))?;
    eprintln!(
        "made a cluster CA and certificates for {} nodes, a client and an admin in {}; \
         added a [tls] table to {} (keep {} secret: it signs certificates)",
        ring.nodes().len(),
        out.display(),
        ring_path.display(),
        out.join("ca.key").display()
    );
    Ok(())
}
