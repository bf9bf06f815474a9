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
//! says why and every launch is refused, unless `server.unsafe_no_sandbox` is set.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::cgroup::{Group, Hierarchy, Limits};
use super::egress::Policy;
use super::mux::Mux;
use super::process::{Browser, Error, LaunchOptions};

/// How this node runs its browsers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Chromium binary.
    pub binary: PathBuf,
    /// `server.unsafe_no_sandbox`: run browsers unconfined (a warning at start, in
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
    /// Refuse sessions where no cgroup can be written (`server.sandbox_require_cgroups`,
    /// default true). Off, browsers run sandboxed without per-browser limits (e.g. in a
    /// Kubernetes pod, whose own limits then bound them all).
    pub require_cgroups: bool,
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
    root: bool,
}

/// What lives as long as one browser; dropped (in this order) after it exited.
#[derive(Debug, Default)]
pub struct Resources {
    pub(super) egress: Option<tokio::task::JoinHandle<()>>,
    pub(super) group: Option<Group>,
    pub(super) run: Option<PathBuf>,
    pub(super) uid: Option<(Arc<Runtime>, u32)>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Some(t) = self.egress.take() {
            t.abort();
        }
        self.group.take();
        if let Some(r) = self.run.take() {
            let _ = std::fs::remove_dir_all(r);
        }
        if let Some((rt, uid)) = self.uid.take() {
            rt.uids.lock().expect("uids").remove(&uid);
        }
    }
}

/// Paths inside the sandbox.
const PROFILE: &str = "/profile";
const HOME: &str = "/home/browser";
const EGRESS_DIR: &str = "/pv/egress";
const INIT: &str = "/pv/init";
const POLICY: &str = "/etc/chromium/policies/managed/profile-vault.json";
/// The parts of `/etc` a browser needs (fonts, certificates, the dynamic linker's cache,
/// the time zone database, MIME types, the chromium wrapper's settings).
const ETC: &[&str] = &[
    "/etc/fonts",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/chromium.d",
    "/etc/alternatives",
    "/etc/nsswitch.conf",
];

#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

