//! STREAM encryption of a payload as AES-256-GCM chunks (the construction of Hoang, Reyhanitabar,
//! Rogaway and Vizár, as used by Tink's streaming AEAD and age).
//!
//! From the data key and a random 32-byte salt, HKDF-SHA256 derives three 32-byte values:
//! the chunk key, the header MAC key and the key commitment. Chunk `i` is sealed under the
//! nonce `i as 88-bit big-endian ‖ last-flag byte`, so reordering, dropping, duplicating,
//! truncating or appending chunks all fail authentication. The reader diagnoses which of
//! those happened, on the error path only.

use std::io::{self, Read, Write};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{DataKey, Error, KEY_LEN};

/// Length of the AES-GCM tag at the end of every chunk.
pub const TAG_LEN: usize = 16;
/// Default plaintext bytes per chunk (64 KiB).
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Smallest chunk size a reader accepts.
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size a reader accepts.
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
/// Length of the per-object salt.
pub const SALT_LEN: usize = 32;

// DO NOT CHANGE these labels: they are part of at-rest format v1.
const INFO_CHUNK: &[u8] = b"profile-vault/v1/chunk-key";
const INFO_MAC: &[u8] = b"profile-vault/v1/header-mac-key";
const INFO_COMMIT: &[u8] = b"profile-vault/v1/key-commitment";

/// The keys derived for one object.
#[derive(Clone)]
pub struct ObjectKeys {
    cipher: Aes256Gcm,
    mac_key: Zeroizing<[u8; KEY_LEN]>,
    commitment: [u8; KEY_LEN],
}

impl std::fmt::Debug for ObjectKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectKeys(<redacted>)")
    }
}

impl ObjectKeys {
    /// Derives the chunk key, MAC key and commitment from a data key and salt.
    pub fn derive(dek: &DataKey, salt: &[u8; SALT_LEN]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(salt), dek.as_bytes());
        let mut chunk = Zeroizing::new([0u8; KEY_LEN]);
        let mut mac_key = Zeroizing::new([0u8; KEY_LEN]);
        let mut commitment = [0u8; KEY_LEN];
        hk.expand(INFO_CHUNK, chunk.as_mut())
            .expect("32 bytes is a valid HKDF length");
        hk.expand(INFO_MAC, mac_key.as_mut())
            .expect("32 bytes is a valid HKDF length");
        hk.expand(INFO_COMMIT, &mut commitment)
            .expect("32 bytes is a valid HKDF length");
        ObjectKeys {
            cipher: Aes256Gcm::new(chunk.as_ref().into()),
            mac_key,
            commitment,
        }
    }

    /// The key commitment to store in the header.
    pub fn commitment(&self) -> [u8; KEY_LEN] {
        self.commitment
    }

    /// Checks a stored commitment in constant time.
    ///
    /// # Errors
    /// [`Error::CommitmentMismatch`] when it differs.
    pub fn check_commitment(&self, stored: &[u8]) -> Result<(), Error> {
        if stored.len() == KEY_LEN && bool::from(self.commitment.ct_eq(stored)) {
            Ok(())
        } else {
            Err(Error::CommitmentMismatch)
        }
    }

    /// HMAC-SHA256 of the header bytes.
    pub fn header_mac(&self, header: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_ref())
            .expect("HMAC accepts any key length");
        m.update(header);
        m.finalize().into_bytes().into()
    }

    /// Verifies the header MAC in constant time.
    ///
    /// # Errors
    /// [`Error::HeaderTampered`] when it does not verify.
    pub fn check_header_mac(&self, header: &[u8], mac: &[u8]) -> Result<(), Error> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.mac_key.as_ref())
            .expect("HMAC accepts any key length");
        m.update(header);
        m.verify_slice(mac).map_err(|_| Error::HeaderTampered)
    }

    fn seal(&self, index: u64, last: bool, buf: &mut Vec<u8>) {
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(index, last), b"", buf)
            .expect("chunk sizes are far below the AES-GCM limit");
        buf.extend_from_slice(&tag);
    }

    /// Opens `buf` (ciphertext ‖ tag) in place; on success `buf` holds the plaintext.
    fn open(&self, index: u64, last: bool, buf: &mut Vec<u8>) -> bool {
        if buf.len() < TAG_LEN {
            return false;
        }
        let split = buf.len() - TAG_LEN;
        let tag = Tag::clone_from_slice(&buf[split..]);
        let mut body = buf[..split].to_vec();
        if self
            .cipher
            .decrypt_in_place_detached(&nonce(index, last), b"", &mut body, &tag)
            .is_ok()
        {
            *buf = body;
            true
        } else {
            false
        }
    }

    /// Trial decryption without changing `buf`; used to diagnose failures.
    fn opens_as(&self, index: u64, last: bool, buf: &[u8]) -> bool {
        let mut copy = buf.to_vec();
        self.open(index, last, &mut copy)
    }
}

