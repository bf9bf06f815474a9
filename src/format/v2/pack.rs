//! Pack objects of format v2 (`docs/FORMAT.md` §10.4): sealed chunks ([`crate::crypt::blob`])
//! back to back after a 16-byte prefix, a few MiB each, so a save sends few requests and a
//! restore fetches ranges of them. A pack carries no index: the manifest of every generation
//! that uses a chunk says where it is (pack, offset, length).

use bytes::{Bytes, BytesMut};

/// Magic bytes at the start of every pack. DO NOT CHANGE.
pub const MAGIC: [u8; 8] = *b"\x89PVPCK\r\n";
/// Pack version (the format version that introduced packs).
pub const VERSION: u16 = 2;
/// Suite 1: blobs as in §10.2.
pub const SUITE: u16 = 1;
/// Bytes before the first blob.
pub const PREFIX_LEN: u64 = 16;
/// A pack is closed once it holds this many bytes.
pub const TARGET_LEN: usize = 4 << 20;

/// Why a pack's prefix is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackError {
    /// Not a pack.
    #[error("pack {0} is not a profile-vault pack (bad magic bytes)")]
    BadMagic(String),
    /// A later pack version: a newer profile-vault wrote it.
    #[error("pack {pack} has version {version}; a newer profile-vault wrote it")]
    NewerVersion {
        /// Pack id.
        pack: String,
        /// Its version.
        version: u16,
    },
    /// A version or suite this build does not know.
    #[error("pack {pack} has unsupported version {version} / suite {suite}")]
    Unsupported {
        /// Pack id.
        pack: String,
        /// Version.
        version: u16,
        /// Suite.
        suite: u16,
    },
}

/// The prefix every pack starts with.
pub fn prefix() -> [u8; PREFIX_LEN as usize] {
    let mut p = [0u8; PREFIX_LEN as usize];
    p[..8].copy_from_slice(&MAGIC);
    p[8..10].copy_from_slice(&VERSION.to_be_bytes());
    p[10..12].copy_from_slice(&SUITE.to_be_bytes());
    p
}

/// Checks a pack's first [`PREFIX_LEN`] bytes.
///
/// # Errors
/// [`PackError`] naming the pack.
pub fn check_prefix(pack: &str, b: &[u8]) -> Result<(), PackError> {
    if b.len() < PREFIX_LEN as usize || b[..8] != MAGIC {
        return Err(PackError::BadMagic(pack.into()));
    }
    let version = u16::from_be_bytes([b[8], b[9]]);
    let suite = u16::from_be_bytes([b[10], b[11]]);
    if version > VERSION {
        return Err(PackError::NewerVersion {
            pack: pack.into(),
            version,
        });
    }
    if version != VERSION || suite != SUITE || b[12..16] != [0; 4] {
        return Err(PackError::Unsupported {
            pack: pack.into(),
            version,
            suite,
        });
    }
    Ok(())
}

/// A new random pack id: 32 lowercase hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `id` can name a pack.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A pack being filled.
pub struct Builder {
    /// Its id.
    pub id: String,
    buf: BytesMut,
}

impl Builder {
    /// An empty pack with a fresh id.
    pub fn new() -> Self {
        Self::reusing(BytesMut::new())
    }

    /// An empty pack with a fresh id, written into `buf` (the buffer of a pack sent before:
    /// a save reuses a few buffers instead of allocating one per pack).
    pub fn reusing(mut buf: BytesMut) -> Self {
        buf.clear();
        buf.reserve(TARGET_LEN + (1 << 20));
        buf.extend_from_slice(&prefix());
        Builder { id: new_id(), buf }
    }

    /// Appends a sealed blob; returns its offset.
    pub fn push(&mut self, blob: &[u8]) -> u64 {
        let off = self.buf.len() as u64;
        self.buf.extend_from_slice(blob);
        off
    }

    /// Whether it reached its target size.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= TARGET_LEN
    }

    /// Whether it holds no blob.
    pub fn is_empty(&self) -> bool {
        self.buf.len() as u64 == PREFIX_LEN
    }

    /// The pack's bytes.
    pub fn finish(self) -> (String, Bytes) {
        (self.id, self.buf.freeze())
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_round_trip_and_refusals() {
        check_prefix("p", &prefix()).unwrap();
        let mut b = prefix();
        b[0] ^= 1;
        assert_eq!(check_prefix("p", &b), Err(PackError::BadMagic("p".into())));
        let mut b = prefix();
        b[9] = 3;
        assert!(matches!(
            check_prefix("p", &b),
            Err(PackError::NewerVersion { version: 3, .. })
        ));
        let mut b = prefix();
        b[11] = 2;
        assert!(matches!(
            check_prefix("p", &b),
            Err(PackError::Unsupported { suite: 2, .. })
        ));
        assert!(check_prefix("p", &prefix()[..10]).is_err());
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        assert!(!valid_id("../x"));
        assert!(!valid_id(&id.to_uppercase()));
    }

    #[test]
    fn builder_offsets() {
        let mut b = Builder::new();
        assert!(b.is_empty());
        assert_eq!(b.push(b"abc"), PREFIX_LEN);
        assert_eq!(b.push(b"de"), PREFIX_LEN + 3);
        let (id, bytes) = b.finish();
        assert!(valid_id(&id));
        assert_eq!(bytes.len() as u64, PREFIX_LEN + 5);
    }
}
