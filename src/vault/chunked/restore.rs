//! Restoring (or verifying) a format 2 generation: the manifest is read and checked, the
//! chunks are fetched with ranged reads of their packs ([`FETCHES`] at once, neighbouring
//! blobs of a pack in one range), and every chunk is authenticated, decompressed to its
//! exact length and hashed back to its id before a byte of it is written. The tree is built
//! in a private staging directory beside the target and renamed into place; on any error the
//! staging directory is removed and nothing is left. A file is created by the first chunk
//! written to it and gets its modification time from the last, through the open file (a
//! file costs a create, its writes, a `futimens` and a close: no reopening, no second walk).

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::time::Instant;

use futures_util::StreamExt;

use super::*;
use crate::crypt::blob::{ChunkKeys, Spent};
use crate::format::v2::pack;
use crate::progress::Step;

/// Ranged reads running at once.
const FETCHES: usize = 6;
/// Blobs of one pack closer than this are fetched in one range.
const MERGE_GAP: u64 = 256 << 10;
/// Longest range fetched at once.
const MAX_RANGE: u64 = 8 << 20;
/// Staging files kept open while chunks are placed.
const OPEN_FILES: usize = 256;

/// One ranged read: a pack's bytes `start .. start + len`, and the chunks in it.
struct Range {
    pack: usize,
    start: u64,
    len: u64,
    chunks: Vec<usize>,
}

/// What every range needs to place its chunks.
struct Placing {
    keys: ChunkKeys,
    opened: Opened,
    /// Per chunk: (file, offset in the file) of each use.
    uses: Vec<Vec<(usize, u64)>>,
    /// Whether this is a restore (not a verify).
    restoring: bool,
    /// Staging path of each file (restore), set once the staging directories are made.
    paths: std::sync::OnceLock<Vec<PathBuf>>,
    /// Per file: whether it was created (held while it is, so that a file's other chunks
    /// open it rather than race to create it).
    created: Vec<std::sync::Mutex<bool>>,
    /// Per file: chunk writes still to come; the one that brings it to zero sets the time.
    remaining: Vec<std::sync::atomic::AtomicUsize>,
    /// Files open for writing, by index: a file of many chunks (History, a LevelDB table)
    /// is opened once, not once a chunk, and closed after its last. Bounded ([`OPEN_FILES`]).
    open: std::sync::Mutex<std::collections::HashMap<usize, Arc<std::fs::File>>>,
}

