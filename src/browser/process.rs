//! One running browser and the facts about stopping it so that everything reaches disk.
//!
//! Facts this relies on (see `shared/chromium-profile-facts.md`):
//! - `--password-store=basic` keeps cookies in the portable `v10` format;
//! - SIGTERM is NOT a clean stop (cookies and history of the last seconds are lost): stop with
//!   CDP `Browser.close`, else SIGINT, and SIGKILL the process group only after a deadline.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Child;

use super::cgroup::Group;
use super::mux::Mux;

/// Errors of starting or talking to Chromium.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No browser binary found.
    #[error("no Chromium binary found: set PV_CHROMIUM or install chromium")]
    NotFound,
    /// The sandbox cannot be built on this host.
    #[error("the browser sandbox is unavailable: {0}")]
    SandboxUnavailable(String),
    /// Spawning failed.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// Binary.
        binary: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The browser exited or never answered on its DevTools pipe.
    #[error("Chromium did not start: {0}")]
    Startup(String),
}

/// How to start a browser.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Window size.
    pub window: Option<(u32, u32)>,
    /// User agent override.
    pub user_agent: Option<String>,
    /// UI / Accept-Language locale.
    pub locale: Option<String>,
    /// IANA time zone (the browser's `TZ`).
    pub timezone: Option<String>,
    /// First page.
    pub start_url: Option<String>,
    /// Reopen the last session's tabs (and keep its session cookies).
    pub restore_last_session: bool,
    /// Headful on a virtual display of its own (sandboxed browsers only; the others stay
    /// headless): the person sees and uses Chromium's own UI through the live view.
    pub display: bool,
    /// Sound (with `display`): a sound server in the sandbox whose output the daemon reads.
    pub audio: bool,
    /// Send every request to a dead proxy (nothing reaches the network): the browsers the
    /// daemon drives itself.
    pub offline: bool,
    /// A tenant's zipped extension to load ([`super::extension`]).
    pub extension: Option<super::extension::Zip>,
}

/// The browser's version (`chromium --version` prints "Chromium 156.0.8078.114 ..."), or
/// `None` when it cannot be run or says nothing recognisable.
pub fn version(binary: &Path) -> Option<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.contains('.') && w.split('.').all(|p| p.parse::<u64>().is_ok()))
        .map(str::to_string)
}

/// The browser executable behind a distribution's wrapper script (Debian's
/// `/usr/bin/chromium` is a shell script that forks `uname`, `grep`, `findmnt`, `ls`… and
/// adds flags of its own before it execs `/usr/lib/chromium/chromium`: ~140 ms a start).
/// Anything that is not such a script is returned as it is.
pub fn unwrapped(binary: &Path) -> PathBuf {
    let script = std::fs::read(binary).is_ok_and(|b| b.starts_with(b"#!"));
    let name = binary.file_name().unwrap_or_default();
    let real = binary
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("lib").join(name).join(name));
    match real {
        Some(r) if script && r.is_file() => r,
        _ => binary.to_path_buf(),
    }
}

/// The first `name` on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
}

/// Finds the browser: `PV_CHROMIUM`, else `chromium`, `chromium-browser`, `google-chrome` on PATH.
///
/// # Errors
/// [`Error::NotFound`].
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::NotFound)
        };
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(on_path)
        .ok_or(Error::NotFound)
}

/// A running browser (in its sandbox), with the DevTools pipe to it.
pub struct Browser {
    pub(super) child: Child,
    /// Host pid of the sandbox's init (or of the browser without a sandbox) = its process group.
    pub(super) pid: u32,
    pub(super) mux: Arc<Mux>,
    /// Everything that lives as long as the browser: the egress proxy task, the cgroups,
    /// the run directory and the uid lease (released on drop).
    pub(super) resources: super::sandbox::Resources,
    /// The id of the tabs agent it loaded ([`super::tabs_ext`]), if it did.
    pub(super) tabs_extension: Option<String>,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("pid", &self.pid).finish()
    }
}

impl Drop for Browser {
    /// A browser dropped while running (its session's start was abandoned) is killed, with
    /// everything it started.
    fn drop(&mut self) {
        if !self.try_exited() {
            signal_group(self.pid, libc::SIGKILL);
            signal_pid(self.pid, libc::SIGKILL);
        }
    }
}

