//! Small filesystem helpers shared by every module that writes to disk: owner-only
//! creation (files 0600, directories 0700) and durable replacement.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates a directory (and parents) with mode 0700.
///
/// # Errors
/// I/O errors other than "already exists".
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Creates a new file with mode 0600; fails if it exists.
///
/// # Errors
/// I/O errors, including `AlreadyExists`.
pub fn create_private_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes a new 0600 file with `data`, synced; fails if it exists.
///
/// # Errors
/// I/O errors, including `AlreadyExists`.
pub fn write_private_new(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = create_private_new(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Atomically replaces `path` with `data` (0600 temp file in the same dir, fsync, rename).
///
/// # Errors
/// I/O errors.
pub fn write_private_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".pv-tmp-{}", uuid::Uuid::new_v4().simple()));
    let res = (|| {
        write_private_new(&tmp, data)?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// fsyncs a directory so a rename in it is durable.
///
/// # Errors
/// I/O errors.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs `f` with a path to the Unix socket at `path` that fits a socket address (107 bytes;
/// a data directory may be deeper): `path` itself when short, else the same file through
/// this process's descriptor of its directory (`/proc/self/fd/N/name`).
///
/// # Errors
/// The directory cannot be opened, or what `f` returns.
pub fn with_socket_path<T>(
    path: &Path,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    if path.as_os_str().len() < 100 {
        return f(path);
    }
    let dir = std::fs::File::open(path.parent().unwrap_or(Path::new("/")))?;
    let short = Path::new("/proc/self/fd")
        .join(std::os::fd::AsRawFd::as_raw_fd(&dir).to_string())
        .join(path.file_name().unwrap_or_default());
    f(&short)
}
