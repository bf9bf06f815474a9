//! The machine's limits beside the `--vs-tar` figures: what one core does per second with the
//! primitives a save and a restore are made of (chunk ids, zstd-1, AES-256-GCM, and OpenSSL's
//! AES-256-GCM for comparison), how fast the page cache takes writes and gives reads, how long
//! a file takes to create, and what one request to the store costs. From them, the least time
//! a first save and a restore of the profile could take on this machine (the CPU work spread
//! over every core, with the store server's own CPU when it runs here and shares them).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use profile_vault::crypt::blob::{ChunkKeys, Spent};
use profile_vault::crypt::DataKey;
use profile_vault::{PutBody, PutMode, Store};

/// Bytes of the profile the CPU figures are measured on.
const SAMPLE: usize = 64 << 20;
/// Chunk size the CPU figures cut the sample into (about the chunker's average).
const CHUNK: usize = 1 << 20;

/// Per-core and per-operation rates (MB/s are 10^6 bytes a second).
#[derive(Debug, serde::Serialize)]
pub(super) struct Limits {
    pub cores: usize,
    pub hash_mb_s: f64,
    pub zstd1_mb_s: f64,
    pub unzstd_mb_s: f64,
    pub aes_gcm_mb_s: f64,
    /// AES-256-GCM as a restore opens chunks (it decrypts into a new buffer).
    pub aes_gcm_open_mb_s: f64,
    /// `openssl speed -evp aes-256-gcm` on 1 MiB blocks (absent when it did not run).
    pub openssl_aes_gcm_mb_s: Option<f64>,
    pub page_cache_write_mb_s: f64,
    /// Reading back what was just written (from the page cache).
    pub page_cache_read_mb_s: f64,
    pub create_file_ms: f64,
    /// One small object written then read back, ms.
    pub store_request_ms: f64,
    /// One 32 MiB object written and read back, MB/s each way.
    pub store_put_mb_s: f64,
    pub store_get_mb_s: f64,
}

impl Limits {
    /// The least time a first save of `bytes` could take: reading them from the page cache,
    /// hashing and zstd of every byte and AES of the `stored` ones, with `server_cpu`
    /// seconds of the store's server (a local one shares the cores), over every core; or
    /// writing those, whichever is longer.
    pub(super) fn save_floor(&self, bytes: u64, stored: u64, server_cpu: f64) -> f64 {
        let (mb, stored_mb) = (bytes as f64 / 1e6, stored as f64 / 1e6);
        let cpu = mb
            * (1.0 / self.page_cache_read_mb_s + 1.0 / self.hash_mb_s + 1.0 / self.zstd1_mb_s)
            + stored_mb / self.aes_gcm_mb_s;
        let write = stored_mb / self.page_cache_write_mb_s.min(self.store_put_mb_s);
        ((cpu + server_cpu) / self.cores as f64).max(write)
    }

    /// The least time a restore could take: opening (AES, zstd, hash), the file creations
    /// and writing the bytes into the page cache, with `server_cpu` seconds of the store's
    /// server, over every core; or fetching the stored bytes, whichever is longer.
    pub(super) fn restore_floor(
        &self,
        bytes: u64,
        stored: u64,
        files: u64,
        server_cpu: f64,
    ) -> f64 {
        let (mb, stored_mb) = (bytes as f64 / 1e6, stored as f64 / 1e6);
        let cpu = mb
            * (1.0 / self.hash_mb_s + 1.0 / self.unzstd_mb_s + 1.0 / self.page_cache_write_mb_s)
            + stored_mb / self.aes_gcm_open_mb_s
            + files as f64 * self.create_file_ms / 1e3;
        let fetch = stored_mb / self.store_get_mb_s / self.cores as f64;
        ((cpu + server_cpu) / self.cores as f64).max(fetch)
    }
}

