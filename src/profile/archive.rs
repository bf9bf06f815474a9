//! Packing a profile directory into a ZIP stream and unpacking one, safely.
//!
//! Packing walks the directory in sorted order, keeps regular files and directories that
//! the [`Excludes`] do not leave out, and compresses small files on every core in parallel
//! (in a bounded window, so memory does not grow with profile size); large files are
//! streamed through zstd's own multi-threaded encoder. Incompressible data is stored.
//!
//! Unpacking treats the archive as hostile: every entry is validated before anything is
//! written (enclosed relative UTF-8 names only; no symlinks, devices, duplicates or
//! file/directory clashes; limits on count, per-file size, total size and compression
//! ratio), then the tree is extracted into a private staging directory beside the target
//! and renamed into place. On any error the staging directory is removed.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::exclude::Excludes;
use super::zipw::{Method, ZipWriter};
use crate::fsutil;
use crate::progress::Progress;

/// Files at most this large are compressed in memory by the worker pool.
const SMALL_FILE: u64 = 1024 * 1024;
/// How many entries workers may run ahead of the writer.
const WINDOW_PER_THREAD: usize = 4;

/// Errors of packing and unpacking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system error at a path.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Writing the archive stream failed.
    #[error("writing archive: {0}")]
    Write(io::Error),
    /// The source is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The restore target exists and is not an empty directory.
    #[error("restore target {0} exists and is not an empty directory; restore into a new or empty directory")]
    TargetNotEmpty(PathBuf),
    /// The archive is not a readable ZIP.
    #[error("archive is corrupt: {0}")]
    Corrupt(String),
    /// An entry name that could escape the target or is otherwise unsafe.
    #[error("unsafe entry name {name:?}: {reason}")]
    UnsafeName {
        /// The name (lossy).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A symbolic link entry.
    #[error("entry {0:?} is a symbolic link; profiles never contain links")]
    Symlink(String),
    /// A device, fifo, socket or other special entry.
    #[error("entry {name:?} is a special file (mode {mode:o})")]
    SpecialFile {
        /// Entry name.
        name: String,
        /// Unix mode.
        mode: u32,
    },
    /// The same path twice, or a file where a directory is needed.
    #[error("entry {0:?} appears twice or clashes with a directory of the same name")]
    Duplicate(String),
    /// An encrypted ZIP entry.
    #[error("entry {0:?} uses ZIP encryption, which profile archives never do")]
    Encrypted(String),
    /// A compression method this reader does not accept.
    #[error("entry {name:?} uses unsupported compression {method}")]
    Unsupported {
        /// Entry name.
        name: String,
        /// Method.
        method: String,
    },
    /// Too many entries.
    #[error("archive has {count} entries, over the limit of {limit} (limits.max_files)")]
    TooManyFiles {
        /// Entries.
        count: u64,
        /// Limit.
        limit: u64,
    },
    /// One file over the size limit.
    #[error("entry {name:?} is {size} bytes, over the limit of {limit} (limits.max_file_size)")]
    FileTooLarge {
        /// Entry name.
        name: String,
        /// Declared size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// All files together over the limit.
    #[error("archive expands to {total} bytes, over the limit of {limit} (limits.max_total_size)")]
    TotalTooLarge {
        /// Declared total.
        total: u64,
        /// Limit.
        limit: u64,
    },
    /// Suspicious compression ratio (zip bomb).
    #[error("entry {name:?} expands {ratio}x, over the limit of {limit}x (limits.max_ratio): possible zip bomb")]
    RatioTooHigh {
        /// Entry name.
        name: String,
        /// Ratio.
        ratio: u64,
        /// Limit.
        limit: u64,
    },
    /// Data longer or shorter than declared, or a CRC mismatch.
    #[error("entry {name:?} is damaged: {reason}")]
    Damaged {
        /// Entry name.
        name: String,
        /// What.
        reason: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Which compression new archives use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd (ZIP method 93), the default.
    #[default]
    Zstd,
    /// deflate (ZIP method 8), for tools that lack zstd.
    Deflate,
}

/// How to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Compression method.
    pub compression: Compression,
    /// zstd level (1..=19) or deflate level (1..=9).
    pub level: i32,
    /// What to leave out.
    pub excludes: Excludes,
    /// Worker threads (defaults to the number of cores).
    pub threads: usize,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            compression: Compression::Zstd,
            level: 1,
            excludes: Excludes::default(),
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// What a pack found and wrote; recorded with each generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackStats {
    /// Regular files archived.
    pub files: u64,
    /// Directories archived.
    pub dirs: u64,
    /// Bytes of the archived files.
    pub bytes_in: u64,
    /// Bytes of the ZIP stream.
    pub bytes_zip: u64,
    /// Entries left out by the exclude rules.
    pub excluded: u64,
    /// Bytes left out by the exclude rules (files directly seen).
    pub excluded_bytes: u64,
    /// Symlinks, sockets, fifos and devices skipped.
    pub skipped_special: u64,
    /// Chromium version from the `Last Version` file.
    pub chromium_version: Option<String>,
    /// Whether `Default/Preferences` says the browser exited normally.
    pub clean_exit: Option<bool>,
    /// A cookie store holds `v11` values, which do not survive a move to another machine.
    pub cookie_v11_warning: bool,
}

pub(crate) enum Kind {
    Dir,
    File(u64),
}

/// One directory or regular file of a profile being saved.
pub(crate) struct Entry {
    /// `/`-separated relative path.
    pub(crate) rel: String,
    /// Where it is.
    pub(crate) abs: PathBuf,
    /// Directory, or file with its size when walked.
    pub(crate) kind: Kind,
}

/// The directories and regular files of `root` in sorted order, without what `excludes`
/// leaves out, and the facts packing records (counts of what was left out, Chromium
/// version, clean exit, v11 cookies); sizes and counts of kept files are left to the caller.
///
/// # Errors
/// `root` is not a directory; file system errors while walking.
pub(crate) fn walk_profile(
    root: &Path,
    excludes: &Excludes,
) -> Result<(Vec<Entry>, PackStats), Error> {
    if !root.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let mut stats = PackStats::default();
    let entries = walk(root, excludes, &mut stats)?;
    inspect(root, &mut stats);
    Ok((entries, stats))
}

fn walk(root: &Path, ex: &Excludes, stats: &mut PackStats) -> Result<Vec<Entry>, Error> {
    // Depth-first with sorted children gives sorted paths (component-wise).
    let mut out = Vec::new();
    fn visit(
        dir: &Path,
        comps: &[String],
        ex: &Excludes,
        stats: &mut PackStats,
        out: &mut Vec<Entry>,
    ) -> Result<(), Error> {
        let mut names: Vec<(String, PathBuf, fs::Metadata)> = Vec::new();
        for e in fs::read_dir(dir).map_err(io_at(dir))? {
            let e = e.map_err(io_at(dir))?;
            let path = e.path();
            let meta = fs::symlink_metadata(&path).map_err(io_at(&path))?;
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %path.display(), "skipping entry with a non-UTF-8 name");
                stats.skipped_special += 1;
                continue;
            };
            names.push((name, path, meta));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, path, meta) in names {
            let mut c: Vec<String> = comps.to_vec();
            c.push(name);
            let refs: Vec<&str> = c.iter().map(String::as_str).collect();
            let ft = meta.file_type();
            if !(ft.is_file() || ft.is_dir()) {
                stats.skipped_special += 1;
                continue;
            }
            if ex.is_excluded(&refs, ft.is_dir()) {
                stats.excluded += 1;
                stats.excluded_bytes += if ft.is_dir() {
                    tree_size(&path)
                } else {
                    meta.len()
                };
                continue;
            }
            let rel = c.join("/");
            if ft.is_dir() {
                out.push(Entry {
                    rel,
                    abs: path.clone(),
                    kind: Kind::Dir,
                });
                visit(&path, &c, ex, stats, out)?;
            } else {
                out.push(Entry {
                    rel,
                    abs: path,
                    kind: Kind::File(meta.len()),
                });
            }
        }
        Ok(())
    }
    visit(root, &[], ex, stats, &mut out)?;
    Ok(out)
}

