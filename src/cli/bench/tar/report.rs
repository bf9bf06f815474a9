//! What `bench --vs-tar` reports: each round's figures gathered ([`Tally`]), their medians
//! ([`Report`], also the `--json` document) and the text an operator reads.

use super::super::common::median;
use super::super::limits::Limits;
use super::super::phases::{add_phases, phase_line};
use crate::cli::human_bytes;

/// Seconds of a save and of a restore (wall time, or CPU time where a field says so).
#[derive(serde::Serialize)]
pub(super) struct Side {
    pub save_seconds: f64,
    pub restore_seconds: f64,
}

#[derive(serde::Serialize)]
pub(super) struct Report {
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
    /// CPU seconds of the store's server (`--store-pid`) during each side's save and
    /// restore (medians).
    store_server_cpu: Option<ServerCpu>,
    /// Peak RSS of the process during profile-vault's saves and restores (max over rounds).
    save_peak_rss_mib: f64,
    restore_peak_rss_mib: f64,
    /// The machine's limits, and the least time a save and a restore could take from them
    /// (with the store server's CPU for profile-vault's operations, when it was measured).
    limits: Limits,
    save_floor_seconds: f64,
    restore_floor_seconds: f64,
}

#[derive(serde::Serialize)]
struct ServerCpu {
    pid: u32,
    profile_vault: Side,
    tar_pipeline: Side,
}

/// One round of the vault: times, phases, steps, peak memory, CPU (its own and the store
/// server's).
pub(super) struct VaultRound {
    pub save: f64,
    pub restore: f64,
    pub save_phases: Vec<(String, f64)>,
    pub restore_phases: Vec<(String, f64)>,
    pub save_steps: Vec<(String, f64)>,
    pub restore_steps: Vec<(String, f64)>,
    pub save_rss: f64,
    pub restore_rss: f64,
    pub save_cpu: f64,
    pub restore_cpu: f64,
    pub server: (Option<f64>, Option<f64>),
    pub kept: u64,
    pub stored: u64,
    pub files: u64,
}

/// One round of the pipeline: times, and the store server's CPU.
pub(super) struct TarRound {
    pub save: f64,
    pub restore: f64,
    pub server: (Option<f64>, Option<f64>),
}

/// Pairs of (save, restore) figures over rounds.
#[derive(Default)]
struct Pairs(Vec<f64>, Vec<f64>);

impl Pairs {
    fn push(&mut self, save: f64, restore: f64) {
        self.0.push(save);
        self.1.push(restore);
    }

    fn push_some(&mut self, (save, restore): (Option<f64>, Option<f64>)) {
        if let (Some(s), Some(r)) = (save, restore) {
            self.push(s, r);
        }
    }

    fn medians(&self) -> Side {
        Side {
            save_seconds: median(&self.0),
            restore_seconds: median(&self.1),
        }
    }
}

/// Every round's figures, for the medians.
#[derive(Default)]
pub(super) struct Tally {
    pv: Pairs,
    tar: Pairs,
    restic: Pairs,
    pv_server: Pairs,
    tar_server: Pairs,
    save_phases: Vec<(String, Vec<f64>)>,
    restore_phases: Vec<(String, Vec<f64>)>,
    save_steps: Vec<(String, Vec<f64>)>,
    restore_steps: Vec<(String, Vec<f64>)>,
    cpu: Pairs,
    save_rss: f64,
    restore_rss: f64,
    kept: u64,
    stored: u64,
    files: u64,
}

impl Tally {
    pub(super) fn vault(&mut self, v: VaultRound) {
        self.pv.push(v.save, v.restore);
        self.cpu.push(v.save_cpu, v.restore_cpu);
        self.pv_server.push_some(v.server);
        add_phases(&mut self.save_phases, v.save_phases);
        add_phases(&mut self.restore_phases, v.restore_phases);
        add_phases(&mut self.save_steps, v.save_steps);
        add_phases(&mut self.restore_steps, v.restore_steps);
        self.save_rss = self.save_rss.max(v.save_rss);
        self.restore_rss = self.restore_rss.max(v.restore_rss);
        (self.kept, self.stored, self.files) = (v.kept, v.stored, v.files);
    }

    pub(super) fn tar(&mut self, t: TarRound) {
        self.tar.push(t.save, t.restore);
        self.tar_server.push_some(t.server);
    }

    pub(super) fn restic(&mut self, save: f64, restore: f64) {
        self.restic.push(save, restore);
    }

