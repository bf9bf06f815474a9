//! The threads of a format 2 save (see `save.rs`): a reader that reads each file to read
//! chunk by chunk ([`crate::format::v2::chunker`] says where to cut), workers that hash every
//! chunk and seal those nobody has yet, and the collector that appends sealed chunks to packs
//! and hands full packs to the uploaders. Each owns its channel ends, so one that stops (an
//! error, or the uploads failing) makes the others stop too.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::save::Loc;
use super::*;
use crate::crypt::blob::{ChunkKeys, Spent};
use crate::format::v2::{chunker, pack};
use crate::progress::Step;

/// The buffers of packs whose upload finished, for the next packs: a save holds a few
/// pack-sized buffers for its whole length instead of allocating (and fragmenting the heap
/// with) one per pack.
pub(super) struct PackBuffers {
    kept: Mutex<Vec<BytesMut>>,
    /// Buffers kept at most: the packs a save holds at once.
    keep: usize,
}

impl PackBuffers {
    /// Keeping at most `keep` buffers.
    pub(super) fn new(keep: usize) -> Self {
        PackBuffers {
            kept: Mutex::default(),
            keep,
        }
    }

    /// A buffer to fill (empty when none was given back).
    pub(super) fn take(&self) -> BytesMut {
        self.kept
            .lock()
            .expect("pack buffers")
            .pop()
            .unwrap_or_default()
    }

    /// Gives an uploaded pack's buffer back, if nothing else holds it any more.
    pub(super) fn give(&self, pack: Bytes) {
        if let Ok(buf) = pack.try_into_mut() {
            let mut kept = self.kept.lock().expect("pack buffers");
            if kept.len() < self.keep {
                kept.push(buf);
            }
        }
    }
}

/// A chunk to hash (and maybe seal).
pub(super) struct Job {
    pub(super) file: usize,
    pub(super) index: usize,
    pub(super) data: Vec<u8>,
}

/// A chunk hashed: its id, and its blob when nobody had it yet.
pub(super) struct Done {
    pub(super) file: usize,
    pub(super) index: usize,
    pub(super) id: ChunkId,
    pub(super) raw: u32,
    pub(super) blob: Option<Vec<u8>>,
}

/// Chunks handed from one stage to the next at once: a thread wakes per batch, not per chunk
/// (a profile is thousands of small files: per-chunk handoffs were a tenth of a save's CPU).
const BATCH_BYTES: usize = 1 << 20;
const BATCH_CHUNKS: usize = 64;

/// Bytes of chunks read and not yet packed, at most: the memory a save holds does not grow
/// with the size of the profile's files (larger files cut into larger chunks).
pub(super) const BUDGET_BYTES: usize = 24 << 20;

