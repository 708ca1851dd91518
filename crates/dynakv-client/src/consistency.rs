//! Consistency levels: how many replicas an operation waits for, or whether it runs the
//! linearizable (ABD) rounds instead.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use dynakv_core::Record;
use dynakv_ring::Replication;

use crate::client::Client;
use crate::error::{ClientError, Op, Written};
use crate::quorum::Late;

/// How strongly one operation is ordered against the others on its key.
///
/// The quorum levels wait for R replies (reads) or W acknowledgements (writes) out of the key's
/// N replicas; [`Linearizable`](Self::Linearizable) runs the ABD rounds of the
/// [`linearizable`](crate::linearizable) module over strict majorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// R = 1 and W = 1: the fastest, and the weakest: a read may miss any write.
    One,
    /// R and W from the ring file's `[replication]` table (the default).
    #[default]
    Quorum,
    /// R = N and W = N: every replica must answer.
    All,
    /// Explicit R and W, each between 1 and N.
    Custom {
        /// Replies a read waits for.
        r: usize,
        /// Acknowledgements a write waits for.
        w: usize,
    },
    /// Linearizable reads, writes and deletes of single keys over strict majorities (ABD).
    Linearizable,
}

/// What one operation runs: a plain quorum round, or the linearizable rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Wait for this many replies or acknowledgements.
    Quorum(usize),
    /// The ABD rounds over strict majorities of the key's replicas.
    Linearizable,
}

impl Consistency {
    /// The level one operation of kind `op` runs at; `asked` (a per-call R or W) replaces the
    /// level's quorum, except for [`Linearizable`](Self::Linearizable), which has none.
    pub(crate) fn level(
        self,
        op: Op,
        asked: Option<usize>,
        replication: Replication,
    ) -> Result<Level, ClientError> {
        let (r, w) = match self {
            Consistency::Linearizable => {
                if let Some(asked) = asked {
                    return Err(ClientError::QuorumWithLinearizable { op, asked });
                }
                return Ok(Level::Linearizable);
            }
            Consistency::One => (1, 1),
            Consistency::Quorum => (replication.r, replication.w),
            Consistency::All => (replication.n, replication.n),
            Consistency::Custom { r, w } => (r, w),
        };
        let quorum = asked.unwrap_or(match op {
            Op::Read => r,
            Op::Write => w,
        });
        if quorum == 0 || quorum > replication.n {
            return Err(ClientError::InvalidQuorum { op, asked: quorum, n: replication.n });
        }
        Ok(Level::Quorum(quorum))
    }
}

impl Client {
    /// The level an operation runs at: the per-call quorum `asked` and consistency, else the
    /// client's consistency, checked against N.
    pub(crate) fn level(
        &self,
        op: Op,
        asked: Option<usize>,
        consistency: Option<Consistency>,
    ) -> Result<Level, ClientError> {
        let consistency = consistency.unwrap_or(self.shared.options.consistency);
        consistency.level(op, asked, self.shared.ring.replication())
    }

    /// Writes a prepared record at `level`: a quorum write (with retries; `strict` refuses a
    /// sloppy quorum), or a linearizable one, which takes a fresh version for it.
    pub(crate) async fn write_at(
        &self,
        level: Level,
        key: Bytes,
        record: Record,
        strict: bool,
        late: Late,
    ) -> Result<Written, ClientError> {
        match level {
            Level::Linearizable => self.write_linearizable(key, record, late).await,
            Level::Quorum(w) => {
                let version = record.version;
                let outcome = self.write_retrying(key, record, w, strict, late).await?;
                Ok(Written { version, outcome })
            }
        }
    }

    /// Reads a key at `level`: the newest record (tombstones and expired records included).
    pub(crate) async fn read_at(
        &self,
        level: Level,
        key: Bytes,
        late: Late,
    ) -> Result<Option<Record>, ClientError> {
        match level {
            Level::Linearizable => self.read_linearizable(key, late).await,
            Level::Quorum(r) => self.read_retrying(key, r, late).await,
        }
    }
}

/// A strict majority of `n` replicas.
pub(crate) fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::One => f.write_str("one"),
            Consistency::Quorum => f.write_str("quorum"),
            Consistency::All => f.write_str("all"),
            Consistency::Custom { r, w } => write!(f, "r={r},w={w}"),
            Consistency::Linearizable => f.write_str("linearizable"),
        }
    }
}

/// A consistency level name that is not one of `one`, `quorum`, `all`, `linearizable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown consistency level {0:?}: expected one, quorum, all or linearizable")]
pub struct UnknownConsistency(pub String);

impl FromStr for Consistency {
    type Err = UnknownConsistency;

    /// Parses `one`, `quorum`, `all` or `linearizable` (any case).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            "linearizable" => Ok(Consistency::Linearizable),
            _ => Err(UnknownConsistency(text.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N3: Replication = Replication { n: 3, r: 2, w: 2 };

    #[test]
    fn levels_map_to_quorums() {
        let level = |c: Consistency, op, asked| c.level(op, asked, N3).unwrap();
        assert_eq!(level(Consistency::One, Op::Read, None), Level::Quorum(1));
        assert_eq!(level(Consistency::Quorum, Op::Write, None), Level::Quorum(2));
        assert_eq!(level(Consistency::All, Op::Read, None), Level::Quorum(3));
        assert_eq!(level(Consistency::Custom { r: 1, w: 3 }, Op::Write, None), Level::Quorum(3));
        assert_eq!(level(Consistency::All, Op::Read, Some(1)), Level::Quorum(1), "asked wins");
        assert_eq!(level(Consistency::Linearizable, Op::Read, None), Level::Linearizable);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn bad_levels_are_refused() {
        let custom = Consistency::Custom { r: 4, w: 1 };
        assert!(matches!(
            custom.level(Op::Read, None, N3),
            Err(ClientError::InvalidQuorum { asked: 4, n: 3, .. })
        ));
        assert!(matches!(
            Consistency::Linearizable.level(Op::Write, Some(2), N3),
            Err(ClientError::QuorumWithLinearizable { op: Op::Write, asked: 2 })
        ));
        assert_eq!("Linearizable".parse(), Ok(Consistency::Linearizable));
        assert_eq!(
            "most".parse::<Consistency>().unwrap_err().to_string(),
            "unknown consistency level \"most\": expected one, quorum, all or linearizable"
        );
    }
}
