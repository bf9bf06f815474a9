//! Packing: walking a profile directory (what to keep, what it says about the browser) and
//! writing the ZIP stream, small files compressed on every core, large ones streamed.

use super::*;

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
    limits: &Limits,
) -> Result<(Vec<Entry>, PackStats), Error> {
    if !root.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let mut stats = PackStats::default();
    let entries = walk(root, excludes, limits, &mut stats)?;
    inspect(root, &mut stats);
    Ok((entries, stats))
}

/// What a walk keeps, held to the limits a restore applies (the walk stops at the first
/// one broken: a profile a restore would refuse is not saved, and a walk of millions of
/// files, or of a sparse file of terabytes, ends before it is read).
struct Kept<'a> {
    out: Vec<Entry>,
    limits: &'a Limits,
    total: u64,
}

impl Kept<'_> {
    fn push(&mut self, e: Entry) -> Result<(), Error> {
        let over = |e: Error| Error::OverLimits(Box::new(e));
        if self.out.len() as u64 >= self.limits.max_files {
            return Err(over(Error::TooManyFiles {
                count: self.out.len() as u64 + 1,
                limit: self.limits.max_files,
            }));
        }
        if let Kind::File(size) = e.kind {
            if size > self.limits.max_file_size {
                return Err(over(Error::FileTooLarge {
                    name: e.rel,
                    size,
                    limit: self.limits.max_file_size,
                }));
            }
            self.total = self.total.saturating_add(size);
            if self.total > self.limits.max_total_size {
                return Err(over(Error::TotalTooLarge {
                    total: self.total,
                    limit: self.limits.max_total_size,
                }));
            }
        }
        self.out.push(e);
        Ok(())
    }
}

fn walk(
    root: &Path,
    ex: &Excludes,
    limits: &Limits,
    stats: &mut PackStats,
) -> Result<Vec<Entry>, Error> {
    // Depth-first with sorted children gives sorted paths (component-wise).
    let mut out = Kept {
        out: Vec::new(),
        limits,
        total: 0,
    };
    fn visit(
        dir: &Path,
        comps: &[String],
        ex: &Excludes,
        stats: &mut PackStats,
        out: &mut Kept<'_>,
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
                })?;
                visit(&path, &c, ex, stats, out)?;
            } else {
                out.push(Entry {
                    rel,
                    abs: path,
                    kind: Kind::File(meta.len()),
                })?;
            }
        }
        Ok(())
    }
    visit(root, &[], ex, stats, &mut out)?;
    Ok(out.out)
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
    // A small file (the walk said so): read as the large ones are, never more than that.
    let mut data = Vec::new();
    crate::profile::untrusted::open_regular(path)
        .and_then(|f| f.take(SMALL_FILE + 1).read_to_end(&mut data))
        .map_err(io_at(path))?;
    if data.len() as u64 > SMALL_FILE {
        return Err(io_at(path)(std::io::Error::other(
            "file grew while it was read",
        )));
    }
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
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<(W, PackStats), Error> {
    if !root.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let mut stats = PackStats::default();
    let entries = walk(root, &opts.excludes, limits, &mut stats)?;
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
    let mut f = crate::profile::untrusted::open_regular(&e.abs).map_err(io_at(&e.abs))?;
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

/// The largest `Default/Preferences` read for its exit type (Chromium's are well under 1 MiB).
const MAX_PREFERENCES_BYTES: u64 = 16 << 20;

/// Reads the facts recorded with a generation: Chromium version, clean exit, cookie format.
fn inspect(root: &Path, stats: &mut PackStats) {
    // The browser wrote these files: read without following links, bounded.
    let Ok(tree) = crate::profile::untrusted::Tree::open(root) else {
        return;
    };
    if let Ok(v) = tree.read(Path::new("Last Version"), 64) {
        let v = String::from_utf8_lossy(&v);
        let v = v.trim();
        if !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()) {
            stats.chromium_version = Some(v.to_string());
        }
    }
    if let Ok(text) = tree.read(Path::new("Default/Preferences"), MAX_PREFERENCES_BYTES) {
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
    stats.cookie_v11_warning = crate::profile::contents::cookies_v11(root).is_some_and(|n| n > 0);
}
