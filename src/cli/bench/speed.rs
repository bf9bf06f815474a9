//! `profile-vault bench` (the default): one save and one restore of the synthetic profile, or
//! `--concurrent` saves at once, with speed and peak RSS (the process's `VmHWM`, reset before
//! each phase).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::args::Args;
use super::common::bench_addr;
use super::common::{bench_vault, peak_rss_mib, reset_peak_rss, rss_mib, store_url, timed_restore};
use crate::cli::{human_bytes, Ctx};
use profile_vault::vault::Base;
use profile_vault::NoProgress;

#[derive(serde::Serialize)]
struct Report {
    store: String,
    files: u64,
    kept_bytes: u64,
    excluded_bytes: u64,
    stored_bytes: u64,
    save_seconds: f64,
    save_mb_per_s: f64,
    save_peak_rss_mib: f64,
    /// RSS when the save began (the process's own: binary, runtime, store client).
    save_rss_before_mib: f64,
    restore_seconds: f64,
    restore_mb_per_s: f64,
    restore_peak_rss_mib: f64,
    /// RSS when the restore began.
    restore_rss_before_mib: f64,
}

/// Runs the speed bench on the profile `src`.
pub(super) async fn run(ctx: &Ctx, a: &Args, src: &Path, bench_dir: &Path) -> anyhow::Result<()> {
    let (url, tmp_store) = store_url(a, bench_dir);
    let vault = bench_vault(ctx, &url, &bench_dir.join("spool")).await?;
    let profile = format!("bench-{}", uuid::Uuid::new_v4().simple());

    if let Some(n) = a.concurrent {
        reset_peak_rss();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..n {
            let (v, src, p) = (vault.clone(), src.to_path_buf(), format!("{profile}-{i}"));
            tasks.push(tokio::spawn(async move {
                v.save(
                    &bench_addr(&p)?,
                    &src,
                    Base::Expect(None),
                    Arc::new(NoProgress),
                )
                .await
            }));
        }
        let mut bytes = 0;
        for task in tasks {
            bytes += task.await??.bytes_in;
        }
        let secs = t.elapsed().as_secs_f64();
        let rss = peak_rss_mib();
        for i in 0..n {
            vault
                .delete(&bench_addr(&format!("{profile}-{i}"))?)
                .await?;
        }
        let _ = std::fs::remove_dir_all(&tmp_store);
        if !a.keep_profile {
            let _ = std::fs::remove_dir_all(src);
        }
        let r = serde_json::json!({"profiles": n, "kept_bytes_total": bytes, "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs, "peak_rss_mib": rss});
        ctx.print(&r, || {
            format!(
                "{n} saves at once: {} kept in {secs:.2} s ({:.0} MB/s), peak RSS {rss:.1} MiB",
                human_bytes(bytes),
                bytes as f64 / 1e6 / secs
            )
        });
        return Ok(());
    }
    reset_peak_rss();
    let save_before = rss_mib();
    let t = Instant::now();
    let saved = vault
        .save(
            &bench_addr(&profile)?,
            src,
            Base::Current,
            Arc::new(NoProgress),
        )
        .await?;
    let save_s = t.elapsed().as_secs_f64();
    let save_rss = peak_rss_mib();

    let dst = bench_dir.join(format!("restore-{}", uuid::Uuid::new_v4().simple()));
    reset_peak_rss();
    let restore_before = rss_mib();
    let restore_s = timed_restore(&vault, &profile, &dst, saved.bytes_in).await?;
    let restore_rss = peak_rss_mib();

    vault.delete(&bench_addr(&profile)?).await?;
    let _ = std::fs::remove_dir_all(&dst);
    let _ = std::fs::remove_dir_all(&tmp_store);
    if !a.keep_profile {
        let _ = std::fs::remove_dir_all(src);
    }
    let mb = saved.bytes_in as f64 / 1e6;
    let r = Report {
        store: url.split('?').next().unwrap_or_default().to_string(),
        files: saved.files,
        kept_bytes: saved.bytes_in,
        excluded_bytes: saved.stats.excluded_bytes,
        stored_bytes: saved.bytes_stored,
        save_seconds: save_s,
        save_mb_per_s: mb / save_s,
        save_peak_rss_mib: save_rss,
        save_rss_before_mib: save_before,
        restore_seconds: restore_s,
        restore_mb_per_s: mb / restore_s,
        restore_peak_rss_mib: restore_rss,
        restore_rss_before_mib: restore_before,
    };
    ctx.print(&r, || {
        format!(
            "store {}\nprofile: {} files, {} kept ({} left out), {} stored\nsave:    {:.2} s, {:.0} MB/s, peak RSS {:.1} MiB ({:.1} before)\nrestore: {:.2} s, {:.0} MB/s, peak RSS {:.1} MiB ({:.1} before)",
            r.store,
            r.files,
            human_bytes(r.kept_bytes),
            human_bytes(r.excluded_bytes),
            human_bytes(r.stored_bytes),
            r.save_seconds,
            r.save_mb_per_s,
            r.save_peak_rss_mib,
            r.save_rss_before_mib,
            r.restore_seconds,
            r.restore_mb_per_s,
            r.restore_peak_rss_mib,
            r.restore_rss_before_mib
        )
    });
    Ok(())
}
