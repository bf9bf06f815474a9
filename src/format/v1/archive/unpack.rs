//! Unpacking: validating an untrusted ZIP entry by entry before anything is written, then
//! extracting it into a staging directory renamed into place (or only checking it).

use super::*;

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
