//! Progress reporting for long work (pack, upload, download, extract).
//!
//! Library code reports through the [`Progress`] trait; the CLI draws bars on a terminal,
//! the daemon and scripts use [`NoProgress`].

/// Receives progress of one phase at a time.
pub trait Progress: Send + Sync {
    /// A new phase named `label` with `total` units (bytes) begins.
    fn start(&self, label: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The phase ended.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