/// Bytes of regular files under `dir` (for reporting what was left out).
fn tree_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match fs::symlink_metadata(e.path()) {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

enum Ready {
    Dir,
    Large,
    Small {
        method: Method,
        crc: u32,
        size: u64,
        data: Vec<u8>,
    },
}

fn compress_small(path: &Path, opts: &PackOptions) -> Result<Ready, Error> {
    let data = fs::read(path).map_err(io_at(path))?;
    let crc = crc32fast::hash(&data);
    let size = data.len() as u64;
    if data.is_empty() {
        return Ok(Ready::Small {
            method: Method::Stored,
            crc,
            size,
            data,
        });
    }
    let (method, packed) = match opts.compression {
        Compression::Zstd => (
            Method::Zstd,
            zstd::bulk::compress(&data, opts.level).map_err(io_at(path))?,
        ),
        Compression::Deflate => {
            let mut enc = flate2::write::DeflateEncoder::new(
                Vec::new(),
                flate2::Compression::new(opts.level.clamp(1, 9) as u32),
            );
            enc.write_all(&data).map_err(io_at(path))?;
            (Method::Deflate, enc.finish().map_err(io_at(path))?)
        }
    };
    if packed.len() >= data.len() {
        Ok(Ready::Small {
            method: Method::Stored,
            crc,
            size,
            data,
        })
    } else {
        Ok(Ready::Small {
            method,
            crc,
            size,
            data: packed,
        })
    }
}

/// Packs `root` into a ZIP stream written to `out`.
///
/// # Errors
/// File system errors while walking or reading, and write errors of `out`.
pub fn pack<W: Write + Send>(
    root: &Path,
    out: W,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<(W, PackStats), Error> {
    if !root.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let mut stats = PackStats::default();
    let entries = walk(root, &opts.excludes, &mut stats)?;
    let total: u64 = entries
        .iter()
        .map(|e| if let Kind::File(n) = e.kind { n } else { 0 })
        .sum();
    progress.start("packing", total);
    inspect(root, &mut stats);

    let threads = opts.threads.max(1);
    let window = threads * WINDOW_PER_THREAD;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // (next index to write, finished entries by index), and a wake-up for both sides.
    type Window = Mutex<(usize, BTreeMap<usize, Result<Ready, Error>>)>;
    let state: (Window, Condvar) = (Mutex::new((0, BTreeMap::new())), Condvar::new());

    let mut zip = ZipWriter::new(out);
    let result: Result<(), Error> = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= entries.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                {
                    let (lock, cv) = &state;
                    let mut g = lock.lock().expect("pack state poisoned");
                    while i >= g.0 + window && !stop.load(Ordering::SeqCst) {
                        g = cv.wait(g).expect("pack state poisoned");
                    }
                }
                let e = &entries[i];
                let r = match e.kind {
                    Kind::Dir => Ok(Ready::Dir),
                    Kind::File(n) if n > SMALL_FILE => Ok(Ready::Large),
                    Kind::File(_) => compress_small(&e.abs, opts),
                };
                let (lock, cv) = &state;
                lock.lock().expect("pack state poisoned").1.insert(i, r);
                cv.notify_all();
            });
        }
        let res = (|| {
            for (i, e) in entries.iter().enumerate() {
                let ready = {
                    let (lock, cv) = &state;
                    let mut g = lock.lock().expect("pack state poisoned");
                    loop {
                        if let Some(r) = g.1.remove(&i) {
                            g.0 = i + 1;
                            cv.notify_all();
                            break r;
                        }
                        g = cv.wait(g).expect("pack state poisoned");
                    }
                }?;
                match ready {
                    Ready::Dir => {
                        zip.add_dir(&e.rel).map_err(Error::Write)?;
                        stats.dirs += 1;
                    }
                    Ready::Small {
                        method,
                        crc,
                        size,
                        data,
                    } => {
                        zip.add_compressed(&e.rel, method, crc, size, &data)
                            .map_err(Error::Write)?;
                        stats.files += 1;
                        stats.bytes_in += size;
                        progress.advance(size);
                    }
                    Ready::Large => {
                        let n = stream_large(&mut zip, e, opts, threads, progress)?;
                        stats.files += 1;
                        stats.bytes_in += n;
                    }
                }
            }
            Ok(())
        })();
        if res.is_err() {
            stop.store(true, Ordering::SeqCst);
            state.1.notify_all();
        }
        res
    });
    result?;
    let (out, n) = zip.finish().map_err(Error::Write)?;
    stats.bytes_zip = n;
    progress.finish();
    Ok((out, stats))
}

