//! `profile-vault bench --vs-tar`: first saves and restores against the pipeline an operator
//! would write by hand, `tar | zstd -1 -T0 | openssl enc` (and back), and against restic when
//! it is installed (a repository beside the store: a local one, or on the same S3 endpoint and
//! bucket for an `s3://` store), in one run.
//!
//! Each round runs both (alternating which goes first, as this disk's writeback makes single
//! runs noisy) on the same synthetic profile with the same leave-out patterns: a first save
//! (a new profile id, so nothing is deduplicated against an earlier one) and a restore into a
//! new directory. The pipeline's archive is synced before its clock stops, as the vault's
//! objects are. Reported: medians, and how many times faster profile-vault is.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use super::args::Args;
use super::common::bench_addr;
use super::common::{cpu_seconds, median, peak_rss_mib, reset_peak_rss};
use super::limits::{self, Limits};
use super::phases::{add_phases, phase_line, Phases};
use crate::cli::{human_bytes, Ctx};
use profile_vault::vault::Base;
use profile_vault::{PutBody, PutMode, Store, Vault};

#[derive(serde::Serialize)]
struct Side {
    save_seconds: f64,
    restore_seconds: f64,
}

#[derive(serde::Serialize)]
struct Report {
    store: String,
    kept_bytes: u64,
    stored_bytes: u64,
    files: u64,
    rounds: u32,
    profile_vault: Side,
    tar_pipeline: Side,
    save_speedup: f64,
    restore_speedup: f64,
    /// restic's, when it is installed.
    restic: Option<Side>,
    /// profile-vault's wall time by phase (medians, seconds): before the first, each, after.
    save_phases: Vec<(String, f64)>,
    restore_phases: Vec<(String, f64)>,
    /// profile-vault's busy time by step (medians, seconds summed over threads).
    save_steps: Vec<(String, f64)>,
    restore_steps: Vec<(String, f64)>,
    /// CPU seconds (user and system, every thread) of profile-vault's save and restore.
    save_cpu_seconds: f64,
    restore_cpu_seconds: f64,
    /// Peak RSS of the process during profile-vault's saves and restores (max over rounds).
    save_peak_rss_mib: f64,
    restore_peak_rss_mib: f64,
    /// The machine's limits, and the least time a save and a restore could take from them.
    limits: Limits,
    save_floor_seconds: f64,
    restore_floor_seconds: f64,
}

/// One round of the vault: times, phases, steps, peak memory.
struct VaultRound {
    save: f64,
    restore: f64,
    save_phases: Vec<(String, f64)>,
    restore_phases: Vec<(String, f64)>,
    save_steps: Vec<(String, f64)>,
    restore_steps: Vec<(String, f64)>,
    save_rss: f64,
    restore_rss: f64,
    save_cpu: f64,
    restore_cpu: f64,
    kept: u64,
    stored: u64,
    files: u64,
}

/// restic's repository for this run: beside a local store, or in the S3 store's bucket.
fn restic_repo(url: &str, bench_dir: &Path) -> String {
    match url.strip_prefix("s3://") {
        Some(rest) => {
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .unwrap_or_else(|_| "https://s3.amazonaws.com".into());
            let bucket = rest.split(['/', '?']).next().unwrap_or_default();
            format!(
                "s3:{}/{bucket}/pv-bench-restic-{}",
                endpoint.trim_end_matches('/'),
                uuid::Uuid::new_v4().simple()
            )
        }
        None => bench_dir
            .join(format!("restic-{}", uuid::Uuid::new_v4().simple()))
            .display()
            .to_string(),
    }
}

/// restic's first backup of `src` (same leave-outs) and its restore into `dst`; seconds each.
fn restic_round(repo: &str, src: &Path, dst: &Path) -> anyhow::Result<(f64, f64)> {
    let excludes: String = profile_vault::profile::exclude::DEFAULT_EXCLUDES
        .iter()
        .map(|p| format!(" --exclude='{}'", p.trim_end_matches('/')))
        .collect();
    let env = format!("RESTIC_PASSWORD=bench RESTIC_REPOSITORY='{repo}'");
    sh(&format!("{env} restic init -q"))?;
    let t = Instant::now();
    sh(&format!(
        "cd {} && {env} restic backup -q {excludes} .",
        quote(src)
    ))?;
    let save = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sh(&format!(
        "{env} restic restore -q latest --target {}",
        quote(dst)
    ))?;
    Ok((save, t.elapsed().as_secs_f64()))
}

