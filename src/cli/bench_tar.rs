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

use super::bench::{median, Args};
use super::{human_bytes, Ctx};
use profile_vault::vault::Base;
use profile_vault::Vault;

#[derive(serde::Serialize)]
struct Side {
    save_seconds: f64,
    restore_seconds: f64,
}

/// Where a vault operation's time went, by the phases it reports through
/// [`profile_vault::Progress`]: before the first (walking, planning), each phase, and what
/// follows each (committing: the manifest, the head).
#[derive(Default)]
struct Phases {
    t0: Option<Instant>,
    marks: std::sync::Mutex<Vec<(String, Instant)>>,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            t0: Some(Instant::now()),
            ..Phases::default()
        }
    }

    /// (phase, seconds), in order, the time after the last mark as `after`.
    fn split(&self, end: Instant) -> Vec<(String, f64)> {
        let marks = self.marks.lock().expect("marks");
        let mut out = Vec::new();
        let mut prev = ("before".to_string(), self.t0.unwrap_or(end));
        for (label, at) in marks.iter() {
            out.push((prev.0.clone(), at.duration_since(prev.1).as_secs_f64()));
            prev = (label.clone(), *at);
        }
        out.push((prev.0, end.duration_since(prev.1).as_secs_f64()));
        out
    }
}

impl profile_vault::Progress for Phases {
    fn start(&self, label: &str, _: u64) {
        self.marks
            .lock()
            .expect("marks")
            .push((label.to_string(), Instant::now()));
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {
        let mut marks = self.marks.lock().expect("marks");
        let last = marks.last().map_or(String::new(), |m| m.0.clone());
        marks.push((format!("after {last}"), Instant::now()));
    }
}

/// Adds one run's phases to the totals (for the medians' neighbourhood: means per phase).
fn add_phases(into: &mut Vec<(String, Vec<f64>)>, run: Vec<(String, f64)>) {
    for (label, secs) in run.into_iter().filter(|(_, s)| *s > 0.0005) {
        match into.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(secs),
            None => into.push((label, vec![secs])),
        }
    }
}

