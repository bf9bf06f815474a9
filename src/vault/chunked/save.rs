//! The chunked half of a format 2 save: from a profile directory to uploaded packs and a
//! manifest in a spool file (the rest of the save, claiming the generation number and moving
//! the head, is shared with format 1 in `vault/save/`).
//!
//! Three stages run at once with bounded queues between them, so memory does not grow with
//! the profile and the save takes about the longer of packing and uploading:
//! a reader thread reads the files to read chunk by chunk; worker threads hash each chunk and
//! seal those neither the base generation nor this save has; the collecting thread appends
//! sealed chunks to packs and hands full packs to async uploaders (at most [`IN_FLIGHT`]
//! PUTs, [`QUEUED`] finished packs waiting).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;
use std::time::Instant;

use super::stages::{
    collect, read_files, seal_chunks, Budget, Done, Job, PackBuffers, BUDGET_BYTES,
};
use super::*;
use crate::crypt::blob::ChunkKeys;
use crate::format::v1::archive::{Entry, Kind};
use crate::format::v2::manifest::{ChunkRef, FileEntry};
use crate::progress::Step;

/// Pack uploads running at once (3 keep LocalStack at its upload rate; each held pack is 4 MiB).
const IN_FLIGHT: usize = 3;
/// Finished packs waiting for an upload slot.
const QUEUED: usize = 1;
/// A file modified within this many nanoseconds before the base's walk is read again
/// (its time may not tell a later change apart).
const RACY_NS: i64 = 2_000_000_000;

/// Where a chunk's blob is.
#[derive(Clone)]
pub(super) struct Loc {
    pub(super) pack: Arc<str>,
    pub(super) offset: u64,
    pub(super) len: u32,
    pub(super) raw: u32,
}

/// What packing produced.
pub(in crate::vault) struct Packed {
    /// Every pack the manifest uses.
    pub packs: Vec<String>,
    /// Packs this save uploaded (removed again if the save fails before its manifest).
    pub uploaded: Vec<String>,
    /// Counters.
    pub chunks: ChunkStats,
    /// What the walk found.
    pub stats: PackStats,
    /// The contents report, when recorded.
    pub contents: Option<crate::profile::contents::Contents>,
    /// The sealer of the manifest object in the spool file.
    pub sealer: Sealer,
    /// Bytes of its header.
    pub header_len: usize,
}

/// What the blocking part needs.
struct Plan {
    dir: PathBuf,
    spool: PathBuf,
    opts: Arc<VaultOptions>,
    keys: ChunkKeys,
    pk: DataKey,
    base: Option<Opened>,
    full_read: bool,
    since_full: u32,
    tenant: String,
    profile: String,
    generation: u64,
    object_id: String,
    created_at: u64,
}

