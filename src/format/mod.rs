//! The at-rest object format, versions 1 and 2 (the contract is `docs/FORMAT.md`): this
//! file is the object every payload is (§2 header, §3 STREAM body, §7 versions); the payload
//! of each version is its own module:
//! - [`v1`] (§6): one ZIP of the profile ([`v1::archive`] packs and, treating it as
//!   hostile, validates and extracts it; [`v1::zipw`] writes the ZIP stream). The walk of a
//!   profile directory and the checks every restore makes (names, limits, the target) live
//!   in [`v1::archive`] and serve version 2 too;
//! - [`v2`] (§10): chunked, deduplicated generations ([`v2::chunker`] where files are cut,
//!   [`v2::pack`] the pack objects sealed chunks travel in, [`v2::manifest`] what a
//!   generation holds).
//!
//! ```text
//! magic "\x89PVOBJ\r\n" (8) | version u16 BE = 1 | suite u16 BE = 1 | header_len u32 BE
//! header: header_len bytes of UTF-8 JSON ([`Header`])
//! header_mac: HMAC-SHA256(mac_key, all bytes above) (32)
//! body: STREAM chunks, each AES-256-GCM(chunk_key, nonce(i, last), plaintext) ‖ tag
//! ```
//! The plaintext of the body is the ZIP archive of the profile (version 1) or the manifest of
//! a chunked generation (version 2, [`v2::manifest`]); the version is in the
//! prefix, which the header MAC covers.
//!
//! A reader is told what it expects ([`Expected`]) and checks, in order: magic, version,
//! suite, header syntax, the header's tenant/profile/generation/object id, the key
//! commitment (before any decryption), the header MAC, then every chunk.

pub mod v1;
pub mod v2;

use std::io::{self, Read, Write};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::crypt::stream::{
    self, ObjectKeys, StreamReader, StreamWriter, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, SALT_LEN,
};
use crate::crypt::{self, DataKey, KEY_LEN};

/// Magic bytes at the start of every object. DO NOT CHANGE.
pub const MAGIC: [u8; 8] = *b"\x89PVOBJ\r\n";
/// Version 1: the plaintext is the ZIP archive of the profile.
pub const VERSION: u16 = 1;
/// Version 2: the plaintext is the generation's manifest (chunked, deduplicated; §10).
pub const VERSION_CHUNKED: u16 = 2;
/// The newest version this build reads.
pub const NEWEST: u16 = VERSION_CHUNKED;
/// Suite 1: AES-256-GCM STREAM, HKDF-SHA256 key derivation, HMAC-SHA256 header MAC.
pub const SUITE_AES256GCM_HKDF_SHA256: u16 = 1;
/// Largest header JSON a reader accepts.
pub const MAX_HEADER_LEN: u32 = 64 * 1024;
/// Bytes before the header JSON.
pub const PREFIX_LEN: usize = 16;
/// Bytes of the header MAC.
pub const MAC_LEN: usize = 32;

/// Errors of reading an object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a profile-vault object.
    #[error("not a profile-vault object (bad magic bytes)")]
    BadMagic,
    /// A version this build cannot read (0: never written by anyone).
    #[error("unsupported object format version {0}; this build reads versions 1 and 2")]
    UnsupportedVersion(u16),
    /// A later version than this build reads: a newer profile-vault wrote it.
    #[error("object written by a newer profile-vault (format {0}); upgrade this node (it reads formats 1 and 2)")]
    NewerVersion(u16),
    /// A cipher suite this build does not know.
    #[error("unsupported cipher suite {0}; this build knows suite 1")]
    UnsupportedSuite(u16),
    /// The header is cut short.
    #[error("object truncated inside its header")]
    TruncatedHeader,
    /// The header is too large to be genuine.
    #[error("object header of {0} bytes exceeds the 64 KiB limit")]
    HeaderTooLarge(u32),
    /// The header JSON is invalid.
    #[error("malformed object header: {0}")]
    MalformedHeader(String),
    /// The header names another tenant/profile/generation/object.
    #[error("object belongs elsewhere: its {field} is {found:?}, expected {expected:?} (copied from another profile, tenant or generation, or tampered)")]
    Misplaced {
        /// Which field.
        field: &'static str,
        /// Value in the object.
        found: String,
        /// Value expected.
        expected: String,
    },
    /// A cryptographic check failed.
    #[error(transparent)]
    Crypt(#[from] crypt::Error),
}

