//! The wall around every browser: each one runs in a bubblewrap sandbox of its own.
//!
//! - **Identity**: an unprivileged uid (one per browser from `sandbox.uid_base` when the
//!   daemon is root; the daemon's own uid otherwise), a cleared environment with an
//!   allow-list, no new privileges, and Chromium's own sandbox on (no `--no-sandbox`).
//! - **Files**: a new root with the system's read-only runtime (`/usr` and a few files of
//!   `/etc`), the browser's own profile directory, a private home (downloads) and `/tmp`.
//!   Everything is handed to bubblewrap as open file descriptors, so the data directory
//!   (keys, API keys, store, records, other browsers) has no path inside at all.
//! - **Processes**: its own PID namespace whose init is `profile-vault sandbox-init`.
//! - **Network**: its own network namespace with only a loopback; the one way out is the
//!   SOCKS5 proxy of [`super::egress`] (public addresses only).
//! - **DevTools**: `--remote-debugging-pipe` — no port exists that anything could reach.
//! - **Policy**: Chromium managed policies (`file://`, `chrome://`, `devtools://`,
//!   `view-source:` and `javascript:` blocked, DevTools UI off, downloads into the home).
//! - **Resources**: memory, process-count and CPU limits ([`super::cgroup`]).
//!
//! Fail closed: when bubblewrap, user namespaces or cgroups are missing, [`Runtime::status`]
//! says why and every launch is refused, unless `browser.unsafe_no_sandbox` is set.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cgroup::{Group, Hierarchy, Limits};
use super::egress::Policy;
use super::fds::{open_path, pipe, pre_exec, read_child_pid, InitBinary};
use super::layout::{bwrap_args, chromium_args, prepare_run_dir, Binds, EGRESS_DIR, INIT};
use super::mux::Mux;
use super::process::{Browser, Error, LaunchOptions};
use super::stderr::{told, Stderr};

/// The virtual display's size when the launch names no window size.
pub const DEFAULT_SCREEN: (u32, u32) = (1280, 720);

/// How this node runs its browsers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Chromium binary.
    pub binary: PathBuf,
    /// `browser.unsafe_no_sandbox`: run browsers unconfined (a warning at start, in
    /// `/readyz` and `/metrics`).
    pub unsafe_no_sandbox: bool,
    /// Where per-browser run directories live (`<data_dir>/run`).
    pub run_dir: PathBuf,
    /// What pages may connect to.
    pub egress: Arc<Policy>,
    /// Per-browser limits.
    pub limits: Limits,
    /// First uid of the browsers' uid range (when the daemon is root).
    pub uid_base: u32,
    /// Size of that range.
    pub uid_count: u32,
    /// Refuse sessions where no cgroup can be written (`browser.sandbox_require_cgroups`,
    /// default true). Off, browsers run sandboxed without per-browser limits (e.g. in a
    /// Kubernetes pod, whose own limits then bound them all).
    pub require_cgroups: bool,
    /// `browser.display`: sessions' browsers headful on a virtual display of their own
    /// (`true`, the default) or headless.
    pub display: bool,
}

/// Starts browsers, sandboxed.
#[derive(Debug)]
pub struct Runtime {
    settings: Settings,
    status: Result<(), String>,
    /// Why browsers run without per-browser limits, when they do.
    limits_note: Option<String>,
    cgroups: Option<Hierarchy>,
    uids: Mutex<HashSet<u32>>,
    /// What is executed: the browser itself, not a distribution's wrapper script.
    exec: PathBuf,
    root: bool,
    /// Whether sessions' browsers get a virtual display; if not, why.
    display: Result<&'static str, String>,
    /// Whether they get sound; if not, why.
    audio: Result<(), String>,
    /// This binary (the sandbox's init): an upgrade that replaces the file under a running
    /// daemon does not stop it from starting browsers.
    init: InitBinary,
}

