//! Progress reporting for long work (pack, upload, download, extract).
//!
//! Library code reports through the [`Progress`] trait; the CLI draws bars on a terminal,
//! the daemon and scripts use [`NoProgress`]. A save or restore also reports the busy time of
//! each of its [`Step`]s (summed over the threads doing it), which `profile-vault bench` prints
//! so a regression shows its step.

use std::time::Duration;

/// A step of a format 2 save or restore whose busy time is reported to [`Progress::spent`].
/// Steps run at once on several threads: their times overlap and add up to more than the
/// wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// Save: listing the profile and reading every file's metadata.
    Walk,
    /// Save: reading files and cutting them into chunks.
    Read,
    /// Save and restore: computing chunk ids (HMAC-SHA256); on restore, checking them.
    Hash,
    /// Save: zstd.
    Compress,
    /// Save: AES-256-GCM sealing of chunks.
    Encrypt,
    /// Save: appending sealed chunks to packs.
    Pack,
    /// Save: storing packs (each request's time, requests overlapping).
    Upload,
    /// Save: the manifest (and contents report) encoded, sealed and spooled.
    Manifest,
    /// Restore: ranged reads of packs (each request's time, requests overlapping).
    Fetch,
    /// Restore: AES-256-GCM opening of chunks.
    Decrypt,
    /// Restore: zstd.
    Decompress,
    /// Restore: creating the staging tree's directories and files.
    Create,
    /// Restore: writing chunks into staging files.
    Write,
    /// Restore: setting modification times and renaming the tree into place.
    Finish,
}

impl Step {
    /// Every step, in the order a save then a restore runs them.
    pub const ALL: [Step; 14] = [
        Step::Walk,
        Step::Read,
        Step::Hash,
        Step::Compress,
        Step::Encrypt,
        Step::Pack,
        Step::Upload,
        Step::Manifest,
        Step::Fetch,
        Step::Decrypt,
        Step::Decompress,
        Step::Create,
        Step::Write,
        Step::Finish,
    ];

    /// Its name in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Step::Walk => "walk",
            Step::Read => "read",
            Step::Hash => "hash",
            Step::Compress => "compress",
            Step::Encrypt => "encrypt",
            Step::Pack => "pack",
            Step::Upload => "upload",
            Step::Manifest => "manifest",
            Step::Fetch => "fetch",
            Step::Decrypt => "decrypt",
            Step::Decompress => "decompress",
            Step::Create => "create",
            Step::Write => "write",
            Step::Finish => "finish",
        }
    }
}

/// Receives progress of one phase at a time.
pub trait Progress: Send + Sync {
    /// A new phase named `label` with `total` units (bytes) begins.
    fn start(&self, label: &str, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// The phase ended.
    fn finish(&self);
    /// A thread spent `took` on `step` (called often: keep it cheap). Ignored by default.
    fn spent(&self, step: Step, took: Duration) {
        let _ = (step, took);
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}
