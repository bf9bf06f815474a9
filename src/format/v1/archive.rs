//! Packing a profile directory into a ZIP stream (`pack.rs`) and unpacking one, safely
//! (`unpack.rs`); this file holds what both share (errors, limits on sizes).
//!
//! Packing walks the directory in sorted order, keeps regular files and directories that
//! the [`Excludes`] do not leave out, and compresses small files on every core in parallel
//! (in a bounded window, so memory does not grow with profile size); large files are
//! streamed through zstd's own multi-threaded encoder. Incompressible data is stored.
//!
//! Unpacking treats the archive as hostile: every entry is validated before anything is
//! written (enclosed relative UTF-8 names only; no symlinks, devices, duplicates or
//! file/directory clashes; limits on count, per-file size, total size and compression
//! ratio), then the tree is extracted into a private staging directory beside the target
//! and renamed into place. On any error the staging directory is removed.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::zipw::{Method, ZipWriter};
use crate::fsutil;
use crate::profile::exclude::Excludes;
use crate::progress::Progress;

/// Files at most this large are compressed in memory by the worker pool.
const SMALL_FILE: u64 = 1024 * 1024;
/// How many entries workers may run ahead of the writer.
const WINDOW_PER_THREAD: usize = 4;

/// Errors of packing and unpacking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// File system error at a path.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Writing the archive stream failed.
    #[error("writing archive: {0}")]
    Write(io::Error),
    /// The source is not a directory.
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    /// The restore target exists and is not an empty directory.
    #[error("restore target {0} exists and is not an empty directory; restore into a new or empty directory")]
    TargetNotEmpty(PathBuf),
    /// The archive is not a readable ZIP.
    #[error("archive is corrupt: {0}")]
    Corrupt(String),
    /// An entry name that could escape the target or is otherwise unsafe.
    #[error("unsafe entry name {name:?}: {reason}")]
    UnsafeName {
        /// The name (lossy).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A symbolic link entry.
    #[error("entry {0:?} is a symbolic link; profiles never contain links")]
    Symlink(String),
    /// A device, fifo, socket or other special entry.
    #[error("entry {name:?} is a special file (mode {mode:o})")]
    SpecialFile {
        /// Entry name.
        name: String,
        /// Unix mode.
        mode: u32,
    },
    /// The same path twice, or a file where a directory is needed.
    #[error("entry {0:?} appears twice or clashes with a directory of the same name")]
    Duplicate(String),
    /// An encrypted ZIP entry.
    #[error("entry {0:?} uses ZIP encryption, which profile archives never do")]
    Encrypted(String),
    /// A compression method this reader does not accept.
    #[error("entry {name:?} uses unsupported compression {method}")]
    Unsupported {
        /// Entry name.
        name: String,
        /// Method.
        method: String,
    },
    /// A profile to save holds what a restore of it would refuse (one of the limits
    /// below): nothing is saved.
    #[error("the profile cannot be saved as it is: {0} (a restore would refuse it)")]
    OverLimits(Box<Error>),
    /// Too many entries.
    #[error("archive has {count} entries, over the limit of {limit} (limits.max_files)")]
    TooManyFiles {
        /// Entries.
        count: u64,
        /// Limit.
        limit: u64,
    },
    /// One file over the size limit.
    #[error("entry {name:?} is {size} bytes, over the limit of {limit} (limits.max_file_size)")]
    FileTooLarge {
        /// Entry name.
        name: String,
        /// Declared size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// All files together over the limit.
    #[error("archive expands to {total} bytes, over the limit of {limit} (limits.max_total_size)")]
    TotalTooLarge {
        /// Declared total.
        total: u64,
        /// Limit.
        limit: u64,
    },
    /// Suspicious compression ratio (zip bomb).
    #[error("entry {name:?} expands {ratio}x, over the limit of {limit}x (limits.max_ratio): possible zip bomb")]
    RatioTooHigh {
        /// Entry name.
        name: String,
        /// Ratio.
        ratio: u64,
        /// Limit.
        limit: u64,
    },
    /// Data longer or shorter than declared, or a CRC mismatch.
    #[error("entry {name:?} is damaged: {reason}")]
    Damaged {
        /// Entry name.
        name: String,
        /// What.
        reason: String,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

mod pack;
mod unpack;

pub use pack::{pack, Compression, PackOptions, PackStats};
pub(crate) use pack::{walk_profile, Entry, Kind};
pub(crate) use unpack::validate_name;
pub use unpack::{
    check, check_from, check_target, staging_path, unpack, unpack_from, Limits, UnpackStats,
};

#[cfg(test)]
mod tests;
