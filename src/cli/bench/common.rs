//! What the benches share: the bench vault and store, timed restores, peak RSS, medians.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;

use super::args::Args;
use crate::cli::Ctx;
use profile_vault::{Keyring, NoProgress, Vault};

/// The process's peak RSS since the last [`reset_peak_rss`], MiB.
pub(super) fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// The process's RSS now, MiB.
pub(super) fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(super) fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Restores `profile` (of tenant `bench`) into `dst`; returns the seconds it took, after
/// checking that every kept byte came back.
pub(super) async fn timed_restore(
    vault: &Vault,
    profile: &str,
    dst: &Path,
    kept_bytes: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let restored = vault
        .restore(&bench_addr(profile)?, None, dst, Arc::new(NoProgress))
        .await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        restored.unpacked.bytes == kept_bytes,
        "restored {} bytes, saved {kept_bytes}",
        restored.unpacked.bytes
    );
    Ok(secs)
}

/// The store to bench: `--bench-store`, or a fresh filesystem store in `bench_dir` (the
/// directory to remove afterwards).
pub(super) fn store_url(a: &Args, bench_dir: &Path) -> (String, PathBuf) {
    let tmp: PathBuf = bench_dir.join(format!("store-{}", uuid::Uuid::new_v4().simple()));
    let url = a.bench_store.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            std::path::absolute(&tmp).unwrap_or(tmp.clone()).display()
        )
    });
    (url, tmp)
}

/// A vault on `url` with a throw-away in-memory master key.
/// The address of a bench profile (tenant `bench`).
pub(super) fn bench_addr(
    profile: &str,
) -> Result<profile_vault::layout::ProfileAddr, profile_vault::vault::Error> {
    Ok(profile_vault::layout::ProfileAddr::new("bench", profile)?)
}

pub(super) async fn bench_vault(ctx: &Ctx, url: &str, spool: &Path) -> anyhow::Result<Vault> {
    bench_vault_with(ctx, url, spool, |_| {}).await
}

/// [`bench_vault`] with its options changed.
pub(super) async fn bench_vault_with(
    ctx: &Ctx,
    url: &str,
    spool: &Path,
    edit: impl FnOnce(&mut profile_vault::VaultOptions),
) -> anyhow::Result<Vault> {
    let store = profile_vault::store::from_url(url, &ctx.cfg.file.s3).await?;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let ring = Arc::new(Keyring::from_keys(vec![("bench".into(), key)], "bench")?);
    let mut opts = ctx.cfg.vault_options();
    opts.spool_dir = spool.to_path_buf();
    edit(&mut opts);
    Ok(Vault::new(store, ring, opts)?)
}

/// The value `p` of the way up `v` (0.5: the median; the upper one of an even count).
pub(super) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The median of `v`.
pub(super) fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// CPU seconds (user and system) this process has used so far, all threads.
#[allow(unsafe_code)]
pub(super) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// CPU seconds (user and system, every thread) process `pid` has used so far, from
/// `/proc/PID/stat`; `None` when it cannot be read (no such process).
#[allow(unsafe_code)]
pub(super) fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses, which may hold spaces): state is field 3,
    // utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}
