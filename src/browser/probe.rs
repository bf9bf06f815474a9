//! Whether a browser sandbox can be built on this host, checked once at start: bubblewrap
//! runs a trivial command in fresh namespaces, and a cgroup hierarchy is writable.

use super::cgroup::Hierarchy;
use super::sandbox::Settings;

/// Checks that a sandbox can be built here: bubblewrap runs a trivial command in every
/// namespace (the outer error), and a cgroup hierarchy is writable (the inner one).
pub(super) fn probe(settings: &Settings, root: bool) -> Result<Result<Hierarchy, String>, String> {
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