/// The authenticated header of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Tenant that owns the profile.
    pub tenant: String,
    /// Profile id.
    pub profile: String,
    /// Generation number.
    pub generation: u64,
    /// Unique object id (uuid).
    pub object_id: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// HKDF salt, base64 (32 bytes).
    pub salt: String,
    /// Key commitment, base64 (32 bytes).
    pub commitment: String,
}

/// What the reader expects the object to be.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Profile id.
    pub profile: &'a str,
    /// Generation, when known.
    pub generation: Option<u64>,
    /// Object id, when known.
    pub object_id: Option<&'a str>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Everything needed to write an object body, created once per save.
#[derive(Debug)]
pub struct Sealer {
    salt: [u8; SALT_LEN],
    keys: ObjectKeys,
    chunk_size: u32,
    version: u16,
}

impl Sealer {
    /// Derives per-object keys from a fresh random salt (a version 1 object).
    pub fn new(dek: &DataKey, chunk_size: u32) -> Self {
        Self::with_version(dek, chunk_size, VERSION)
    }

    /// [`Sealer::new`] for an object of `version` ([`VERSION`] or [`VERSION_CHUNKED`]).
    pub fn with_version(dek: &DataKey, chunk_size: u32, version: u16) -> Self {
        let mut salt = [0u8; SALT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        Sealer {
            salt,
            keys: ObjectKeys::derive(dek, &salt),
            chunk_size: chunk_size.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
            version,
        }
    }

    /// The encoded prefix + header + MAC for these identifiers.
    pub fn header_bytes(
        &self,
        tenant: &str,
        profile: &str,
        generation: u64,
        object_id: &str,
        created_at: u64,
    ) -> Vec<u8> {
        let h = Header {
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: object_id.into(),
            created_at,
            chunk_size: self.chunk_size,
            salt: b64().encode(self.salt),
            commitment: b64().encode(self.keys.commitment()),
        };
        let json = serde_json::to_vec(&h).expect("header serializes");
        let mut out = Vec::with_capacity(PREFIX_LEN + json.len() + MAC_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&SUITE_AES256GCM_HKDF_SHA256.to_be_bytes());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        let mac = self.keys.header_mac(&out);
        out.extend_from_slice(&mac);
        out
    }

    /// A writer that encrypts the body into `w`.
    pub fn body_writer<W: Write>(&self, w: W) -> StreamWriter<W> {
        StreamWriter::new(self.keys.clone(), self.chunk_size, w)
    }
}

/// Reads and checks the header, returning a reader of the verified plaintext body.
///
/// # Errors
/// Every check listed in the module docs has its own variant. Body errors surface from
/// the returned reader as `io::Error`s of kind `InvalidData` (see [`crate::crypt::stream::unwrap_io`]).
pub fn open<R: Read>(
    r: R,
    dek: &DataKey,
    expected: &Expected<'_>,
) -> Result<(Header, StreamReader<R>), Error> {
    open_inner(r, dek, expected).map(|(h, _, _, r)| (h, r))
}

/// [`open`], also returning the version and the offset of the body (prefix + header + MAC).
fn open_inner<R: Read>(
    mut r: R,
    dek: &DataKey,
    expected: &Expected<'_>,
) -> Result<(Header, u16, u64, StreamReader<R>), Error> {
    let mut prefix = [0u8; PREFIX_LEN];
    read_exact_or(&mut r, &mut prefix)?;
    if prefix[..8] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_be_bytes([prefix[8], prefix[9]]);
    if version > NEWEST {
        return Err(Error::NewerVersion(version));
    }
    if version == 0 {
        return Err(Error::UnsupportedVersion(version));
    }
    let suite = u16::from_be_bytes([prefix[10], prefix[11]]);
    if suite != SUITE_AES256GCM_HKDF_SHA256 {
        return Err(Error::UnsupportedSuite(suite));
    }
    let len = u32::from_be_bytes([prefix[12], prefix[13], prefix[14], prefix[15]]);
    if len > MAX_HEADER_LEN {
        return Err(Error::HeaderTooLarge(len));
    }
    let mut authed = prefix.to_vec();
    authed.resize(PREFIX_LEN + len as usize, 0);
    read_exact_or(&mut r, &mut authed[PREFIX_LEN..])?;
    let mut mac = [0u8; MAC_LEN];
    read_exact_or(&mut r, &mut mac)?;
    let h: Header = serde_json::from_slice(&authed[PREFIX_LEN..])
        .map_err(|e| Error::MalformedHeader(e.to_string()))?;
    let misplaced = |field, found: String, expected: String| {
        Err(Error::Misplaced {
            field,
            found,
            expected,
        })
    };
    if h.tenant != expected.tenant {
        return misplaced("tenant", h.tenant, expected.tenant.into());
    }
    if h.profile != expected.profile {
        return misplaced("profile", h.profile, expected.profile.into());
    }
    if let Some(g) = expected.generation {
        if h.generation != g {
            return misplaced("generation", h.generation.to_string(), g.to_string());
        }
    }
    if let Some(o) = expected.object_id {
        if h.object_id != o {
            return misplaced("object id", h.object_id, o.into());
        }
    }
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&h.chunk_size) {
        return Err(Error::MalformedHeader(format!(
            "chunk size {} out of range",
            h.chunk_size
        )));
    }
    let salt: [u8; SALT_LEN] = decode32(&h.salt, "salt")?;
    let commitment: [u8; KEY_LEN] = decode32(&h.commitment, "commitment")?;
    let keys = ObjectKeys::derive(dek, &salt);
    keys.check_commitment(&commitment)?;
    keys.check_header_mac(&authed, &mac)?;
    let chunk_size = h.chunk_size;
    let body_offset = (authed.len() + MAC_LEN) as u64;
    Ok((
        h,
        version,
        body_offset,
        StreamReader::new(keys, chunk_size, r),
    ))
}