fn stream_large<W: Write>(
    zip: &mut ZipWriter<W>,
    e: &Entry,
    opts: &PackOptions,
    threads: usize,
    progress: &dyn Progress,
) -> Result<u64, Error> {
    let method = match opts.compression {
        Compression::Zstd => Method::Zstd,
        Compression::Deflate => Method::Deflate,
    };
    let mut f = File::open(&e.abs).map_err(io_at(&e.abs))?;
    let (start, w) = zip.begin_streamed(&e.rel, method).map_err(Error::Write)?;
    let mut crc = crc32fast::Hasher::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut feed = |sink: &mut dyn Write| -> Result<(), Error> {
        loop {
            let k = f.read(&mut buf).map_err(io_at(&e.abs))?;
            if k == 0 {
                return Ok(());
            }
            crc.update(&buf[..k]);
            n += k as u64;
            progress.advance(k as u64);
            sink.write_all(&buf[..k]).map_err(Error::Write)?;
        }
    };
    match method {
        Method::Zstd => {
            let mut enc = zstd::stream::Encoder::new(w, opts.level).map_err(Error::Write)?;
            // Always the multi-threaded mode (even with one worker): its output does not
            // depend on the number of workers, so archives are reproducible across machines.
            enc.multithread(threads as u32).map_err(Error::Write)?;
            feed(&mut enc)?;
            enc.finish().map_err(Error::Write)?;
        }
        _ => {
            let mut enc = flate2::write::DeflateEncoder::new(
                w,
                flate2::Compression::new(opts.level.clamp(1, 9) as u32),
            );
            feed(&mut enc)?;
            enc.finish().map_err(Error::Write)?;
        }
    }
    zip.end_streamed(start, crc.finalize(), n)
        .map_err(Error::Write)?;
    Ok(n)
}

