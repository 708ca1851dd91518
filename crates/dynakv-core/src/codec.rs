//! The binary encoding of a [`Record`] in a storage engine: a fixed 26-byte header, then the value.
//!
//! ```text
//! format u8 (=1) | flags u8 (bit 0: tombstone) | timestamp u64 BE | writer u64 BE | expires_at_ms u64 BE | value
//! ```

use bytes::Bytes;
use thiserror::Error;

use crate::hlc::Timestamp;
use crate::record::Record;
use crate::version::Version;

/// The encoding's format byte; bumped if the layout ever changes.
const FORMAT: u8 = 1;
/// Flag bit set on tombstones.
const TOMBSTONE: u8 = 1;
/// Bytes before the value.
pub const HEADER_LEN: usize = 26;

/// A stored record could not be decoded: the bytes are damaged or from an unknown format.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// Fewer bytes than the header needs.
    #[error("stored record is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated(usize),
    /// The format byte is not one this build knows.
    #[error("stored record has unknown format {0}")]
    UnknownFormat(u8),
}

/// Encodes a record for storage.
pub fn encode(record: &Record) -> Vec<u8> {
    let value = record.value.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.push(FORMAT);
    out.push(if record.is_tombstone() { TOMBSTONE } else { 0 });
    out.extend_from_slice(&record.version.timestamp.0.to_be_bytes());
    out.extend_from_slice(&record.version.writer.to_be_bytes());
    out.extend_from_slice(&record.expires_at_ms.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes only the version of a stored record, without copying its value.
pub fn decode_version(bytes: &[u8]) -> Result<Version, CodecError> {
    let header = header(bytes)?;
    Ok(Version::new(Timestamp(u64_at(header, 2)), u64_at(header, 10)))
}

/// Decodes the version of a stored record and whether it is a tombstone, without its value.
pub fn decode_meta(bytes: &[u8]) -> Result<(Version, bool), CodecError> {
    let header = header(bytes)?;
    Ok((decode_version(bytes)?, header[1] & TOMBSTONE != 0))
}

/// Decodes the absolute expiry (Unix ms, 0 = never) of a stored record, without its value.
pub fn decode_expires_at(bytes: &[u8]) -> Result<u64, CodecError> {
    Ok(u64_at(header(bytes)?, 18))
}

/// Decodes a stored record; the value shares the buffer instead of being copied.
pub fn decode(bytes: &Bytes) -> Result<Record, CodecError> {
    let header = header(bytes)?;
    let (version, tombstone) = decode_meta(bytes)?;
    let value = if tombstone { None } else { Some(bytes.slice(HEADER_LEN..)) };
    Ok(Record { version, value, expires_at_ms: u64_at(header, 18) })
}

/// The fixed header, once its length and format are checked.
fn header(bytes: &[u8]) -> Result<&[u8; HEADER_LEN], CodecError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(CodecError::Truncated(bytes.len()))?;
    if header[0] != FORMAT {
        return Err(CodecError::UnknownFormat(header[0]));
    }
    Ok(header)
}

fn u64_at(header: &[u8; HEADER_LEN], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&header[at..at + 8]);
    u64::from_be_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_values_and_tombstones() {
        let version = Version::new(Timestamp(0x0102_0304_0506_0708), 42);
        for record in [
            Record::value(version, Bytes::from_static(b"hello")),
            Record::value(version, Bytes::new()),
            Record::tombstone(version),
            Record { expires_at_ms: 99, ..Record::value(version, Bytes::from_static(b"x")) },
        ] {
            let bytes = Bytes::from(encode(&record));
            assert_eq!(decode(&bytes).unwrap(), record);
            assert_eq!(decode_version(&bytes).unwrap(), version);
            assert_eq!(decode_meta(&bytes).unwrap(), (version, record.is_tombstone()));
            assert_eq!(decode_expires_at(&bytes).unwrap(), record.expires_at_ms);
        }
    }

    #[test]
    fn rejects_damaged_bytes() {
        assert_eq!(decode(&Bytes::from_static(&[1, 0, 0])), Err(CodecError::Truncated(3)));
        let mut bytes = encode(&Record::tombstone(Version::default()));
        bytes[0] = 9;
        assert_eq!(decode(&Bytes::from(bytes)), Err(CodecError::UnknownFormat(9)));
    }
}
