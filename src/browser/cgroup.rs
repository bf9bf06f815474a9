//! Resource limits of one sandbox: a cgroup per browser with a memory, process-count and
//! CPU limit. cgroup v1 (a hierarchy per controller under `/sys/fs/cgroup/<controller>`)
//! and v2 (one unified hierarchy) are both handled; where neither can be written the
//! sandbox is unavailable (`Limits::probe` says why) and sessions are refused unless the
//! operator turned the sandbox off.
//!
//! The browser joins its cgroups before it runs a single instruction: the daemon opens each
//! `cgroup.procs` beforehand and the child writes `0` (itself) to them between fork and exec.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// The limits of one browser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Memory (RSS + page cache + tmpfs) in MiB.
    pub memory_mb: u64,
    /// Processes and threads.
    pub pids: u64,
    /// CPU, in cores (1.0 = one core).
    pub cpus: f64,
    /// Disk: the profile directory and the home (downloads) together, in MiB (0: none).
    /// Not a cgroup limit: the session manager measures it (`Runtime::disk_used`).
    pub disk_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 2048,
            pids: 1024,
            cpus: 2.0,
            disk_mb: 4096,
        }
    }
}

const ROOT: &str = "/sys/fs/cgroup";
const NAME: &str = "profile-vault";

/// Which hierarchy this host gives us.
#[derive(Debug, Clone)]
pub enum Hierarchy {
    /// v1: one directory per controller (memory, pids, cpu), each ours.
    V1 {
        /// `/sys/fs/cgroup/<controller>/profile-vault` for memory, pids, cpu.
        parents: [PathBuf; 3],
    },
    /// v2: our parent directory with memory, pids and cpu delegated to its children.
    V2 {
        /// The parent of the browsers' cgroups.
        parent: PathBuf,
    },
}

impl Hierarchy {
    /// Finds a writable hierarchy and prepares the parent cgroups.
    ///
    /// # Errors
    /// Why no limits can be set here.
    pub fn probe() -> Result<Hierarchy, String> {
        let v1 = ["memory", "pids", "cpu"].map(|c| Path::new(ROOT).join(c));
        if v1.iter().all(|p| p.join("cgroup.procs").is_file()) {
            let parents = v1.map(|p| p.join(NAME));
            for p in &parents {
                if let Err(e) = fs::create_dir_all(p) {
                    return Err(format!("cannot create {}: {e}", p.display()));
                }
            }
            return Ok(Hierarchy::V1 { parents });
        }
        let root = Path::new(ROOT);
        if root.join("cgroup.controllers").is_file() {
            return v2_parent(root).map(|parent| Hierarchy::V2 { parent });
        }
        Err(format!(
            "no writable cgroup hierarchy under {ROOT} (v1 memory/pids/cpu or v2 with those controllers)"
        ))
    }

    /// The cgroup(s) of a browser that may exist already (left by a previous daemon), without
    /// touching their limits: dropping the result kills what is inside and removes them.
    pub fn existing(&self, name: &str) -> Group {
        let (v2, dirs) = match self {
            Hierarchy::V1 { parents } => (false, parents.iter().map(|p| p.join(name)).collect()),
            Hierarchy::V2 { parent } => (true, vec![parent.join(name)]),
        };
        Group {
            v2,
            dirs: dirs.into_iter().filter(|d: &PathBuf| d.exists()).collect(),
            procs: Vec::new(),
        }
    }