impl Vault {
    /// The base of a format 2 save: the manifest of the generation the head points at, when
    /// it is of format 2 and reads cleanly (otherwise the save starts afresh, with a new
    /// content key, and reads every file).
    ///
    /// # Errors
    /// Storage and key-service errors (a damaged base is logged and not used).
    pub(in crate::vault) async fn chunked_base(
        &self,
        at: &ProfileAddr,
        head: Option<u64>,
    ) -> Result<Option<Opened>> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let Some(g) = head else { return Ok(None) };
        let rec = match self.read_record(at, g).await {
            Ok(r) => r,
            Err(Error::GenerationNotFound { .. }) => return Ok(None),
            Err(e) if e.is_integrity() => {
                tracing::warn!(tenant, profile, generation = g, error = %e, "the head's record is damaged; saving without reusing its chunks");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if rec.format != RECORD_FORMAT_CHUNKED {
            return Ok(None);
        }
        let opened = match self
            .fetch_record(rec, Arc::new(crate::progress::NoProgress))
            .await
        {
            Ok(f) => self.open_manifest(g, f).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_integrity() || matches!(e, Error::GenerationNotFound { .. }) => {
                tracing::warn!(tenant, profile, generation = g, error = %e, "the head's manifest cannot be used; saving without reusing its chunks");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Packs `dir` into chunks and packs (uploading them), and writes the manifest object
    /// into `spool`.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::vault) async fn pack_chunked(
        &self,
        at: &ProfileAddr,
        dir: &Path,
        spool: &Path,
        pk: &DataKey,
        base: Option<Opened>,
        generation: u64,
        object_id: &str,
        created_at: u64,
        progress: Arc<dyn Progress>,
    ) -> Result<Packed> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let since_full = base.as_ref().map_or(0, |b| b.manifest.since_full + 1);
        let full_read =
            base.is_none() || self.opts.reread || since_full >= self.opts.full_read_every.max(1);
        let plan = Plan {
            dir: dir.to_path_buf(),
            spool: spool.to_path_buf(),
            opts: self.opts.clone(),
            keys: ChunkKeys::derive(pk),
            pk: pk.clone(),
            base,
            full_read,
            since_full: if full_read { 0 } else { since_full },
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: object_id.into(),
            created_at,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Bytes)>(QUEUED);
        // Uploading, queued, waiting to be queued, and being filled.
        let buffers = Arc::new(PackBuffers::new(IN_FLIGHT + QUEUED + 2));
        let packer = {
            let (progress, buffers) = (progress.clone(), buffers.clone());
            tokio::task::spawn_blocking(move || pack_blocking(plan, tx, &buffers, progress))
        };
        // The uploaders: take finished packs as they come, at most IN_FLIGHT at once.
        let mut uploaded: Vec<String> = Vec::new();
        let mut bytes = 0u64;
        let mut set = tokio::task::JoinSet::new();
        let upload: Result<()> = async {
            loop {
                // A pack is taken from the queue only when it can go up at once, so no more
                // than IN_FLIGHT + QUEUED finished packs are ever held (and the one the
                // packer waits to queue).
                while set.len() >= IN_FLIGHT {
                    join_one(&mut set).await?;
                }
                let Some((id, buf)) = rx.recv().await else {
                    break;
                };
                bytes += buf.len() as u64;
                uploaded.push(id.clone());
                let store = self.store.clone();
                let key = at.pack(&id);
                let (progress, buffers) = (progress.clone(), buffers.clone());
                set.spawn(async move {
                    let t = Instant::now();
                    let put = store
                        .put(&key, PutBody::Bytes(buf.clone()), PutMode::Create)
                        .await;
                    progress.spent(Step::Upload, t.elapsed());
                    buffers.give(buf);
                    match put {
                        // A random id: only this save's own earlier attempt can hold it.
                        Ok(_) | Err(store::Error::AlreadyExists { .. }) => Ok(()),
                        Err(e) => Err(Error::from(e)),
                    }
                });
            }
            while !set.is_empty() {
                join_one(&mut set).await?;
            }
            Ok(())
        }
        .await;
        // Uploads still under way end before anything is removed: dropping them would not
        // stop a write already on its way (a blocking file write, a request on the wire),
        // which could then land after its pack was removed.
        while set.join_next().await.is_some() {}
        drop(rx);
        let packed = packer.await.map_err(|e| Error::Io {
            path: "<pack task>".into(),
            source: std::io::Error::other(e),
        })?;
        match (upload, packed) {
            (Ok(()), Ok(mut p)) => {
                p.chunks.bytes_uploaded = bytes;
                p.chunks.packs_new = uploaded.len() as u64;
                p.uploaded = uploaded;
                Ok(p)
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                self.remove_packs(at, &uploaded).await;
                Err(e)
            }
        }
    }

    /// Best effort: removes packs no manifest names (a save that failed before its manifest).
    pub(in crate::vault) async fn remove_packs(&self, at: &ProfileAddr, packs: &[String]) {
        let (tenant, profile) = (at.tenant(), at.profile());
        for p in packs {
            if let Err(e) = self.store.delete(&at.pack(p)).await {
                tracing::warn!(tenant, profile, pack = %p, error = %e, "could not remove a pack of a failed save; garbage collection will");
            }
        }
    }
}

async fn join_one(set: &mut tokio::task::JoinSet<Result<()>>) -> Result<()> {
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::Io {
            path: "<upload task>".into(),
            source: std::io::Error::other(e),
        }),
        None => Ok(()),
    }
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec()
}

/// The manifest's pack and chunk tables, filled as the files are listed.
#[derive(Default)]
struct Tables {
    packs: Vec<String>,
    pack_index: HashMap<Arc<str>, u32>,
    chunks: Vec<ChunkRef>,
    chunk_index: HashMap<ChunkId, u32>,
}

impl Tables {
    /// The index of chunk `id` (stored at `loc`), added the first time it is seen.
    fn chunk(&mut self, id: ChunkId, loc: &Loc) -> u32 {
        if let Some(&i) = self.chunk_index.get(&id) {
            return i;
        }
        let packs = &mut self.packs;
        let pack = *self.pack_index.entry(loc.pack.clone()).or_insert_with(|| {
            packs.push(loc.pack.to_string());
            (packs.len() - 1) as u32
        });
        self.chunks.push(ChunkRef {
            id: manifest::id_hex(&id),
            pack,
            offset: loc.offset,
            len: loc.len,
            raw: loc.raw,
        });
        let i = (self.chunks.len() - 1) as u32;
        self.chunk_index.insert(id, i);
        i
    }
}

/// One file of the new generation.
struct NewFile {
    rel: String,
    abs: PathBuf,
    size: u64,
    mtime_ns: i64,
    /// Chunk ids, in order (reused from the base, or filled as chunks are hashed).
    ids: Vec<Option<ChunkId>>,
    read: bool,
}

