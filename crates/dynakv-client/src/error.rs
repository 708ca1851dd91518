//! What can go wrong for a client call, with the numbers a caller needs to act on it.

use std::fmt;
use std::time::Duration;

use dynakv_core::{InputError, Version};
use thiserror::Error;

/// A failed client call.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The key or value was refused before anything was sent.
    #[error("invalid input: {0}")]
    Input(#[from] InputError),
    /// A per-call R or W outside 1..=N.
    #[error("{op} quorum {asked} is out of range: must be between 1 and n = {n}")]
    InvalidQuorum {
        /// Read or write.
        op: Op,
        /// The quorum asked for.
        asked: usize,
        /// Replicas per key.
        n: usize,
    },
    /// Fewer replicas answered than the quorum needs.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// A per-call R or W asked of a linearizable operation, which always uses majorities.
    #[error(
        "{op} quorum {asked} given with consistency linearizable, which uses strict majorities"
    )]
    QuorumWithLinearizable {
        /// Read or write.
        op: Op,
        /// The quorum asked for.
        asked: usize,
    },
    /// A linearizable operation missed a strict majority in one of its rounds.
    #[error("linearizable {op}: {round} missed its majority: {quorum}{}", not_sent(*.op, *.round))]
    Linearizable {
        /// A get, or a put or delete.
        op: Op,
        /// The round that failed.
        round: Round,
        /// How many replicas answered, and why the others did not.
        quorum: QuorumError,
    },
    /// A time-to-live of zero, or too long to express as an expiry time.
    #[error("invalid ttl {ttl:?}: must be at least 1ms and end before the year 10000")]
    InvalidTtl {
        /// The ttl asked for.
        ttl: Duration,
    },
    /// A node id that is not in the ring.
    #[error("node {0:?} is not in the ring")]
    UnknownNode(String),
    /// A call to one particular node (a dump, a repair) failed.
    #[error("node {node}: {cause}")]
    Node {
        /// The node's id.
        node: String,
        /// What went wrong.
        cause: ReplicaError,
    },
    /// No node answered with its ring (every `GetRing` failed).
    #[error("no node answered with its ring: {errors}")]
    RingUnavailable {
        /// Why each node did not, one `id: cause` per node.
        errors: String,
    },
    /// A membership change was refused, or no node could be asked to make it.
    #[error("{message}")]
    Membership {
        /// The node that refused it (empty when none answered).
        node: String,
        /// The gRPC status code of the refusal (`Unavailable` when no node answered).
        code: tonic::Code,
        /// Why, in the node's words (e.g. "node n4 is already in the ring").
        message: String,
    },
    /// A node sent a ring this client cannot use.
    #[error("node {node} sent a ring that does not parse: {reason}")]
    BadRing {
        /// The node's id.
        node: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The ring file's `[tls]` certificates cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] dynakv_tls::TlsError),
    /// A node's address cannot be used to build a channel.
    #[error("node {node}: bad address: {reason}")]
    Address {
        /// The node's id.
        node: String,
        /// Why the address was refused.
        reason: String,
    },
}

impl ClientError {
    /// True when the failure may go away on a retry: a quorum missed because replicas were
    /// unreachable, slow or unavailable (see [`ReplicaError::is_retryable`]). Bad input, bad
    /// quorums, unknown nodes and requests every replica refused as invalid are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Quorum(quorum) => quorum.is_retryable(),
            ClientError::Linearizable { quorum, .. } => quorum.is_retryable(),
            ClientError::Node { cause, .. } => cause.is_retryable(),
            ClientError::RingUnavailable { .. } => true,
            ClientError::Membership { code, .. } => {
                matches!(code, tonic::Code::Unavailable | tonic::Code::Aborted)
            }
            _ => false,
        }
    }

    /// For a failed put or delete: whether it was certainly not applied, or may have been
    /// (some replica may hold it, so a later read may see it). `None` for other failures.
    /// Failures caught before sending (bad input or quorum) are `NotApplied`.
    pub fn write_outcome(&self) -> Option<WriteOutcome> {
        match self {
            ClientError::Quorum(quorum) if quorum.op == Op::Write => Some(quorum.write_outcome()),
            ClientError::Linearizable { op: Op::Write, round: Round::ReadVersions, .. } => {
                Some(WriteOutcome::NotApplied)
            }
            ClientError::Linearizable { op: Op::Write, quorum, .. } => Some(quorum.write_outcome()),
            ClientError::Quorum(_)
            | ClientError::Linearizable { .. }
            | ClientError::Node { .. }
            | ClientError::UnknownNode(_)
            | ClientError::RingUnavailable { .. }
            | ClientError::Membership { .. }
            | ClientError::BadRing { .. } => None,
            ClientError::Input(_)
            | ClientError::InvalidQuorum { .. }
            | ClientError::QuorumWithLinearizable { .. }
            | ClientError::InvalidTtl { .. }
            | ClientError::Address { .. }
            | ClientError::Tls(_) => Some(WriteOutcome::NotApplied),
        }
    }
}

