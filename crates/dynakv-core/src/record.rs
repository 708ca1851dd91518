//! Records and the last-write-wins merge rule, applied everywhere two records for one key meet:
//! node writes, read resolution, read repair.

use bytes::Bytes;

use crate::version::Version;

/// What a replica holds for a key: a value or a tombstone, with its version and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The write that produced this record.
    pub version: Version,
    /// The value; `None` is a tombstone, which wins over older values like any other write.
    pub value: Option<Bytes>,
    /// Absolute expiry in Unix milliseconds; 0 means never. Absolute, so every copy expires at once.
    pub expires_at_ms: u64,
}

impl Record {
    /// A value written at `version` that never expires.
    pub fn value(version: Version, value: Bytes) -> Self {
        Record { version, value: Some(value), expires_at_ms: 0 }
    }

    /// A tombstone written at `version`.
    pub fn tombstone(version: Version) -> Self {
        Record { version, value: None, expires_at_ms: 0 }
    }

    /// True for a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// True once the record's expiry time has passed at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }

    /// The value a reader sees at `now_ms`: `None` for tombstones and expired records.
    pub fn visible_value(&self, now_ms: u64) -> Option<&Bytes> {
        if self.is_expired_at(now_ms) { None } else { self.value.as_ref() }
    }

    /// Unix ms since which the record reads as absent for good ([`dead_since`]); `None` for a
    /// value that never expires.
    pub fn dead_since(&self) -> Option<u64> {
        dead_since(self.version, self.is_tombstone(), self.expires_at_ms)
    }

    /// True when this record must replace `other`: its version supersedes `other`'s
    /// ([`Version::supersedes`]).
    pub fn supersedes(&self, other: &Record) -> bool {
        self.version.supersedes(other.version)
    }
}

/// The last-write-wins rule: the record with the higher version. Equal versions are the same
/// write, so either is the answer; the first is returned.
pub fn merge<'a>(a: &'a Record, b: &'a Record) -> &'a Record {
    if b.supersedes(a) { b } else { a }
}

/// Unix ms since which a record with these fields reads as absent for good: for a tombstone, its
/// write or its expiry, whichever is later; for a value with an expiry, the same (the expiry,
/// unless the write was stamped after it); `None` for a value that never expires. What the
/// tombstone grace period counts from.
pub fn dead_since(version: Version, tombstone: bool, expires_at_ms: u64) -> Option<u64> {
    (tombstone || expires_at_ms != 0).then(|| version.timestamp.millis().max(expires_at_ms))
}

/// Milliseconds since the Unix epoch by the system clock, for expiry checks.
pub fn now_ms() -> u64 {
    crate::clock::system_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Timestamp;
    use proptest::prelude::*;

    /// A record whose content is a function of its version, as the store guarantees: one
    /// version is one write.
    fn record(ts: u64, writer: u64) -> Record {
        let version = Version::new(Timestamp(ts), writer);
        match (ts + writer) % 3 {
            0 => Record::tombstone(version),
            1 => Record::value(version, Bytes::from(format!("{ts}/{writer}"))),
            _ => Record { expires_at_ms: ts, ..Record::value(version, Bytes::new()) },
        }
    }

    fn any_record() -> impl Strategy<Value = Record> {
        (0u64..50, 0u64..4).prop_map(|(ts, writer)| record(ts, writer))
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in any_record(), b in any_record()) {
            prop_assert_eq!(merge(&a, &b), merge(&b, &a));
        }

        #[test]
        fn merge_is_idempotent(a in any_record()) {
            prop_assert_eq!(merge(&a, &a), &a);
        }

        #[test]
        fn merge_is_associative(a in any_record(), b in any_record(), c in any_record()) {
            prop_assert_eq!(merge(merge(&a, &b), &c), merge(&a, merge(&b, &c)));
        }

        #[test]
        fn merge_keeps_the_highest_version(a in any_record(), b in any_record()) {
            let winner = merge(&a, &b);
            prop_assert!(winner.version >= a.version && winner.version >= b.version);
        }
    }

    #[test]
    fn tombstones_win_over_older_values() {
        let old = record(1, 1);
        let delete = Record::tombstone(Version::new(Timestamp(2), 0));
        assert!(merge(&old, &delete).is_tombstone());
        assert!(merge(&delete, &old).is_tombstone());
    }

    #[test]
    fn expired_records_are_invisible() {
        let r =
            Record { expires_at_ms: 100, ..Record::value(Version::default(), Bytes::from("v")) };
        assert_eq!(r.visible_value(99).map(|v| &v[..]), Some(&b"v"[..]));
        assert_eq!(r.visible_value(100), None);
        let forever = Record::value(Version::default(), Bytes::from("v"));
        assert!(forever.visible_value(u64::MAX).is_some());
    }
}