fn nonce(index: u64, last: bool) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    *Nonce::from_slice(&n)
}

/// Encrypts everything written to it as a chunk stream into `inner`.
///
/// Call [`StreamWriter::finish`] to seal the final chunk; dropping it without `finish`
/// leaves a stream that every reader rejects as truncated.
pub struct StreamWriter<W: Write> {
    keys: ObjectKeys,
    inner: W,
    chunk_size: usize,
    buf: Vec<u8>,
    index: u64,
    written: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Starts a stream with the given chunk size (plaintext bytes per chunk).
    pub fn new(keys: ObjectKeys, chunk_size: u32, inner: W) -> Self {
        StreamWriter {
            keys,
            inner,
            chunk_size: chunk_size as usize,
            buf: Vec::with_capacity(chunk_size as usize + TAG_LEN),
            index: 0,
            written: 0,
        }
    }

    fn seal_full(&mut self) -> io::Result<()> {
        self.keys.seal(self.index, false, &mut self.buf);
        self.inner.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals the final chunk and returns the inner writer and the ciphertext length.
    ///
    /// # Errors
    /// Any I/O error of the inner writer.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let mut buf = std::mem::take(&mut self.buf);
        self.keys.seal(self.index, true, &mut buf);
        self.inner.write_all(&buf)?;
        self.written += buf.len() as u64;
        self.inner.flush()?;
        Ok((self.inner, self.written))
    }
}