/// Reads the facts recorded with a generation: Chromium version, clean exit, cookie format.
fn inspect(root: &Path, stats: &mut PackStats) {
    if let Ok(v) = fs::read_to_string(root.join("Last Version")) {
        let v = v.trim();
        if !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()) {
            stats.chromium_version = Some(v.to_string());
        }
    }
    if let Ok(text) = fs::read(root.join("Default/Preferences")) {
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) {
            stats.clean_exit = json
                .pointer("/profile/exit_type")
                .and_then(|v| v.as_str())
                .map(|s| s == "Normal");
        }
    }
    // Chromium removes its Singleton* links on a clean exit and leaves them after a crash,
    // SIGTERM or SIGKILL: their presence marks a crash snapshot whatever Preferences says.
    if fs::symlink_metadata(root.join("SingletonLock")).is_ok() {
        stats.clean_exit = Some(false);
    }
    // Read with a real SQLite reader (not a byte search): v11 values are encrypted with
    // the desktop keyring and will not decrypt on another machine.
    stats.cookie_v11_warning = super::contents::cookies_v11(root).is_some_and(|n| n > 0);
}

/// Limits applied to every archive that is unpacked or verified.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most entries.
    pub max_files: u64,
    /// Largest single file, bytes.
    pub max_file_size: u64,
    /// Largest total of all files, bytes.
    pub max_total_size: u64,
    /// Highest compression ratio of an entry larger than 1 MiB.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 50_000,
            max_file_size: 8 << 30,
            max_total_size: 32 << 30,
            max_ratio: 2_000,
        }
    }
}