/// What lives as long as one browser; dropped (in this order) after it exited.
#[derive(Debug, Default)]
pub struct Resources {
    pub(super) egress: Option<tokio::task::JoinHandle<()>>,
    pub(super) group: Option<Group>,
    pub(super) run: Option<PathBuf>,
    pub(super) uid: Option<(Arc<Runtime>, u32)>,
    /// The display's socket on the host (headful browsers).
    pub(super) display: Option<PathBuf>,
    /// The sound FIFO on the host (browsers with sound).
    pub(super) audio: Option<PathBuf>,
    /// The tenant's unpacked extension (beside the run directory).
    pub(super) extension: Option<PathBuf>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Some(t) = self.egress.take() {
            t.abort();
        }
        self.group.take();
        for r in self.run.take().into_iter().chain(self.extension.take()) {
            let _ = std::fs::remove_dir_all(r);
        }
        if let Some((rt, uid)) = self.uid.take() {
            rt.uids.lock().expect("uids").remove(&uid);
        }
    }
}

#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

impl Runtime {
    /// A runtime that starts no browser (the `saves` job and in-process tests): its binary
    /// does not exist, so a launch fails with [`Error`] and nothing else is touched.
    pub fn inert(run_dir: PathBuf) -> Arc<Runtime> {
        Runtime::new(Settings {
            binary: "/nonexistent".into(),
            unsafe_no_sandbox: true,
            run_dir,
            egress: Default::default(),
            limits: Default::default(),
            uid_base: 0,
            uid_count: 0,
            require_cgroups: false,
            display: false,
        })
    }

    /// Checks what this host offers (bubblewrap, user namespaces, cgroups) once.
    pub fn new(settings: Settings) -> Arc<Runtime> {
        let root = euid() == 0;
        let mut limits_note = None;
        let (status, cgroups) = if settings.unsafe_no_sandbox {
            (Ok(()), None)
        } else {
            match super::probe::probe(&settings, root) {
                Ok(Ok(h)) => (Ok(()), Some(h)),
                Ok(Err(e)) if !settings.require_cgroups => {
                    limits_note = Some(e);
                    (Ok(()), None)
                }
                Ok(Err(e)) => (Err(format!("no per-browser limits: {e}")), None),
                Err(e) => (Err(e), None),
            }
        };
        let exec = super::process::unwrapped(&settings.binary);
        let display = if !settings.display {
            Err("headless (browser.display = \"headless\")".to_string())
        } else if settings.unsafe_no_sandbox {
            Err("headless: a virtual display runs inside the sandbox only (browser.unsafe_no_sandbox is set)".into())
        } else {
            match super::init::display_server() {
                None => Err("headless: no X server is installed (apt-get install tigervnc-standalone-server, or xvfb), so the live view shows the page only".into()),
                Some("Xvnc") => Ok("on: a virtual display per session (Xvnc: its size follows the viewer with the resize role)"),
                Some(_) => Ok("on: a virtual display per session (Xvfb: a fixed size; tigervnc-standalone-server lets it follow the viewer)"),
            }
        };
        if let Err(why) = &display {
            if settings.display {
                tracing::warn!("browsers run {why}");
            }
        }
        let audio = match &display {
            Err(_) => Err("no sound: browsers are headless".to_string()),
            Ok(_) if super::process::on_path("pulseaudio").is_none() => {
                tracing::warn!("browsers have no sound: PulseAudio is not installed (apt-get install pulseaudio)");
                Err("no sound: PulseAudio is not installed (apt-get install pulseaudio)".into())
            }
            Ok(_) => Ok(()),
        };
        let init = InitBinary::open(&settings.run_dir);
        Arc::new(Runtime {
            init,
            display,
            audio,
            exec,
            settings,
            status,
            limits_note,
            cgroups,
            uids: Mutex::new(HashSet::new()),
            root,
        })
    }

    /// The browser binary.
    pub fn binary(&self) -> &Path {
        &self.settings.binary
    }

