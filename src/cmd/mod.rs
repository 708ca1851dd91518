//! One module per subcommand.

pub mod batch;
pub mod bench;
pub mod certs;
pub mod dev;
pub mod dump;
pub mod kv;
pub mod membership;
pub mod node;
pub mod repair;
pub mod ring;
pub mod status;

use std::process::ExitCode;

use anyhow::Context;
use dynakv_client::{Client, ClientError, WriteOutcome, Written};
use dynakv_core::Version;
use dynakv_ring::Ring;

use crate::cli::RingArg;

/// Loads the ring file and builds a client for it.
pub fn client(ring: &RingArg) -> anyhow::Result<Client> {
    let ring = Ring::load(&ring.ring)?;
    Client::connect(ring).context("cannot create client")
}

/// Loads the ring file and builds a client for admin commands (dump, repair, handoff): it
/// presents the `[tls]` admin certificate when the table names one.
pub fn admin_client(ring: &RingArg) -> anyhow::Result<Client> {
    let ring = Ring::load(&ring.ring)?;
    let admin = ring.config().tls.as_ref().is_some_and(|tls| tls.admin_files().is_some());
    let caller = if admin { dynakv_client::Caller::Admin } else { dynakv_client::Caller::Client };
    Client::builder(ring).caller(caller).build().context("cannot create client")
}

/// Exit code of a put or delete whose outcome is unknown: it may have been applied on some
/// replicas (a later read may see it). Other failures exit 2.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Exit code of a put or delete that met its quorum but lost to a newer version a replica
/// already held (last write wins): reads return the newer value, not this one.
pub const EXIT_SUPERSEDED: u8 = 4;

/// Reports a put or delete that met its quorum: `ok <version>` (or `deleted <version>`) and
/// exit 0, or `superseded ...` and exit 4 when a replica already held a newer version.
pub fn write_done(written: Written, done: &str) -> ExitCode {
    match written.outcome {
        WriteOutcome::Superseded { by } => {
            eprintln!("{}", superseded(written.version, by));
            ExitCode::from(EXIT_SUPERSEDED)
        }
        _ => {
            eprintln!("{done} {}", written.version);
            ExitCode::SUCCESS
        }
    }
}

/// The line that reports a write at `version` superseded by `by`.
pub fn superseded(version: Version, by: Version) -> String {
    format!(
        "superseded: version {version} lost to version {by}, which a replica already holds \
         (last write wins): reads return the newer write"
    )
}

/// Reports a failed put or delete: exit 3 when it may have been applied, 2 otherwise; a write
/// the nodes refused because this machine's clock is ahead of theirs says "clock skew".
pub fn write_failed(error: ClientError) -> anyhow::Result<ExitCode> {
    if error.write_outcome() == Some(WriteOutcome::Unknown) {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(EXIT_OUTCOME_UNKNOWN));
    }
    if let Some((ahead_ms, max_skew_ms)) = clock_skew(&error) {
        anyhow::bail!(
            "clock skew: this machine's clock is about {ahead_ms} ms ahead of the nodes' clocks, \
             more than max_skew_ms = {max_skew_ms}; the write was refused and not applied \
             (sync this machine's clock, e.g. with NTP)"
        );
    }
    Err(error.into())
}

/// The clock skew the nodes refused a write for, if they did.
fn clock_skew(error: &ClientError) -> Option<(u64, u64)> {
    match error {
        ClientError::Quorum(quorum) => quorum.clock_skew(),
        _ => None,
    }
}