/// What an unpack or check saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UnpackStats {
    /// Files written (or checked).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Entries skipped on purpose (`Singleton*`).
    pub skipped: u64,
}

struct Planned {
    index: usize,
    rel: String,
    dir: bool,
    size: u64,
    skip: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn validate_name(raw: &[u8]) -> Result<(String, bool), Error> {
    let bad = |reason| Error::UnsafeName {
        name: lossy(raw),
        reason,
    };
    let name = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > 4096 {
        return Err(bad("name longer than 4096 bytes"));
    }
    if name.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if name.contains('\\') {
        return Err(bad("contains a backslash"));
    }
    if name.starts_with('/') {
        return Err(bad("absolute path"));
    }
    let dir = name.ends_with('/');
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    for c in trimmed.split('/') {
        match c {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("'.' or '..' component")),
            _ if c.len() > 255 => return Err(bad("component longer than 255 bytes")),
            _ if c.len() == 2 && c.as_bytes()[1] == b':' => return Err(bad("drive letter")),
            _ => {}
        }
    }
    Ok((trimmed.to_string(), dir))
}

/// The entry count the end-of-central-directory record declares (ZIP64 aware). The `zip`
/// crate keys entries by name, so a duplicate name would otherwise vanish silently.
fn declared_entries<R: Read + io::Seek>(f: &mut R) -> Result<u64, Error> {
    let rd = |e: io::Error| Error::Corrupt(format!("reading the archive: {e}"));
    let len = f.seek(io::SeekFrom::End(0)).map_err(rd)?;
    let tail_len = len.min(22 + 65_535 + 20);
    f.seek(io::SeekFrom::Start(len - tail_len)).map_err(rd)?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).map_err(rd)?;
    let corrupt = || Error::Corrupt("no end of central directory record".into());
    let pos = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or_else(corrupt)?;
    let count16 = u16::from_le_bytes([tail[pos + 10], tail[pos + 11]]);
    if count16 != 0xFFFF {
        return Ok(u64::from(count16));
    }
    // ZIP64: the locator sits just before the EOCD and points at the ZIP64 EOCD record.
    if pos < 20 || tail[pos - 20..pos - 16] != [0x50, 0x4b, 0x06, 0x07] {
        return Err(corrupt());
    }
    let off = u64::from_le_bytes(tail[pos - 12..pos - 4].try_into().expect("8 bytes"));
    let mut rec = [0u8; 56];
    f.seek(io::SeekFrom::Start(off)).map_err(rd)?;
    f.read_exact(&mut rec).map_err(|_| corrupt())?;
    if rec[..4] != [0x50, 0x4b, 0x06, 0x06] {
        return Err(corrupt());
    }
    Ok(u64::from_le_bytes(rec[32..40].try_into().expect("8 bytes")))
}