impl Runtime {
    /// Checks what this host offers (bubblewrap, user namespaces, cgroups) once.
    pub fn new(settings: Settings) -> Arc<Runtime> {
        let root = euid() == 0;
        let mut limits_note = None;
        let (status, cgroups) = if settings.unsafe_no_sandbox {
            (Ok(()), None)
        } else {
            match probe(&settings, root) {
                Ok(Ok(h)) => (Ok(()), Some(h)),
                Ok(Err(e)) if !settings.require_cgroups => {
                    limits_note = Some(e);
                    (Ok(()), None)
                }
                Ok(Err(e)) => (Err(format!("no per-browser limits: {e}")), None),
                Err(e) => (Err(e), None),
            }
        };
        Arc::new(Runtime {
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

    /// Whether browsers run unconfined (`server.unsafe_no_sandbox`).
    pub fn unsandboxed(&self) -> bool {
        self.settings.unsafe_no_sandbox
    }

    /// The egress policy.
    pub fn egress(&self) -> &Arc<Policy> {
        &self.settings.egress
    }

    /// Removes what a browser of a previous daemon left (its run directory and cgroup).
    pub fn cleanup(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.settings.run_dir.join(name));
        if let Some(h) = &self.cgroups {
            if let Ok(g) = h.create(name, &self.settings.limits) {
                drop(g);
            }
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
        let args = chromium_args(user_data_dir, opts, !self.unsandboxed());
        let (browser_in, to_browser) = pipe().map_err(io)?;
        let (from_browser, browser_out) = pipe().map_err(io)?;
        let mut fds: Vec<(OwnedFd, RawFd)> = vec![(browser_in, 3), (browser_out, 4)];
        let mut cmd;
        let mut info = None;
        if self.unsandboxed() {
            cmd = tokio::process::Command::new(&self.settings.binary);
            if self.root {
                cmd.arg("--no-sandbox");
            }
            cmd.args(&args);
            if let Some(tz) = &opts.timezone {
                cmd.env("TZ", tz);
            }
            if let Some(l) = &opts.locale {
                cmd.env("LANGUAGE", l);
            }
        } else {
            let u = self.lease_uid()?;
            res.uid = Some((self.clone(), u));
            let uid = self.root.then_some(u);
            let run = self.settings.run_dir.join(name);
            res.run = Some(run.clone());
            let layout = prepare_run_dir(&run, user_data_dir, u, self.root, opts).map_err(io)?;
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
            let (info_r, info_w) = pipe().map_err(io)?;
            fds.push((info_w, 5));
            info = Some(info_r);
            let mut next = 6;
            let mut bind = |path: &Path, dir: bool| -> Result<RawFd, Error> {
                let f = open_path(path, dir).map_err(io)?;
                let n = next;
                next += 1;
                fds.push((f, n));
                Ok(n)
            };
            let profile = bind(user_data_dir, true)?;
            let home = bind(&layout.home, true)?;
            let egress = bind(&layout.egress_dir, true)?;
            let policy = bind(&layout.policy, false)?;
            let exe = std::env::current_exe().map_err(io)?;
            let init = bind(&exe, false)?;
            cmd = tokio::process::Command::new("bwrap");
            cmd.args(bwrap_args(profile, home, egress, policy, init, opts, &self.settings.binary, self.root));
            cmd.args(["--", INIT, "sandbox-init", "--session", name]);
            if let Some(u) = uid {
                cmd.args(["--uid".to_string(), u.to_string()]);
            }
            cmd.arg("--egress");
            cmd.arg(format!("{EGRESS_DIR}/egress.sock"));
            cmd.arg("--");
            cmd.arg(&self.settings.binary);
            cmd.args(&args);
        }
        cmd.env_clear()
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(browser_log())
            .kill_on_drop(false);
        let cgroup_fds = res.group.as_ref().map(Group::procs_fds).unwrap_or_default();
        let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|(f, n)| (f.as_raw_fd(), *n)).collect();
        pre_exec(&mut cmd, cgroup_fds, pairs);
        let binary = if self.unsandboxed() {
            self.settings.binary.clone()
        } else {
            PathBuf::from("bwrap")
        };
        let mut child = cmd.spawn().map_err(|e| Error::Spawn { binary, source: e })?;
        drop(fds);
        let mut pid = child.id().unwrap_or(0);
        if let Some(info) = info {
            match read_child_pid(info).await {
                Some(p) => pid = p,
                None => {
                    let _ = child.kill().await;
                    return Err(Error::Startup("the sandbox did not start".into()));
                }
            }
        }
        let mux = Mux::start(to_browser, from_browser).map_err(io)?;
        let mut browser = Browser {
            child,
            pid,
            mux,
            resources: res,
        };
        let ready = browser
            .mux
            .call("Browser.getVersion", serde_json::json!({}), deadline)
            .await;
        if let Err(e) = ready {
            let exited = browser.try_exited();
            super::process::signal_group(pid, libc::SIGKILL);
            if let Some(g) = browser.group() {
                g.kill_all();
            }
            let _ = browser.child.kill().await;
            return Err(Error::Startup(if exited {
                "exited before answering on its DevTools pipe".into()
            } else {
                format!("no answer on the DevTools pipe: {e}")
            }));
        }
        Ok(browser)
    }
}

/// Where the browser's stderr goes: `PV_BROWSER_LOG` (a file, appended) for debugging,
/// else nowhere (Chromium is chatty, and what it prints is the browser's to shape).
fn browser_log() -> std::process::Stdio {
    std::env::var_os("PV_BROWSER_LOG")
        .and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        })
        .map_or_else(std::process::Stdio::null, std::process::Stdio::from)
}

/// The browser's own flags (the same inside and outside the sandbox).
fn chromium_args(user_data_dir: &Path, opts: &LaunchOptions, sandboxed: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--headless=new",
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
        "--remote-debugging-pipe",
    ]
    .map(String::from)
    .to_vec();
    let dir = if sandboxed {
        PROFILE.to_string()
    } else {
        user_data_dir.display().to_string()
    };
    a.push(format!("--user-data-dir={dir}"));
    if let Some((w, h)) = opts.window {
        a.push(format!("--window-size={w},{h}"));
    }
    if let Some(ua) = &opts.user_agent {
        a.push(format!("--user-agent={ua}"));
    }
    if let Some(l) = &opts.locale {
        a.push(format!("--lang={l}"));
        // Headless Chromium takes navigator.language and Accept-Language from here.
        a.push(format!("--accept-lang={l}"));
    }
    if opts.offline {
        a.push("--proxy-server=http://127.0.0.1:9".into());
        a.push("--proxy-bypass-list=<-loopback>".into());
    } else if sandboxed {
        a.push(format!(
            "--proxy-server=socks5://127.0.0.1:{}",
            super::init::PROXY_PORT
        ));
        // Loopback too goes to the proxy, which refuses it.
        a.push("--proxy-bypass-list=<-loopback>".into());
    }
    if opts.restore_last_session {
        a.push("--restore-last-session".into());
    }
    a.push(opts.start_url.clone().unwrap_or_else(|| "about:blank".into()));
    a
}

