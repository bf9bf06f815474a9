//! `[browser]`: how sessions' browsers are found, confined and shown — the section of the
//! configuration this module owns, and the runtime [`Settings`] made from it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Settings;

/// `[browser]`: the sessions' browsers and their sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrowserSection {
    /// Browser binary (`PV_CHROMIUM`); default: chromium on PATH.
    pub chromium: Option<PathBuf>,
    /// How sessions' browsers show themselves to people (`PV_DISPLAY`): `virtual` (default:
    /// headful on a virtual display of their own, Chromium's whole UI in the live view;
    /// falls back to headless with a warning where no X server is installed) or `headless`.
    pub display: DisplayMode,
    /// Run browsers without the sandbox (`PV_UNSAFE_NO_SANDBOX`): every tenant and viewer
    /// can then reach the host. Logged at start, shown in `/readyz` and `/metrics`.
    pub unsafe_no_sandbox: bool,
    /// Non-public address ranges (CIDRs) pages may reach all the same (`PV_EGRESS_ALLOW`,
    /// comma-separated), e.g. an intranet.
    pub egress_allow: Vec<String>,
    /// Ranges (CIDRs) no page reaches, whatever else opens them (`PV_EGRESS_DENY`,
    /// comma-separated), e.g. a host service on a public address; Azure's WireServer
    /// (168.63.129.16) always is.
    pub egress_deny: Vec<String>,
    /// Memory limit of one browser (its whole sandbox), MiB.
    pub sandbox_memory_mb: u64,
    /// Process (and thread) limit of one browser.
    pub sandbox_pids: u64,
    /// CPU limit of one browser, in cores.
    pub sandbox_cpus: f64,
    /// Disk quota of one browser (its profile and downloads), MiB; 0: none.
    pub sandbox_disk_mb: u64,
    /// First uid of the browsers' uid range when the daemon runs as root (one uid per
    /// browser, `sessions.max_sessions` + 16 of them).
    pub sandbox_uid_base: u32,
    /// Refuse sessions where per-browser cgroup limits cannot be set
    /// (`PV_SANDBOX_REQUIRE_CGROUPS`). Off, browsers are still sandboxed, without limits of
    /// their own (a Kubernetes pod, whose limits then bound them all).
    pub sandbox_require_cgroups: bool,
}

/// `browser.display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DisplayMode {
    /// Headful on a virtual display (Xvnc, or Xvfb) inside the sandbox.
    #[default]
    Virtual,
    /// Headless: the live view shows the page only (CDP screencast).
    Headless,
}

impl Default for BrowserSection {
    fn default() -> Self {
        BrowserSection {
            chromium: None,
            display: DisplayMode::Virtual,
            unsafe_no_sandbox: false,
            egress_allow: Vec::new(),
            egress_deny: Vec::new(),
            sandbox_memory_mb: 2048,
            sandbox_pids: 1024,
            sandbox_cpus: 2.0,
            sandbox_disk_mb: 4096,
            sandbox_uid_base: 1_800_000,
            sandbox_require_cgroups: true,
        }
    }
}

impl BrowserSection {
    /// The runtime's settings for `binary`, state under `data_dir`, and at most
    /// `max_sessions` browsers at once (the uid range is sized by it).
    ///
    /// # Errors
    /// A range of `egress_allow` or `egress_deny` is not a CIDR.
    pub fn settings(
        &self,
        binary: PathBuf,
        data_dir: &Path,
        max_sessions: usize,
    ) -> Result<Settings, String> {
        let cidrs = |list: &[String], name: &str| {
            list.iter()
                .map(|c| c.parse().map_err(|e| format!("browser.{name}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = cidrs(&self.egress_allow, "egress_allow")?;
        let deny = cidrs(&self.egress_deny, "egress_deny")?;
        Ok(Settings {
            binary,
            unsafe_no_sandbox: self.unsafe_no_sandbox,
            run_dir: data_dir.join("run"),
            egress: std::sync::Arc::new(super::egress::Policy { allow, deny }),
            limits: super::cgroup::Limits {
                memory_mb: self.sandbox_memory_mb,
                pids: self.sandbox_pids,
                cpus: self.sandbox_cpus,
                disk_mb: self.sandbox_disk_mb,
            },
            uid_base: self.sandbox_uid_base,
            uid_count: u32::try_from(max_sessions + 16).unwrap_or(u32::MAX),
            require_cgroups: self.sandbox_require_cgroups,
            display: self.display == DisplayMode::Virtual,
        })
    }
}
