//! The manifest of a format v2 generation (`docs/FORMAT.md` §10.5): which files and
//! directories the profile held and which chunks, in which packs, make up each file. It is
//! the plaintext of the generation's payload object (version 2), zstd-compressed JSON.
//!
//! A manifest is untrusted input even after it authenticated (a key holder could write a
//! hostile one): [`decode`] bounds the decompressed size, parses strictly and checks every
//! name, index, length and limit before a restore creates anything.

use std::collections::HashSet;
use std::io::Read;

use serde::{Deserialize, Serialize};

use super::pack;
use crate::crypt::blob::{ChunkId, ID_LEN, MAX_RAW_LEN, OVERHEAD};
use crate::format::v1::archive::{self, Limits};

/// Largest decompressed manifest a reader accepts.
pub const MAX_LEN: u64 = 256 << 20;

/// Errors of reading a manifest; each says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not zstd, or not the JSON described.
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    /// Decompresses to more than [`MAX_LEN`].
    #[error("manifest decompresses to more than {MAX_LEN} bytes")]
    TooLarge,
    /// A name, count or size refused as in an archive (unsafe names, limits).
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// A pack id that cannot name a pack.
    #[error("manifest names an invalid pack id {0:?}")]
    BadPack(String),
    /// A chunk entry that cannot be right.
    #[error("manifest chunk {index}: {reason}")]
    BadChunk {
        /// Index in the chunk table.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A file whose chunks do not add up to its size, or that names a missing chunk.
    #[error("manifest file {path:?}: {reason}")]
    BadFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// One chunk: where its sealed blob is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    /// Chunk id, 64 lowercase hex digits.
    pub id: String,
    /// Index into [`Manifest::packs`].
    pub pack: u32,
    /// Offset of the blob in the pack.
    pub offset: u64,
    /// Bytes of the blob.
    pub len: u32,
    /// Bytes of the chunk.
    pub raw: u32,
}

/// One regular file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// `/`-separated relative path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (restored, and compared by the
    /// next save to skip unchanged files).
    pub mtime_ns: i64,
    /// Indices into [`Manifest::chunks`], in file order.
    pub chunks: Vec<u32>,
}

/// The manifest of one generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Generation whose manifest the save reused chunks from, if any.
    pub base: Option<u64>,
    /// Saves since every file was last read in full (0: this one did).
    pub since_full: u32,
    /// Unix seconds when the save began walking the directory.
    pub walked_at: u64,
    /// Pack ids (32 lowercase hex digits) the chunks are in.
    pub packs: Vec<String>,
    /// The chunk table.
    pub chunks: Vec<ChunkRef>,
    /// Directories, `/`-separated relative paths.
    pub dirs: Vec<String>,
    /// Regular files.
    pub files: Vec<FileEntry>,
}

/// Hex of a chunk id.
pub fn id_hex(id: &ChunkId) -> String {
    crate::crypt::hex(id)
}

/// A chunk id from its hex (lowercase only).
pub fn parse_id(s: &str) -> Option<ChunkId> {
    if s.len() != ID_LEN * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(id)
}

/// Serializes and compresses a manifest.
pub fn encode(m: &Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    encode_to(m, &mut out).expect("writing to memory");
    out
}

/// [`encode`] into `w`, streamed (neither the JSON nor its compressed form is held in
/// memory: a large profile's manifest is tens of MiB of JSON); returns the bytes written.
///
/// # Errors
/// `w`'s errors.
pub fn encode_to(m: &Manifest, w: impl std::io::Write) -> std::io::Result<u64> {
    let mut counted = Counted { inner: w, n: 0 };
    let mut z = zstd::stream::write::Encoder::new(&mut counted, 3)?;
    serde_json::to_writer(&mut z, m).map_err(std::io::Error::other)?;
    z.finish()?;
    Ok(counted.n)
}

