//! One Chromium process: started so its profile is portable and its DevTools endpoint is
//! private, and stopped so that everything reaches disk.
//!
//! Facts this relies on (see `shared/chromium-profile-facts.md`):
//! - `--password-store=basic` keeps cookies in the portable `v10` format;
//! - `--remote-debugging-port=0` picks a free port and writes it to `DevToolsActivePort`;
//! - SIGTERM is NOT a clean stop (cookies and history of the last seconds are lost): stop with
//!   CDP `Browser.close`, else SIGINT, and SIGKILL the process group only after a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::process::{Child, Command};

/// Errors of starting or talking to Chromium.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No browser binary found.
    #[error("no Chromium binary found: set PV_CHROMIUM or install chromium")]
    NotFound,
    /// Spawning failed.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// Binary.
        binary: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The browser exited or never opened its DevTools port.
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
    /// Send every request to a dead proxy (nothing reaches the network): the browsers the
    /// daemon drives itself.
    pub offline: bool,
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
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let c = dir.join(name);
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    Err(Error::NotFound)
}

/// A running browser.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    pid: u32,
    /// DevTools port on 127.0.0.1.
    pub port: u16,
    /// Browser-level DevTools WebSocket path (`/devtools/browser/<uuid>`).
    pub ws_path: String,
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

/// Whether `pid` is a browser started on `user_data_dir` (guards against pid reuse after a
/// daemon restart).
pub fn is_browser_on(pid: u32, user_data_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = format!("--user-data-dir={}", user_data_dir.display());
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == needle.as_bytes())
}

impl Browser {
    /// Starts Chromium on `user_data_dir` and waits for its DevTools endpoint.
    ///
    /// # Errors
    /// Spawn failure, early exit, or no DevTools port within `deadline`.
    pub async fn launch(
        binary: &Path,
        user_data_dir: &Path,
        opts: &LaunchOptions,
        deadline: Duration,
    ) -> Result<Self, Error> {
        let _ = std::fs::remove_file(user_data_dir.join("DevToolsActivePort"));
        let mut cmd = Command::new(binary);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-breakpad",
            "--password-store=basic",
            "--use-mock-keychain",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ]);
        cmd.arg(format!("--user-data-dir={}", user_data_dir.display()));
        if let Some((w, h)) = opts.window {
            cmd.arg(format!("--window-size={w},{h}"));
        }
        if let Some(ua) = &opts.user_agent {
            cmd.arg(format!("--user-agent={ua}"));
        }
        if let Some(l) = &opts.locale {
            cmd.arg(format!("--lang={l}"));
            // Headless Chromium takes navigator.language and Accept-Language from here.
            cmd.arg(format!("--accept-lang={l}"));
            cmd.env("LANGUAGE", l);
        }
        if opts.offline {
            cmd.args([
                "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
            ]);
        }
        if let Some(tz) = &opts.timezone {
            cmd.env("TZ", tz);
        }
        if opts.restore_last_session {
            cmd.arg("--restore-last-session");
        }
        cmd.arg(opts.start_url.as_deref().unwrap_or("about:blank"));
        cmd.process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| Error::Spawn {
            binary: binary.into(),
            source: e,
        })?;
        let pid = child.id().unwrap_or(0);
        let file = user_data_dir.join("DevToolsActivePort");
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(text) = tokio::fs::read_to_string(&file).await {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (
                    lines.next().and_then(|p| p.trim().parse::<u16>().ok()),
                    lines.next(),
                ) {
                    return Ok(Browser {
                        child,
                        pid,
                        port,
                        ws_path: path.trim().to_string(),
                    });
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Startup(format!(
                    "exited with {status} before opening DevTools"
                )));
            }
            if start.elapsed() > deadline {
                signal_group(pid, libc::SIGKILL);
                let _ = child.wait().await;
                return Err(Error::Startup(format!(
                    "no DevTools port after {deadline:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Process id (= process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The browser's DevTools WebSocket URL (loopback only; never handed to clients).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, self.ws_path)
    }

    /// Waits for the process to exit (a crash, or after [`Browser::close`]).
    pub async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.wait().await.ok()
    }

    /// Whether it has exited.
    pub fn try_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Stops the browser so everything reaches disk: CDP `Browser.close`, then SIGINT, and
    /// SIGKILL of the whole group only after `deadline`. Returns whether it exited cleanly
    /// (without SIGKILL).
    pub async fn close(&mut self, deadline: Duration) -> bool {
        if self.try_exited() {
            signal_group(self.pid, libc::SIGKILL); // leftover helpers
            return false;
        }
        let closed_by_cdp = tokio::time::timeout(Duration::from_secs(5), cdp_close(&self.ws_url()))
            .await
            .is_ok_and(|r| r);
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
        // Renderer/utility processes that outlived the browser.
        signal_group(self.pid, libc::SIGKILL);
        if !clean {
            let _ = self.child.wait().await;
        }
        clean
    }
}

/// Sends `Browser.close` over the DevTools WebSocket.
async fn cdp_close(url: &str) -> bool {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return false;
    };
    let msg = r#"{"id":1,"method":"Browser.close"}"#;
    if ws
        .send(tokio_tungstenite::tungstenite::Message::Text(msg.into()))
        .await
        .is_err()
    {
        return false;
    }
    // The browser answers, then drops the connection as it exits.
    while let Some(m) = ws.next().await {
        if m.is_err() {
            break;
        }
    }
    true
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
    clean
}