    /// Creates the cgroup(s) of one browser with `limits`.
    ///
    /// # Errors
    /// A limit cannot be written.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Group, String> {
        let w = |p: &Path, file: &str, v: String| -> Result<(), String> {
            fs::write(p.join(file), v).map_err(|e| format!("{}/{file}: {e}", p.display()))
        };
        let quota = (limits.cpus * 100_000.0).round().max(1000.0) as u64;
        let dirs = match self {
            Hierarchy::V1 { parents } => {
                let dirs: Vec<PathBuf> = parents.iter().map(|p| p.join(name)).collect();
                for d in &dirs {
                    let _ = fs::create_dir(d);
                }
                w(
                    &dirs[0],
                    "memory.limit_in_bytes",
                    (limits.memory_mb << 20).to_string(),
                )?;
                // No swap beyond the memory limit where the kernel accounts it.
                let _ = w(
                    &dirs[0],
                    "memory.memsw.limit_in_bytes",
                    (limits.memory_mb << 20).to_string(),
                );
                w(&dirs[1], "pids.max", limits.pids.to_string())?;
                w(&dirs[2], "cpu.cfs_period_us", "100000".into())?;
                w(&dirs[2], "cpu.cfs_quota_us", quota.to_string())?;
                dirs
            }
            Hierarchy::V2 { parent } => {
                let d = parent.join(name);
                let _ = fs::create_dir(&d);
                w(&d, "memory.max", (limits.memory_mb << 20).to_string())?;
                let _ = w(&d, "memory.swap.max", "0".into());
                w(&d, "pids.max", limits.pids.to_string())?;
                w(&d, "cpu.max", format!("{quota} 100000"))?;
                vec![d]
            }
        };
        let procs = dirs
            .iter()
            .map(|d| {
                OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map_err(|e| format!("{}: {e}", d.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Group {
            v2: matches!(self, Hierarchy::V2 { .. }),
            dirs,
            procs,
        })
    }
}

/// v2: a parent whose children may use memory, pids and cpu. A cgroup with processes
/// cannot hand controllers to children, so the daemon moves itself into a leaf first.
fn v2_parent(root: &Path) -> Result<PathBuf, String> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .trim()
        .trim_start_matches('/')
        .to_string();
    let mine = root.join(&rel);
    let enable = |dir: &Path| {
        fs::write(dir.join("cgroup.subtree_control"), "+memory +pids +cpu").map_err(|e| {
            format!(
                "cannot delegate memory, pids and cpu in {}: {e}",
                dir.display()
            )
        })
    };
    if rel.is_empty() {
        // The root cgroup may hold processes and delegate at once.
        enable(root)?;
        let parent = root.join(NAME);
        let _ = fs::create_dir(&parent);
        enable(&parent)?;
        return Ok(parent);
    }
    let leaf = mine.join("daemon");
    let _ = fs::create_dir(&leaf);
    fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("cannot move the daemon into {}: {e}", leaf.display()))?;
    enable(&mine)?;
    let parent = mine.join("browsers");
    let _ = fs::create_dir(&parent);
    enable(&parent)?;
    Ok(parent)
}

/// The cgroup(s) of one browser. Dropping it kills what is left inside and removes them.
#[derive(Debug)]
pub struct Group {
    v2: bool,
    dirs: Vec<PathBuf>,
    procs: Vec<File>,
}

impl Group {
    /// The `cgroup.procs` fds the child writes itself into (between fork and exec).
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// How many times the kernel's OOM killer acted inside.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        fs::read_to_string(self.dirs[0].join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| match l.split_once(' ') {
                Some((k, v)) if k == key => v.trim().parse().ok(),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Whether the process-count limit refused a fork.
    pub fn pids_exhausted(&self) -> bool {
        let d = if self.v2 {
            &self.dirs[0]
        } else {
            &self.dirs[1]
        };
        let events = fs::read_to_string(d.join("pids.events")).unwrap_or_default();
        events
            .lines()
            .find_map(|l| match l.split_once(' ') {
                Some(("max", v)) => v.trim().parse::<u64>().ok(),
                _ => None,
            })
            .is_some_and(|n| n > 0)
    }

    /// SIGKILLs every process inside.
    pub fn kill_all(&self) {
        if self.v2 {
            if let Some(d) = self.dirs.first() {
                if OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.kill"))
                    .and_then(|mut f| f.write_all(b"1"))
                    .is_ok()
                {
                    return;
                }
            }
        }
        for d in &self.dirs {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
            {
                super::process::signal_pid(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            // Empty once the killed processes are reaped; retried briefly.
            for _ in 0..20 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_and_pids_events_are_read_by_their_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (mem, pids) = (dir.path().join("m"), dir.path().join("p"));
        fs::create_dir_all(&mem).unwrap();
        fs::create_dir_all(&pids).unwrap();
        fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs::write(pids.join("pids.events"), "max 0\n").unwrap();
        let g = Group {
            v2: false,
            dirs: vec![mem.clone(), pids.clone()],
            procs: Vec::new(),
        };
        assert_eq!(g.oom_kills(), 2);
        assert!(!g.pids_exhausted());
        fs::write(pids.join("pids.events"), "max 3\n").unwrap();
        assert!(g.pids_exhausted());
        std::mem::forget(g); // nothing to kill or remove
    }
}