    /// Whether browsers can start here, and if not, why.
    pub fn status(&self) -> Result<(), &str> {
        self.status.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Why browsers run without per-browser cgroup limits (`None`: they have them, or run
    /// unconfined).
    pub fn limits_note(&self) -> Option<&str> {
        self.limits_note.as_deref()
    }

    /// Whether sessions' browsers get a virtual display of their own (which), or why not.
    pub fn display(&self) -> Result<&str, &str> {
        self.display.as_deref().map_err(String::as_str)
    }

    /// Whether sessions' browsers get sound; if not, why.
    pub fn audio(&self) -> Result<(), &str> {
        self.audio.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// Whether browsers run unconfined (`browser.unsafe_no_sandbox`).
    pub fn unsandboxed(&self) -> bool {
        self.settings.unsafe_no_sandbox
    }

    /// The egress policy.
    pub fn egress(&self) -> &Arc<Policy> {
        &self.settings.egress
    }

    /// The disk quota of one browser (its profile directory and home together), if any.
    pub fn disk_limit(&self) -> Option<u64> {
        (!self.unsandboxed() && self.settings.limits.disk_mb > 0)
            .then_some(self.settings.limits.disk_mb << 20)
    }

    /// Bytes the browser `name` on `user_data_dir` occupies on disk: its profile and its
    /// whole run directory (home, uploads, X socket and sound directories), counted up to a
    /// little past `limit` only ([`super::quota`]). Blocking: a directory walk.
    pub fn disk_used(&self, name: &str, user_data_dir: &Path, limit: u64) -> u64 {
        let run = self.settings.run_dir.join(name);
        super::quota::used(&[user_data_dir, run.as_path()], limit)
    }

    /// Removes what a browser of a previous daemon left (its run directory and cgroup).
    pub fn cleanup(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.settings.run_dir.join(name));
        if let Some(h) = &self.cgroups {
            drop(h.existing(name));
        }
    }

    fn lease_uid(self: &Arc<Self>) -> Result<u32, Error> {
        if !self.root {
            return Ok(euid());
        }
        let mut uids = self.uids.lock().expect("uids");
        let s = &self.settings;
        let uid = (s.uid_base..s.uid_base.saturating_add(s.uid_count))
            .find(|u| !uids.contains(u))
            .ok_or_else(|| Error::SandboxUnavailable("every sandbox uid is in use".into()))?;
        uids.insert(uid);
        Ok(uid)
    }

    /// The extensions a browser loads, each as (host directory, place in the sandbox): the
    /// tabs agent (not for the daemon's own offline browsers) in its run directory, and the
    /// tenant's own extension, unpacked beside it (`res` removes it with the browser). A
    /// path with a comma is never given: it would split Chromium's list.
    async fn extensions(
        &self,
        name: &str,
        opts: &LaunchOptions,
        res: &mut Resources,
    ) -> Result<Vec<(PathBuf, &'static str)>, Error> {
        let mut out = Vec::new();
        let tabs = self.settings.run_dir.join(name).join("tabs-ext");
        if !opts.offline && !tabs.to_string_lossy().contains(',') {
            out.push((tabs, super::tabs_ext::IN_SANDBOX));
        }
        if let Some(zip) = opts.extension.clone() {
            let dir = self.settings.run_dir.join(format!("{name}.extension"));
            let _ = std::fs::remove_dir_all(&dir);
            res.extension = Some(dir.clone());
            let found = tokio::task::spawn_blocking(move || super::extension::unpack(&zip.0, &dir))
                .await
                .map_err(|e| Error::Startup(e.to_string()))?
                .map_err(Error::Startup)?;
            if found.to_string_lossy().contains(',') {
                return Err(Error::Startup(
                    "the extension's folder name has a comma".into(),
                ));
            }
            out.push((found, super::extension::IN_SANDBOX));
        }
        Ok(out)
    }

    /// The browser started directly (`browser.unsafe_no_sandbox`).
    fn unconfined_command(&self, args: &[String], opts: &LaunchOptions) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.exec);
        if self.root {
            cmd.arg("--no-sandbox");
        }
        cmd.args(args);
        if let Some(tz) = &opts.timezone {
            cmd.env("TZ", tz);
        }
        if let Some(l) = &opts.locale {
            cmd.env("LANGUAGE", l);
        }
        cmd
    }