fn phase_line(p: &[(String, Vec<f64>)]) -> String {
    p.iter()
        .map(|(l, v)| format!("{l} {:.3}", median(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(serde::Serialize)]
struct Report {
    store: String,
    kept_bytes: u64,
    rounds: u32,
    profile_vault: Side,
    tar_pipeline: Side,
    save_speedup: f64,
    restore_speedup: f64,
    /// restic's, when it is installed.
    restic: Option<Side>,
    /// profile-vault's time by phase (medians, seconds): before the first, each, after.
    save_phases: Vec<(String, f64)>,
    restore_phases: Vec<(String, f64)>,
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
        "openssl enc -d -aes-256-ctr -pbkdf2 -pass pass:bench -in {} | zstd -d -q | tar -C {} -xf -",
        quote(archive),
        quote(dst)
    ))?;
    Ok(t.elapsed().as_secs_f64())
}

/// One first save and one restore with the vault: seconds each, and where they went.
async fn vault_round(
    vault: &Vault,
    src: &Path,
    bench_dir: &Path,
    kept: &mut u64,
) -> anyhow::Result<((f64, f64), (Vec<(String, f64)>, Vec<(String, f64)>))> {
    let profile = format!("vs-tar-{}", uuid::Uuid::new_v4().simple());
    let phases = Arc::new(Phases::new());
    let t = Instant::now();
    let saved = vault
        .save("bench", &profile, src, Base::Current, phases.clone())
        .await?;
    let save = t.elapsed().as_secs_f64();
    let save_phases = phases.split(Instant::now());
    *kept = saved.bytes_in;
    let dst = bench_dir.join(format!("vs-tar-restore-{}", uuid::Uuid::new_v4().simple()));
    let phases = Arc::new(Phases::new());
    let t = Instant::now();
    let restored = vault
        .restore("bench", &profile, None, &dst, phases.clone())
        .await?;
    let restore = t.elapsed().as_secs_f64();
    let restore_phases = phases.split(Instant::now());
    anyhow::ensure!(
        restored.unpacked.bytes == saved.bytes_in,
        "restored {} bytes, saved {}",
        restored.unpacked.bytes,
        saved.bytes_in
    );
    let _ = std::fs::remove_dir_all(&dst);
    vault.delete("bench", &profile).await?;
    Ok(((save, restore), (save_phases, restore_phases)))
}

pub(super) async fn run(ctx: &Ctx, a: &Args, src: &Path, bench_dir: &Path) -> anyhow::Result<()> {
    for tool in ["tar", "zstd", "openssl"] {
        anyhow::ensure!(
            profile_vault::browser::on_path(tool).is_some(),
            "{tool} is not installed (the pipeline needs tar, zstd and openssl)"
        );
    }
    let (url, tmp_store) = super::bench::store_url(a, bench_dir);
    let vault = super::bench::bench_vault(ctx, &url, &bench_dir.join("spool")).await?;
    let (mut pv, mut tar) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let with_restic = profile_vault::browser::on_path("restic").is_some();
    let mut restic = (Vec::new(), Vec::new());
    let (mut save_phases, mut restore_phases) = (Vec::new(), Vec::new());
    let mut kept = 0;
    for round in 0..a.rounds.max(1) {
        if with_restic {
            let (repo, src2) = (restic_repo(&url, bench_dir), src.to_path_buf());
            let dst = bench_dir.join(format!("vs-restic-{}", uuid::Uuid::new_v4().simple()));
            let d2 = dst.clone();
            let (s, r) =
                tokio::task::spawn_blocking(move || restic_round(&repo, &src2, &d2)).await??;
            let _ = std::fs::remove_dir_all(&dst);
            restic.0.push(s);
            restic.1.push(r);
        }
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let ((s, r), (sp, rp)) = vault_round(&vault, src, bench_dir, &mut kept).await?;
                pv.0.push(s);
                pv.1.push(r);
                add_phases(&mut save_phases, sp);
                add_phases(&mut restore_phases, rp);
            } else {
                let id = uuid::Uuid::new_v4().simple();
                let archive = bench_dir.join(format!("vs-tar-{id}.tar.zst.enc"));
                let dst = bench_dir.join(format!("vs-tar-untar-{id}"));
                let (s2, a2, d2) = (src.to_path_buf(), archive.clone(), dst.clone());
                let (s, r) = tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64)> {
                    Ok((tar_save(&s2, &a2)?, tar_restore(&a2, &d2)?))
                })
                .await??;
                let _ = std::fs::remove_file(&archive);
                let _ = std::fs::remove_dir_all(&dst);
                tar.0.push(s);
                tar.1.push(r);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp_store);
    let side = |v: &(Vec<f64>, Vec<f64>)| Side {
        save_seconds: median(&v.0),
        restore_seconds: median(&v.1),
    };
    let (p, t) = (side(&pv), side(&tar));
    let r = Report {
        store: url.split('?').next().unwrap_or_default().to_string(),
        kept_bytes: kept,
        rounds: a.rounds.max(1),
        save_speedup: t.save_seconds / p.save_seconds,
        restore_speedup: t.restore_seconds / p.restore_seconds,
        profile_vault: p,
        tar_pipeline: t,
        restic: with_restic.then(|| side(&restic)),
        save_phases: save_phases
            .iter()
            .map(|(l, v)| (l.clone(), median(v)))
            .collect(),
        restore_phases: restore_phases
            .iter()
            .map(|(l, v)| (l.clone(), median(v)))
            .collect(),
    };
    ctx.print(&r, || {
        format!(
            "store {}, {} kept, medians of {} alternating rounds\n\
             first save: profile-vault {:.2} s, tar|zstd -1 -T0|openssl {:.2} s: {:.2}x\n\
             restore:    profile-vault {:.2} s, openssl|zstd -d|tar {:.2} s: {:.2}x",
            r.store,
            human_bytes(r.kept_bytes),
            r.rounds,
            r.profile_vault.save_seconds,
            r.tar_pipeline.save_seconds,
            r.save_speedup,
            r.profile_vault.restore_seconds,
            r.tar_pipeline.restore_seconds,
            r.restore_speedup
        ) + &format!(
            "\n  save by phase (s):    {}\n  restore by phase (s): {}",
            phase_line(&save_phases),
            phase_line(&restore_phases)
        ) + &r.restic.as_ref().map_or(String::new(), |x| {
            format!(
                "\nrestic:      first backup {:.2} s ({:.2}x), restore {:.2} s ({:.2}x)",
                x.save_seconds,
                x.save_seconds / r.profile_vault.save_seconds,
                x.restore_seconds,
                x.restore_seconds / r.profile_vault.restore_seconds
            )
        })
    });
    Ok(())
}