/// Runs `script` in bash; fails with its stderr.
fn sh(script: &str) -> anyhow::Result<()> {
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the pipeline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The pipeline's save of `src` into `out` (and its sync); seconds.
fn tar_save(src: &Path, out: &Path) -> anyhow::Result<f64> {
    let excludes: String = profile_vault::profile::exclude::DEFAULT_EXCLUDES
        .iter()
        .map(|p| format!(" --exclude='{}'", p.trim_end_matches('/')))
        .collect();
    let t = Instant::now();
    sh(&format!(
        "tar -C {} {excludes} -cf - . | zstd -1 -T0 -q | openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench -out {} && sync {}",
        quote(src),
        quote(out),
        quote(out)
    ))?;
    Ok(t.elapsed().as_secs_f64())
}

/// The pipeline's restore of `archive` into `dst` (new); seconds.
fn tar_restore(archive: &Path, dst: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dst)?;
    let t = Instant::now();
    sh(&format!(
        "openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:bench -in {} | {UNPACK} -C {} -xf -",
        quote(archive),
        quote(dst)
    ))?;
    Ok(t.elapsed().as_secs_f64())
}

/// The pipeline's restore after decryption.
const UNPACK: &str = "zstd -d -q | tar";

/// The pipeline through a remote store, as a script would run it: the archive made in a
/// local file and uploaded (`aws s3 cp file s3://…`), and on restore downloaded as a stream
/// into the decrypting pipeline (`aws s3 cp s3://… - | openssl … | tar`); seconds each. The
/// upload and the download go through profile-vault's own S3 client.
async fn tar_round_remote(
    store: &Arc<dyn Store>,
    src: &Path,
    archive: &Path,
    dst: &Path,
) -> anyhow::Result<(f64, f64)> {
    let key = format!("pv-bench-tar/{}.tar.zst.enc", uuid::Uuid::new_v4().simple());
    let (s2, a2) = (src.to_path_buf(), archive.to_path_buf());
    let t = Instant::now();
    tokio::task::spawn_blocking(move || tar_save(&s2, &a2)).await??;
    store
        .put(&key, PutBody::File(archive.to_path_buf()), PutMode::Create)
        .await?;
    let save = t.elapsed().as_secs_f64();
    std::fs::create_dir_all(dst)?;
    let t = Instant::now();
    let mut body = store.get(&key).await?.body;
    let mut child = tokio::process::Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            &format!(
                "openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:bench | {UNPACK} -C {} -xf -",
                quote(dst)
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    tokio::io::copy(&mut body, &mut stdin).await?;
    drop(stdin);
    anyhow::ensure!(child.wait().await?.success(), "the restore pipeline failed");
    let restore = t.elapsed().as_secs_f64();
    store.delete(&key).await?;
    Ok((save, restore))
}

/// One first save and one restore with the vault: seconds each, and where they went.
async fn vault_round(vault: &Vault, src: &Path, bench_dir: &Path) -> anyhow::Result<VaultRound> {
    let profile = format!("vs-tar-{}", uuid::Uuid::new_v4().simple());
    let phases = Arc::new(Phases::new());
    reset_peak_rss();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let saved = vault
        .save(&bench_addr(&profile)?, src, Base::Current, phases.clone())
        .await?;
    let save = t.elapsed().as_secs_f64();
    let save_cpu = cpu_seconds() - cpu;
    let save_rss = peak_rss_mib();
    let (save_phases, save_steps) = (phases.split(Instant::now()), phases.steps());
    let dst = bench_dir.join(format!("vs-tar-restore-{}", uuid::Uuid::new_v4().simple()));
    let phases = Arc::new(Phases::new());
    reset_peak_rss();
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let restored = vault
        .restore(&bench_addr(&profile)?, None, &dst, phases.clone())
        .await?;
    let restore = t.elapsed().as_secs_f64();
    let restore_cpu = cpu_seconds() - cpu;
    let restore_rss = peak_rss_mib();
    anyhow::ensure!(
        restored.unpacked.bytes == saved.bytes_in,
        "restored {} bytes, saved {}",
        restored.unpacked.bytes,
        saved.bytes_in
    );
    vault.delete(&bench_addr(&profile)?).await?;
    Ok(VaultRound {
        save,
        restore,
        save_phases,
        restore_phases: phases.split(Instant::now()),
        save_steps,
        restore_steps: phases.steps(),
        save_rss,
        restore_rss,
        save_cpu,
        restore_cpu,
        kept: saved.bytes_in,
        stored: saved.bytes_stored,
        files: saved.files,
    })
}

/// The pipeline's save and restore, on the local disk or through the remote `store`.
async fn tar_round(
    remote: Option<&Arc<dyn Store>>,
    src: &Path,
    bench_dir: &Path,
) -> anyhow::Result<(f64, f64)> {
    let id = uuid::Uuid::new_v4().simple();
    let archive = bench_dir.join(format!("vs-tar-{id}.tar.zst.enc"));
    let dst = bench_dir.join(format!("vs-tar-untar-{id}"));
    let r = match remote {
        Some(store) => tar_round_remote(store, src, &archive, &dst).await,
        None => {
            let (s2, a2, d2) = (src.to_path_buf(), archive.clone(), dst.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64)> {
                Ok((tar_save(&s2, &a2)?, tar_restore(&a2, &d2)?))
            })
            .await?
        }
    };
    let _ = std::fs::remove_file(&archive);
    r
}