fn pack_blocking(
    plan: Plan,
    tx: tokio::sync::mpsc::Sender<(String, Bytes)>,
    buffers: &PackBuffers,
    progress: Arc<dyn Progress>,
) -> Result<Packed> {
    let walked_at = now();
    let walking = Instant::now();
    let mut w = walk(&plan)?;
    progress.spent(Step::Walk, walking.elapsed());
    progress.start("packing", w.to_read);
    let new_locs = pack_files(&plan, &mut w, &tx, buffers, progress.as_ref())?;
    progress.finish();
    let manifesting = Instant::now();
    let packed = write_manifest(&plan, w, &new_locs, walked_at)?;
    progress.spent(Step::Manifest, manifesting.elapsed());
    Ok(packed)
}

/// What the walk found, against the base.
struct Walked {
    /// Every file of the new generation: its chunks reused from the base, or to read.
    files: Vec<NewFile>,
    dirs: Vec<String>,
    /// Every chunk of the base, and where its blob is.
    known: HashMap<ChunkId, Loc>,
    /// Bytes to read.
    to_read: u64,
    counters: ChunkStats,
    stats: PackStats,
}

/// Walks the profile and decides, file by file, what the base already has.
fn walk(plan: &Plan) -> Result<Walked> {
    let opts = &plan.opts;
    let (entries, mut stats) = archive::walk_profile(&plan.dir, &opts.pack.excludes, &opts.limits)?;
    // What the base has: every chunk, and every file with its size, time and chunks.
    let mut known: HashMap<ChunkId, Loc> = HashMap::new();
    let mut base_files: HashMap<&str, &FileEntry> = HashMap::new();
    let mut base_racy_ns = i64::MIN;
    if let Some(b) = &plan.base {
        let packs: Vec<Arc<str>> = b
            .manifest
            .packs
            .iter()
            .map(|p| Arc::from(p.as_str()))
            .collect();
        for (c, id) in b.manifest.chunks.iter().zip(&b.ids) {
            known.insert(
                *id,
                Loc {
                    pack: packs[c.pack as usize].clone(),
                    offset: c.offset,
                    len: c.len,
                    raw: c.raw,
                },
            );
        }
        for f in &b.manifest.files {
            base_files.insert(&f.path, f);
        }
        base_racy_ns = (b.manifest.walked_at as i64)
            .saturating_mul(1_000_000_000)
            .saturating_sub(RACY_NS);
    }
    let mut dirs = Vec::new();
    let mut files: Vec<NewFile> = Vec::new();
    let mut to_read = 0u64;
    let mut counters = ChunkStats {
        base: plan.base.as_ref().map(|b| b.generation),
        full_read: plan.full_read,
        ..ChunkStats::default()
    };
    for Entry { rel, abs, kind } in entries {
        match kind {
            Kind::Dir => dirs.push(rel),
            Kind::File(_) => {
                let m = std::fs::symlink_metadata(&abs).map_err(io_at(&abs))?;
                let (size, mtime) = (m.len(), mtime_ns(&m));
                let reuse = (!plan.full_read)
                    .then(|| base_files.get(rel.as_str()))
                    .flatten()
                    .filter(|f| f.size == size && f.mtime_ns == mtime && mtime < base_racy_ns);
                let (ids, read) = match (reuse, &plan.base) {
                    (Some(f), Some(b)) => (
                        f.chunks.iter().map(|&i| Some(b.ids[i as usize])).collect(),
                        false,
                    ),
                    _ => {
                        to_read += size;
                        (Vec::new(), true)
                    }
                };
                if read {
                    counters.files_read += 1;
                } else {
                    counters.files_skipped += 1;
                }
                stats.files += 1;
                stats.bytes_in += size;
                files.push(NewFile {
                    rel,
                    abs,
                    size,
                    mtime_ns: mtime,
                    ids,
                    read,
                });
            }
        }
    }
    stats.dirs = dirs.len() as u64;
    Ok(Walked {
        files,
        dirs,
        known,
        to_read,
        counters,
        stats,
    })
}