/// The budget of chunk bytes in flight between the reader and the collector.
pub(super) struct Budget {
    /// Bytes left, and whether the collector stopped (then nothing waits any more).
    left: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl Budget {
    pub(super) fn new(bytes: usize) -> Budget {
        Budget {
            left: Mutex::new((bytes, false)),
            freed: Condvar::new(),
        }
    }

    /// Takes `n` bytes without waiting; false when there are not that many.
    fn try_take(&self, n: usize) -> bool {
        let mut l = self.left.lock().expect("budget");
        if l.0 >= n || l.1 {
            l.0 = l.0.saturating_sub(n);
            return true;
        }
        false
    }

    /// Takes `n` bytes, waiting for the collector to free them (at most the whole budget is
    /// waited for: a chunk larger than it goes alone).
    fn take(&self, n: usize) {
        let mut l = self.left.lock().expect("budget");
        let need = n.min(BUDGET_BYTES);
        while l.0 < need && !l.1 {
            l = self.freed.wait(l).expect("budget");
        }
        l.0 = l.0.saturating_sub(n);
    }

    /// Gives `n` bytes back.
    fn give(&self, n: usize) {
        let mut l = self.left.lock().expect("budget");
        l.0 += n;
        self.freed.notify_all();
    }

    /// The collector stopped: nothing waits from now on.
    fn close(&self) {
        self.left.lock().expect("budget").1 = true;
        self.freed.notify_all();
    }
}

/// The reader thread: each file to read, chunk by chunk, in order, in batches, within the
/// budget.
pub(super) fn read_files(
    reads: Vec<(usize, PathBuf, u64)>,
    jobs: SyncSender<Vec<Job>>,
    done: SyncSender<Result<Vec<Done>>>,
    budget: &Budget,
    progress: &dyn Progress,
) {
    let mut batch: Vec<Job> = Vec::new();
    let mut bytes = 0;
    let mut busy = Duration::ZERO;
    let mut t = Instant::now();
    for (file, path, listed) in reads {
        let r = (|| -> Result<bool> {
            let mut f = crate::profile::untrusted::open_regular(&path).map_err(io_at(&path))?;
            let size = f.metadata().map_err(io_at(&path))?.len();
            // The manifest says the size the walk found: a file whose size changed since is
            // not saved torn (its chunks would not add up, and no restore would take it).
            if size != listed {
                return Err(Error::Io {
                    path: path.clone(),
                    source: std::io::Error::other(format!(
                        "the file changed size while the profile was saved ({listed} bytes when listed, {size} when read): save it again once nothing writes to it"
                    )),
                });
            }
            let mut head = [0u8; chunker::SNIFF_LEN];
            let n = read_full(&mut f, &mut head).map_err(io_at(&path))?;
            let mut carried = head[..n].to_vec();
            for (index, (_, len)) in chunker::cuts(&head[..n], size).enumerate() {
                if !budget.try_take(len as usize) {
                    // What is read is handed on before waiting: the budget it holds must be
                    // able to come back.
                    busy += t.elapsed();
                    if !batch.is_empty() && jobs.send(std::mem::take(&mut batch)).is_err() {
                        return Ok(false);
                    }
                    bytes = 0;
                    budget.take(len as usize);
                    t = Instant::now();
                }
                let mut data = std::mem::take(&mut carried);
                let have = data.len();
                data.resize(len as usize, 0);
                if have > len as usize {
                    // The sniffed bytes span more than this chunk (files under 18 bytes).
                    carried = data.split_off(len as usize);
                } else {
                    let got = read_full(&mut f, &mut data[have..]).map_err(io_at(&path))?;
                    if have + got != len as usize {
                        return Err(Error::Io {
                            path: path.clone(),
                            source: std::io::Error::other("file shrank while it was read"),
                        });
                    }
                }
                bytes += data.len();
                batch.push(Job { file, index, data });
                if bytes >= BATCH_BYTES || batch.len() >= BATCH_CHUNKS {
                    busy += t.elapsed();
                    if jobs.send(std::mem::take(&mut batch)).is_err() {
                        return Ok(false); // the collector stopped; it reports why
                    }
                    t = Instant::now();
                }
                if batch.is_empty() {
                    bytes = 0;
                }
            }
            Ok(true)
        })();
        match r {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                let _ = done.send(Err(e));
                return;
            }
        }
    }
    progress.spent(Step::Read, busy + t.elapsed());
    if !batch.is_empty() {
        let _ = jobs.send(batch);
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A worker: hashes each chunk of a batch and seals those nobody has yet.
pub(super) fn seal_chunks(
    jobs: &Mutex<Receiver<Vec<Job>>>,
    done: SyncSender<Result<Vec<Done>>>,
    keys: &ChunkKeys,
    known: &HashMap<ChunkId, Loc>,
    claimed: &Mutex<HashSet<ChunkId>>,
    level: i32,
    progress: &dyn Progress,
) {
    loop {
        let batch = match jobs.lock().expect("job queue").recv() {
            Ok(b) => b,
            Err(_) => return,
        };
        let (mut hashing, mut spent) = (Duration::ZERO, Spent::default());
        let sealed = batch
            .into_iter()
            .map(|job| {
                let t = Instant::now();
                let id = keys.id(&job.data);
                hashing += t.elapsed();
                let fresh = !known.contains_key(&id) && claimed.lock().expect("claimed").insert(id);
                let blob = fresh.then(|| {
                    let (blob, s) = keys.seal_timed(&id, &job.data, level);
                    spent.zstd += s.zstd;
                    spent.aes += s.aes;
                    blob
                });
                Done {
                    file: job.file,
                    index: job.index,
                    id,
                    raw: job.data.len() as u32,
                    blob,
                }
            })
            .collect();
        progress.spent(Step::Hash, hashing);
        progress.spent(Step::Compress, spent.zstd);
        progress.spent(Step::Encrypt, spent.aes);
        if done.send(Ok(sealed)).is_err() {
            return;
        }
    }
}

/// The collecting thread: appends sealed chunks to packs and hands full packs on. It owns
/// the receiving end: returning (on error too) closes it, which stops the workers.
pub(super) fn collect(
    done: Receiver<Result<Vec<Done>>>,
    tx: &tokio::sync::mpsc::Sender<(String, Bytes)>,
    buffers: &PackBuffers,
    locs: &mut HashMap<ChunkId, Loc>,
    counters: &mut ChunkStats,
    budget: &Budget,
    progress: &dyn Progress,
) -> Result<Vec<(usize, usize, ChunkId)>> {
    // However this returns, the reader stops waiting for budget.
    struct Close<'a>(&'a Budget);
    impl Drop for Close<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = Close(budget);
    let mut placed = Vec::new();
    let mut builder = pack::Builder::reusing(buffers.take());
    let stopped = || {
        Error::Store(store::Error::Unavailable {
            op: "put",
            key: "packs/".into(),
            message: "the pack upload stopped".into(),
        })
    };
    for batch in done.iter() {
        let t = Instant::now();
        let mut sent = Duration::ZERO;
        for d in batch? {
            budget.give(d.raw as usize);
            progress.advance(u64::from(d.raw));
            if let Some(blob) = d.blob {
                let offset = builder.push(&blob);
                let pack: Arc<str> = Arc::from(builder.id.as_str());
                locs.insert(
                    d.id,
                    Loc {
                        pack,
                        offset,
                        len: blob.len() as u32,
                        raw: d.raw,
                    },
                );
                counters.chunks_new += 1;
                if builder.is_full() {
                    let next = pack::Builder::reusing(buffers.take());
                    let full = std::mem::replace(&mut builder, next).finish();
                    let waiting = Instant::now();
                    tx.blocking_send(full).map_err(|_| stopped())?;
                    sent += waiting.elapsed();
                }
            }
            placed.push((d.file, d.index, d.id));
        }
        progress.spent(Step::Pack, t.elapsed().saturating_sub(sent));
    }
    if !builder.is_empty() {
        tx.blocking_send(builder.finish()).map_err(|_| stopped())?;
    }
    Ok(placed)
}
