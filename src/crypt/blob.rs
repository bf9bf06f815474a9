//! Chunks of format v2 (`docs/FORMAT.md` §10): each chunk of a profile's content is named by a
//! keyed hash and sealed on its own, so a later generation can reuse it without reading it.
//!
//! From the profile's content key `PK` (the data key its v2 generation records wrap), with
//! HKDF-SHA256 (no salt):
//! - `id_key` (info `profile-vault/v2/chunk-id-key`): `chunk_id = HMAC-SHA256(id_key, raw)`.
//!   Names reveal nothing without the key, and no two profiles share one.
//! - `blob_secret` (info `profile-vault/v2/blob-key`): each chunk is sealed under its own
//!   key `HMAC-SHA256(blob_secret, chunk_id)` with a random 96-bit nonce and the chunk id in
//!   the associated data, so a blob never opens under another name.
//!
//! A blob is `nonce (12) ‖ AES-256-GCM(k, nonce, "profile-vault/v2/blob\0" ‖ chunk_id,
//! P) ‖ tag (16)` with `P = method (1 byte: 0 stored, 1 zstd) ‖ data`. Opening checks the
//! tag, decompresses into exactly the expected length (so a decompression bomb cannot grow),
//! and hashes the result again: it must have the id it was asked for.

use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{DataKey, KEY_LEN};

/// Bytes of a chunk id.
pub const ID_LEN: usize = 32;
/// Bytes a blob adds to its compressed payload: nonce, method byte, tag.
pub const OVERHEAD: usize = 12 + 1 + 16;
/// Largest raw chunk a reader accepts (the chunker never cuts larger).
pub const MAX_RAW_LEN: u32 = 4 << 20;

const AAD_LABEL: &[u8] = b"profile-vault/v2/blob\0";
const METHOD_STORED: u8 = 0;
const METHOD_ZSTD: u8 = 1;

thread_local! {
    /// This thread's zstd context (and its level), reused chunk after chunk.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `raw` at `level` with this thread's context, appending to `out` (which has room
/// for [`zstd::zstd_safe::compress_bound`] more bytes); false when compression failed or did
/// not make it smaller (what was appended is then for the caller to overwrite).
fn compress_into(raw: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        if z.as_ref().is_none_or(|(l, _)| *l != level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(c) => *z = Some((level, c)),
                Err(_) => return false,
            }
        }
        let Some((_, c)) = z.as_mut() else {
            return false;
        };
        let start = out.len();
        let mut at = std::io::Cursor::new(out);
        at.set_position(start as u64);
        matches!(c.compress_to_buffer(raw, &mut at), Ok(n) if n < raw.len())
    })
}

thread_local! {
    /// This thread's zstd decompression context, reused chunk after chunk.
    static UNZSTD: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses `data`, which must hold exactly `raw_len` bytes: a longer one is cut at one
/// byte more (a bomb never grows past it).
fn decompress(data: &[u8], raw_len: u32) -> Result<Vec<u8>, BlobError> {
    let cut = u64::from(raw_len) + 1;
    let fail = |found| BlobError::Length {
        expected: raw_len,
        found,
    };
    UNZSTD.with(|z| {
        let mut z = z.borrow_mut();
        if z.is_none() {
            *z = Some(zstd::bulk::Decompressor::new().map_err(|_| fail(0))?);
        }
        let d = z.as_mut().expect("made above");
        let mut out = Vec::with_capacity(cut as usize);
        match d.decompress_to_buffer(data, &mut out) {
            Ok(_) => Ok(out),
            Err(_) => {
                // Too long (the buffer holds one byte more than allowed), or not zstd.
                let found = if out.len() as u64 == cut || too_long(data, cut) {
                    cut
                } else {
                    out.len() as u64
                };
                wipe(&mut out);
                Err(fail(found))
            }
        }
    })
}

/// Whether the frame says it holds `cut` bytes or more.
fn too_long(data: &[u8], cut: u64) -> bool {
    zstd::zstd_safe::get_frame_content_size(data)
        .ok()
        .flatten()
        .is_some_and(|n| n >= cut)
}

/// Overwrites a buffer of plaintext before it is freed: a memset the compiler must keep (the
/// buffer goes to `black_box` after it), at memory speed. `zeroize`'s byte-by-byte volatile
/// writes, right for keys, were a visible share of a restore's CPU on chunk-sized buffers.
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// Time spent in the parts of sealing or opening chunks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Spent {
    /// Compressing or decompressing.
    pub zstd: Duration,
    /// Encrypting or decrypting (AES-256-GCM).
    pub aes: Duration,
    /// Hashing the opened chunk back to its id.
    pub hash: Duration,
}

