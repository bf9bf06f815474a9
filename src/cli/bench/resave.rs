//! `profile-vault bench --resave`: what a re-save costs, format 1 against format 2 in one run.
//!
//! Each round, for each format (alternating which goes first): a copy of the synthetic profile
//! (dated an hour back, as a profile's files are), a first save, then `--change-pct` % of the
//! kept files changed the way a browsing session changes them (a page of a SQLite database
//! rewritten in place, a JSON file rewritten, a LevelDB table replaced by a new one), a
//! re-save, and a restore. Reported per format: medians of first save, re-save and restore
//! seconds, and the bytes the re-save sent to the store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::{Rng, RngCore, SeedableRng};

use super::args::Args;
use super::common::bench_addr;
use crate::cli::{human_bytes, Ctx};
use profile_vault::vault::Base;
use profile_vault::NoProgress;

#[derive(serde::Serialize, Default)]
struct Side {
    format: u16,
    first_save_seconds: f64,
    resave_seconds: f64,
    resave_bytes_sent: u64,
    first_save_bytes_sent: u64,
    restore_seconds: f64,
}

#[derive(serde::Serialize)]
struct Report {
    store: String,
    kept_bytes: u64,
    files_changed: usize,
    rounds: u32,
    formats: Vec<Side>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn copy_tree(from: &Path, to: &Path, when: SystemTime) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst, when)?;
        } else {
            std::fs::copy(&src, &dst)?;
            std::fs::File::options()
                .write(true)
                .open(&dst)?
                .set_modified(when)?;
        }
    }
    Ok(())
}

fn kept_files(root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(root)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            if !matches!(name.as_str(), "Cache" | "Code Cache" | "GPUCache") {
                kept_files(&p, out)?;
            }
        } else if name.starts_with("db_") || name.ends_with(".json") || name.ends_with(".ldb") {
            out.push(p);
        }
    }
    Ok(())
}

/// Changes `pct` % of the kept files (by count) as a session would; returns how many.
fn mutate(root: &Path, pct: f64, seed: u64) -> std::io::Result<usize> {
    let mut files = Vec::new();
    kept_files(root, &mut files)?;
    files.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = ((files.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, files.len().max(1));
    let step = (files.len() / n).max(1);
    let mut changed = 0;
    for (i, p) in files.iter().enumerate() {
        if i % step != 0 || changed >= n {
            continue;
        }
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("db_") {
            // One page rewritten in place.
            let len = std::fs::metadata(p)?.len();
            let pages = (len / 4096).max(1);
            let page = rng.gen_range(0..pages);
            let mut buf = vec![0u8; 4096.min(len as usize)];
            for b in buf.iter_mut().skip(100).take(1200) {
                *b = b"abcdefghijklmnopqrstuvwxyz0123456789 .:/"[rng.gen_range(0..40)];
            }
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::options().write(true).open(p)?;
            if page == 0 {
                f.write_all_at(&buf[100..], 100)?; // keep the header
            } else {
                f.write_all_at(&buf, page * 4096)?;
            }
        } else if name.ends_with(".json") {
            let len = std::fs::metadata(p)?.len() as usize;
            let mut s = String::with_capacity(len + 64);
            while s.len() < len {
                s.push_str(&format!("{{\"visit\":{}}},\n", rng.gen::<u32>()));
            }
            std::fs::write(p, s)?;
        } else {
            // A compaction: a new table replaces the old one.
            let len = std::fs::metadata(p)?.len() as usize;
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            std::fs::write(p.with_file_name(format!("n{seed}_{name}")), data)?;
            std::fs::remove_file(p)?;
        }
        changed += 1;
    }
    Ok(changed)
}

/// Runs the bench.
pub async fn run(ctx: &Ctx, a: &Args, src: &Path, bench_dir: &Path) -> anyhow::Result<()> {
    let (url, tmp_store) = super::common::store_url(a, bench_dir);
    let rounds = a.rounds.max(1);
    // Per format: first save, re-save, restore seconds; bytes sent.
    let mut times: [[Vec<f64>; 3]; 2] = Default::default();
    let mut sent: [(u64, u64); 2] = [(0, 0); 2];
    let (mut kept, mut changed) = (0, 0);
    for round in 0..rounds {
        let order: [u16; 2] = if round % 2 == 0 { [1, 2] } else { [2, 1] };
        for format in order {
            let i = usize::from(format - 1);
            let work = bench_dir.join(format!("resave-{}", uuid::Uuid::new_v4().simple()));
            let dst = bench_dir.join(format!("restore-{}", uuid::Uuid::new_v4().simple()));
            {
                let (s, w) = (src.to_path_buf(), work.clone());
                let when = SystemTime::now() - Duration::from_secs(3600);
                tokio::task::spawn_blocking(move || copy_tree(&s, &w, when)).await??;
            }
            let vault = super::common::bench_vault_with(ctx, &url, &bench_dir.join("spool"), |o| {
                o.write_format = format
            })
            .await?;
            let profile = format!("resave-{}", uuid::Uuid::new_v4().simple());
            let at = bench_addr(&profile)?;
            let save = || vault.save(&at, &work, Base::Current, Arc::new(NoProgress));
            let t = Instant::now();
            let first = save().await?;
            times[i][0].push(t.elapsed().as_secs_f64());
            kept = first.bytes_in;
            let (w, pct, seed) = (work.clone(), a.change_pct, u64::from(round) + 7);
            changed = tokio::task::spawn_blocking(move || mutate(&w, pct, seed)).await??;
            let t = Instant::now();
            let second = save().await?;
            times[i][1].push(t.elapsed().as_secs_f64());
            sent[i] = (first.bytes_stored, second.bytes_stored);
            times[i][2]
                .push(super::common::timed_restore(&vault, &profile, &dst, second.bytes_in).await?);
            vault.delete(&bench_addr(&profile)?).await?;
            let _ = std::fs::remove_dir_all(&work);
            let _ = std::fs::remove_dir_all(&dst);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp_store);
    let formats: Vec<Side> = [1u16, 2]
        .iter()
        .map(|&f| {
            let i = usize::from(f - 1);
            Side {
                format: f,
                first_save_seconds: median(times[i][0].clone()),
                resave_seconds: median(times[i][1].clone()),
                resave_bytes_sent: sent[i].1,
                first_save_bytes_sent: sent[i].0,
                restore_seconds: median(times[i][2].clone()),
            }
        })
        .collect();
    let report = Report {
        store: url.split('?').next().unwrap_or_default().to_string(),
        kept_bytes: kept,
        files_changed: changed,
        rounds,
        formats,
    };
    ctx.print(&report, || {
        let mut s = format!(
            "store {}\nprofile: {} kept; {} files changed between the saves ({}%); medians of {} rounds\n",
            report.store,
            human_bytes(report.kept_bytes),
            report.files_changed,
            a.change_pct,
            report.rounds
        );
        for f in &report.formats {
            s.push_str(&format!(
                "format {}: first save {:.2} s ({} sent), re-save {:.2} s ({} sent), restore {:.2} s\n",
                f.format,
                f.first_save_seconds,
                human_bytes(f.first_save_bytes_sent),
                f.resave_seconds,
                human_bytes(f.resave_bytes_sent),
                f.restore_seconds
            ));
        }
        s
    });
    Ok(())
}