fn plan<R: Read + io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    declared: u64,
    limits: &Limits,
) -> Result<Vec<Planned>, Error> {
    let count = zip.len() as u64;
    if declared > limits.max_files {
        return Err(Error::TooManyFiles {
            count: declared,
            limit: limits.max_files,
        });
    }
    if declared != count {
        return Err(Error::Duplicate(format!(
            "{} entries declared, {count} distinct names",
            declared
        )));
    }
    if count > limits.max_files {
        return Err(Error::TooManyFiles {
            count,
            limit: limits.max_files,
        });
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(zip.len());
    let mut files: HashSet<String> = HashSet::new();
    let mut total = 0u64;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let f = zip
            .by_index_raw(i)
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let (rel, mut dir) = validate_name(f.name_raw())?;
        if let Some(mode) = f.unix_mode() {
            match mode & 0o170_000 {
                0o120_000 => return Err(Error::Symlink(rel)),
                0o040_000 => dir = true,
                0o100_000 | 0 => {}
                other => {
                    return Err(Error::SpecialFile {
                        name: rel,
                        mode: other | (mode & 0o7777),
                    })
                }
            }
            if (mode & 0o170_000 == 0o100_000) && dir {
                return Err(Error::UnsafeName {
                    name: rel,
                    reason: "regular file with a directory name",
                });
            }
        }
        if f.encrypted() {
            return Err(Error::Encrypted(rel));
        }
        match f.compression() {
            zip::CompressionMethod::Stored
            | zip::CompressionMethod::Deflated
            | zip::CompressionMethod::Zstd => {}
            m => {
                return Err(Error::Unsupported {
                    name: rel,
                    method: format!("{m:?}"),
                })
            }
        }
        let size = if dir { 0 } else { f.size() };
        if size > SMALL_FILE {
            let ratio = size / f.compressed_size().max(1);
            if ratio > limits.max_ratio {
                return Err(Error::RatioTooHigh {
                    name: rel,
                    ratio,
                    limit: limits.max_ratio,
                });
            }
        }
        if size > limits.max_file_size {
            return Err(Error::FileTooLarge {
                name: rel,
                size,
                limit: limits.max_file_size,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_size {
            return Err(Error::TotalTooLarge {
                total,
                limit: limits.max_total_size,
            });
        }
        if !seen.insert(rel.clone()) {
            return Err(Error::Duplicate(rel));
        }
        if !dir {
            files.insert(rel.clone());
        }
        let skip = rel
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("Singleton"));
        out.push(Planned {
            index: i,
            rel,
            dir,
            size,
            skip,
        });
    }
    // A file whose name is also used as a parent directory of another entry.
    for p in &out {
        let mut prefix = p.rel.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if files.contains(parent) {
                return Err(Error::Duplicate(parent.to_string()));
            }
            prefix = parent;
        }
    }
    Ok(out)
}

fn copy_entry<R: Read + io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    p: &Planned,
    sink: &mut dyn Write,
) -> Result<u64, Error> {
    let damaged = |reason: String| Error::Damaged {
        name: p.rel.clone(),
        reason,
    };
    let f = zip.by_index(p.index).map_err(|e| damaged(e.to_string()))?;
    // Never trust the declared size: read at most one byte more than it.
    let mut limited = f.take(p.size + 1);
    let n = io::copy(&mut limited, sink).map_err(|e| damaged(e.to_string()))?;
    if n != p.size {
        return Err(damaged(format!("{n} bytes of data, {} declared", p.size)));
    }
    Ok(n)
}

/// Validates a ZIP and reads every entry (checking sizes and CRCs) without writing.
///
/// # Errors
/// Any validation or integrity error.
pub fn check(zip_path: &Path, limits: &Limits) -> Result<UnpackStats, Error> {
    check_from(&|| open_path(zip_path), limits)
}

/// A buffered reader of an archive file.
fn open_path(zip_path: &Path) -> io::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(256 * 1024, File::open(zip_path)?))
}

/// [`check`] over any seekable source; `open` is called once per reader needed.
///
/// # Errors
/// Any validation or integrity error.
pub fn check_from<R: Read + io::Seek, F: Fn() -> io::Result<R> + Sync>(
    open: &F,
    limits: &Limits,
) -> Result<UnpackStats, Error> {
    let (mut zip, declared) = open_zip(open)?;
    let planned = plan(&mut zip, declared, limits)?;
    let mut stats = UnpackStats::default();
    for p in &planned {
        if p.dir {
            stats.dirs += 1;
        } else {
            stats.bytes += copy_entry(&mut zip, p, &mut io::sink())?;
            stats.files += 1;
        }
    }
    Ok(stats)
}

fn open_zip<R: Read + io::Seek, F: Fn() -> io::Result<R>>(
    open: &F,
) -> Result<(zip::ZipArchive<R>, u64), Error> {
    let mut r = open().map_err(|e| Error::Corrupt(format!("opening the archive: {e}")))?;
    let declared = declared_entries(&mut r)?;
    let zip = zip::ZipArchive::new(r).map_err(|e| Error::Corrupt(e.to_string()))?;
    Ok((zip, declared))
}