/// Which kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A get.
    Read,
    /// A put or delete.
    Write,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
        })
    }
}

/// What a failed linearizable write that never reached its write round adds to its message.
fn not_sent(op: Op, round: Round) -> &'static str {
    match (op, round) {
        (Op::Write, Round::ReadVersions) => "; the write was not applied",
        _ => "",
    }
}

/// The rounds of a linearizable operation (see [`crate::linearizable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Reading the key from a majority: the versions a put or delete must write above, or the
    /// record a get returns. Nothing has been written when this round fails.
    ReadVersions,
    /// Writing a put's or delete's record to a majority.
    Write,
    /// A get writing the newest record it read back to a majority before returning it.
    WriteBack,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Round::ReadVersions => "reading the newest version",
            Round::Write => "writing",
            Round::WriteBack => "writing the newest record back",
        })
    }
}

/// What became of a put or delete: for one that met its quorum, whether it is the key's value
/// now ([`Applied`](Self::Applied)) or lost to a newer write ([`Superseded`](Self::Superseded));
/// for one that missed it, whether it may have landed anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The quorum stored it and no replica answered with a newer version.
    Applied,
    /// The quorum acknowledged it, but a replica already held a newer version of the key, so
    /// this write lost the merge (last write wins): reads return the newer one. Happens when
    /// another writer wrote the key later, or with a clock further ahead than this client's.
    Superseded {
        /// The newer version a replica holds.
        by: Version,
    },
    /// No replica stored it: every request was refused or never sent.
    NotApplied,
    /// Some replica may have stored it; a later read may see it.
    Unknown,
}

/// A put or delete that met its quorum: its version, and whether it is the key's value now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The write's version.
    pub version: Version,
    /// [`WriteOutcome::Applied`], or [`WriteOutcome::Superseded`] with the newer version.
    pub outcome: WriteOutcome,
}

impl Written {
    /// True unless a replica already held a newer version.
    pub fn is_applied(&self) -> bool {
        self.outcome == WriteOutcome::Applied
    }
}

/// Fewer replicas answered than the quorum needs.
#[derive(Debug, Clone, Error)]
pub struct QuorumError {
    /// Read or write.
    pub op: Op,
    /// Replies the quorum needed.
    pub needed: usize,
    /// Replicas that answered successfully (acknowledged a write, or returned a read); for a
    /// write during a ring change, those of the current replica set.
    pub got: usize,
    /// Replicas the key has (N): in the current placement.
    pub replicas: usize,
    /// For a write during a ring change: the count in the target replica set, which needed
    /// `needed` acknowledgements too (a joint quorum). `None` outside a change, and for reads.
    pub target: Option<SetCount>,
    /// Why each other replica did not answer.
    pub failures: Vec<ReplicaFailure>,
}

/// How many of one replica set acknowledged a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetCount {
    /// Members that acknowledged (or whose stand-in did).
    pub got: usize,
    /// Members the set has.
    pub replicas: usize,
}

impl QuorumError {
    /// True when some replica failed in a way a retry may not repeat (see
    /// [`ReplicaError::is_retryable`]), so a later attempt may reach the quorum.
    pub fn is_retryable(&self) -> bool {
        self.failures.iter().any(|f| f.cause.is_retryable())
    }

    /// The newest ring version a replica refused the request for (its ring is newer than the
    /// one the request was placed by), if any did.
    pub fn stale_ring(&self) -> Option<u64> {
        self.failures
            .iter()
            .filter_map(|f| match f.cause {
                ReplicaError::StaleRing { ring_version } => Some(ring_version),
                _ => None,
            })
            .max()
    }

    /// The largest clock skew a replica refused the write for, if any did: this client's clock
    /// is ahead of the cluster's by about that much.
    pub fn clock_skew(&self) -> Option<(u64, u64)> {
        self.failures
            .iter()
            .filter_map(|f| match f.cause {
                ReplicaError::ClockSkew { ahead_ms, max_skew_ms } => Some((ahead_ms, max_skew_ms)),
                _ => None,
            })
            .max()
    }

    /// For writes: whether the write may have landed on some replicas.
    pub fn write_outcome(&self) -> WriteOutcome {
        let target_got = self.target.map_or(0, |target| target.got);
        if self.got > 0
            || target_got > 0
            || self.failures.iter().any(|f| f.cause.may_have_applied())
        {
            WriteOutcome::Unknown
        } else {
            WriteOutcome::NotApplied
        }
    }
}

