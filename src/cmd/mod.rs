//! One module per subcommand.

pub mod bench;
pub mod dev;
pub mod kv;
pub mod node;
pub mod status;

use anyhow::Context;
use dynakv_client::Client;
use dynakv_ring::Ring;

use crate::cli::RingArg;

/// Loads the ring file and builds a client for it.
pub fn client(ring: &RingArg) -> anyhow::Result<Client> {
    let ring = Ring::load(&ring.ring)?;
    Client::connect(ring).context("cannot create client")
}
