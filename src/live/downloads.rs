//! What the browser downloaded, offered to the person: files land in the session's own
//! directory (`<run>/home/Downloads` on the host, the browser's only download folder by
//! policy), the live view lists the finished ones to viewers who may control the browser, and
//! `GET <base_url>/downloads/{name}` hands one over.
//!
//! The folder is the browser's to shape — it can put symlinks, FIFOs or a symlinked folder
//! there — so every file is opened relative to the home directory (which the browser cannot
//! replace), without following a symlink at any step, and must be a regular file.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Largest number of files listed.
const MAX_LISTED: usize = 200;

/// One session's downloads.
#[derive(Debug, Clone)]
pub struct Downloads {
    home: PathBuf,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// File name.
    pub name: String,
    /// Size, bytes.
    pub size: u64,
}

/// Whether `name` can be a file of the folder (no path, nothing hidden or half-written).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0')
        && !name.ends_with(".crdownload")
}

#[allow(unsafe_code)]
fn openat(dir: &OwnedFd, name: &str, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(name).map_err(|_| std::io::Error::other("NUL in a name"))?;
    // SAFETY: openat(2) reads the NUL-terminated name we own; the result is a fresh fd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor we just opened and own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Downloads {
    /// The downloads of the browser whose home (on the host) is `home`.
    pub fn new(home: &Path) -> Downloads {
        Downloads {
            home: home.to_path_buf(),
        }
    }

    fn folder(&self) -> std::io::Result<OwnedFd> {
        let home: OwnedFd = File::open(&self.home)?.into();
        openat(&home, "Downloads", libc::O_RDONLY | libc::O_DIRECTORY)
    }

    /// The finished downloads (regular files), by name. Blocking.
    pub fn list(&self) -> Vec<Item> {
        let Ok(dir) = self.folder() else {
            return Vec::new();
        };
        let path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        ));
        let mut out: Vec<Item> = std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let m = e.metadata().ok()?; // of the entry itself: symlinks are not followed
                (valid_name(&name) && m.file_type().is_file()).then_some(Item {
                    name,
                    size: m.len(),
                })
            })
            .take(MAX_LISTED)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Opens the finished download `name` for reading; its size. Blocking.
    ///
    /// # Errors
    /// `NotFound` for a bad name, a missing file, or anything but a regular file.
    pub fn open(&self, name: &str) -> std::io::Result<(File, u64)> {
        let not_found = || std::io::Error::from(std::io::ErrorKind::NotFound);
        if !valid_name(name) {
            return Err(not_found());
        }
        let dir = self.folder().map_err(|_| not_found())?;
        // O_NONBLOCK: a FIFO planted there must not hang the open.
        let f = File::from(
            openat(&dir, name, libc::O_RDONLY | libc::O_NONBLOCK).map_err(|_| not_found())?,
        );
        let m = f.metadata()?;
        if !m.file_type().is_file() {
            return Err(not_found());
        }
        Ok((f, m.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_finished_files_inside_the_folder_are_offered() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("home");
        let dl = home.join("Downloads");
        std::fs::create_dir_all(&dl).unwrap();
        std::fs::write(dl.join("report.pdf"), b"pdf").unwrap();
        std::fs::write(dl.join("big.iso.crdownload"), b"half").unwrap();
        std::fs::write(t.path().join("secret"), b"key").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), dl.join("link.txt")).unwrap();
        std::fs::create_dir(dl.join("sub")).unwrap();
        let d = Downloads::new(&home);
        assert_eq!(
            d.list(),
            vec![Item {
                name: "report.pdf".into(),
                size: 3
            }]
        );
        assert_eq!(d.open("report.pdf").unwrap().1, 3);
        for bad in [
            "link.txt",
            "sub",
            "../secret",
            "big.iso.crdownload",
            "",
            ".hidden",
        ] {
            assert!(d.open(bad).is_err(), "{bad}");
        }
        // The folder itself replaced by a symlink: nothing is offered or opened.
        std::fs::remove_dir_all(&dl).unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::fs::write(t.path().join("elsewhere/x.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), &dl).unwrap();
        assert!(d.list().is_empty());
        assert!(d.open("x.txt").is_err());
    }
}
