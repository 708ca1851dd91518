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

    /// Fuzzing: the decoders on arbitrary bytes, and the encoding of arbitrary records.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use proptest::test_runner::RngSeed;

        /// Cases per property: the decoders take microseconds, so many cases cost little.
        const CASES: u32 = 2048;

        /// A fixed case count and a seed printed up front: `PROPTEST_RNG_SEED=<seed>` replays a run
        /// (proptest also saves a failing case's seed under `proptest-regressions/`).
        fn config() -> ProptestConfig {
            let base = ProptestConfig::default();
            let seed = match base.rng_seed {
                RngSeed::Fixed(seed) => seed,
                RngSeed::Random => rand_seed(),
            };
            eprintln!("codec fuzz: {CASES} cases, PROPTEST_RNG_SEED={seed}");
            ProptestConfig { cases: CASES, rng_seed: RngSeed::Fixed(seed), ..base }
        }

        /// A seed from the standard library's randomly keyed hasher: no extra dependency.
        fn rand_seed() -> u64 {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::time::SystemTime::now())
        }

        /// Any bytes, most of them short; half of them carry the known format byte, so the
        /// header checks and the field decoding behind them are both reached.
        fn stored_bytes() -> impl Strategy<Value = Vec<u8>> {
            let bytes = prop::collection::vec(any::<u8>(), 0..2 * HEADER_LEN + 8);
            (bytes, any::<bool>()).prop_map(|(mut bytes, known_format)| {
                if known_format && !bytes.is_empty() {
                    bytes[0] = FORMAT;
                }
                bytes
            })
        }

        /// A u64 at the edges as often as in between.
        fn edge_u64() -> impl Strategy<Value = u64> {
            prop_oneof![Just(0), Just(1), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
        }

        fn any_record() -> impl Strategy<Value = Record> {
            let value = prop::option::of(prop::collection::vec(any::<u8>(), 0..64));
            (edge_u64(), edge_u64(), edge_u64(), value).prop_map(|(ts, writer, expires, value)| {
                Record {
                    version: Version::new(Timestamp(ts), writer),
                    value: value.map(Bytes::from),
                    expires_at_ms: expires,
                }
            })
        }

        proptest! {
            #![proptest_config(config())]

            /// Every decoder answers any bytes with a value or a `CodecError`, never a panic, and
            /// they agree with each other on what the header says.
            #[test]
            fn decoders_never_panic_and_agree(bytes in stored_bytes()) {
                let shared = Bytes::from(bytes.clone());
                let expected = if bytes.len() < HEADER_LEN {
                    Some(CodecError::Truncated(bytes.len()))
                } else if bytes[0] != FORMAT {
                    Some(CodecError::UnknownFormat(bytes[0]))
                } else {
                    None
                };
                match expected {
                    Some(error) => {
                        prop_assert_eq!(decode(&shared), Err(error.clone()));
                        prop_assert_eq!(decode_version(&bytes), Err(error.clone()));
                        prop_assert_eq!(decode_meta(&bytes), Err(error.clone()));
                        prop_assert_eq!(decode_expires_at(&bytes), Err(error.clone()));
                        prop_assert!(!error.to_string().is_empty());
                    }
                    None => {
                        let record = decode(&shared).unwrap();
                        let word =
                            |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
                        let version = Version::new(Timestamp(word(2)), word(10));
                        let tombstone = bytes[1] & TOMBSTONE != 0;
                        prop_assert_eq!(record.version, version);
                        prop_assert_eq!(record.expires_at_ms, word(18));
                        prop_assert_eq!(record.is_tombstone(), tombstone);
                        if !tombstone {
                            prop_assert_eq!(record.value.as_deref(), Some(&bytes[HEADER_LEN..]));
                        }
                        prop_assert_eq!(decode_version(&bytes), Ok(version));
                        prop_assert_eq!(decode_meta(&bytes), Ok((version, tombstone)));
                        prop_assert_eq!(decode_expires_at(&bytes), Ok(word(18)));
                        // Whatever was decoded encodes to bytes that decode to the same record.
                        prop_assert_eq!(decode(&Bytes::from(encode(&record))), Ok(record));
                    }
                }
            }

            /// `encode` then `decode` gives back every record, extremes of every field included.
            #[test]
            fn encode_then_decode_round_trips(record in any_record()) {
                let bytes = encode(&record);
                let value_len = record.value.as_ref().map_or(0, |v| v.len());
                prop_assert_eq!(bytes.len(), HEADER_LEN + value_len);
                let shared = Bytes::from(bytes);
                prop_assert_eq!(decode_version(&shared), Ok(record.version));
                prop_assert_eq!(decode_meta(&shared), Ok((record.version, record.is_tombstone())));
                prop_assert_eq!(decode_expires_at(&shared), Ok(record.expires_at_ms));
                prop_assert_eq!(decode(&shared), Ok(record));
            }

            /// Cutting an encoded record anywhere inside its header is always `Truncated`.
            #[test]
            fn truncated_records_are_refused(record in any_record(), cut in 0..HEADER_LEN) {
                let mut bytes = encode(&record);
                bytes.truncate(cut);
                prop_assert_eq!(decode(&Bytes::from(bytes)), Err(CodecError::Truncated(cut)));
            }
        }
    }
}