impl fmt::Display for QuorumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.op {
            Op::Read => "answered",
            Op::Write => "acknowledged",
        };
        match self.target {
            None => write!(
                f,
                "{} quorum not met: {} of {} required replicas {verb} (of {} replicas",
                self.op, self.got, self.needed, self.replicas
            )?,
            Some(target) => write!(
                f,
                "{} joint quorum not met (the ring is changing; {} needed in each replica set): \
                 {} of {} current replicas and {} of {} target replicas {verb} (",
                self.op, self.needed, self.got, self.replicas, target.got, target.replicas
            )?,
        }
        let first = if self.target.is_some() { "" } else { "; " };
        if self.target.is_some() && self.failures.is_empty() {
            f.write_str("no failures yet")?;
        }
        for (i, failure) in self.failures.iter().enumerate() {
            f.write_str(if i == 0 { first } else { ", " })?;
            write!(f, "{}: {}", failure.node, failure.cause)?;
        }
        f.write_str(")")?;
        if self.op == Op::Write {
            match self.write_outcome() {
                WriteOutcome::Unknown => f.write_str(
                    "; outcome unknown: the write may have been applied on some replicas",
                )?,
                _ => f.write_str("; the write was not applied")?,
            }
        }
        Ok(())
    }
}

/// One replica's failure within a quorum call.
#[derive(Debug, Clone)]
pub struct ReplicaFailure {
    /// The node's id.
    pub node: String,
    /// What went wrong.
    pub cause: ReplicaError,
}

/// Why one replica did not answer.
#[derive(Debug, Clone, Error)]
pub enum ReplicaError {
    /// The node failed recently and is skipped until its next retry.
    #[error("down, next retry in {}ms", retry_in.as_millis())]
    Down {
        /// Time until the client tries the node again.
        retry_in: Duration,
    },
    /// No reply before the request deadline.
    #[error("timed out after {}ms", after.as_millis())]
    Timeout {
        /// The deadline that passed.
        after: Duration,
    },
    /// The node refused the connection: nothing was sent, so nothing was applied.
    #[error("connection refused")]
    Refused,
    /// The TLS handshake failed: one side refused the other's certificate (or one side does not
    /// speak TLS). Nothing was sent, so nothing was applied; retrying does not help.
    #[error("TLS refused: {0}")]
    Tls(String),
    /// The node could not be reached or dropped the connection.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The node refused the write: its timestamp is further ahead of the node's clock than the
    /// ring's `max_skew_ms` allows (this client's clock is ahead of the cluster's).
    #[error(
        "clock skew: the write is stamped {ahead_ms} ms ahead of the node's clock (max_skew_ms = {max_skew_ms})"
    )]
    ClockSkew {
        /// How far ahead of the node's clock the write's timestamp is, in milliseconds.
        ahead_ms: u64,
        /// The ring's bound.
        max_skew_ms: u64,
    },
    /// The node serves a newer ring than the request was placed by, or is no replica of the
    /// key in its ring: the client fetches the ring and tries again (same record and version).
    #[error("stale ring: the node serves ring v{ring_version}")]
    StaleRing {
        /// The ring version the node serves.
        ring_version: u64,
    },
    /// The node answered with an error.
    #[error("{code:?}: {message}")]
    Rejected {
        /// The gRPC status code.
        code: tonic::Code,
        /// The node's message.
        message: String,
    },
}

impl ReplicaError {
    /// True when the request may have reached the node and been applied.
    pub fn may_have_applied(&self) -> bool {
        match self {
            ReplicaError::Down { .. }
            | ReplicaError::Refused
            | ReplicaError::Tls(_)
            | ReplicaError::ClockSkew { .. }
            | ReplicaError::StaleRing { .. } => false,
            ReplicaError::Rejected { code, .. } => {
                !matches!(code, tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition)
            }
            ReplicaError::Timeout { .. } | ReplicaError::Unreachable(_) => true,
        }
    }

