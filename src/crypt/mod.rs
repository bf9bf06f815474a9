//! Cryptographic primitives, synchronous only.
//!
//! This module owns the AEAD uses of the at-rest format (see `docs/FORMAT.md`):
//! - [`stream`]: the payload, a STREAM of AES-256-GCM chunks under a per-object chunk key
//!   derived with HKDF-SHA256 from the data key and a random salt, with a key commitment
//!   and a header MAC derived the same way;
//! - [`doc`]: small documents (the profile data document) sealed as one AES-256-GCM message;
//! - [`envelope`]: wrapping a per-object data key under a named master key;
//! - [`blob`]: format v2 chunks, named by a keyed hash and sealed one by one;
//! - [`Secret`]: a configured secret, never printed, wiped when dropped.
//!
//! Nothing here does I/O beyond `std::io::{Read, Write}` adapters; async callers run it
//! through `spawn_blocking`.

pub mod blob;
pub mod doc;
pub mod envelope;
mod secret;
pub mod stream;

pub use secret::Secret;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Lowercase hex of `bytes` (digests, MACs and ids in keys, records and headers).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Length in bytes of every symmetric key used here (AES-256).
pub const KEY_LEN: usize = 32;

/// A fresh random 256-bit data key (DEK), one per stored object.
///
/// Zeroized on drop; `Debug` never prints the key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// Generates a new random data key from the OS RNG.
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        DataKey(k)
    }

    /// A data key from raw bytes (unwrapping, tests, fuzzing).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        DataKey(bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Errors of the crypto layer. Every variant says what an operator should suspect.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key commitment stored in the header does not match the data key.
    #[error("key commitment mismatch: the object was not encrypted with this data key (object swapped, key record for another object, or header edited)")]
    CommitmentMismatch,
    /// The header MAC did not verify.
    #[error("header authentication failed: the object header was modified")]
    HeaderTampered,
    /// A chunk did not authenticate and no diagnosis applied.
    #[error("chunk {index} failed authentication: the data was modified")]
    ChunkTampered {
        /// Position of the chunk in the stream.
        index: u64,
    },
    /// A chunk authenticated, but under another position.
    #[error("chunk at position {index} is chunk {found} of this object: chunks were reordered, dropped or duplicated")]
    ChunkOutOfOrder {
        /// Position where it was found.
        index: u64,
        /// Position it was encrypted for.
        found: u64,
    },
    /// The stream ended cleanly on a chunk boundary, but without the final chunk.
    #[error("object truncated after chunk {after}: the final chunk is missing")]
    TruncatedAtBoundary {
        /// Index of the last chunk seen.
        after: u64,
    },
    /// The stream ended inside a chunk.
    #[error("object truncated inside chunk {index}")]
    Truncated {
        /// Index of the incomplete chunk.
        index: u64,
    },
    /// Bytes follow the final chunk.
    #[error("trailing data after the final chunk {index}: bytes were appended")]
    TrailingData {
        /// Index of the final chunk.
        index: u64,
    },
    /// Unwrapping a data key failed.
    #[error("cannot unwrap the data key with master key '{key_id}': wrong master key, or the key record was modified or belongs to another object")]
    UnwrapFailed {
        /// The master key that was tried.
        key_id: String,
    },
    /// A wrapped key blob has the wrong length.
    #[error("wrapped data key has length {len}, expected {expected}")]
    BadWrappedKey {
        /// Length seen.
        len: usize,
        /// Length expected.
        expected: usize,
    },
    /// A sealed document did not open.
    #[error("the sealed document failed authentication: it was modified, moved from another profile or version, or sealed under another key")]
    DocumentTampered,
    /// Underlying I/O failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