/// Measures the limits on a sample of the profile `src`, scratch files in `dir`, and `store`.
pub(super) async fn measure(
    src: &Path,
    dir: &Path,
    store: Arc<dyn Store>,
) -> anyhow::Result<Limits> {
    let (src2, dir2) = (src.to_path_buf(), dir.to_path_buf());
    let mut l = tokio::task::spawn_blocking(move || cpu_and_disk(&src2, &dir2)).await??;
    let key = format!("pv-bench-limits/{}", uuid::Uuid::new_v4().simple());
    let rounds = 20;
    let t = Instant::now();
    for i in 0..rounds {
        let k = format!("{key}/small-{i}");
        store
            .put(
                &k,
                PutBody::Bytes(vec![7u8; 1024].into()),
                PutMode::Overwrite,
            )
            .await?;
        let mut r = store.get(&k).await?.body;
        let mut sink = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await?;
        store.delete(&k).await?;
    }
    l.store_request_ms = t.elapsed().as_secs_f64() * 1e3 / f64::from(rounds * 3);
    let big = vec![0x5au8; 32 << 20];
    let k = format!("{key}/big");
    let t = Instant::now();
    store
        .put(&k, PutBody::Bytes(big.into()), PutMode::Overwrite)
        .await?;
    l.store_put_mb_s = 32.0 * 1.048_576 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut r = store.get(&k).await?.body;
    let mut sink = Vec::with_capacity(32 << 20);
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await?;
    l.store_get_mb_s = sink.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
    store.delete(&k).await?;
    Ok(l)
}

fn cpu_and_disk(src: &Path, dir: &Path) -> anyhow::Result<Limits> {
    let sample = read_sample(src)?;
    let keys = ChunkKeys::derive(&DataKey::generate());
    let (mut hashing, mut seal, mut open) = (0.0, Spent::default(), Spent::default());
    // AES runs over the compressed chunks, not the raw bytes.
    let mut sealed = 0usize;
    for chunk in sample.chunks(CHUNK) {
        let t = Instant::now();
        let id = keys.id(chunk);
        hashing += t.elapsed().as_secs_f64();
        let (blob, s) = keys.seal_timed(&id, chunk, 1);
        seal.zstd += s.zstd;
        seal.aes += s.aes;
        sealed += blob.len();
        keys.open_timed(&id, &blob, chunk.len() as u32, &mut open)?;
    }
    let mb = sample.len() as f64 / 1e6;
    // Writes into the page cache: 256 MiB in 1 MiB writes, then the file is dropped (after
    // what earlier work left dirty is written back, so that it does not slow these).
    let _ = std::process::Command::new("sync").status();
    let path = dir.join(format!("limits-{}", uuid::Uuid::new_v4().simple()));
    let block = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..256 {
            f.write_all(&block)?;
        }
    }
    let page_cache_write_mb_s = 256.0 * 1.048_576 / t.elapsed().as_secs_f64();
    let mut block = block;
    let t = Instant::now();
    {
        let mut f = std::fs::File::open(&path)?;
        for _ in 0..256 {
            f.read_exact(&mut block)?;
        }
    }
    let page_cache_read_mb_s = 256.0 * 1.048_576 / t.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    // File creation: 1,000 empty files in one new directory.
    let d = dir.join(format!("limits-files-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&d)?;
    let t = Instant::now();
    for i in 0..1000 {
        std::fs::File::create(d.join(format!("f{i}")))?;
    }
    let create_file_ms = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&d)?;
    Ok(Limits {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        hash_mb_s: mb / hashing,
        zstd1_mb_s: mb / seal.zstd.as_secs_f64(),
        unzstd_mb_s: mb / open.zstd.as_secs_f64(),
        aes_gcm_mb_s: sealed as f64 / 1e6 / seal.aes.as_secs_f64(),
        aes_gcm_open_mb_s: sealed as f64 / 1e6 / open.aes.as_secs_f64(),
        openssl_aes_gcm_mb_s: openssl_aes_gcm(),
        page_cache_write_mb_s,
        page_cache_read_mb_s,
        create_file_ms,
        store_request_ms: 0.0,
        store_put_mb_s: 0.0,
        store_get_mb_s: 0.0,
    })
}

/// Up to [`SAMPLE`] bytes of the profile's files, in walk order.
fn read_sample(src: &Path) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(SAMPLE);
    let mut dirs = vec![src.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let t = e.file_type()?;
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_file() {
                std::fs::File::open(e.path())?
                    .take((SAMPLE - out.len()) as u64)
                    .read_to_end(&mut out)?;
                if out.len() >= SAMPLE {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// OpenSSL's AES-256-GCM rate on 1 MiB blocks for one second, MB/s.
fn openssl_aes_gcm() -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-seconds",
            "1",
            "-bytes",
            "1048576",
        ])
        .output()
        .ok()?;
    // The last line: "AES-256-GCM  <k bytes per second>k".
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().rev().find(|l| l.contains("k"))?;
    let kb: f64 = last
        .split_whitespace()
        .last()?
        .trim_end_matches('k')
        .parse()
        .ok()?;
    Some(kb * 1000.0 / 1e6)
}