impl Spent {
    fn zstd_since(&mut self, t: Instant) -> Instant {
        let now = Instant::now();
        self.zstd += now - t;
        now
    }

    fn aes_since(&mut self, t: Instant) -> Instant {
        let now = Instant::now();
        self.aes += now - t;
        now
    }
}

/// A chunk id: HMAC-SHA256 of the chunk under the profile's id key.
pub type ChunkId = [u8; ID_LEN];

/// Why a blob did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// Too short to be a blob.
    #[error("blob of {0} bytes is shorter than its overhead")]
    Short(usize),
    /// The tag did not verify: modified, another chunk's blob, or another profile's.
    #[error("blob does not authenticate (modified, moved, or of another profile)")]
    Tampered,
    /// An unknown compression method byte.
    #[error("blob uses unknown method {0}")]
    Method(u8),
    /// Holds (stored) or decompresses into another length than the manifest says.
    #[error("blob holds {found} bytes, the manifest says {expected}")]
    Length {
        /// What the manifest says.
        expected: u32,
        /// What it held: a stored chunk's length, or for a compressed one what decompressing
        /// gave, stopped at one byte more than expected.
        found: u64,
    },
    /// Its content does not hash to its id.
    #[error("blob content does not match its chunk id")]
    IdMismatch,
}

/// The chunk keys of one profile (zeroized on drop; `Debug` prints nothing secret).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChunkKeys {
    id_key: [u8; KEY_LEN],
    blob_secret: [u8; KEY_LEN],
}

impl std::fmt::Debug for ChunkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKeys(<redacted>)")
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

impl ChunkKeys {
    /// Derives the chunk keys from the profile's content key.
    pub fn derive(pk: &DataKey) -> Self {
        let hk = Hkdf::<Sha256>::new(None, pk.as_bytes());
        let mut id_key = [0u8; KEY_LEN];
        let mut blob_secret = [0u8; KEY_LEN];
        hk.expand(b"profile-vault/v2/chunk-id-key", &mut id_key)
            .expect("32 bytes is a valid HKDF output");
        hk.expand(b"profile-vault/v2/blob-key", &mut blob_secret)
            .expect("32 bytes is a valid HKDF output");
        ChunkKeys {
            id_key,
            blob_secret,
        }
    }

    /// The id of a chunk.
    pub fn id(&self, raw: &[u8]) -> ChunkId {
        hmac(&self.id_key, raw)
    }

