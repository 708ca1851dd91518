//! What a node keeps of membership across restarts, each in a small file of its own under the
//! data directory's `membership/` folder: the live ring, the Paxos acceptor's promises, and the
//! progress of the ranges it is gaining. Each file is replaced atomically (written aside,
//! fsynced, renamed, the folder fsynced), so a crash leaves the old copy or the new one.
//! Nodes without a data directory (in-memory engines) keep them in memory only.

use std::io::Write;
use std::path::PathBuf;

use serde::{Serialize, de::DeserializeOwned};

/// The live ring, as ring-file TOML.
pub const RING: &str = "ring.toml";
/// The acceptor's state for the next ring version.
pub const ACCEPTOR: &str = "acceptor.json";
/// The progress of the move in progress.
pub const MOVES: &str = "moves.json";

/// The folder membership files live in, if the node has one.
#[derive(Debug, Clone)]
pub struct Meta {
    dir: Option<PathBuf>,
}

impl Meta {
    /// Membership files under `data_dir/membership` (created if missing); none without a
    /// data directory.
    pub fn open(data_dir: Option<&std::path::Path>) -> std::io::Result<Meta> {
        let dir = data_dir.map(|d| d.join("membership"));
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Meta { dir })
    }

    /// The text of file `name`, if it exists.
    pub fn read(&self, name: &str) -> std::io::Result<Option<String>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces file `name` with `text`, durably.
    pub fn write(&self, name: &str, text: &str) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(text.as_bytes())?;
        file.as_file().sync_all()?;
        file.persist(dir.join(name)).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// File `name` as JSON, if it exists and parses.
    pub fn load<T: DeserializeOwned>(&self, name: &str) -> std::io::Result<Option<T>> {
        let Some(text) = self.read(name)? else { return Ok(None) };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Replaces file `name` with `value` as JSON, durably.
    pub fn store<T: Serialize>(&self, name: &str, value: &T) -> std::io::Result<()> {
        self.write(name, &serde_json::to_string(value).expect("membership state serializes"))
    }
}
