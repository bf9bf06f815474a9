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

mod report;

use super::args::Args;
use super::common::{bench_addr, process_cpu_seconds};
use super::common::{cpu_seconds, peak_rss_mib, reset_peak_rss};
use super::limits;
use super::phases::Phases;
use crate::cli::Ctx;
use report::{Tally, TarRound, VaultRound};

/// The CPU clock of the store's server, when its process id was given (`--store-pid`).
#[derive(Clone, Copy)]
struct ServerClock(Option<u32>);

impl ServerClock {
    fn now(self) -> Option<f64> {
        self.0.and_then(process_cpu_seconds)
    }

    /// CPU seconds it used since `start` (a reading of [`Self::now`]).
    fn since(self, start: Option<f64>) -> Option<f64> {
        Some(self.now()? - start?)
    }
}
use profile_vault::vault::Base;
use profile_vault::{PutBody, PutMode, Store, Vault};

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
    server: ServerClock,
) -> anyhow::Result<TarRound> {
    let key = format!("pv-bench-tar/{}.tar.zst.enc", uuid::Uuid::new_v4().simple());
    let (s2, a2) = (src.to_path_buf(), archive.to_path_buf());
    let (t, s0) = (Instant::now(), server.now());
    tokio::task::spawn_blocking(move || tar_save(&s2, &a2)).await??;
    store
        .put(&key, PutBody::File(archive.to_path_buf()), PutMode::Create)
        .await?;
    let save = t.elapsed().as_secs_f64();
    let save_server = server.since(s0);
    std::fs::create_dir_all(dst)?;
    let (t, s0) = (Instant::now(), server.now());
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
    let restore_server = server.since(s0);
    store.delete(&key).await?;
    Ok(TarRound {
        save,
        restore,
        server: (save_server, restore_server),
    })
}

/// One first save and one restore with the vault: seconds each, and where they went.
async fn vault_round(
    vault: &Vault,
    src: &Path,
    bench_dir: &Path,
    server: ServerClock,
) -> anyhow::Result<VaultRound> {
    let profile = format!("vs-tar-{}", uuid::Uuid::new_v4().simple());
    let phases = Arc::new(Phases::new());
    reset_peak_rss();
    let (t, cpu, s0) = (Instant::now(), cpu_seconds(), server.now());
    let saved = vault
        .save(&bench_addr(&profile)?, src, Base::Current, phases.clone())
        .await?;
    let save = t.elapsed().as_secs_f64();
    let save_cpu = cpu_seconds() - cpu;
    let save_server = server.since(s0);
    let save_rss = peak_rss_mib();
    let (save_phases, save_steps) = (phases.split(Instant::now()), phases.steps());
    let dst = bench_dir.join(format!("vs-tar-restore-{}", uuid::Uuid::new_v4().simple()));
    let phases = Arc::new(Phases::new());
    reset_peak_rss();
    let (t, cpu, s0) = (Instant::now(), cpu_seconds(), server.now());
    let restored = vault
        .restore(&bench_addr(&profile)?, None, &dst, phases.clone())
        .await?;
    let restore_end = Instant::now();
    let restore = restore_end.duration_since(t).as_secs_f64();
    let restore_cpu = cpu_seconds() - cpu;
    let restore_server = server.since(s0);
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
        restore_phases: phases.split(restore_end),
        save_steps,
        restore_steps: phases.steps(),
        save_rss,
        restore_rss,
        save_cpu,
        restore_cpu,
        server: (save_server, restore_server),
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
    server: ServerClock,
) -> anyhow::Result<TarRound> {
    let id = uuid::Uuid::new_v4().simple();
    let archive = bench_dir.join(format!("vs-tar-{id}.tar.zst.enc"));
    let dst = bench_dir.join(format!("vs-tar-untar-{id}"));
    let r = match remote {
        Some(store) => tar_round_remote(store, src, &archive, &dst, server).await,
        None => {
            let (s2, a2, d2) = (src.to_path_buf(), archive.clone(), dst.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<TarRound> {
                Ok(TarRound {
                    save: tar_save(&s2, &a2)?,
                    restore: tar_restore(&a2, &d2)?,
                    server: (None, None),
                })
            })
            .await?
        }
    };
    let _ = std::fs::remove_file(&archive);
    r
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
    let server = ServerClock(a.store_pid);
    if let Some(pid) = a.store_pid {
        anyhow::ensure!(
            server.now().is_some(),
            "--store-pid {pid}: no such process here"
        );
    }
    let with_restic = profile_vault::browser::on_path("restic").is_some();
    let mut tally = Tally::default();
    for round in 0..a.rounds.max(1) {
        if with_restic {
            let (repo, src2) = (restic_repo(url, bench_dir), src.to_path_buf());
            let dst = bench_dir.join(format!("vs-restic-{}", uuid::Uuid::new_v4().simple()));
            let (s, r) =
                tokio::task::spawn_blocking(move || restic_round(&repo, &src2, &dst)).await??;
            tally.restic(s, r);
        }
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                tally.vault(vault_round(vault, src, bench_dir, server).await?);
            } else {
                tally.tar(tar_round(remote.as_ref(), src, bench_dir, server).await?);
            }
        }
    }
    // Measured after the rounds: its buffers would otherwise stay in the heap and count in
    // the vault's peak memory, and the allocator would still map every chunk-sized buffer
    // afresh (glibc raises its mmap threshold after the first large frees).
    let limits = limits::measure(src, bench_dir, vault.store().clone()).await?;
    let r = tally.report(url, a.rounds.max(1), a.store_pid, limits);
    ctx.print(&r, || tally.human(&r));
    Ok(())
}