    fn cipher(&self, id: &ChunkId) -> LessSafeKey {
        let mut k = hmac(&self.blob_secret, id);
        let c = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).expect("a 32-byte key"));
        k.zeroize();
        c
    }

    /// Seals a chunk whose id is `id`: zstd at `level`, or stored when that does not help.
    /// Built in place: the nonce's room, then the plaintext, encrypted where it lies, then
    /// the tag (one copy of the chunk, and one compression context per thread and level).
    pub fn seal(&self, id: &ChunkId, raw: &[u8], level: i32) -> Vec<u8> {
        self.seal_timed(id, raw, level).0
    }

    /// [`Self::seal`], with the time its compression and its encryption took.
    pub fn seal_timed(&self, id: &ChunkId, raw: &[u8], level: i32) -> (Vec<u8>, Spent) {
        let mut spent = Spent::default();
        let t = Instant::now();
        let room = zstd::zstd_safe::compress_bound(raw.len()).max(raw.len());
        let mut out = Vec::with_capacity(12 + 1 + room + 16);
        out.resize(12, 0);
        out.push(METHOD_ZSTD);
        // Compressed straight into the blob (no copy to wipe); when that does not help, the
        // chunk is stored, over whatever compression wrote.
        if raw.is_empty() || !compress_into(raw, level, &mut out) {
            out.truncate(12);
            out.push(METHOD_STORED);
            out.extend_from_slice(raw);
        }
        let t = spent.zstd_since(t);
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        out[..12].copy_from_slice(&nonce);
        let aad = [AAD_LABEL, id.as_slice()].concat();
        let tag = self
            .cipher(id)
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut out[12..],
            )
            .expect("AES-GCM encryption of a bounded message");
        out.extend_from_slice(tag.as_ref());
        spent.aes = t.elapsed();
        (out, spent)
    }

    /// Opens the blob of chunk `id`, which must hold exactly `raw_len` bytes.
    ///
    /// # Errors
    /// Each failure has its own [`BlobError`].
    pub fn open(&self, id: &ChunkId, blob: &[u8], raw_len: u32) -> Result<Vec<u8>, BlobError> {
        self.open_timed(id, blob, raw_len, &mut Spent::default())
    }

    /// [`Self::open`], adding the time its decryption, decompression and hashing took to
    /// `spent`.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_timed(
        &self,
        id: &ChunkId,
        blob: &[u8],
        raw_len: u32,
        spent: &mut Spent,
    ) -> Result<Vec<u8>, BlobError> {
        let t = Instant::now();
        if blob.len() < OVERHEAD {
            return Err(BlobError::Short(blob.len()));
        }
        let aad = [AAD_LABEL, id.as_slice()].concat();
        let nonce = Nonce::try_assume_unique_for_key(&blob[..12]).expect("12 bytes");
        let mut p = blob[12..].to_vec();
        let opened = self
            .cipher(id)
            .open_in_place(nonce, Aad::from(&aad), &mut p)
            .map(|plain| plain.len());
        let Ok(len) = opened else {
            // What the buffer holds now is unspecified: wiped all the same.
            wipe(&mut p);
            return Err(BlobError::Tampered);
        };
        p.truncate(len);
        let t = spent.aes_since(t);
        let raw = match p[0] {
            METHOD_STORED if p.len() - 1 != raw_len as usize => {
                let found = (p.len() - 1) as u64;
                wipe(&mut p);
                return Err(BlobError::Length {
                    expected: raw_len,
                    found,
                });
            }
            METHOD_STORED => {
                // The plaintext is the chunk: moved down one byte, not copied.
                p.remove(0);
                p
            }
            METHOD_ZSTD => {
                let r = decompress(&p[1..], raw_len);
                wipe(&mut p);
                r?
            }
            m => {
                wipe(&mut p);
                return Err(BlobError::Method(m));
            }
        };
        let t = spent.zstd_since(t);
        if raw.len() as u64 != u64::from(raw_len) {
            return Err(BlobError::Length {
                expected: raw_len,
                found: raw.len() as u64,
            });
        }
        let same = bool::from(self.id(&raw).ct_eq(id));
        spent.hash += t.elapsed();
        if !same {
            return Err(BlobError::IdMismatch);
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: u8) -> ChunkKeys {
        ChunkKeys::derive(&DataKey::from_bytes([b; 32]))
    }

    #[test]
    fn round_trip_stored_and_compressed() {
        let k = keys(1);
        for raw in [
            vec![],
            b"x".to_vec(),
            vec![0u8; 65536],
            (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ] {
            let id = k.id(&raw);
            let blob = k.seal(&id, &raw, 1);
            assert_eq!(k.open(&id, &blob, raw.len() as u32).unwrap(), raw);
        }
        // Zeros compress: the blob is much smaller than the chunk.
        let z = vec![0u8; 65536];
        assert!(k.seal(&k.id(&z), &z, 1).len() < 1000);
    }

    #[test]
    fn ids_are_keyed_per_profile() {
        assert_ne!(keys(1).id(b"same"), keys(2).id(b"same"));
        assert_eq!(keys(1).id(b"same"), keys(1).id(b"same"));
    }

    #[test]
    fn each_failure_has_its_error() {
        let k = keys(1);
        let raw = b"hello chunk".repeat(100);
        let id = k.id(&raw);
        let blob = k.seal(&id, &raw, 1);
        let n = raw.len() as u32;
        // A flipped bit anywhere.
        for i in [0, 12, blob.len() / 2, blob.len() - 1] {
            let mut b = blob.clone();
            b[i] ^= 1;
            assert_eq!(k.open(&id, &b, n), Err(BlobError::Tampered), "byte {i}");
        }
        // Asked for under another id, or with another profile's keys.
        let other = k.id(b"other");
        assert_eq!(k.open(&other, &blob, n), Err(BlobError::Tampered));
        assert_eq!(keys(2).open(&id, &blob, n), Err(BlobError::Tampered));
        assert_eq!(k.open(&id, &blob[..10], n), Err(BlobError::Short(10)));
        // A length other than the manifest's (a bomb is cut at one byte more).
        assert!(matches!(
            k.open(&id, &blob, n - 1),
            Err(BlobError::Length { found, .. }) if found == u64::from(n)
        ));
        assert!(matches!(
            k.open(&id, &blob, n + 5),
            Err(BlobError::Length { .. })
        ));
        // A stored (incompressible) chunk of another length than the manifest says.
        let mut noise = vec![0u8; 300];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut noise);
        let nid = k.id(&noise);
        let stored = k.seal(&nid, &noise, 1);
        assert_eq!(
            stored.len(),
            noise.len() + OVERHEAD,
            "stored, not compressed"
        );
        assert_eq!(
            k.open(&nid, &stored, 10),
            Err(BlobError::Length {
                expected: 10,
                found: 300
            })
        );
        // Sealed under a wrong id (by a buggy or hostile writer with the key).
        let lie = k.seal(&other, &raw, 1);
        assert_eq!(k.open(&other, &lie, n), Err(BlobError::IdMismatch));
    }
}