/// Reads, hashes, seals and packs the files to read (the stages of `stages.rs`), filling in
/// their chunk ids; returns where each new chunk went.
fn pack_files(
    plan: &Plan,
    w: &mut Walked,
    tx: &tokio::sync::mpsc::Sender<(String, Bytes)>,
    buffers: &PackBuffers,
    progress: &dyn Progress,
) -> Result<HashMap<ChunkId, Loc>> {
    let Walked {
        files,
        known,
        counters,
        ..
    } = w;
    let opts = &plan.opts;
    // Read, hash, seal and pack the files to read.
    let threads = opts.pack.threads.clamp(1, 8);
    let level = opts.pack.level;
    let claimed: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
    let mut new_locs: HashMap<ChunkId, Loc> = HashMap::new();
    let reads: Vec<(usize, PathBuf, u64)> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.read)
        .map(|(i, f)| (i, f.abs.clone(), f.size))
        .collect();
    // Each channel end belongs to exactly the threads that use it, so when one stage stops
    // (an error, or the uploads failing) the others see a closed channel and stop too.
    let (job_tx, job_rx) = sync_channel::<Vec<Job>>(threads);
    let (done_tx, done_rx) = sync_channel::<Result<Vec<Done>>>(threads);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let keys = &plan.keys;
    let known_ref = &known;
    let claimed = &claimed;
    let progress_ref: &dyn Progress = progress;
    let budget = &Budget::new(BUDGET_BYTES);
    let result: Result<Vec<(usize, usize, ChunkId)>> = std::thread::scope(|s| {
        {
            let done_tx = done_tx.clone();
            s.spawn(move || read_files(reads, job_tx, done_tx, budget, progress_ref));
        }
        for _ in 0..threads {
            let (done_tx, job_rx) = (done_tx.clone(), job_rx.clone());
            s.spawn(move || {
                seal_chunks(
                    &job_rx,
                    done_tx,
                    keys,
                    known_ref,
                    claimed,
                    level,
                    progress_ref,
                );
            });
        }
        drop((done_tx, job_rx));
        collect(
            done_rx,
            tx,
            buffers,
            &mut new_locs,
            counters,
            budget,
            progress,
        )
    });
    let placed = result?;
    for (file, index, id) in placed {
        let f = &mut files[file];
        if f.ids.len() <= index {
            f.ids.resize(index + 1, None);
        }
        f.ids[index] = Some(id);
    }
    Ok(new_locs)
}

/// The manifest (packs in order of first use, chunks once each), sealed into the spool file.
fn write_manifest(
    plan: &Plan,
    w: Walked,
    new_locs: &HashMap<ChunkId, Loc>,
    walked_at: u64,
) -> Result<Packed> {
    let Walked {
        files,
        dirs,
        known,
        mut counters,
        mut stats,
        ..
    } = w;
    let opts = &plan.opts;
    let mut t = Tables::default();
    let mut entries = Vec::with_capacity(files.len());
    for f in &files {
        let missing = |what: &str| Error::Io {
            path: f.abs.clone(),
            source: std::io::Error::other(format!("a chunk of this file {what}")),
        };
        let mut idx = Vec::with_capacity(f.ids.len());
        let mut held = 0u64;
        for id in &f.ids {
            let id = id.ok_or_else(|| missing("was not packed"))?;
            let loc = new_locs
                .get(&id)
                .or_else(|| known.get(&id))
                .ok_or_else(|| missing("has no blob"))?;
            held += u64::from(loc.raw);
            idx.push(t.chunk(id, loc));
        }
        // What a restore checks first: a manifest that fails it is never written.
        if held != f.size {
            return Err(Error::Io {
                path: f.abs.clone(),
                source: std::io::Error::other(format!(
                    "its chunks hold {held} bytes, the file {} (it changed while it was saved)",
                    f.size
                )),
            });
        }
        entries.push(FileEntry {
            path: f.rel.clone(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            chunks: idx,
        });
    }
    let Tables { packs, chunks, .. } = t;
    counters.chunks = chunks.len() as u64;
    let m = Manifest {
        base: plan.base.as_ref().map(|b| b.generation),
        since_full: plan.since_full,
        walked_at,
        packs: packs.clone(),
        chunks,
        dirs,
        files: entries,
    };
    // Read while the directory is as it was packed (the browser has stopped).
    let contents = opts
        .contents_report
        .then(|| crate::profile::contents::read(&plan.dir));
    let sealer = Sealer::with_version(&plan.pk, opts.chunk_size, format::VERSION_CHUNKED);
    let header = sealer.header_bytes(
        &plan.tenant,
        &plan.profile,
        plan.generation,
        &plan.object_id,
        plan.created_at,
    );
    let path = &plan.spool;
    let f = fsutil::create_private_new(path).map_err(io_at(path))?;
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&header).map_err(io_at(path))?;
    let mut body = sealer.body_writer(w);
    let encoded_len = manifest::encode_to(&m, &mut body).map_err(io_at(path))?;
    drop(m);
    let (w, _) = body.finish().map_err(io_at(path))?;
    let f = w.into_inner().map_err(|e| Error::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    f.sync_all().map_err(io_at(path))?;
    stats.bytes_zip = encoded_len;
    Ok(Packed {
        packs,
        uploaded: Vec::new(),
        chunks: counters,
        stats,
        contents,
        sealer,
        header_len: header.len(),
    })
}