impl<W: Write> Write for StreamWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            if self.buf.len() == self.chunk_size {
                // A full chunk is sealed as non-final only once more data arrives.
                self.seal_full()?;
            }
            let take = (self.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts and authenticates a chunk stream, yielding plaintext.
///
/// A read returns an error (kind `InvalidData`, wrapping [`Error`]) as soon as anything
/// fails to verify; plaintext is only released chunk by chunk after its tag verified, so
/// callers must treat everything read so far as untrusted until EOF was reached.
pub struct StreamReader<R: Read> {
    keys: ObjectKeys,
    inner: R,
    chunk_size: usize,
    index: u64,
    plain: Vec<u8>,
    pos: usize,
    peeked: Option<u8>,
    done: bool,
}

impl<R: Read> StreamReader<R> {
    /// Starts reading a stream whose header has already been verified.
    pub fn new(keys: ObjectKeys, chunk_size: u32, inner: R) -> Self {
        StreamReader {
            keys,
            inner,
            chunk_size: chunk_size as usize,
            index: 0,
            plain: Vec::new(),
            pos: 0,
            peeked: None,
            done: false,
        }
    }

    fn fill(&mut self, buf: &mut Vec<u8>, want: usize) -> io::Result<()> {
        if let Some(b) = self.peeked.take() {
            buf.push(b);
        }
        while buf.len() < want {
            let old = buf.len();
            buf.resize(want, 0);
            match self.inner.read(&mut buf[old..]) {
                Ok(0) => {
                    buf.truncate(old);
                    return Ok(());
                }
                Ok(n) => buf.truncate(old + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(old),
                Err(e) => {
                    buf.truncate(old);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn at_eof(&mut self) -> io::Result<bool> {
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(true),
                Ok(_) => {
                    self.peeked = Some(b[0]);
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn next_chunk(&mut self) -> Result<(), Error> {
        let full = self.chunk_size + TAG_LEN;
        let mut buf = Vec::with_capacity(full);
        self.fill(&mut buf, full)?;
        let i = self.index;
        if buf.len() < TAG_LEN {
            return Err(if buf.is_empty() && i > 0 {
                Error::TruncatedAtBoundary { after: i - 1 }
            } else {
                Error::Truncated { index: i }
            });
        }
        let eof = buf.len() < full || self.at_eof()?;
        let raw = buf.clone();
        if self.keys.open(i, eof, &mut buf) {
            self.index += 1;
            self.plain = buf;
            self.pos = 0;
            self.done = eof;
            return Ok(());
        }
        Err(self.diagnose(i, eof, &raw))
    }

    /// Works out why chunk `i` did not open. Only runs on the error path.
    fn diagnose(&self, i: u64, eof: bool, raw: &[u8]) -> Error {
        if eof && self.keys.opens_as(i, false, raw) {
            return Error::TruncatedAtBoundary { after: i };
        }
        if !eof && self.keys.opens_as(i, true, raw) {
            return Error::TrailingData { index: i };
        }
        if raw.len() < self.chunk_size + TAG_LEN && !eof {
            return Error::Truncated { index: i };
        }
        // Chunks within 64 places either way: one moved further is reported as tampered
        // (trying every index before it would cost a damaged payload's reader two chunk
        // decryptions per chunk, on every restore).
        let (lo, hi) = (i.saturating_sub(64), i.saturating_add(64));
        for j in lo..=hi {
            if j == i {
                continue;
            }
            if self.keys.opens_as(j, false, raw) || self.keys.opens_as(j, true, raw) {
                return Error::ChunkOutOfOrder { index: i, found: j };
            }
        }
        Error::ChunkTampered { index: i }
    }
}

impl<R: Read> Read for StreamReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk().map_err(|e| match e {
                Error::Io(io) => io,
                other => io::Error::new(io::ErrorKind::InvalidData, other),
            })?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> StreamReader<R> {
    /// Reads and authenticates the whole stream, discarding plaintext; returns the
    /// plaintext length and the derived keys (for [`RandomAccess`] over the same bytes).
    ///
    /// # Errors
    /// The first failure, diagnosed as in [`Read::read`].
    pub fn verify_all(mut self) -> Result<(u64, ObjectKeys), Error> {
        let mut len = 0u64;
        while !self.done {
            self.next_chunk()?;
            len += self.plain.len() as u64;
        }
        Ok((len, self.keys))
    }
}

/// Random access (`Read + Seek`) to the plaintext of a stream stored in a file, for use
/// after [`StreamReader::verify_all`] checked it. Every chunk is authenticated again when
/// it is read (a file changed after verification fails with `InvalidData`). Reads use
/// positional I/O, so several readers can share one file.
#[derive(Clone)]
pub struct RandomAccess {
    file: std::sync::Arc<std::fs::File>,
    keys: ObjectKeys,
    body_offset: u64,
    chunk_size: u64,
    plain_len: u64,
    chunks: u64,
    pos: u64,
    cached: Option<(u64, Vec<u8>)>,
}

impl RandomAccess {
    /// A reader of the verified stream starting at `body_offset` in `file`.
    pub fn new(
        file: std::sync::Arc<std::fs::File>,
        keys: ObjectKeys,
        body_offset: u64,
        chunk_size: u32,
        plain_len: u64,
    ) -> Self {
        let cs = u64::from(chunk_size);
        let chunks = if plain_len == 0 {
            1
        } else {
            plain_len.div_ceil(cs)
        };
        RandomAccess {
            file,
            keys,
            body_offset,
            chunk_size: cs,
            plain_len,
            chunks,
            pos: 0,
            cached: None,
        }
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.plain_len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.plain_len == 0
    }

    fn load(&mut self, idx: u64) -> io::Result<()> {
        if self.cached.as_ref().is_some_and(|(i, _)| *i == idx) {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        let last = idx + 1 == self.chunks;
        let plain = if last {
            self.plain_len - idx * self.chunk_size
        } else {
            self.chunk_size
        };
        let mut buf = self.cached.take().map(|(_, b)| b).unwrap_or_default();
        buf.resize(plain as usize + TAG_LEN, 0);
        self.file.read_exact_at(
            &mut buf,
            self.body_offset + idx * (self.chunk_size + TAG_LEN as u64),
        )?;
        if !self.keys.open(idx, last, &mut buf) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::ChunkTampered { index: idx },
            ));
        }
        self.cached = Some((idx, buf));
        Ok(())
    }
}

impl Read for RandomAccess {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.plain_len || out.is_empty() {
            return Ok(0);
        }
        let idx = self.pos / self.chunk_size;
        self.load(idx)?;
        let (_, plain) = self.cached.as_ref().expect("loaded");
        let off = (self.pos - idx * self.chunk_size) as usize;
        let n = out.len().min(plain.len() - off);
        out[..n].copy_from_slice(&plain[off..off + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for RandomAccess {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let new = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.plain_len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            )),
        }
    }
}

/// Recovers a crypto [`Error`] carried inside an `io::Error` by [`StreamReader`].
pub fn unwrap_io(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        *e.into_inner()
            .expect("checked above")
            .downcast::<Error>()
            .expect("checked above")
    } else {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests;