    /// bubblewrap around the browser: its uid, run directory, egress proxy and cgroups go
    /// into `res`, the descriptors it is handed into `fds`. Returns the command and the read
    /// end of bubblewrap's info pipe.
    fn sandboxed_command(
        self: &Arc<Self>,
        name: &str,
        user_data_dir: &Path,
        (opts, extensions): (&LaunchOptions, &[(PathBuf, &'static str)]),
        args: &[String],
        res: &mut Resources,
        fds: &mut Vec<(OwnedFd, RawFd)>,
    ) -> Result<(tokio::process::Command, OwnedFd), Error> {
        let io = |e: std::io::Error| Error::Startup(e.to_string());
        let u = self.lease_uid()?;
        res.uid = Some((self.clone(), u));
        let uid = self.root.then_some(u);
        let run = self.settings.run_dir.join(name);
        res.run = Some(run.clone());
        let t0 = std::time::Instant::now();
        let layout = prepare_run_dir(&run, user_data_dir, u, self.root, opts).map_err(io)?;
        for (dir, at) in extensions {
            // Owner-only like the rest of the run directory: the browser's uid reads them.
            if *at == super::tabs_ext::IN_SANDBOX {
                super::tabs_ext::install(dir).map_err(io)?;
            }
            if self.root {
                super::layout::chown_tree(dir, u).map_err(io)?;
            }
        }
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "sandbox: run directory ready"
        );
        res.egress = Some(
            super::egress::serve(
                &layout.egress_sock,
                self.settings.egress.clone(),
                name.to_string(),
            )
            .map_err(io)?,
        );
        // Owner-only, owned by the browser's uid (read-only inside the sandbox).
        std::fs::set_permissions(&layout.egress_sock, std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        if self.root {
            std::os::unix::fs::lchown(&layout.egress_sock, Some(u), Some(u)).map_err(io)?;
        }
        if let Some(h) = &self.cgroups {
            res.group = Some(
                h.create(name, &self.settings.limits)
                    .map_err(Error::SandboxUnavailable)?,
            );
        }
        let (info, info_w) = pipe().map_err(io)?;
        fds.push((info_w, 5));
        let mut next = 6;
        let exe = self
            .init
            .descriptor(&self.settings.run_dir)
            .map_err(Error::Startup)?;
        let mut exe = Some(exe);
        let mut bind = |path: Option<&Path>, dir: bool| -> Result<RawFd, Error> {
            let f = match path {
                Some(p) => open_path(p, dir).map_err(io)?,
                None => exe.take().expect("the init binary is bound once"),
            };
            let n = next;
            next += 1;
            fds.push((f, n));
            Ok(n)
        };
        let binds = Binds {
            profile: bind(Some(user_data_dir), true)?,
            home: bind(Some(&layout.home), true)?,
            egress: bind(Some(&layout.egress_dir), true)?,
            policy: bind(Some(&layout.policy), false)?,
            uploads: bind(Some(&layout.uploads), true)?,
            init: bind(None, false)?,
            x11: match &layout.x11 {
                Some(x) => Some(bind(Some(x), true)?),
                None => None,
            },
            audio: match &layout.audio {
                Some(x) => Some(bind(Some(x), true)?),
                None => None,
            },
            extensions: extensions
                .iter()
                .map(|(dir, at)| Ok((bind(Some(dir), true)?, *at)))
                .collect::<Result<_, Error>>()?,
        };
        // The seccomp filter (`super::seccomp`), read by bubblewrap from a pipe.
        let (filter, filter_w) = pipe().map_err(io)?;
        std::io::Write::write_all(
            &mut std::fs::File::from(filter_w),
            &super::seccomp::program(),
        )
        .map_err(io)?;
        let filter_fd = next;
        fds.push((filter, filter_fd));
        let mut cmd = tokio::process::Command::new("bwrap");
        cmd.args(bwrap_args(&binds, opts, &self.exec, self.root));
        cmd.args(["--seccomp".to_string(), filter_fd.to_string()]);
        cmd.args(["--", INIT, "sandbox-init", "--session", name]);
        if let Some(u) = uid {
            cmd.args(["--uid".to_string(), u.to_string()]);
        }
        if opts.display {
            let (w, h) = opts.window.unwrap_or(DEFAULT_SCREEN);
            cmd.args(["--display".to_string(), format!("{w}x{h}")]);
        }
        res.display = layout.x11.map(|x| x.join("X0"));
        if let Some(a) = layout.audio {
            cmd.arg("--audio");
            res.audio = Some(a.join("pcm"));
        }
        cmd.arg("--egress");
        cmd.arg(format!("{EGRESS_DIR}/egress.sock"));
        cmd.arg("--");
        cmd.arg(&self.exec);
        cmd.args(args);
        Ok((cmd, info))
    }

    /// Starts Chromium for `name` (a session id, or a job id) on `user_data_dir` and waits
    /// until it answers on its DevTools pipe.
    ///
    /// # Errors
    /// The sandbox is unavailable, the spawn failed, or the browser did not answer within
    /// `deadline`.
    pub async fn launch(
        self: &Arc<Self>,
        name: &str,
        user_data_dir: &Path,
        opts: &LaunchOptions,
        deadline: Duration,
    ) -> Result<Browser, Error> {
        if let Err(e) = &self.status {
            return Err(Error::SandboxUnavailable(e.clone()));
        }
        let mut res = Resources::default();
        let io = |e: std::io::Error| Error::Startup(e.to_string());
        let extensions = self.extensions(name, opts, &mut res).await?;
        let args = chromium_args(user_data_dir, opts, !self.unsandboxed(), &extensions);
        let (browser_in, to_browser) = pipe().map_err(io)?;
        let (from_browser, browser_out) = pipe().map_err(io)?;
        let mut fds: Vec<(OwnedFd, RawFd)> = vec![(browser_in, 3), (browser_out, 4)];
        let (mut cmd, info) = if self.unsandboxed() {
            if let Some((dir, _)) = extensions
                .iter()
                .find(|(_, at)| *at == super::tabs_ext::IN_SANDBOX)
            {
                let run = self.settings.run_dir.join(name);
                res.run = Some(run.clone());
                crate::fsutil::create_private_dir(&run).map_err(io)?;
                super::tabs_ext::install(dir).map_err(io)?;
            }
            (self.unconfined_command(&args, opts), None)
        } else {
            let (cmd, info) = self.sandboxed_command(
                name,
                user_data_dir,
                (opts, &extensions),
                &args,
                &mut res,
                &mut fds,
            )?;
            (cmd, Some(info))
        };
        let stderr = Stderr::new();
        cmd.env_clear()
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr.stdio())
            .kill_on_drop(false);
        let cgroup_fds = res.group.as_ref().map(Group::procs_fds).unwrap_or_default();
        let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|(f, n)| (f.as_raw_fd(), *n)).collect();
        pre_exec(&mut cmd, cgroup_fds, pairs);
        let binary = if self.unsandboxed() {
            self.exec.clone()
        } else {
            PathBuf::from("bwrap")
        };
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Spawn { binary, source: e })?;
        drop(fds);
        let tail = stderr.attach(&mut child);
        let mut pid = child.id().unwrap_or(0);
        if let Some(info) = info {
            let t0 = std::time::Instant::now();
            let child_pid = read_child_pid(info).await;
            tracing::debug!(
                ms = t0.elapsed().as_millis() as u64,
                "sandbox: bubblewrap started"
            );
            match child_pid {
                Some(p) => pid = p,
                None => {
                    let _ = child.kill().await;
                    told(tail.as_ref(), "the sandbox did not start").await;
                    return Err(Error::Startup("the sandbox did not start".into()));
                }
            }
        }
        let mux = Mux::start(to_browser, from_browser).map_err(io)?;
        let tabs_extension = extensions
            .iter()
            .find(|(_, at)| *at == super::tabs_ext::IN_SANDBOX)
            .map(|(p, at)| {
                if self.unsandboxed() {
                    super::tabs_ext::id_for(&p.to_string_lossy())
                } else {
                    super::tabs_ext::id_for(at)
                }
            });
        let mut browser = Browser {
            child,
            pid,
            mux,
            resources: res,
            tabs_extension,
        };
        let t0 = std::time::Instant::now();
        let ready = browser
            .mux
            .call("Browser.getVersion", serde_json::json!({}), deadline)
            .await;
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "browser: answered on its DevTools pipe"
        );
        if let Err(e) = ready {
            let exited = browser.try_exited();
            super::process::signal_group(pid, libc::SIGKILL);
            if let Some(g) = browser.group() {
                g.kill_all();
            }
            let _ = browser.child.kill().await;
            told(tail.as_ref(), "the browser did not start").await;
            return Err(Error::Startup(if exited {
                "exited before answering on its DevTools pipe".into()
            } else {
                format!("no answer on the DevTools pipe: {e}")
            }));
        }
        Ok(browser)
    }
}