/// Medians of each label over rounds.
fn medians(v: &[(String, Vec<f64>)]) -> Vec<(String, f64)> {
    v.iter().map(|(l, x)| (l.clone(), median(x))).collect()
}

pub(super) async fn run(ctx: &Ctx, a: &Args, src: &Path, bench_dir: &Path) -> anyhow::Result<()> {
    for tool in ["tar", "zstd", "openssl"] {
        anyhow::ensure!(
            profile_vault::browser::on_path(tool).is_some(),
            "{tool} is not installed (the pipeline needs tar, zstd and openssl)"
        );
    }
    let (url, tmp_store) = super::common::store_url(a, bench_dir);
    let vault = super::common::bench_vault(ctx, &url, &bench_dir.join("spool")).await?;
    // Restored trees stay until the end: on ext4 without a journal (this machine's), every
    // file created scans the inodes deleted in the last seconds, so removing a tree between
    // rounds made the next round's creations pay for it (a cost of the bench's churn that
    // both sides paid, and that hid the difference between them).
    let restored = bench_dir.join(format!("vs-tar-run-{}", uuid::Uuid::new_v4().simple()));
    profile_vault::fsutil::create_private_dir(&restored)?;
    let result = rounds(ctx, a, src, &restored, &url, &vault).await;
    let _ = std::fs::remove_dir_all(&restored);
    let _ = std::fs::remove_dir_all(&tmp_store);
    result
}

/// The alternating rounds, restoring into `bench_dir`; prints the report.
async fn rounds(
    ctx: &Ctx,
    a: &Args,
    src: &Path,
    bench_dir: &Path,
    url: &str,
    vault: &Vault,
) -> anyhow::Result<()> {
    let remote = (!url.starts_with("file://")).then(|| vault.store().clone());
    let (mut pv, mut tar) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let with_restic = profile_vault::browser::on_path("restic").is_some();
    let mut restic = (Vec::new(), Vec::new());
    let (mut save_phases, mut restore_phases) = (Vec::new(), Vec::new());
    let (mut save_steps, mut restore_steps) = (Vec::new(), Vec::new());
    let (mut save_rss, mut restore_rss) = (0.0f64, 0.0f64);
    let (mut save_cpu, mut restore_cpu) = (Vec::new(), Vec::new());
    let (mut kept, mut stored, mut files) = (0, 0, 0);
    for round in 0..a.rounds.max(1) {
        if with_restic {
            let (repo, src2) = (restic_repo(url, bench_dir), src.to_path_buf());
            let dst = bench_dir.join(format!("vs-restic-{}", uuid::Uuid::new_v4().simple()));
            let d2 = dst.clone();
            let (s, r) =
                tokio::task::spawn_blocking(move || restic_round(&repo, &src2, &d2)).await??;
            restic.0.push(s);
            restic.1.push(r);
        }
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let v = vault_round(vault, src, bench_dir).await?;
                pv.0.push(v.save);
                pv.1.push(v.restore);
                add_phases(&mut save_phases, v.save_phases);
                add_phases(&mut restore_phases, v.restore_phases);
                add_phases(&mut save_steps, v.save_steps);
                add_phases(&mut restore_steps, v.restore_steps);
                save_rss = save_rss.max(v.save_rss);
                restore_rss = restore_rss.max(v.restore_rss);
                save_cpu.push(v.save_cpu);
                restore_cpu.push(v.restore_cpu);
                (kept, stored, files) = (v.kept, v.stored, v.files);
            } else {
                let (s, r) = tar_round(remote.as_ref(), src, bench_dir).await?;
                tar.0.push(s);
                tar.1.push(r);
            }
        }
    }
    // Measured after the rounds: its buffers would otherwise stay in the heap and count in
    // the vault's peak memory, and the allocator would still map every chunk-sized buffer
    // afresh (glibc raises its mmap threshold after the first large frees).
    let limits = limits::measure(src, bench_dir, vault.store().clone()).await?;
    let side = |v: &(Vec<f64>, Vec<f64>)| Side {
        save_seconds: median(&v.0),
        restore_seconds: median(&v.1),
    };
    let (p, t) = (side(&pv), side(&tar));
    let r = Report {
        store: url.split('?').next().unwrap_or_default().to_string(),
        kept_bytes: kept,
        stored_bytes: stored,
        files,
        rounds: a.rounds.max(1),
        save_speedup: t.save_seconds / p.save_seconds,
        restore_speedup: t.restore_seconds / p.restore_seconds,
        profile_vault: p,
        tar_pipeline: t,
        restic: with_restic.then(|| side(&restic)),
        save_phases: medians(&save_phases),
        restore_phases: medians(&restore_phases),
        save_steps: medians(&save_steps),
        restore_steps: medians(&restore_steps),
        save_cpu_seconds: median(&save_cpu),
        restore_cpu_seconds: median(&restore_cpu),
        save_peak_rss_mib: save_rss,
        restore_peak_rss_mib: restore_rss,
        save_floor_seconds: limits.save_floor(kept, stored),
        restore_floor_seconds: limits.restore_floor(kept, stored, files),
        limits,
    };
    ctx.print(&r, || {
        human(
            &r,
            &save_phases,
            &restore_phases,
            &save_steps,
            &restore_steps,
        )
    });
    Ok(())
}

