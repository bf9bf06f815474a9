//! The synthetic profile the benches use. It mimics a long-lived Chromium profile: thousands
//! of small SQLite-like files (4 KiB pages, mostly empty), JSON and text, incompressible
//! LevelDB tables and IndexedDB blobs, plus HTTP and code caches that must be left out.

use std::io::Write;
use std::path::Path;

use rand::{Rng, RngCore, SeedableRng};

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)
}

/// Writes the synthetic profile; returns kept bytes.
fn generate(root: &Path, kept: u64) -> std::io::Result<u64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut written = 0u64;
    let budget_sqlite = kept * 30 / 100;
    let budget_text = kept * 15 / 100;
    let mut chunk = vec![0u8; 1 << 20];
    write_file(&root.join("Last Version"), b"156.0.8078.79")?;
    write_file(
        &root.join("Local State"),
        br#"{"browser":{"enabled_labs_experiments":[]}}"#,
    )?;
    write_file(
        &root.join("Default/Preferences"),
        br#"{"profile":{"exit_type":"Normal","name":"bench"}}"#,
    )?;
    // SQLite-like: 4 KiB pages, a little text at the start of each, the rest zero.
    let mut i = 0;
    let mut sqlite_bytes = 0;
    while sqlite_bytes < budget_sqlite {
        let pages = rng.gen_range(1..=16usize);
        let mut data = vec![0u8; pages * 4096];
        data[..16].copy_from_slice(b"SQLite format 3\0");
        data[16..18].copy_from_slice(&4096u16.to_be_bytes()); // page size
        for p in 0..pages {
            let n = rng.gen_range(0..1200);
            for b in &mut data[p * 4096 + 100..p * 4096 + 100 + n] {
                *b = b"abcdefghijklmnopqrstuvwxyz0123456789 .:/"[rng.gen_range(0..40)];
            }
        }
        let dir = [
            "Default",
            "Default/databases",
            "Default/Service Worker/Database",
            "Default/WebStorage",
        ][i % 4];
        write_file(&root.join(format!("{dir}/db_{i:05}")), &data)?;
        sqlite_bytes += data.len() as u64;
        i += 1;
    }
    written += sqlite_bytes;
    // JSON / text files, 1-64 KiB.
    let mut text_bytes = 0;
    let mut j = 0;
    while text_bytes < budget_text {
        let n = rng.gen_range(1024..65536);
        let mut s = String::with_capacity(n + 64);
        while s.len() < n {
            s.push_str(&format!(
                "{{\"url\":\"https://site{}.example/path/{}\",\"visits\":{}}},\n",
                rng.gen_range(0..500),
                rng.gen::<u32>(),
                rng.gen_range(0..99)
            ));
        }
        write_file(
            &root.join(format!(
                "Default/Extension State/{:03}/state_{j:05}.json",
                j % 100
            )),
            s.as_bytes(),
        )?;
        text_bytes += s.len() as u64;
        j += 1;
    }
    written += text_bytes;
    // Incompressible: LevelDB tables (64 KiB - 2 MiB) and IndexedDB blobs (1 - 32 MiB).
    let mut k = 0;
    while written < kept {
        let big = k % 8 == 7;
        let n = if big {
            rng.gen_range(1 << 20..32 << 20)
        } else {
            rng.gen_range(64 << 10..2 << 20)
        }
        .min((kept - written) as usize)
        .max(1);
        let path = if big {
            root.join(format!(
                "Default/IndexedDB/https_site{}_0.indexeddb.blob/1/{:02x}/{k}",
                k % 7,
                k % 256
            ))
        } else {
            root.join(format!("Default/Local Storage/leveldb/{k:06}.ldb"))
        };
        std::fs::create_dir_all(path.parent().expect("has parent"))?;
        let mut f = std::fs::File::create(&path)?;
        let mut left = n;
        while left > 0 {
            let m = left.min(chunk.len());
            rng.fill_bytes(&mut chunk[..m]);
            f.write_all(&chunk[..m])?;
            left -= m;
        }
        written += n as u64;
        k += 1;
    }
    // Caches that must be left out: another 20%.
    let mut c = 0u64;
    let mut cache_bytes = 0;
    while cache_bytes < kept / 5 {
        let n = rng.gen_range(4096..512 << 10);
        rng.fill_bytes(&mut chunk[..n]);
        let dir = [
            "Default/Cache/Cache_Data",
            "Default/Code Cache/js",
            "Default/GPUCache",
        ][(c % 3) as usize];
        write_file(&root.join(format!("{dir}/f_{c:06}")), &chunk[..n])?;
        cache_bytes += n as u64;
        c += 1;
    }
    write_file(
        &root.join("Default/Local Storage/leveldb/LOG"),
        b"leveldb log",
    )?;
    Ok(written)
}

/// Generates the synthetic profile of `size_mb` at `src` unless it is there.
pub(super) async fn ensure(src: &Path, size_mb: u64) -> anyhow::Result<()> {
    if !src.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(src);
        eprintln!(
            "generating a {size_mb} MB synthetic profile in {} ...",
            src.display()
        );
        let s = src.to_path_buf();
        tokio::task::spawn_blocking(move || generate(&s, size_mb * 1_000_000)).await??;
        std::fs::write(src.join(".complete"), b"")?;
    }
    Ok(())
}