/// Checks that `target` is absent or an empty directory.
///
/// # Errors
/// [`Error::TargetNotEmpty`] or I/O errors.
pub fn check_target(target: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            path: target.into(),
            source: e,
        }),
        Ok(m) if m.is_dir() => {
            if fs::read_dir(target)
                .map_err(io_at(target))?
                .next()
                .is_none()
            {
                Ok(())
            } else {
                Err(Error::TargetNotEmpty(target.into()))
            }
        }
        Ok(_) => Err(Error::TargetNotEmpty(target.into())),
    }
}

/// A private directory beside `target` for staging, named so it is recognisable.
pub fn staging_path(target: &Path, what: &str) -> PathBuf {
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".into());
    parent.join(format!(
        ".{name}.pv-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Validates the archive at `zip_path`, then extracts it into `target` (new or empty).
///
/// # Errors
/// Validation errors (nothing is written), or I/O errors (the staging dir is removed).
pub fn unpack(
    zip_path: &Path,
    target: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<UnpackStats, Error> {
    unpack_from(&|| open_path(zip_path), target, limits, progress)
}

/// [`unpack`] over any seekable source; `open` is called once per extraction thread.
///
/// # Errors
/// As [`unpack`].
pub fn unpack_from<R: Read + io::Seek, F: Fn() -> io::Result<R> + Sync>(
    open: &F,
    target: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<UnpackStats, Error> {
    check_target(target)?;
    let (mut zip, declared) = open_zip(open)?;
    let planned = plan(&mut zip, declared, limits)?;
    let total: u64 = planned.iter().map(|p| p.size).sum();
    progress.start("extracting", total);
    let staging = staging_path(target, "staging");
    fsutil::create_private_dir(&staging).map_err(io_at(&staging))?;
    let res = (|| {
        let mut stats = UnpackStats::default();
        // Directories first (sequentially), then files on every core: each worker opens
        // its own reader of the archive and takes a contiguous share of the entries.
        let mut files: Vec<&Planned> = Vec::new();
        for p in &planned {
            if p.skip {
                stats.skipped += 1;
            } else if p.dir {
                let path = staging.join(&p.rel);
                fsutil::create_private_dir(&path).map_err(io_at(&path))?;
                stats.dirs += 1;
            } else {
                let path = staging.join(&p.rel);
                if let Some(parent) = path.parent() {
                    fsutil::create_private_dir(parent).map_err(io_at(parent))?;
                }
                files.push(p);
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let share = total / threads as u64 + 1;
        let mut groups: Vec<Vec<&Planned>> = vec![Vec::new()];
        let mut acc = 0u64;
        for p in files {
            if acc >= share && groups.len() < threads {
                groups.push(Vec::new());
                acc = 0;
            }
            acc += p.size;
            groups.last_mut().expect("one group").push(p);
        }
        let results: Vec<Result<(u64, u64), Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .iter()
                .map(|group| {
                    let staging = &staging;
                    s.spawn(move || -> Result<(u64, u64), Error> {
                        let (mut zip, _) = open_zip(open)?;
                        let (mut n_files, mut n_bytes) = (0, 0);
                        for p in group {
                            let path = staging.join(&p.rel);
                            let f = fsutil::create_private_new(&path).map_err(io_at(&path))?;
                            let mut w = io::BufWriter::with_capacity(256 * 1024, f);
                            let n = copy_entry(&mut zip, p, &mut w)?;
                            w.flush().map_err(io_at(&path))?;
                            n_files += 1;
                            n_bytes += n;
                            progress.advance(n);
                        }
                        Ok((n_files, n_bytes))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Corrupt("extraction worker panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            let (f, b) = r?;
            stats.files += f;
            stats.bytes += b;
        }
        check_target(target)?;
        if target.is_dir() {
            fs::remove_dir(target).map_err(io_at(target))?;
        }
        fs::rename(&staging, target).map_err(io_at(target))?;
        Ok(stats)
    })();
    if res.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    progress.finish();
    res
}

#[cfg(test)]
mod tests;