/// Reads the header and authenticates the whole object stored in `file`, then returns its
/// version and random access to its plaintext (used by restore and verify: nothing is
/// extracted before every chunk verified, and no plaintext copy is written).
///
/// # Errors
/// As [`open`], plus every body error (truncation, trailing data, tampering...).
pub fn verify_file(
    file: std::sync::Arc<std::fs::File>,
    dek: &DataKey,
    expected: &Expected<'_>,
) -> Result<(Header, u16, stream::RandomAccess), Error> {
    use std::io::Seek;
    let mut f: &std::fs::File = &file;
    f.seek(io::SeekFrom::Start(0))
        .map_err(|e| Error::Crypt(crypt::Error::Io(e)))?;
    let (header, version, body_offset, reader) =
        open_inner(io::BufReader::with_capacity(1 << 20, f), dek, expected)?;
    let (plain_len, keys) = reader.verify_all()?;
    let chunk_size = header.chunk_size;
    Ok((
        header,
        version,
        stream::RandomAccess::new(file, keys, body_offset, chunk_size, plain_len),
    ))
}

fn decode32(s: &str, what: &str) -> Result<[u8; 32], Error> {
    let v = b64()
        .decode(s)
        .map_err(|_| Error::MalformedHeader(format!("{what} is not base64")))?;
    v.try_into()
        .map_err(|_| Error::MalformedHeader(format!("{what} is not 32 bytes")))
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), Error> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::TruncatedHeader,
        _ => Error::Crypt(crypt::Error::Io(e)),
    })
}

/// Length of the header part (prefix + JSON + MAC) of an encoded object.
///
/// # Errors
/// [`Error::TruncatedHeader`] / [`Error::BadMagic`] / [`Error::HeaderTooLarge`].
pub fn header_len(encoded: &[u8]) -> Result<usize, Error> {
    if encoded.len() < PREFIX_LEN {
        return Err(Error::TruncatedHeader);
    }
    if encoded[..8] != MAGIC {
        return Err(Error::BadMagic);
    }
    let len = u32::from_be_bytes([encoded[12], encoded[13], encoded[14], encoded[15]]);
    if len > MAX_HEADER_LEN {
        return Err(Error::HeaderTooLarge(len));
    }
    Ok(PREFIX_LEN + len as usize + MAC_LEN)
}

#[cfg(test)]
mod tests;