impl Vault {
    /// Restores the fetched format 2 `generation` into `target`, or only verifies every chunk
    /// when `target` is `None`.
    pub(in crate::vault) async fn restore_chunked(
        &self,
        at: &ProfileAddr,
        generation: u64,
        fetched: restore_api::Fetched,
        target: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<UnpackStats> {
        let opened = self.open_manifest(generation, fetched).await?;
        let m = &opened.manifest;
        let Uses {
            uses,
            skip,
            stats,
            total,
        } = uses(m);
        let ranges = plan_ranges(m, &uses, target.is_none());
        let packs = m.packs.clone();
        if target.is_none() {
            // Verify also reads every pack's prefix.
            self.check_pack_prefixes(at, generation, &packs).await?;
        }
        // Restoring: a staging directory beside the target, renamed into place at the end,
        // removed on any error.
        let stage = target.map(|t| (archive::staging_path(t, "staging"), t.to_path_buf()));
        progress.start(
            if target.is_some() {
                "restoring"
            } else {
                "verifying chunks"
            },
            total,
        );
        let res = async {
            // The staging directories (and empty files) are made while the first ranges are
            // fetched; chunks are placed once they are there.
            let staging = match &stage {
                Some((st, t)) => {
                    archive::check_target(t)?;
                    let (st, m, p) = (st.clone(), opened.manifest.clone(), progress.clone());
                    Some(tokio::task::spawn_blocking(move || {
                        let t = Instant::now();
                        let made = make_staging(&st, &m, &skip);
                        p.spent(Step::Create, t.elapsed());
                        made
                    }))
                }
                None => None,
            };
            let files = &opened.manifest.files;
            let created = files.iter().map(|_| std::sync::Mutex::new(false)).collect();
            // A file is written once for each chunk it lists (a skipped file never is).
            let remaining = files.iter().map(|f| f.chunks.len().into()).collect();
            let placing = Arc::new(Placing {
                keys: ChunkKeys::derive(&opened.key),
                opened,
                uses,
                paths: std::sync::OnceLock::new(),
                restoring: staging.is_some(),
                created,
                remaining,
                open: std::sync::Mutex::default(),
            });
            let (ready_tx, ready) = tokio::sync::watch::channel(staging.is_none());
            let made = async {
                // Dropped when this ends: on an error, the fetches waiting for it stop.
                let ready_tx = ready_tx;
                if let Some(task) = staging {
                    let paths = task.await.map_err(|e| Error::Io {
                        path: "<staging task>".into(),
                        source: std::io::Error::other(e),
                    })??;
                    let _ = placing.paths.set(paths);
                    let _ = ready_tx.send(true);
                }
                Ok::<(), Error>(())
            };
            let fetched = self.fetch_ranges(
                at,
                generation,
                &packs,
                ranges,
                &placing,
                ready,
                progress.clone(),
            );
            // Both run to their end even when one fails, so that the staging directory is
            // complete (and removable) before the error is returned.
            let (made, fetched) = tokio::join!(made, fetched);
            made.and(fetched)?;
            if let Some((st, t)) = stage.clone() {
                let p = progress.clone();
                blocking(move || {
                    let t0 = Instant::now();
                    let done = finish_tree(&st, &t, &placing);
                    p.spent(Step::Finish, t0.elapsed());
                    done
                })
                .await?;
            }
            Ok(())
        }
        .await;
        progress.finish();
        if let (Err(_), Some((st, _))) = (&res, &stage) {
            let _ = std::fs::remove_dir_all(st);
        }
        res.map(|()| stats)
    }

    /// Reads and checks the prefix of each of `packs`.
    async fn check_pack_prefixes(
        &self,
        at: &ProfileAddr,
        generation: u64,
        packs: &[String],
    ) -> Result<()> {
        for p in packs {
            let b = self
                .store
                .get_range(&at.pack(p), 0, pack::PREFIX_LEN)
                .await
                .map_err(|e| missing(at.profile(), generation, p, e))?;
            pack::check_prefix(p, &b)?;
        }
        Ok(())
    }

    /// Fetches every range and places its chunks once `ready` says the staging tree is made.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_ranges(
        &self,
        at: &ProfileAddr,
        generation: u64,
        packs: &[String],
        ranges: Vec<Range>,
        placing: &Arc<Placing>,
        ready: tokio::sync::watch::Receiver<bool>,
        progress: Arc<dyn Progress>,
    ) -> Result<()> {
        let profile = at.profile();
        // Fetches wait on the store; placing a range is CPU work: one at a time a core (more
        // only made the threads take turns).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cpu = Arc::new(tokio::sync::Semaphore::new(cores));
        let mut work = futures_util::stream::iter(ranges)
            .map(|r| {
                let pack = packs[r.pack].clone();
                let key = at.pack(&pack);
                let (placing, progress, mut ready, cpu) = (
                    placing.clone(),
                    progress.clone(),
                    ready.clone(),
                    cpu.clone(),
                );
                async move {
                    let t = Instant::now();
                    let bytes = self
                        .store
                        .get_range(&key, r.start, r.len)
                        .await
                        .map_err(|e| missing(profile, generation, &pack, e))?;
                    progress.spent(Step::Fetch, t.elapsed());
                    if ready.wait_for(|r| *r).await.is_err() {
                        // The staging tree failed: its error is the one returned.
                        return Ok(0);
                    }
                    let core = cpu.acquire_owned().await.map_err(|_| Error::Io {
                        path: "<restore>".into(),
                        source: std::io::Error::other("the placing slots closed"),
                    })?;
                    // The slot goes with the placing: a blocking task runs on when this
                    // future is dropped, and holds its slot until it ends.
                    blocking(move || {
                        let _core = core;
                        place(&placing, &pack, &r, &bytes, progress.as_ref())
                    })
                    .await
                }
            })
            .buffer_unordered(FETCHES);
        let mut failed = None;
        while let Some(r) = work.next().await {
            match r {
                Ok(n) => progress.advance(n),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failed else { return Ok(()) };
        // On an error, the placings already running end before it is returned: one still
        // writing into the staging directory would outlive its removal.
        drop(work);
        let _ = cpu
            .acquire_many(u32::try_from(cores).unwrap_or(u32::MAX))
            .await;
        Err(e)
    }
}

/// The ranged reads that fetch the chunks some file uses (or every chunk, with `all`): each
/// pack's chunks by offset, neighbours less than [`MERGE_GAP`] apart read together.
fn plan_ranges(m: &Manifest, uses: &[Vec<(usize, u64)>], all: bool) -> Vec<Range> {
    let mut by_pack: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (c, u) in uses.iter().enumerate() {
        if all || !u.is_empty() {
            by_pack
                .entry(m.chunks[c].pack as usize)
                .or_default()
                .push(c);
        }
    }
    let mut ranges: Vec<Range> = Vec::new();
    for (p, mut cs) in by_pack {
        cs.sort_by_key(|&c| m.chunks[c].offset);
        for c in cs {
            let (off, len) = (m.chunks[c].offset, u64::from(m.chunks[c].len));
            match ranges.last_mut() {
                Some(r)
                    if r.pack == p
                        && off >= r.start + r.len
                        && off - (r.start + r.len) <= MERGE_GAP
                        && off + len - r.start <= MAX_RANGE =>
                {
                    r.len = off + len - r.start;
                    r.chunks.push(c);
                }
                _ => ranges.push(Range {
                    pack: p,
                    start: off,
                    len,
                    chunks: vec![c],
                }),
            }
        }
    }
    ranges
}

/// Where each chunk of a manifest goes, and what a restore of it writes.
struct Uses {
    /// Per chunk: (file, offset in the file) of each use.
    uses: Vec<Vec<(usize, u64)>>,
    /// Per file: whether it is left out (the browser's singleton locks never are restored).
    skip: Vec<bool>,
    /// Files, directories and bytes restored.
    stats: UnpackStats,
    /// Bytes to write.
    total: u64,
}

fn uses(m: &Manifest) -> Uses {
    let mut u = Uses {
        uses: vec![Vec::new(); m.chunks.len()],
        skip: vec![false; m.files.len()],
        stats: UnpackStats::default(),
        total: 0,
    };
    for (fi, f) in m.files.iter().enumerate() {
        // As with format 1: the browser's singleton locks are never restored.
        if f.path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("Singleton"))
        {
            u.skip[fi] = true;
            u.stats.skipped += 1;
            continue;
        }
        let mut off = 0u64;
        for &c in &f.chunks {
            u.uses[c as usize].push((fi, off));
            off += u64::from(m.chunks[c as usize].raw);
        }
        u.total += f.size;
        u.stats.files += 1;
        u.stats.bytes += f.size;
    }
    u.stats.dirs = m.dirs.len() as u64;
    u
}

/// Creates the staging directory with every directory, and the files of no bytes (a file of
/// chunks is created by its first); returns each file's path.
fn make_staging(st: &Path, m: &Manifest, skip: &[bool]) -> Result<Vec<PathBuf>> {
    fsutil::create_private_dir(st).map_err(io_at(st))?;
    for d in &m.dirs {
        let p = st.join(d);
        fsutil::create_private_dir(&p).map_err(io_at(&p))?;
    }
    let paths: Vec<PathBuf> = m.files.iter().map(|f| st.join(&f.path)).collect();
    let parents: std::collections::BTreeSet<&Path> = paths
        .iter()
        .zip(skip)
        .filter(|(_, &skipped)| !skipped)
        .map(|(p, _)| p.parent().unwrap_or(st))
        .collect();
    for dir in parents {
        fsutil::create_private_dir(dir).map_err(io_at(dir))?;
    }
    for ((f, p), _) in m
        .files
        .iter()
        .zip(&paths)
        .zip(skip)
        .filter(|((f, _), &skipped)| !skipped && f.chunks.is_empty())
    {
        let file = fsutil::create_private_new(p).map_err(io_at(p))?;
        file.set_modified(mtime(f)).map_err(io_at(p))?;
    }
    Ok(paths)
}

/// The modification time a file is restored with (the next save compares it).
fn mtime(f: &crate::format::v2::manifest::FileEntry) -> std::time::SystemTime {
    if f.mtime_ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(f.mtime_ns as u64)
    } else {
        std::time::UNIX_EPOCH
    }
}