    /// The medians, beside the machine's `limits`.
    pub(super) fn report(
        &self,
        store: &str,
        rounds: u32,
        store_pid: Option<u32>,
        limits: Limits,
    ) -> Report {
        let (p, t) = (self.pv.medians(), self.tar.medians());
        let server = store_pid
            .filter(|_| !self.pv_server.0.is_empty())
            .map(|pid| ServerCpu {
                pid,
                profile_vault: self.pv_server.medians(),
                tar_pipeline: self.tar_server.medians(),
            });
        let server_cpu = |f: fn(&Side) -> f64| server.as_ref().map_or(0.0, |s| f(&s.profile_vault));
        let medians = |v: &[(String, Vec<f64>)]| -> Vec<(String, f64)> {
            v.iter().map(|(l, x)| (l.clone(), median(x))).collect()
        };
        Report {
            store: store.split('?').next().unwrap_or_default().to_string(),
            kept_bytes: self.kept,
            stored_bytes: self.stored,
            files: self.files,
            rounds,
            save_speedup: t.save_seconds / p.save_seconds,
            restore_speedup: t.restore_seconds / p.restore_seconds,
            profile_vault: p,
            tar_pipeline: t,
            restic: (!self.restic.0.is_empty()).then(|| self.restic.medians()),
            save_phases: medians(&self.save_phases),
            restore_phases: medians(&self.restore_phases),
            save_steps: medians(&self.save_steps),
            restore_steps: medians(&self.restore_steps),
            save_cpu_seconds: median(&self.cpu.0),
            restore_cpu_seconds: median(&self.cpu.1),
            save_peak_rss_mib: self.save_rss,
            restore_peak_rss_mib: self.restore_rss,
            save_floor_seconds: limits.save_floor(
                self.kept,
                self.stored,
                server_cpu(|s| s.save_seconds),
            ),
            restore_floor_seconds: limits.restore_floor(
                self.kept,
                self.stored,
                self.files,
                server_cpu(|s| s.restore_seconds),
            ),
            store_server_cpu: server,
            limits,
        }
    }

    /// The report as text.
    pub(super) fn human(&self, r: &Report) -> String {
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
            phase_line(&self.save_phases),
            phase_line(&self.save_steps),
            phase_line(&self.restore_phases),
            phase_line(&self.restore_steps),
            r.save_cpu_seconds,
            r.restore_cpu_seconds,
            r.save_peak_rss_mib,
            r.restore_peak_rss_mib,
        );
        if let Some(s) = &r.store_server_cpu {
            out += &format!(
                "\n  the store's server (pid {}), CPU: during our save {:.2} s (the pipeline's {:.2} s), \
                 our restore {:.2} s (the pipeline's {:.2} s)\n  \
                 the server's CPU as a share of one core: our save {}, the pipeline's {}; our restore {}, the pipeline's {} \
                 (near 100 %: a server that runs on one core, as LocalStack's Python does, is what bounds it)",
                s.pid,
                s.profile_vault.save_seconds,
                s.tar_pipeline.save_seconds,
                s.profile_vault.restore_seconds,
                s.tar_pipeline.restore_seconds,
                share(s.profile_vault.save_seconds, r.profile_vault.save_seconds),
                share(s.tar_pipeline.save_seconds, r.tar_pipeline.save_seconds),
                share(s.profile_vault.restore_seconds, r.profile_vault.restore_seconds),
                share(s.tar_pipeline.restore_seconds, r.tar_pipeline.restore_seconds),
            );
        }
        out + "\n" + &limits_text(r)
    }
}

/// `cpu` seconds of CPU in `wall` seconds, as a percentage of one core.
fn share(cpu: f64, wall: f64) -> String {
    format!("{:.0} %", 100.0 * cpu / wall.max(1e-9))
}

/// The machine's limits and the least times from them.
fn limits_text(r: &Report) -> String {
    let l = &r.limits;
    format!(
        "machine ({} cores), per core: chunk ids {:.0} MB/s, zstd -1 {:.0} MB/s, unzstd {:.0} MB/s, \
         AES-256-GCM {:.0} MB/s sealing, {:.0} MB/s opening{}\n  \
         page cache takes {:.0} MB/s, gives {:.0} MB/s, a file is created in {:.2} ms; the store: {:.1} ms a request, \
         {:.0} MB/s up, {:.0} MB/s down\n\
         least time from those{}: save {:.2} s (we take {:.1}x that), restore {:.2} s ({:.1}x)",
        l.cores,
        l.hash_mb_s,
        l.zstd1_mb_s,
        l.unzstd_mb_s,
        l.aes_gcm_mb_s,
        l.aes_gcm_open_mb_s,
        l.openssl_aes_gcm_mb_s
            .map_or(String::new(), |o| format!(" (OpenSSL's: {o:.0} MB/s)")),
        l.page_cache_write_mb_s,
        l.page_cache_read_mb_s,
        l.create_file_ms,
        l.store_request_ms,
        l.store_put_mb_s,
        l.store_get_mb_s,
        if r.store_server_cpu.is_some() {
            " and the server's CPU on the same cores"
        } else {
            ""
        },
        r.save_floor_seconds,
        r.profile_vault.save_seconds / r.save_floor_seconds,
        r.restore_floor_seconds,
        r.profile_vault.restore_seconds / r.restore_floor_seconds,
    )
}