fn human(
    r: &Report,
    save_phases: &[(String, Vec<f64>)],
    restore_phases: &[(String, Vec<f64>)],
    save_steps: &[(String, Vec<f64>)],
    restore_steps: &[(String, Vec<f64>)],
) -> String {
    let l = &r.limits;
    let mut out = format!(
        "store {}, {} kept in {} files, {} stored, medians of {} alternating rounds\n\
         first save: profile-vault {:.2} s, tar|zstd -1 -T0|openssl {:.2} s: {:.2}x\n\
         restore:    profile-vault {:.2} s, openssl|zstd -d|tar {:.2} s: {:.2}x",
        r.store,
        human_bytes(r.kept_bytes),
        r.files,
        human_bytes(r.stored_bytes),
        r.rounds,
        r.profile_vault.save_seconds,
        r.tar_pipeline.save_seconds,
        r.save_speedup,
        r.profile_vault.restore_seconds,
        r.tar_pipeline.restore_seconds,
        r.restore_speedup
    );
    if let Some(x) = &r.restic {
        out += &format!(
            "\nrestic:      first backup {:.2} s ({:.2}x), restore {:.2} s ({:.2}x)",
            x.save_seconds,
            x.save_seconds / r.profile_vault.save_seconds,
            x.restore_seconds,
            x.restore_seconds / r.profile_vault.restore_seconds
        );
    }
    out += &format!(
        "\n  save by phase (s, wall):      {}\n  save by step (s, busy):       {}\n  \
         restore by phase (s, wall):   {}\n  restore by step (s, busy):    {}\n  \
         CPU (all threads): save {:.2} s, restore {:.2} s; peak RSS: save {:.0} MiB, restore {:.0} MiB",
        phase_line(save_phases),
        phase_line(save_steps),
        phase_line(restore_phases),
        phase_line(restore_steps),
        r.save_cpu_seconds,
        r.restore_cpu_seconds,
        r.save_peak_rss_mib,
        r.restore_peak_rss_mib,
    );
    out += &format!(
        "\nmachine ({} cores), per core: chunk ids {:.0} MB/s, zstd -1 {:.0} MB/s, unzstd {:.0} MB/s, \
         AES-256-GCM {:.0} MB/s sealing, {:.0} MB/s opening{}\n  \
         page cache takes {:.0} MB/s, a file is created in {:.2} ms; the store: {:.1} ms a request, \
         {:.0} MB/s up, {:.0} MB/s down\n\
         least time from those: save {:.2} s (we take {:.1}x that), restore {:.2} s ({:.1}x)",
        l.cores,
        l.hash_mb_s,
        l.zstd1_mb_s,
        l.unzstd_mb_s,
        l.aes_gcm_mb_s,
        l.aes_gcm_open_mb_s,
        l.openssl_aes_gcm_mb_s
            .map_or(String::new(), |o| format!(" (OpenSSL's: {o:.0} MB/s)")),
        l.page_cache_write_mb_s,
        l.create_file_ms,
        l.store_request_ms,
        l.store_put_mb_s,
        l.store_get_mb_s,
        r.save_floor_seconds,
        r.profile_vault.save_seconds / r.save_floor_seconds,
        r.restore_floor_seconds,
        r.profile_vault.restore_seconds / r.restore_floor_seconds,
    );
    out
}