/// Sends `sig` to the process group `pgid`.
#[allow(unsafe_code)]
pub fn signal_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses a group.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Sends `sig` to one process.
#[allow(unsafe_code)]
pub fn signal_pid(pid: u32, sig: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 1 {
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    if pid <= 1 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// Whether `pid` is the browser (or sandbox) of `session` on `user_data_dir` (guards
/// against pid reuse after a daemon restart).
pub fn is_browser_of(pid: u32, session: &str, user_data_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let unsandboxed = format!("--user-data-dir={}", user_data_dir.display());
    let sandboxed =
        args.contains(&b"sandbox-init".as_slice()) && args.contains(&session.as_bytes());
    sandboxed || args.contains(&unsandboxed.as_bytes())
}

impl Browser {
    /// Process id (= process group id) of the browser's sandbox.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The socket of the browser's virtual display on the host (`None`: headless).
    pub fn display_socket(&self) -> Option<&Path> {
        self.resources.display.as_deref()
    }

    /// The browser's home on the host (its downloads are in `Downloads`); `None` unconfined.
    pub fn home_dir(&self) -> Option<PathBuf> {
        self.resources.run.as_ref().map(|r| r.join("home"))
    }

    /// The uid the sandboxed browser (and its display and sound servers) runs as.
    pub fn uid(&self) -> Option<u32> {
        self.resources.uid.as_ref().map(|u| u.1)
    }

    /// Where files uploaded for the page's file chooser go on the host (the browser sees
    /// them under [`super::UPLOADS`]), and the browser's uid that must own them; `None`
    /// unconfined.
    pub fn uploads_dir(&self) -> Option<(PathBuf, u32)> {
        Some((self.resources.run.as_ref()?.join("uploads"), self.uid()?))
    }

    /// The FIFO the browser's sound comes out of on the host (`None`: no sound).
    pub fn audio_fifo(&self) -> Option<&Path> {
        self.resources.audio.as_deref()
    }

    /// The id of the tabs agent the browser loaded ([`super::tabs_ext`]), if it did.
    pub fn tabs_extension(&self) -> Option<&str> {
        self.tabs_extension.as_deref()
    }

    /// The DevTools pipe (never handed to clients as such: they get a [`super::mux::Conn`]).
    pub fn mux(&self) -> &Arc<Mux> {
        &self.mux
    }

    /// Waits for the process to exit (a crash, or after [`Browser::close`]).
    pub async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.wait().await.ok()
    }

    /// Whether it has exited.
    pub fn try_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The cgroup of the browser, where the host gives one.
    pub fn group(&self) -> Option<&Group> {
        self.resources.group.as_ref()
    }

    /// Stops the browser so everything reaches disk: CDP `Browser.close`, then SIGINT, and
    /// SIGKILL of the whole group only after `deadline`. Returns whether it exited cleanly
    /// (without SIGKILL).
    pub async fn close(&mut self, deadline: Duration) -> bool {
        if self.try_exited() {
            self.kill_rest();
            return false;
        }
        let closed_by_cdp = self
            .mux
            .call(
                "Browser.close",
                serde_json::json!({}),
                Duration::from_secs(5),
            )
            .await
            .is_ok();
        if !closed_by_cdp {
            tracing::debug!(pid = self.pid, "CDP Browser.close failed; sending SIGINT");
            signal_group(self.pid, libc::SIGINT);
        }
        let clean = tokio::time::timeout(deadline, self.child.wait())
            .await
            .is_ok();
        if !clean {
            tracing::warn!(
                pid = self.pid,
                "browser did not exit in time; killing its process group"
            );
        }
        self.kill_rest();
        if !clean {
            let _ = self.child.wait().await;
        }
        clean
    }

    /// Renderer/utility processes that outlived the browser.
    fn kill_rest(&self) {
        signal_group(self.pid, libc::SIGKILL);
        if let Some(g) = &self.resources.group {
            g.kill_all();
        }
    }
}

/// Stops an orphaned browser found after a daemon crash: SIGINT to its group (a clean
/// stop for Chromium), then SIGKILL after `deadline`.
pub async fn stop_orphan(pid: u32, deadline: Duration) -> bool {
    if !alive(pid) {
        return false;
    }
    signal_group(pid, libc::SIGINT);
    let start = tokio::time::Instant::now();
    while alive(pid) && start.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clean = !alive(pid);
    signal_group(pid, libc::SIGKILL);
    signal_pid(pid, libc::SIGKILL);
    clean
}