    /// True when trying again may succeed: the node was down, slow, unreachable or said it is
    /// unavailable (e.g. shutting down), or the call was aborted or exhausted a resource. A
    /// request the node refused as invalid or misrouted, or failed internally, is not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReplicaError::Down { .. }
            | ReplicaError::Timeout { .. }
            | ReplicaError::Refused
            | ReplicaError::Unreachable(_)
            | ReplicaError::StaleRing { .. } => true,
            ReplicaError::ClockSkew { .. } | ReplicaError::Tls(_) => false,
            ReplicaError::Rejected { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
            ),
        }
    }

    /// True when the failure says the node (not the request) is unwell.
    pub fn counts_against_health(&self) -> bool {
        match self {
            ReplicaError::Timeout { .. }
            | ReplicaError::Refused
            | ReplicaError::Tls(_)
            | ReplicaError::Unreachable(_) => true,
            ReplicaError::Rejected { code, .. } => {
                matches!(code, tonic::Code::Unavailable | tonic::Code::Internal)
            }
            ReplicaError::Down { .. }
            | ReplicaError::ClockSkew { .. }
            | ReplicaError::StaleRing { .. } => false,
        }
    }

    /// A reply the node sent that the client cannot use (missing or malformed parts).
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        ReplicaError::Rejected { code: tonic::Code::Internal, message: message.into() }
    }

    /// Classifies a gRPC status from a call.
    pub fn from_status(status: tonic::Status) -> Self {
        if let Some(skew) = dynakv_proto::convert::clock_skew_of(&status) {
            return ReplicaError::ClockSkew {
                ahead_ms: skew.ahead_ms,
                max_skew_ms: skew.max_skew_ms,
            };
        }
        if let Some(reason) = tls_failure(&status) {
            return ReplicaError::Tls(reason);
        }
        if let Some(ring_version) = dynakv_proto::convert::stale_ring_of(&status) {
            return ReplicaError::StaleRing { ring_version };
        }
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if is_transport(&status) => {
                if connection_refused(&status) {
                    ReplicaError::Refused
                } else {
                    ReplicaError::Unreachable(transport_reason(&status))
                }
            }
            code => ReplicaError::Rejected { code, message: status.message().to_string() },
        }
    }
}

/// True when tonic produced the status because the connection failed, not the node.
fn is_transport(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable || std::error::Error::source(status).is_some()
}

/// True when the connection attempt itself was refused (no request was sent).
fn connection_refused(status: &tonic::Status) -> bool {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// What went wrong when a call failed in a TLS handshake, said so a user knows what to fix.
/// Matched on rustls's messages: HTTP/2 keeps only the text of the I/O errors it passes on.
fn tls_failure(status: &tonic::Status) -> Option<String> {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = cause {
        let text = e.to_string();
        if let Some(alert) = text.strip_prefix("received fatal alert: ") {
            return Some(format!(
                "the node refused this client's certificate ({alert}): it must be signed by the \
                 cluster CA of the ring file's [tls] table"
            ));
        }
        if let Some(why) = text.strip_prefix("invalid peer certificate: ") {
            return Some(format!(
                "the node's certificate is not trusted ({why}): it must be signed by the cluster \
                 CA of the ring file's [tls] table, for the node's address"
            ));
        }
        if text.starts_with("received corrupt message") {
            return Some(format!("{text}: the node does not seem to serve TLS"));
        }
        cause = e.source();
    }
    None
}

/// The innermost cause of a transport failure (e.g. "Connection refused (os error 111)").
fn transport_reason(status: &tonic::Status) -> String {
    let mut cause: &dyn std::error::Error = status;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let reason = cause.to_string();
    if reason.is_empty() { status.message().to_string() } else { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_errors_say_how_many_acked_and_why() {
        let err = QuorumError {
            op: Op::Write,
            needed: 2,
            got: 1,
            replicas: 3,
            target: None,
            failures: vec![
                ReplicaFailure {
                    node: "n2".into(),
                    cause: ReplicaError::Unreachable("broken pipe".into()),
                },
                ReplicaFailure {
                    node: "n3".into(),
                    cause: ReplicaError::Down { retry_in: Duration::from_millis(200) },
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "write quorum not met: 1 of 2 required replicas acknowledged (of 3 replicas; \
             n2: unreachable: broken pipe, n3: down, next retry in 200ms); \
             outcome unknown: the write may have been applied on some replicas"
        );
        assert!(err.is_retryable());
        let none = QuorumError { got: 0, failures: err.failures[1..].to_vec(), ..err.clone() };
        assert_eq!(none.write_outcome(), WriteOutcome::NotApplied);
        let client = ClientError::Quorum(none);
        assert_eq!(client.write_outcome(), Some(WriteOutcome::NotApplied));

        let misrouted = ReplicaError::Rejected {
            code: tonic::Code::FailedPrecondition,
            message: "misrouted".into(),
        };
        let refused = QuorumError {
            failures: vec![ReplicaFailure { node: "n2".into(), cause: misrouted }],
            ..err
        };
        assert!(!refused.is_retryable(), "a misrouted request fails the same way again");
        assert!(!ClientError::Input(InputError::EmptyKey).is_retryable());
    }
}
