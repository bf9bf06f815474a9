//! The descriptors a sandbox is handed, and what the child does between fork and exec.
//! Everything here is a thin, documented wrapper over a system call; and the init binary
//! handed to every sandbox ([`InitBinary`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

pub(super) fn open_path(path: &Path, dir: bool) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    high_fd(OwnedFd::from(f))
}

/// Moves a descriptor to >= 100 so the child's `dup2`s onto 3, 4, 5… never clobber a source.
#[allow(unsafe_code)]
pub(super) fn high_fd(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) returns a new descriptor we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A pipe (read end, write end), both close-on-exec and above 100.
#[allow(unsafe_code)]
pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high_fd(r)?, high_fd(w)?))
}

/// Between fork and exec: join the cgroups (write `0` = this process) and put the
/// inherited descriptors in place. Only async-signal-safe calls.
#[allow(unsafe_code)]
pub(super) fn pre_exec(
    cmd: &mut tokio::process::Command,
    cgroups: Vec<RawFd>,
    fds: Vec<(RawFd, RawFd)>,
) {
    // SAFETY: the closure only calls write(2), dup2(2), setsid(2) and umask(2) on values prepared
    // before fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &cgroups {
                if libc::write(*fd, b"0\n".as_ptr().cast(), 2) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (from, to) in &fds {
                if libc::dup2(*from, *to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The directories bubblewrap makes for its mount points must be traversable by
            // the browser's uid; the init sets 077 again before the browser runs.
            libc::umask(0o022);
            Ok(())
        });
    }
}

/// bubblewrap writes `{"child-pid": N, …}` (the host pid of the sandbox's init) to its info fd.
pub(super) async fn read_child_pid(fd: OwnedFd) -> Option<u32> {
    let mut r = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 512];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if serde_json::from_slice::<serde_json::Value>(&buf).is_ok() {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&buf).ok()?;
    v["child-pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// This binary (the sandbox's init), opened at start, and a private copy of it once the file
/// was replaced under the running daemon (an upgrade): bubblewrap binds a descriptor through
/// its `/proc/self/fd` path, and a deleted file has none to bind.
#[derive(Debug)]
pub(super) struct InitBinary {
    opened: Result<std::fs::File, String>,
    copy: std::sync::Mutex<Option<std::fs::File>>,
}

impl InitBinary {
    /// Opens this binary; copies left in `dir` by daemons no longer running are removed.
    pub(super) fn open(dir: &Path) -> InitBinary {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(".init-"));
            let pid = pid.map(|p| p.trim_end_matches(".tmp"));
            if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        InitBinary {
            opened: std::fs::File::open("/proc/self/exe")
                .map_err(|e| format!("cannot open this binary (/proc/self/exe): {e}")),
            copy: std::sync::Mutex::new(None),
        }
    }

    /// A descriptor of the binary bubblewrap can bind (above 100, close-on-exec): the file
    /// opened at start while it is still linked, else a private copy of it in `dir`.
    pub(super) fn descriptor(&self, dir: &Path) -> Result<OwnedFd, String> {
        use std::os::unix::fs::MetadataExt;
        let exe = self.opened.as_ref().map_err(Clone::clone)?;
        let linked = |f: &std::fs::File| f.metadata().is_ok_and(|m| m.nlink() > 0);
        let why = |e: std::io::Error| format!("this binary: {e}");
        if linked(exe) {
            return high_fd(OwnedFd::from(exe.try_clone().map_err(why)?)).map_err(why);
        }
        let mut copy = self.copy.lock().expect("init copy");
        if !copy.as_ref().is_some_and(linked) {
            tracing::info!(
                "this binary was replaced on disk: sandboxes run a private copy of the one running"
            );
            *copy =
                Some(private_copy(exe, dir).map_err(|e| format!("a copy of this binary: {e}"))?);
        }
        let f = copy
            .as_ref()
            .expect("made above")
            .try_clone()
            .map_err(why)?;
        high_fd(OwnedFd::from(f)).map_err(why)
    }
}

/// Copies the (deleted) file `exe` to a new executable file in `dir`, through a temporary
/// name, and opens it.
fn private_copy(exe: &std::fs::File, dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(".init-{}", std::process::id()));
    let tmp = dir.join(format!(".init-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    // A new open file description, read from its start (the one opened at start is shared).
    let mut from = std::fs::File::open(format!("/proc/self/fd/{}", exe.as_raw_fd()))?;
    let mut to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&tmp)?;
    std::io::copy(&mut from, &mut to)?;
    drop(to);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&path)
}