/// A pack that is gone or shorter than the manifest says: the generation is damaged.
fn missing(profile: &str, generation: u64, pack: &str, e: store::Error) -> Error {
    match e {
        store::Error::NotFound { .. } | store::Error::OutOfRange { .. } => Error::PackMissing {
            profile: profile.into(),
            generation,
            pack: pack.into(),
            reason: e.to_string(),
        },
        e => Error::Store(e),
    }
}

/// Opens every chunk of one fetched range and writes it where it is used; returns the bytes
/// placed.
fn place(p: &Placing, pack: &str, r: &Range, bytes: &[u8], progress: &dyn Progress) -> Result<u64> {
    let m = &p.opened.manifest;
    let paths = match (p.restoring, p.paths.get()) {
        (false, _) => None,
        (true, Some(paths)) => Some(paths),
        (true, None) => unreachable!("chunks are placed once the staging tree is made"),
    };
    let mut placed = 0u64;
    let mut spent = Spent::default();
    let (mut creating, mut writing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let r = (|| {
        for &c in &r.chunks {
            let cr = &m.chunks[c];
            let at = (cr.offset - r.start) as usize;
            let blob = &bytes[at..at + cr.len as usize];
            let raw = p
                .keys
                .open_timed(&p.opened.ids[c], blob, cr.raw, &mut spent)
                .map_err(|source| Error::Blob {
                    pack: pack.into(),
                    chunk: cr.id.clone(),
                    source,
                })?;
            if let Some(paths) = paths {
                for &(file, off) in &p.uses[c] {
                    let path = &paths[file];
                    let t = Instant::now();
                    let f = p.file(file, path)?;
                    let t2 = Instant::now();
                    creating += t2 - t;
                    f.write_all_at(&raw, off).map_err(io_at(path))?;
                    p.wrote(file, &f, path)?;
                    writing += t2.elapsed();
                    placed += raw.len() as u64;
                }
            } else {
                placed += raw.len() as u64 * p.uses[c].len() as u64;
            }
        }
        Ok(placed)
    })();
    progress.spent(Step::Decrypt, spent.aes);
    progress.spent(Step::Decompress, spent.zstd);
    progress.spent(Step::Hash, spent.hash);
    progress.spent(Step::Create, creating);
    progress.spent(Step::Write, writing);
    r
}

impl Placing {
    /// Staging file `i`, open for writing: from the cache, or created (its first chunk) or
    /// opened again, and kept.
    fn file(&self, i: usize, path: &Path) -> Result<Arc<std::fs::File>> {
        if let Some(f) = self.open.lock().expect("open files").get(&i) {
            return Ok(f.clone());
        }
        let f = {
            let mut created = self.created[i].lock().expect("created files");
            let f = if *created {
                std::fs::OpenOptions::new().write(true).open(path)
            } else {
                fsutil::create_private_new(path)
            };
            *created = true;
            Arc::new(f.map_err(io_at(path))?)
        };
        let mut open = self.open.lock().expect("open files");
        if open.len() >= OPEN_FILES {
            // Files still open are files of many chunks: any is opened again when needed.
            open.clear();
        }
        open.insert(i, f.clone());
        Ok(f)
    }

    /// One chunk written into file `i`: after its last, the file gets its time and closes.
    fn wrote(&self, i: usize, f: &std::fs::File, path: &Path) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.remaining[i].fetch_sub(1, Ordering::AcqRel) == 1 {
            f.set_modified(mtime(&self.opened.manifest.files[i]))
                .map_err(io_at(path))?;
            self.open.lock().expect("open files").remove(&i);
        }
        Ok(())
    }
}

/// Renames the staging directory into place (every file was written and timed).
fn finish_tree(staging: &Path, target: &Path, p: &Placing) -> Result<()> {
    p.open.lock().expect("open files").clear();
    archive::check_target(target)?;
    if target.is_dir() {
        std::fs::remove_dir(target).map_err(io_at(target))?;
    }
    std::fs::rename(staging, target).map_err(io_at(target))?;
    Ok(())
}
