//! What a sandbox is made of: bubblewrap's arguments (mounts, namespaces, environment),
//! Chromium's flags, its managed policy, and the host side of a browser's run directory.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use super::process::LaunchOptions;

/// Paths inside the sandbox.
pub(super) const PROFILE: &str = "/profile";
pub(super) const HOME: &str = "/home/browser";
pub(super) const EGRESS_DIR: &str = "/pv/egress";
pub(super) const INIT: &str = "/pv/init";
pub(super) const POLICY: &str = "/etc/chromium/policies/managed/profile-vault.json";
/// Files a person uploaded for the page's file chooser (written by the daemon, read-only in
/// the sandbox).
pub const UPLOADS: &str = "/pv/uploads";
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
    // Not /etc, but read-only runtime all the same: without its cache fontconfig scans every
    // font at each start (hundreds of milliseconds).
    "/var/cache/fontconfig",
];

/// The browser's own flags (the same inside and outside the sandbox).
pub(super) fn chromium_args(
    user_data_dir: &Path,
    opts: &LaunchOptions,
    sandboxed: bool,
    extensions: &[(PathBuf, &'static str)],
) -> Vec<String> {
    let headful = sandboxed && opts.display;
    let mut a: Vec<String> = [
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
    if headful {
        // One window filling the display (there is no window manager to place it).
        a.push("--window-position=0,0".into());
        // A person closing the last tab or window (Ctrl+W, its close button) does not end
        // the browser, and so the session, for everyone: the live view opens a new tab.
        // `Browser.close` and SIGINT still end it cleanly.
        a.push("--keep-alive-for-test".into());
    } else {
        a.push("--headless=new".into());
    }
    let dir = if sandboxed {
        PROFILE.to_string()
    } else {
        user_data_dir.display().to_string()
    };
    a.push(format!("--user-data-dir={dir}"));
    if let Some((w, h)) = opts
        .window
        .or(headful.then_some(super::sandbox::DEFAULT_SCREEN))
    {
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
    if !extensions.is_empty() {
        // Each at its place in the sandbox, or on the host (paths with a comma are never
        // given: it separates them).
        let list: Vec<String> = extensions
            .iter()
            .map(|(host, inside)| {
                if sandboxed {
                    (*inside).to_string()
                } else {
                    host.display().to_string()
                }
            })
            .collect();
        a.push(format!("--load-extension={}", list.join(",")));
    }
    a.push(
        opts.start_url
            .clone()
            .unwrap_or_else(|| "about:blank".into()),
    );
    a
}

/// The descriptors bubblewrap mounts (numbers in the child).
pub(super) struct Binds {
    /// The profile directory (read-write, at [`PROFILE`]).
    pub profile: RawFd,
    /// The private home (read-write, at [`HOME`]).
    pub home: RawFd,
    /// The egress socket's directory (read-only, at [`EGRESS_DIR`]).
    pub egress: RawFd,
    /// The managed policy file (read-only, at [`POLICY`]).
    pub policy: RawFd,
    /// The init binary (read-only, at [`INIT`]).
    pub init: RawFd,
    /// The display's socket directory (read-write, at [`super::init::X11_DIR`]).
    pub x11: Option<RawFd>,
    /// The sound FIFO's directory (read-write, at [`super::init::AUDIO_DIR`]).
    pub audio: Option<RawFd>,
    /// The uploads directory (read-only, at [`UPLOADS`]).
    pub uploads: RawFd,
    /// Extensions (read-only, each at its place: the tabs agent, the tenant's own).
    pub extensions: Vec<(RawFd, &'static str)>,
}

pub(super) fn bwrap_args(
    binds: &Binds,
    opts: &LaunchOptions,
    binary: &Path,
    root: bool,
) -> Vec<String> {
    let mut a = namespaces(root);
    a.extend(system(binds, binary));
    a.extend(session_binds(binds));
    for (k, v) in environment(opts) {
        a.extend(["--setenv".into(), k.into(), v]);
    }
    a
}

/// The namespaces (the host named `localhost`) and the process's frame: its own session,
/// bubblewrap as PID 1 with an empty environment, and `--info-fd 5`.
fn namespaces(root: bool) -> Vec<String> {
    // As root, bubblewrap needs no user namespace (one made by root maps only root, and
    // the browser's uid could not be entered): the sandbox's init drops to the browser's
    // uid itself, first thing. Otherwise a user namespace of the daemon's uid.
    let unshare: &[&str] = if root {
        &[
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]
    } else {
        &["--unshare-all"]
    };
    let mut a: Vec<String> = unshare.iter().map(|s| (*s).to_string()).collect();
    a.extend(
        [
            // Its own UTS namespace: the node's name is not the browser's to read.
            "--hostname",
            "localhost",
            "--new-session",
            "--as-pid-1",
            "--clearenv",
            "--info-fd",
            "5",
        ]
        .map(String::from),
    );
    a
}

/// The host's system, read-only (/usr, the top-level library and binary directories, the
/// few files of /etc a browser reads, a browser installed elsewhere), and fresh /proc, /dev,
/// /tmp and /dev/shm.
fn system(binds: &Binds, binary: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
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
    .map(String::from)
    .to_vec();
    // bubblewrap makes missing parents 0700 (root's when the daemon is root): the browser's
    // uid must traverse them (a /var/cache it could not enter cost every start a fontconfig
    // scan of all fonts, ~250 ms).
    let targets = ETC
        .iter()
        .copied()
        .chain([PROFILE, HOME, EGRESS_DIR, POLICY, INIT, UPLOADS])
        .chain(binds.extensions.iter().map(|(_, at)| *at));
    for d in parents_to_make(targets) {
        a.extend(["--perms".into(), "0755".into(), "--dir".into(), d]);
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
    a
}

/// The session's own directories, each mounted from a descriptor the daemon opened: the
/// profile and home (read-write), the egress socket, policy, init and uploads (read-only),
/// the display's and sound's directories, the extensions; and the home as working directory.
fn session_binds(binds: &Binds) -> Vec<String> {
    let fd = |n: RawFd| n.to_string();
    let mut a: Vec<String> = vec![
        "--bind-fd".into(),
        fd(binds.profile),
        PROFILE.into(),
        "--bind-fd".into(),
        fd(binds.home),
        HOME.into(),
        "--ro-bind-fd".into(),
        fd(binds.egress),
        EGRESS_DIR.into(),
        "--ro-bind-fd".into(),
        fd(binds.policy),
        POLICY.into(),
        "--ro-bind-fd".into(),
        fd(binds.init),
        INIT.into(),
        "--ro-bind-fd".into(),
        fd(binds.uploads),
        UPLOADS.into(),
        "--chdir".into(),
        HOME.into(),
    ];
    for (b, at) in [
        (binds.x11, super::init::X11_DIR),
        (binds.audio, super::init::AUDIO_DIR),
    ] {
        if let Some(b) = b {
            a.extend(["--bind-fd".into(), fd(b), at.into()]);
        }
    }
    for (b, at) in &binds.extensions {
        a.extend(["--ro-bind-fd".into(), fd(*b), (*at).into()]);
    }
    a
}

/// The browser's whole environment (bubblewrap clears the daemon's).
fn environment(opts: &LaunchOptions) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HOME", HOME.to_string()),
        ("PATH", "/usr/bin:/bin".into()),
        ("LANG", "C.UTF-8".into()),
        ("TMPDIR", "/tmp".into()),
        ("XDG_CONFIG_HOME", "/tmp/.config".into()),
        ("XDG_CACHE_HOME", "/tmp/.cache".into()),
    ];
    if opts.display {
        // No session bus: Chromium gives up at once instead of trying to start one.
        env.push(("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent".into()));
    }
    if let Some(tz) = &opts.timezone {
        env.push(("TZ", tz.clone()));
    }
    if let Some(l) = &opts.locale {
        env.push(("LANGUAGE", l.clone()));
    }
    env
}

/// The directories above mount points that bubblewrap would otherwise make itself (0700),
/// parents first; not those inside the mounts made before them (/usr, /tmp, /dev, /proc).
fn parents_to_make<'a>(targets: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for t in targets {
        for p in Path::new(t).ancestors().skip(1) {
            let top = p.components().nth(1).map(|c| c.as_os_str().to_owned());
            let mounted =
                top.is_some_and(|t| ["usr", "tmp", "dev", "proc"].iter().any(|m| t == *m));
            if p != Path::new("/") && !mounted {
                dirs.insert(p.display().to_string());
            }
        }
    }
    dirs.into_iter().collect()
}

/// The host side of one browser's run directory.
pub(super) struct Layout {
    pub home: PathBuf,
    pub egress_dir: PathBuf,
    pub egress_sock: PathBuf,
    pub policy: PathBuf,
    /// The display's socket directory (headful browsers).
    pub x11: Option<PathBuf>,
    /// The sound FIFO's directory (browsers with sound).
    pub audio: Option<PathBuf>,
    /// Uploaded files (the daemon's; readable by the browser).
    pub uploads: PathBuf,
}

pub(super) fn prepare_run_dir(
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
    // Owner-only and the browser's, but mounted read-only in the sandbox: the browser reads
    // what the daemon wrote there and cannot change it.
    let uploads = run.join("uploads");
    crate::fsutil::create_private_dir(&uploads)?;
    if root {
        std::os::unix::fs::lchown(&uploads, Some(uid), Some(uid))?;
    }
    let x11 = opts.display.then(|| run.join("x11"));
    let audio = (opts.display && opts.audio).then(|| run.join("audio"));
    for d in x11.iter().chain(&audio) {
        crate::fsutil::create_private_dir(d)?;
        if root {
            std::os::unix::fs::lchown(d, Some(uid), Some(uid))?;
        }
    }
    if let Some(a) = &audio {
        let fifo = a.join("pcm");
        mkfifo(&fifo)?;
        if root {
            std::os::unix::fs::lchown(&fifo, Some(uid), Some(uid))?;
        }
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
        x11,
        audio,
        uploads,
    })
}

/// An owner-only FIFO.
#[allow(unsafe_code)]
fn mkfifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL in the path"))?;
    // SAFETY: mkfifo(3) reads the NUL-terminated path we own.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Hands a tree (the restored profile) to the browser's uid; symlinks are not followed.
pub(super) fn chown_tree(dir: &Path, uid: u32) -> std::io::Result<()> {
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
pub(super) fn policy_json(_opts: &LaunchOptions) -> serde_json::Value {
    serde_json::json!({
        "URLBlocklist": ["file://*", "chrome://*", "chrome-untrusted://*", "devtools://*",
                         "view-source:*", "javascript:*", "chromewebstore.google.com",
                         "chrome.google.com/webstore", "chrome://settings/passwords"],
        // Not chrome://password-manager (blocked above, as is chrome://settings/passwords,
        // which leads there): anyone given control of a shared session could read or
        // export the profile's saved passwords there (Linux asks for no re-authentication).
        // Saving and filling passwords does not need the page.
        "URLAllowlist": ["chrome://newtab", "chrome://new-tab-page", "chrome://history",
                         "chrome://bookmarks", "chrome://downloads",
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
        // No extension is installed from anywhere (the Web Store is blocked above, as are
        // file:// and external ones); the daemon's own load by flag (the tabs agent). Not
        // ExtensionInstallBlocklist ["*"]: Chromium then refuses flag-loaded ones too,
        // allow-listed or not (measured with Chromium 156).
        "BlockExternalExtensions": true,
        // A person with control gets the browser's own UI (the display): no windows the
        // session does not know (incognito, guest, another person's profile), no ending a
        // process from the task manager (the tabs agent, a tab), and no payment cards saved
        // (chrome://settings shows them to anyone in control; its pages are one app, which
        // URLBlocklist does not see move between them).
        "IncognitoModeAvailability": 1,
        "BrowserGuestModeEnabled": false,
        "BrowserAddPersonEnabled": false,
        "TaskManagerEndProcessEnabled": false,
        "AutofillCreditCardEnabled": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mount point's parents are made traversable: none is left to bubblewrap (0700,
    /// which the browser's uid cannot enter).
    #[test]
    fn every_parent_of_a_mount_is_made_traversable() {
        let binds = Binds {
            profile: 6,
            home: 7,
            egress: 8,
            policy: 9,
            init: 10,
            x11: Some(11),
            audio: Some(12),
            uploads: 13,
            extensions: vec![
                (14, super::super::tabs_ext::IN_SANDBOX),
                (15, super::super::extension::IN_SANDBOX),
            ],
        };
        let opts = LaunchOptions::default();
        let a = bwrap_args(&binds, &opts, Path::new("/usr/bin/chromium"), true);
        let made: Vec<&str> = a
            .windows(2)
            .filter(|w| w[0] == "--dir")
            .map(|w| w[1].as_str())
            .collect();
        let targets: Vec<&str> = a
            .windows(3)
            .filter(|w| w[0].contains("bind"))
            .map(|w| w[2].as_str())
            .collect();
        assert!(targets.contains(&"/var/cache/fontconfig"), "{a:?}");
        for t in targets {
            for p in Path::new(t).ancestors().skip(1) {
                let p = p.to_str().unwrap();
                let mounted = ["/", "/usr", "/tmp", "/dev", "/proc"]
                    .iter()
                    .any(|m| p == *m || (m.len() > 1 && p.starts_with(&format!("{m}/"))));
                assert!(
                    mounted || made.contains(&p),
                    "{p} (above {t}) is not made: {a:?}"
                );
            }
        }
        // Parents come before their children.
        let at = |d: &str| made.iter().position(|m| *m == d).unwrap();
        assert!(at("/var") < at("/var/cache"));
    }
}
