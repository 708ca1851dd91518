//! Conversions between wire messages and the core vocabulary.

use std::time::Duration;

use dynakv_core::{ClockSkew, HandoffReport, Record, RepairReport, Timestamp, Version};

use crate::v1;

/// A wire message that is missing a required part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingField(pub &'static str);

impl std::fmt::Display for MissingField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "message has no {}", self.0)
    }
}

impl std::error::Error for MissingField {}

impl From<Version> for v1::Version {
    fn from(v: Version) -> Self {
        v1::Version { timestamp: v.timestamp.0, writer: v.writer }
    }
}

impl From<v1::Version> for Version {
    fn from(v: v1::Version) -> Self {
        Version::new(Timestamp(v.timestamp), v.writer)
    }
}

impl From<Record> for v1::Record {
    fn from(r: Record) -> Self {
        v1::Record {
            version: Some(r.version.into()),
            tombstone: r.value.is_none(),
            value: r.value.unwrap_or_default(),
            expires_at_ms: r.expires_at_ms,
        }
    }
}

impl TryFrom<v1::Record> for Record {
    type Error = MissingField;

    fn try_from(r: v1::Record) -> Result<Self, MissingField> {
        let version = r.version.ok_or(MissingField("record version"))?.into();
        let value = if r.tombstone { None } else { Some(r.value) };
        Ok(Record { version, value, expires_at_ms: r.expires_at_ms })
    }
}

impl From<RepairReport> for v1::RepairReport {
    fn from(r: RepairReport) -> Self {
        v1::RepairReport {
            node_id: r.node,
            ranges_compared: r.ranges_compared,
            ranges_differing: r.ranges_differing,
            keys_sent: r.keys_sent,
            keys_received: r.keys_received,
            bytes: r.bytes,
            millis: r.elapsed.as_millis() as u64,
            tombstones_collected: r.tombstones_collected,
            unreachable: r.unreachable,
            ranges_failed: r.ranges_failed,
            errors: r.errors,
            ranges_held: r.ranges_held,
            records_damaged: r.records_damaged,
        }
    }
}

impl From<v1::RepairReport> for RepairReport {
    fn from(r: v1::RepairReport) -> Self {
        RepairReport {
            node: r.node_id,
            ranges_compared: r.ranges_compared,
            ranges_differing: r.ranges_differing,
            keys_sent: r.keys_sent,
            keys_received: r.keys_received,
            bytes: r.bytes,
            tombstones_collected: r.tombstones_collected,
            unreachable: r.unreachable,
            ranges_failed: r.ranges_failed,
            errors: r.errors,
            ranges_held: r.ranges_held,
            records_damaged: r.records_damaged,
            elapsed: Duration::from_millis(r.millis),
        }
    }
}

impl From<HandoffReport> for v1::HandoffReport {
    fn from(r: HandoffReport) -> Self {
        v1::HandoffReport {
            node_id: r.node,
            delivered: r.delivered,
            failed: r.failed,
            pending: r.pending,
            millis: r.elapsed.as_millis() as u64,
            errors: r.errors,
        }
    }
}

impl From<v1::HandoffReport> for HandoffReport {
    fn from(r: v1::HandoffReport) -> Self {
        HandoffReport {
            node: r.node_id,
            delivered: r.delivered,
            failed: r.failed,
            pending: r.pending,
            errors: r.errors,
            elapsed: Duration::from_millis(r.millis),
        }
    }
}

/// The status a node refuses a write with when its timestamp is too far ahead of the node's
/// clock: OUT_OF_RANGE, with the skew in its details so the caller gets the numbers, typed.
pub fn clock_skew_status(node: &str, skew: ClockSkew) -> tonic::Status {
    use prost::Message;
    let details = v1::ClockSkew { ahead_ms: skew.ahead_ms, max_skew_ms: skew.max_skew_ms };
    let message = format!(
        "clock skew: node {node} refused a write stamped {} ms ahead of its clock \
         (max_skew_ms = {})",
        skew.ahead_ms, skew.max_skew_ms
    );
    tonic::Status::with_details(tonic::Code::OutOfRange, message, details.encode_to_vec().into())
}

/// The clock skew a status reports, if it is a node's refusal of a write stamped too far ahead.
pub fn clock_skew_of(status: &tonic::Status) -> Option<ClockSkew> {
    use prost::Message;
    if status.code() != tonic::Code::OutOfRange || status.details().is_empty() {
        return None;
    }
    let wire = v1::ClockSkew::decode(status.details()).ok()?;
    Some(ClockSkew { ahead_ms: wire.ahead_ms, max_skew_ms: wire.max_skew_ms })
}

/// The status a node refuses a request with when the request was placed by an older ring than
/// the node serves, or the node holds no replica of the key in its ring: FAILED_PRECONDITION,
/// with the node's ring version in its details, so the caller knows to fetch the newer ring.
pub fn stale_ring_status(message: String, ring_version: u64) -> tonic::Status {
    use prost::Message;
    let details = v1::StaleRing { ring_version };
    tonic::Status::with_details(
        tonic::Code::FailedPrecondition,
        message,
        details.encode_to_vec().into(),
    )
}

/// The ring version a node's refusal reports, if the status is a stale-ring refusal.
pub fn stale_ring_of(status: &tonic::Status) -> Option<u64> {
    use prost::Message;
    if status.code() != tonic::Code::FailedPrecondition || status.details().is_empty() {
        return None;
    }
    Some(v1::StaleRing::decode(status.details()).ok()?.ring_version)
}

/// A batch operation's error as the status a single call would have failed with.
pub fn op_error_status(error: v1::OpError) -> tonic::Status {
    tonic::Status::with_details(tonic::Code::from(error.code), error.message, error.details)
}

/// A status as a batch operation's error, details included.
pub fn status_op_error(status: &tonic::Status) -> v1::OpError {
    v1::OpError {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: bytes::Bytes::copy_from_slice(status.details()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn records_round_trip() {
        let version = Version::new(Timestamp(77), 9);
        for record in [
            Record::value(version, Bytes::from_static(b"v")),
            Record::value(version, Bytes::new()),
            Record::tombstone(version),
        ] {
            let wire: v1::Record = record.clone().into();
            assert_eq!(Record::try_from(wire).unwrap(), record);
        }
        let bare = v1::Record { version: None, ..Default::default() };
        assert_eq!(Record::try_from(bare), Err(MissingField("record version")));
    }

    #[test]
    fn clock_skew_survives_a_status_and_a_batch_error() {
        let skew = ClockSkew { ahead_ms: 3_600_000, max_skew_ms: 500 };
        let status = clock_skew_status("n1", skew);
        assert!(status.message().starts_with("clock skew: node n1"), "{}", status.message());
        assert_eq!(clock_skew_of(&status), Some(skew));
        let batched = op_error_status(status_op_error(&status));
        assert_eq!(clock_skew_of(&batched), Some(skew));
        assert_eq!(clock_skew_of(&tonic::Status::out_of_range("message length too large")), None);
    }

    #[test]
    fn a_stale_ring_refusal_carries_the_newer_version() {
        let status = stale_ring_status("stale".into(), 7);
        assert_eq!(stale_ring_of(&status), Some(7));
        assert_eq!(stale_ring_of(&op_error_status(status_op_error(&status))), Some(7));
        assert_eq!(stale_ring_of(&tonic::Status::failed_precondition("misrouted")), None);
    }
}