fn bwrap_args(
    profile: RawFd,
    home: RawFd,
    egress: RawFd,
    policy: RawFd,
    init: RawFd,
    opts: &LaunchOptions,
    binary: &Path,
    root: bool,
) -> Vec<String> {
    // As root, bubblewrap needs no user namespace (one made by root maps only root, and
    // the browser's uid could not be entered): the sandbox's init drops to the browser's
    // uid itself, first thing. Otherwise a user namespace of the daemon's uid.
    let unshare: &[&str] = if root {
        &["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    } else {
        &["--unshare-all"]
    };
    let mut a: Vec<String> = unshare.iter().map(|s| (*s).to_string()).collect();
    a.extend([
        "--new-session",
        "--as-pid-1",
        "--clearenv",
        "--info-fd",
        "5",
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--tmpfs",
        "/dev/shm",
    ]
    .map(String::from));
    // bubblewrap makes missing parents 0700 (root's when the daemon is root): the browser's
    // uid must traverse them.
    for d in ["/etc", "/etc/chromium", "/etc/chromium/policies", "/etc/chromium/policies/managed", "/home", "/pv"] {
        a.extend(["--perms".into(), "0755".into(), "--dir".into(), d.into()]);
    }
    for top in ["lib", "lib64", "lib32", "bin", "sbin"] {
        let host = Path::new("/").join(top);
        match std::fs::read_link(&host) {
            Ok(target) => a.extend([
                "--symlink".into(),
                target.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) if host.is_dir() => a.extend([
                "--ro-bind".into(),
                host.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) => {}
        }
    }
    for e in ETC {
        a.extend(["--ro-bind-try".into(), (*e).into(), (*e).into()]);
    }
    // A browser installed outside /usr brings its directory.
    if let Some(dir) = binary.parent().filter(|d| !d.starts_with("/usr")) {
        let d = dir.display().to_string();
        a.extend(["--ro-bind".into(), d.clone(), d]);
    }
    let fd = |n: RawFd| n.to_string();
    a.extend([
        "--bind-fd".into(),
        fd(profile),
        PROFILE.into(),
        "--bind-fd".into(),
        fd(home),
        HOME.into(),
        "--ro-bind-fd".into(),
        fd(egress),
        EGRESS_DIR.into(),
        "--ro-bind-fd".into(),
        fd(policy),
        POLICY.into(),
        "--ro-bind-fd".into(),
        fd(init),
        INIT.into(),
        "--chdir".into(),
        HOME.into(),
    ]);
    let mut env = vec![
        ("HOME", HOME.to_string()),
        ("PATH", "/usr/bin:/bin".into()),
        ("LANG", "C.UTF-8".into()),
        ("TMPDIR", "/tmp".into()),
        ("XDG_CONFIG_HOME", "/tmp/.config".into()),
        ("XDG_CACHE_HOME", "/tmp/.cache".into()),
    ];
    if let Some(tz) = &opts.timezone {
        env.push(("TZ", tz.clone()));
    }
    if let Some(l) = &opts.locale {
        env.push(("LANGUAGE", l.clone()));
    }
    for (k, v) in env {
        a.extend(["--setenv".into(), k.into(), v]);
    }
    a
}

/// The host side of one browser's run directory.
struct Layout {
    home: PathBuf,
    egress_dir: PathBuf,
    egress_sock: PathBuf,
    policy: PathBuf,
}

fn prepare_run_dir(
    run: &Path,
    profile: &Path,
    uid: u32,
    root: bool,
    opts: &LaunchOptions,
) -> std::io::Result<Layout> {
    let _ = std::fs::remove_dir_all(run);
    crate::fsutil::create_private_dir(run)?;
    let home = run.join("home");
    let egress_dir = run.join("egress");
    for d in [&home, &home.join("Downloads"), &egress_dir] {
        crate::fsutil::create_private_dir(d)?;
    }
    let egress_sock = egress_dir.join("egress.sock");
    if egress_sock.as_os_str().len() > 100 {
        return Err(std::io::Error::other(format!(
            "the run directory path is too long for a Unix socket: {}",
            egress_sock.display()
        )));
    }
    // The sandbox reaches into these only through the descriptors it is given (the egress
    // directory and the policy read-only): owner-only, owned by the browser's uid.
    let policy = run.join("policy.json");
    crate::fsutil::write_private_new(&policy, policy_json(opts).to_string().as_bytes())?;
    if root {
        chown_tree(&home, uid)?;
        chown_tree(profile, uid)?;
        std::os::unix::fs::lchown(&egress_dir, Some(uid), Some(uid))?;
        std::os::unix::fs::lchown(&policy, Some(uid), Some(uid))?;
    }
    Ok(Layout {
        home,
        egress_dir,
        egress_sock,
        policy,
    })
}

/// Hands a tree (the restored profile) to the browser's uid; symlinks are not followed.
fn chown_tree(dir: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            chown_tree(&e.path(), uid)?;
        } else {
            std::os::unix::fs::lchown(e.path(), Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

/// The managed policy of every sandboxed browser.
fn policy_json(_opts: &LaunchOptions) -> serde_json::Value {
    serde_json::json!({
        "URLBlocklist": ["file://*", "chrome://*", "chrome-untrusted://*", "devtools://*",
                         "view-source:*", "javascript:*"],
        "URLAllowlist": ["chrome://newtab", "chrome://new-tab-page", "chrome://history",
                         "chrome://bookmarks", "chrome://downloads", "chrome://password-manager",
                         "chrome://settings", "chrome://omnibox-popup.top-chrome"],
        // Not DeveloperToolsAvailability = 2: it also refuses the daemon's and the tenants'
        // Target.attachToTarget. The DevTools UI is a devtools:// page, blocked above.
        "DownloadDirectory": format!("{HOME}/Downloads"),
        "PromptForDownloadLocation": false,
        "AllowFileSelectionDialogs": false,
        "WebRtcIPHandling": "disable_non_proxied_udp",
        "QuicAllowed": false,
        "DnsOverHttpsMode": "off",
        "BrowserSignin": 0,
        "SyncDisabled": true,
        "MetricsReportingEnabled": false,
        "DefaultBrowserSettingEnabled": false,
        "ExtensionInstallBlocklist": ["*"],
    })
}

/// Checks that a sandbox can be built here: bubblewrap runs a trivial command in every
/// namespace (the outer error), and a cgroup hierarchy is writable (the inner one).
fn probe(settings: &Settings, root: bool) -> Result<Result<Hierarchy, String>, String> {
    let mut cmd = std::process::Command::new("bwrap");
    cmd.args([
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-uts",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "/usr/bin/true",
    ])
    .env_clear()
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    if !root {
        // Unprivileged: bubblewrap needs a user namespace.
        cmd.arg("--unshare-user");
    }
    let _ = settings;
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run bwrap (apt-get install bubblewrap): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bwrap cannot build a sandbox here (user namespaces?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::create_dir_all(&settings.run_dir)
        .map_err(|e| format!("cannot create {}: {e}", settings.run_dir.display()))?;
    Ok(Hierarchy::probe())
}

fn open_path(path: &Path, dir: bool) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    Ok(high_fd(OwnedFd::from(f))?)
}

/// Moves a descriptor to >= 100 so the child's `dup2`s onto 3, 4, 5… never clobber a source.
#[allow(unsafe_code)]
fn high_fd(fd: OwnedFd) -> std::io::Result<OwnedFd> {
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
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
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
fn pre_exec(cmd: &mut tokio::process::Command, cgroups: Vec<RawFd>, fds: Vec<(RawFd, RawFd)>) {
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
async fn read_child_pid(fd: OwnedFd) -> Option<u32> {
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
    tokio::time::timeout(Duration::from_secs(10), read).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&buf).ok()?;
    v["child-pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}
