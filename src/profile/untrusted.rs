//! A profile directory as the browser left it, read without trusting it: the browser (or
//! code that took it over) could have put links, FIFOs or devices anywhere in it. Every
//! path is resolved from the tree's own directory handle with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`), so no link is followed
//! at any step and nothing above the root is reached; files are opened `O_NONBLOCK` and
//! must be regular (a FIFO cannot make a reader wait, a device cannot feed it forever);
//! directories are listed through the handle that was checked, not by path again.

use std::ffi::OsString;
use std::fs::{File, FileType};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A directory tree opened for untrusting reads.
pub struct Tree {
    root: OwnedFd,
}

impl Tree {
    /// Opens the directory at `root`. The path to it is the caller's (a link in it is
    /// followed); what is beneath it is not trusted.
    ///
    /// # Errors
    /// `root` is missing or not a directory.
    #[allow(unsafe_code)]
    pub fn open(root: &Path) -> io::Result<Tree> {
        let c = std::ffi::CString::new(root.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        Ok(Tree {
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Resolves `rel` beneath the root with `flags`, following no link.
    #[allow(unsafe_code)]
    fn at(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        if rel.is_absolute() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let c = std::ffi::CString::new(rel.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS,
        };
        loop {
            // SAFETY: `how` and `c` outlive the call; the size is the struct's own.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    std::mem::size_of::<OpenHow>(),
                )
            };
            if fd >= 0 {
                // SAFETY: the kernel returned a new descriptor nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) });
            }
            let e = io::Error::last_os_error();
            // EAGAIN: a rename raced the lookup (RESOLVE_* retries are the caller's).
            if e.raw_os_error() != Some(libc::EAGAIN) && e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// The directory `rel` beneath the root, as a tree of its own.
    ///
    /// # Errors
    /// Missing, reached through a link, or not a directory.
    pub fn dir(&self, rel: &Path) -> io::Result<Tree> {
        Ok(Tree {
            root: self.at(rel, libc::O_PATH | libc::O_DIRECTORY)?,
        })
    }

    /// Opens the regular file `rel` for reading.
    ///
    /// # Errors
    /// Missing, reached through a link, or not a regular file (`InvalidInput`).
    pub fn file(&self, rel: &Path) -> io::Result<File> {
        let f = File::from(self.at(rel, libc::O_RDONLY | libc::O_NONBLOCK)?);
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(f)
    }

    /// The whole regular file `rel`, when it holds at most `max` bytes.
    ///
    /// # Errors
    /// As [`Tree::file`], or larger than `max` (`InvalidData`).
    pub fn read(&self, rel: &Path, max: u64) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut b = Vec::new();
        self.file(rel)?.take(max + 1).read_to_end(&mut b)?;
        if b.len() as u64 > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {max} bytes"),
            ));
        }
        Ok(b)
    }

    /// What `rel` is (a link in its last part is a link).
    ///
    /// # Errors
    /// Missing (`NotFound`), a link on the way, or unreadable.
    pub fn kind(&self, rel: &Path) -> io::Result<FileType> {
        let fd = File::from(self.at(rel, libc::O_PATH)?);
        Ok(fd.metadata()?.file_type())
    }

    /// Whether `rel` is a directory reached without links.
    pub fn is_dir(&self, rel: &Path) -> bool {
        self.kind(rel).is_ok_and(|t| t.is_dir())
    }

    /// The entries of the directory `rel`: names and types (of the entries themselves: a
    /// link is a link), listed through the descriptor that was resolved.
    ///
    /// # Errors
    /// Missing, reached through a link, not a directory, or unreadable.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<(OsString, FileType)>> {
        let dir = self.at(rel, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // The descriptor's own entry in /proc names exactly the directory checked above.
        let mut out = Vec::new();
        for e in std::fs::read_dir(fd_path(&dir))? {
            let e = e?;
            out.push((e.file_name(), e.file_type()?));
        }
        Ok(out)
    }
}

/// Opens the file at `path` for reading when it is a regular file, its last part not a
/// link (for a path a walk of the tree already found, with `lstat`, to be a file: what
/// changed since is refused rather than followed, and a FIFO does not block).
///
/// # Errors
/// Missing, a link, or not a regular file (`InvalidInput`).
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// The `/proc/self/fd` path of an open descriptor: opening it reaches that very file, for
/// libraries that take only paths (SQLite).
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    #[test]
    #[allow(unsafe_code)]
    fn links_fifos_and_escapes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"key").unwrap();
        let root = t.path().join("p");
        std::fs::create_dir_all(root.join("Default")).unwrap();
        std::fs::write(root.join("Default/History"), b"ok").unwrap();
        symlink(
            outside.path().join("secret"),
            root.join("Default/Bookmarks"),
        )
        .unwrap();
        symlink(outside.path(), root.join("Linked")).unwrap();
        let fifo =
            std::ffi::CString::new(root.join("Default/Fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

        let tree = Tree::open(&root).unwrap();
        let mut s = String::new();
        tree.file(Path::new("Default/History"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "ok");
        // A link in the last part, a link on the way, a FIFO (without blocking), an escape.
        assert!(tree.file(Path::new("Default/Bookmarks")).is_err());
        assert!(tree.file(Path::new("Linked/secret")).is_err());
        assert!(tree.read_dir(Path::new("Linked")).is_err());
        assert!(!tree.is_dir(Path::new("Linked")));
        let e = tree.file(Path::new("Default/Fifo")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(tree.file(Path::new("../p/Default/History")).is_err());
        assert!(tree.file(&root.join("Default/History")).is_err());
        // The listing shows links as links.
        let mut names: Vec<_> = tree
            .read_dir(Path::new(""))
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n.into_string().unwrap(), t.is_symlink()))
            .collect();
        names.sort();
        assert_eq!(names, [("Default".into(), false), ("Linked".into(), true)]);
        assert_eq!(tree.read(Path::new("Default/History"), 2).unwrap(), b"ok");
        assert!(tree.read(Path::new("Default/History"), 1).is_err());
        assert!(open_regular(&root.join("Default/History")).is_ok());
        assert!(open_regular(&root.join("Default/Bookmarks")).is_err());
        assert!(open_regular(&root.join("Default/Fifo")).is_err());
        // The path to the root is the caller's: a link there is followed. A directory
        // beneath it is opened as a tree of its own only without links.
        symlink(&root, t.path().join("alias")).unwrap();
        assert!(Tree::open(&t.path().join("alias"))
            .unwrap()
            .kind(Path::new("Default/History"))
            .unwrap()
            .is_file());
        let sub = tree.dir(Path::new("Default")).unwrap();
        assert!(sub.kind(Path::new("History")).unwrap().is_file());
        assert!(tree.dir(Path::new("Linked")).is_err());
        assert_eq!(
            tree.kind(Path::new("Missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(tree.kind(Path::new("Linked")).unwrap().is_symlink());
        assert!(tree.kind(Path::new("Linked/secret")).is_err());
    }
}
