//! Process-wide metrics rendered by `/metrics` in the Prometheus text format: duration
//! histograms, storage errors by kind, KMS requests by outcome, and queue depths. Counters of the session service
//! live in [`crate::session::Counters`].

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the duration histogram buckets.
pub const BUCKETS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// How many durations were recorded, and their sum.
    pub fn total(&self) -> (u64, std::time::Duration) {
        (
            self.count.load(Ordering::Relaxed),
            std::time::Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
        )
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Storage error kinds, as labels.
pub const STORE_ERROR_KINDS: [&str; 7] = [
    "not_found",
    "already_exists",
    "precondition",
    "invalid_key",
    "unavailable",
    "backend",
    "io",
];

/// KMS operations, as labels.
pub const KMS_OPS: [&str; 4] = ["GenerateDataKey", "Encrypt", "Decrypt", "DescribeKey"];
/// KMS request outcomes, as labels.
pub const KMS_OUTCOMES: [&str; 4] = ["ok", "unavailable", "rejected", "refused"];

/// All process-wide metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Durations of profile saves.
    pub save_seconds: Histogram,
    /// Durations of profile restores.
    pub restore_seconds: Histogram,
    store_errors: [AtomicU64; STORE_ERROR_KINDS.len()],
    kms_requests: [[AtomicU64; KMS_OUTCOMES.len()]; KMS_OPS.len()],
    /// Saves waiting for a save slot.
    pub saves_waiting: AtomicU64,
    /// Packs/unpacks waiting for a work slot.
    pub jobs_waiting: AtomicU64,
    /// Format 2 chunks saves sealed and uploaded.
    pub chunks_new: AtomicU64,
    /// Format 2 chunks saves reused from their base generation.
    pub chunks_reused: AtomicU64,
    /// Packs deleted by pack collection.
    pub packs_deleted: AtomicU64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
    save_seconds: Histogram::new(),
    restore_seconds: Histogram::new(),
    store_errors: [const { AtomicU64::new(0) }; STORE_ERROR_KINDS.len()],
    kms_requests: [const { [const { AtomicU64::new(0) }; KMS_OUTCOMES.len()] }; KMS_OPS.len()],
    saves_waiting: AtomicU64::new(0),
    jobs_waiting: AtomicU64::new(0),
    chunks_new: AtomicU64::new(0),
    chunks_reused: AtomicU64::new(0),
    packs_deleted: AtomicU64::new(0),
};

impl Metrics {
    /// Counts a storage error of `kind` (one of [`STORE_ERROR_KINDS`]).
    pub fn store_error(&self, kind: &str) {
        if let Some(i) = STORE_ERROR_KINDS.iter().position(|k| *k == kind) {
            self.store_errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a KMS request `op` (one of [`KMS_OPS`]) that ended in `outcome` (one of
    /// [`KMS_OUTCOMES`]; the SDK's own retries are inside one request).
    pub fn kms_request(&self, op: &str, outcome: &str) {
        let o = KMS_OPS.iter().position(|k| *k == op);
        let r = KMS_OUTCOMES.iter().position(|k| *k == outcome);
        if let (Some(o), Some(r)) = (o, r) {
            self.kms_requests[o][r].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends the Prometheus text of these metrics.
    pub fn render(&self, out: &mut String) {
        self.save_seconds.render(
            "pv_save_duration_seconds",
            "Time to save a profile (pack, encrypt, upload, head move).",
            out,
        );
        self.restore_seconds.render(
            "pv_restore_duration_seconds",
            "Time to restore a profile (download, verify, extract).",
            out,
        );
        let _ = writeln!(out, "# HELP pv_store_errors_total Storage errors by kind (every attempt, retried ones included).\n# TYPE pv_store_errors_total counter");
        for (i, k) in STORE_ERROR_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "pv_store_errors_total{{kind=\"{k}\"}} {}",
                self.store_errors[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP pv_kms_requests_total KMS requests by operation and outcome.\n# TYPE pv_kms_requests_total counter");
        for (o, op) in KMS_OPS.iter().enumerate() {
            for (r, outcome) in KMS_OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "pv_kms_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} {}",
                    self.kms_requests[o][r].load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP pv_save_chunks_total Format 2 chunks of saved generations: sealed and uploaded (new) or reused from the base generation.\n# TYPE pv_save_chunks_total counter");
        for (kind, n) in [("new", &self.chunks_new), ("reused", &self.chunks_reused)] {
            let _ = writeln!(
                out,
                "pv_save_chunks_total{{kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pv_packs_deleted_total Packs no kept generation used, deleted by pack collection.\n# TYPE pv_packs_deleted_total counter\npv_packs_deleted_total {}",
            self.packs_deleted.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pv_queue_depth Work waiting for a slot.\n# TYPE pv_queue_depth gauge"
        );
        let _ = writeln!(
            out,
            "pv_queue_depth{{queue=\"saves\"}} {}",
            self.saves_waiting.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "pv_queue_depth{{queue=\"pack_unpack\"}} {}",
            self.jobs_waiting.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new();
        h.observe(std::time::Duration::from_millis(200));
        h.observe(std::time::Duration::from_secs(3));
        let mut s = String::new();
        h.render("x", "help", &mut s);
        assert!(s.contains("x_bucket{le=\"0.25\"} 1"), "{s}");
        assert!(s.contains("x_bucket{le=\"5\"} 2"), "{s}");
        assert!(
            s.contains("x_bucket{le=\"+Inf\"} 2") && s.contains("x_count 2"),
            "{s}"
        );
    }
}