/// A writer that counts what passes through it.
struct Counted<W> {
    inner: W,
    n: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decompresses, parses and validates a manifest against `limits`; returns it with its chunk
/// ids decoded (parallel to [`Manifest::chunks`]).
///
/// # Errors
/// The first problem found.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(Manifest, Vec<ChunkId>), Error> {
    let mut json = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(|e| Error::Malformed(format!("not zstd: {e}")))?
        .take(MAX_LEN + 1)
        .read_to_end(&mut json)
        .map_err(|e| Error::Malformed(format!("not zstd: {e}")))?;
    if json.len() as u64 > MAX_LEN {
        return Err(Error::TooLarge);
    }
    let m: Manifest = serde_json::from_slice(&json).map_err(|e| Error::Malformed(e.to_string()))?;
    let ids = validate(&m, limits)?;
    Ok((m, ids))
}

fn validate(m: &Manifest, limits: &Limits) -> Result<Vec<ChunkId>, Error> {
    for p in &m.packs {
        if !pack::valid_id(p) {
            return Err(Error::BadPack(p.clone()));
        }
    }
    let mut ids = Vec::with_capacity(m.chunks.len());
    for (index, c) in m.chunks.iter().enumerate() {
        let bad = |reason: String| Error::BadChunk { index, reason };
        ids.push(
            parse_id(&c.id).ok_or_else(|| bad(format!("id {:?} is not 64 hex digits", c.id)))?,
        );
        if c.pack as usize >= m.packs.len() {
            return Err(bad(format!("pack index {} out of range", c.pack)));
        }
        if c.offset < pack::PREFIX_LEN {
            return Err(bad(format!("offset {} inside the pack prefix", c.offset)));
        }
        if c.raw > MAX_RAW_LEN {
            return Err(bad(format!("raw length {} over {MAX_RAW_LEN}", c.raw)));
        }
        let len = c.len as usize;
        if len < OVERHEAD || len > c.raw as usize + OVERHEAD {
            return Err(bad(format!(
                "blob length {} impossible for {} raw bytes",
                c.len, c.raw
            )));
        }
    }
    let count = (m.files.len() + m.dirs.len()) as u64;
    if count > limits.max_files {
        return Err(archive::Error::TooManyFiles {
            count,
            limit: limits.max_files,
        }
        .into());
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(count as usize);
    let mut files: HashSet<&str> = HashSet::with_capacity(m.files.len());
    for d in &m.dirs {
        let (name, _) = archive::validate_name(d.as_bytes())?;
        if name != *d {
            return Err(archive::Error::UnsafeName {
                name: d.clone(),
                reason: "directory name with a trailing '/'",
            }
            .into());
        }
        if !seen.insert(d) {
            return Err(archive::Error::Duplicate(d.clone()).into());
        }
    }
    let mut total = 0u64;
    for f in &m.files {
        let (name, dir) = archive::validate_name(f.path.as_bytes())?;
        if dir || name != f.path {
            return Err(archive::Error::UnsafeName {
                name: f.path.clone(),
                reason: "regular file with a directory name",
            }
            .into());
        }
        if !seen.insert(&f.path) {
            return Err(archive::Error::Duplicate(f.path.clone()).into());
        }
        files.insert(&f.path);
        if f.size > limits.max_file_size {
            return Err(archive::Error::FileTooLarge {
                name: f.path.clone(),
                size: f.size,
                limit: limits.max_file_size,
            }
            .into());
        }
        total = total.saturating_add(f.size);
        if total > limits.max_total_size {
            return Err(archive::Error::TotalTooLarge {
                total,
                limit: limits.max_total_size,
            }
            .into());
        }
        let mut sum = 0u64;
        for &i in &f.chunks {
            let c = m.chunks.get(i as usize).ok_or_else(|| Error::BadFile {
                path: f.path.clone(),
                reason: format!("chunk index {i} out of range"),
            })?;
            sum += u64::from(c.raw);
        }
        if sum != f.size {
            return Err(Error::BadFile {
                path: f.path.clone(),
                reason: format!("chunks hold {sum} bytes, the file {}", f.size),
            });
        }
    }
    // A file whose name is also a parent directory of another entry.
    for p in seen.iter() {
        let mut prefix = *p;
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if files.contains(parent) {
                return Err(archive::Error::Duplicate(parent.to_string()).into());
            }
            prefix = parent;
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            base: Some(3),
            since_full: 1,
            walked_at: 1,
            packs: vec![pack::new_id()],
            chunks: vec![
                ChunkRef {
                    id: id_hex(&[7; 32]),
                    pack: 0,
                    offset: 16,
                    len: 40,
                    raw: 20,
                },
                ChunkRef {
                    id: id_hex(&[8; 32]),
                    pack: 0,
                    offset: 56,
                    len: 35,
                    raw: 10,
                },
            ],
            dirs: vec!["Default".into()],
            files: vec![
                FileEntry {
                    path: "Default/History".into(),
                    size: 30,
                    mtime_ns: 5,
                    chunks: vec![0, 1],
                },
                FileEntry {
                    path: "Local State".into(),
                    size: 0,
                    mtime_ns: -1,
                    chunks: vec![],
                },
            ],
        }
    }

    fn check(m: &Manifest) -> Result<(Manifest, Vec<ChunkId>), Error> {
        decode(&encode(m), &Limits::default())
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let (back, ids) = check(&m).unwrap();
        assert_eq!(back, m);
        assert_eq!(ids, vec![[7; 32], [8; 32]]);
        assert_eq!(parse_id(&id_hex(&[0xab; 32])), Some([0xab; 32]));
    }

    #[test]
    fn hostile_manifests_are_refused_each_with_its_error() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("../", Box::new(|m| m.files[0].path = "../evil".into())),
            (
                "absolute",
                Box::new(|m| m.files[0].path = "/etc/passwd".into()),
            ),
            (
                "dup",
                Box::new(|m| m.files[1].path = "Default/History".into()),
            ),
            ("file/dir", Box::new(|m| m.dirs.push("Local State".into()))),
            (
                "parent file",
                Box::new(|m| m.files[1].path = "Default/History/x".into()),
            ),
            ("sizes", Box::new(|m| m.files[0].size = 31)),
            ("chunk index", Box::new(|m| m.files[0].chunks.push(9))),
            ("pack index", Box::new(|m| m.chunks[0].pack = 1)),
            ("pack id", Box::new(|m| m.packs[0] = "../../x".into())),
            ("chunk id", Box::new(|m| m.chunks[0].id = "zz".into())),
            ("in prefix", Box::new(|m| m.chunks[0].offset = 3)),
            ("blob len", Box::new(|m| m.chunks[0].len = 5)),
            ("raw len", Box::new(|m| m.chunks[0].raw = MAX_RAW_LEN + 1)),
        ];
        for (what, edit) in cases {
            let mut m = sample();
            edit(&mut m);
            let e = check(&m).expect_err(what);
            let ok = match what {
                "../" | "absolute" => {
                    matches!(e, Error::Archive(archive::Error::UnsafeName { .. }))
                }
                "dup" | "file/dir" | "parent file" => {
                    matches!(e, Error::Archive(archive::Error::Duplicate(_)))
                }
                "sizes" | "chunk index" => matches!(e, Error::BadFile { .. }),
                "pack id" => matches!(e, Error::BadPack(_)),
                _ => matches!(e, Error::BadChunk { .. }),
            };
            assert!(ok, "{what}: {e}");
        }
        let limits = Limits {
            max_files: 2,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&encode(&sample()), &limits),
            Err(Error::Archive(archive::Error::TooManyFiles { .. }))
        ));
        assert!(matches!(
            decode(b"not zstd", &Limits::default()),
            Err(Error::Malformed(_))
        ));
        let unknown = zstd::bulk::compress(br#"{"x":1}"#, 1).unwrap();
        assert!(matches!(
            decode(&unknown, &Limits::default()),
            Err(Error::Malformed(_))
        ));
    }
}
