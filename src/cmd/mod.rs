//! One module per subcommand.

pub mod batch;
pub mod bench;
pub mod dev;
pub mod dump;
pub mod kv;
pub mod node;
pub mod repair;
pub mod ring;
pub mod status;

use std::process::ExitCode;

use anyhow::Context;
use dynakv_client::{Client, ClientError, WriteOutcome};
use dynakv_ring::Ring;

use crate::cli::RingArg;

/// Loads the ring file and builds a client for it.
pub fn client(ring: &RingArg) -> anyhow::Result<Client> {
    let ring = Ring::load(&ring.ring)?;
    Client::connect(ring).context("cannot create client")
}

/// Exit code of a put or delete whose outcome is unknown: it may have been applied on some
/// replicas (a later read may see it). Other failures exit 2.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// Reports a failed put or delete: exit 3 when it may have been applied, 2 otherwise.
pub fn write_failed(error: ClientError) -> anyhow::Result<ExitCode> {
    if error.write_outcome() == Some(WriteOutcome::Unknown) {
        eprintln!("error: {error}");
        return Ok(ExitCode::from(EXIT_OUTCOME_UNKNOWN));
    }
    Err(error.into())
}
