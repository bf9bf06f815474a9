//! Files a person uploads for the page's file chooser (the `file_upload` role): the browser's
//! chooser is intercepted (never a dialog on the node), the viewer picks files on their own
//! machine, and the daemon writes them into the session's uploads directory — the daemon's,
//! mounted read-only in the sandbox at `/pv/uploads` — and hands those paths to the page.
//! Nothing of the node's filesystem is ever offered.
//!
//! The upload body frames the files: for each, the name's length (u32 big-endian), the name
//! (UTF-8), the size (u64 big-endian) and the bytes. No file at all cancels the chooser.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Largest upload (all files of one choice together).
pub const MAX_BYTES: usize = 32 << 20;
/// Most files in one choice.
pub const MAX_FILES: usize = 32;
/// Where the browser sees them.
pub const SANDBOX_DIR: &str = crate::browser::UPLOADS;

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not the framing described above.
    #[error("upload: {0}")]
    Malformed(&'static str),
    /// Writing failed.
    #[error("upload: {0}")]
    Io(#[from] std::io::Error),
}

/// One session's uploads directory.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    uid: u32,
    seq: AtomicU64,
}

/// A file name as the page will see it: its last component, without controls.
pub fn clean_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    (!clean.is_empty() && clean != "." && clean != "..").then_some(clean)
}

/// The files of an upload body: (name, bytes).
///
/// # Errors
/// [`Error::Malformed`].
pub fn parse(mut body: &[u8]) -> Result<Vec<(String, &[u8])>, Error> {
    fn take<'a>(n: usize, body: &mut &'a [u8]) -> Result<&'a [u8], Error> {
        if body.len() < n {
            return Err(Error::Malformed("the body ends inside a file"));
        }
        let (a, b) = body.split_at(n);
        *body = b;
        Ok(a)
    }
    let mut out = Vec::new();
    while !body.is_empty() {
        if out.len() == MAX_FILES {
            return Err(Error::Malformed("too many files"));
        }
        let len = u32::from_be_bytes(take(4, &mut body)?.try_into().expect("4 bytes")) as usize;
        if len > 1024 {
            return Err(Error::Malformed("a file name is too long"));
        }
        let name = std::str::from_utf8(take(len, &mut body)?)
            .map_err(|_| Error::Malformed("a file name is not UTF-8"))?;
        let name = clean_name(name).ok_or(Error::Malformed("a file has no name"))?;
        let size = u64::from_be_bytes(take(8, &mut body)?.try_into().expect("8 bytes"));
        let size = usize::try_from(size).map_err(|_| Error::Malformed("a file is too large"))?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Error::Malformed("two files of one name"));
        }
        out.push((name, take(size, &mut body)?));
    }
    Ok(out)
}

impl Uploads {
    /// Uploads into `dir` (on the host), for the browser's `uid`.
    pub fn new(dir: &Path, uid: u32) -> Uploads {
        Uploads {
            dir: dir.to_path_buf(),
            uid,
            seq: AtomicU64::new(0),
        }
    }

    /// Writes one choice's files (each choice in a directory of its own, so names never
    /// collide); the paths the browser sees. Blocking.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn store(&self, files: &[(String, &[u8])]) -> Result<Vec<String>, Error> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let dir = self.dir.join(n.to_string());
        crate::fsutil::create_private_dir(&dir)?;
        let written = self.write_choice(&dir, n, files);
        if written.is_err() {
            // Nothing of a choice that failed is left (a full disk, say).
            let _ = std::fs::remove_dir_all(&dir);
        }
        written
    }

    fn write_choice(
        &self,
        dir: &Path,
        n: u64,
        files: &[(String, &[u8])],
    ) -> Result<Vec<String>, Error> {
        std::os::unix::fs::lchown(dir, Some(self.uid), Some(self.uid))?;
        let mut paths = Vec::new();
        for (name, bytes) in files {
            let p = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)?;
            f.write_all(bytes)?;
            std::os::unix::fs::lchown(&p, Some(self.uid), Some(self.uid))?;
            paths.push(format!("{SANDBOX_DIR}/{n}/{name}"));
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, d) in files {
            b.extend_from_slice(&(n.len() as u32).to_be_bytes());
            b.extend_from_slice(n.as_bytes());
            b.extend_from_slice(&(d.len() as u64).to_be_bytes());
            b.extend_from_slice(d);
        }
        b
    }

    #[test]
    fn framed_files_parse_and_hostile_names_are_cut_to_their_last_part() {
        let body = frame(&[
            ("a.txt", b"hello"),
            ("../../etc/passwd", b"x"),
            ("C:\\x\\y.png", b""),
        ]);
        let files = parse(&body).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(names, ["a.txt", "passwd", "y.png"]);
        assert_eq!(files[0].1, b"hello");
        assert!(parse(&[]).unwrap().is_empty());
        assert!(parse(&body[..body.len() - 1]).is_err());
        assert!(parse(&frame(&[("..", b"x")])).is_err());
        let t = tempfile::tempdir().unwrap();
        let up = Uploads::new(t.path(), nix_uid());
        let paths = up.store(&files).unwrap();
        assert_eq!(paths[1], format!("{SANDBOX_DIR}/1/passwd"));
        assert_eq!(std::fs::read(t.path().join("1/a.txt")).unwrap(), b"hello");
    }

    #[allow(unsafe_code)]
    fn nix_uid() -> u32 {
        // SAFETY: geteuid(2) cannot fail.
        unsafe { libc::geteuid() }
    }

    #[test]
    fn two_files_of_one_name_are_refused_and_a_failed_choice_leaves_nothing() {
        let body = frame(&[("a.txt", b"1"), ("b.txt", b"2"), ("a.txt", b"3")]);
        assert!(matches!(parse(&body), Err(Error::Malformed(_))));
        let t = tempfile::tempdir().unwrap();
        let u = Uploads::new(t.path(), nix_uid());
        // The second name is longer than a file name may be: the choice fails half way.
        let long = "é".repeat(200);
        let files: Vec<(String, &[u8])> = vec![("ok.txt".into(), b"1"), (long, b"2")];
        assert!(u.store(&files).is_err());
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            0,
            "left behind"
        );
        let ok: Vec<(String, &[u8])> = vec![("ok.txt".into(), b"1")];
        assert_eq!(
            u.store(&ok).unwrap(),
            vec![format!("{SANDBOX_DIR}/2/ok.txt")]
        );
    }
}
