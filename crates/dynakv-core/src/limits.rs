//! Size limits on keys and values, checked before anything reaches the network or the disk.

use thiserror::Error;

/// The largest key accepted, in bytes: 64 KiB less 32 bytes, so that the prefixes storage adds
/// (an 8-byte ring token, an 8-byte hint owner) stay within the engine's 65,535-byte key limit.
pub const MAX_KEY_BYTES: usize = 64 * 1024 - 32;

/// The default largest value accepted, in bytes (1 MiB); a ring file may change it.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Why a key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    /// Keys must hold at least one byte.
    #[error("key is empty")]
    EmptyKey,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key is {len} bytes, more than the {max}-byte limit")]
    KeyTooLarge {
        /// Length of the refused key.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The value is longer than the configured maximum.
    #[error("value is {len} bytes, more than the {max}-byte limit")]
    ValueTooLarge {
        /// Length of the refused value.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
}

/// Checks that a key is non-empty and at most [`MAX_KEY_BYTES`] long.
pub fn validate_key(key: &[u8]) -> Result<(), InputError> {
    if key.is_empty() {
        return Err(InputError::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(InputError::KeyTooLarge { len: key.len(), max: MAX_KEY_BYTES });
    }
    Ok(())
}

/// Checks that a value is at most `max` bytes long (empty values are valid values).
pub fn validate_value(value: &[u8], max: usize) -> Result<(), InputError> {
    if value.len() > max {
        return Err(InputError::ValueTooLarge { len: value.len(), max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded() {
        assert_eq!(validate_key(b""), Err(InputError::EmptyKey));
        assert!(validate_key(b"k").is_ok());
        assert!(validate_key(&vec![0; MAX_KEY_BYTES]).is_ok());
        assert_eq!(
            validate_key(&vec![0; MAX_KEY_BYTES + 1]),
            Err(InputError::KeyTooLarge { len: MAX_KEY_BYTES + 1, max: MAX_KEY_BYTES })
        );
    }

    #[test]
    fn values_are_bounded_and_may_be_empty() {
        assert!(validate_value(b"", 4).is_ok());
        assert!(validate_value(b"1234", 4).is_ok());
        assert_eq!(validate_value(b"12345", 4), Err(InputError::ValueTooLarge { len: 5, max: 4 }));
    }
}
