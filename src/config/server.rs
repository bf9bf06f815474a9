//! `[server]`: the session daemon's section of the configuration (`profile-vault serve`),
//! its defaults, the browser settings made from it, and [`Secret`], a value never printed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[server]`: the session daemon (`profile-vault serve`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address (`PV_LISTEN`, `--listen`).
    pub listen: String,
    /// Base of `embed_url`/`cdp_url` (`PV_PUBLIC_URL`); default `http://` + listen address.
    pub public_url: Option<String>,
    /// Browser binary (`PV_CHROMIUM`); default: chromium on PATH.
    pub chromium: Option<PathBuf>,
    /// File of `tenant:key` lines, mode 0600 (`PV_API_KEYS_FILE`); `PV_API_KEYS` gives them inline.
    pub api_keys_file: Option<PathBuf>,
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Most concurrent sessions of one tenant (0: only `max_sessions`).
    pub max_sessions_per_tenant: usize,
    /// Most DevTools connections to one session's browser, the live view's included (0: no cap).
    pub max_cdp_clients: usize,
    /// Most DevTools connections to all of one tenant's sessions on a node (0: no cap).
    pub max_cdp_clients_per_tenant: usize,
    /// Most live-view viewers of all of one tenant's sessions on a node (0: no cap).
    pub max_viewers_per_tenant: usize,
    /// Storage-state imports/exports at once on a node (each runs a browser; 0: no cap).
    pub max_state_jobs: usize,
    /// Storage-state imports/exports at once of one tenant on a node (0: no cap).
    pub max_state_jobs_per_tenant: usize,
    /// Default inactivity timeout in seconds (0: none).
    pub inactive_timeout: u64,
    /// Default absolute timeout in seconds (0: none).
    pub absolute_timeout: u64,
    /// Longest a session may run, in seconds (0: no cap); a request's absolute timeout,
    /// or its asking for none, is capped to it.
    pub max_session_secs: u64,
    /// Load profiles saved by a newer Chromium than this node's all the same.
    pub allow_older_browser: bool,
    /// Largest value in a session's store, bytes.
    pub store_max_value_bytes: usize,
    /// Most keys in a session's store.
    pub store_max_keys: usize,
    /// Most bytes (keys and values) in a session's store.
    pub store_max_bytes: usize,
    /// Writes per second to one session's store.
    pub store_writes_per_sec: u32,
    /// Seconds one store watch (SSE) lasts before the client reconnects with Last-Event-ID.
    pub store_watch_max_secs: u64,
    /// Largest profile data document (`/v0/profiles/{id}/data`), serialized, in bytes.
    pub profile_data_max_bytes: usize,
    /// Most live-view viewers per session.
    pub max_viewers: usize,
    /// Input messages per second one viewer may send.
    pub viewer_input_rate: u32,
    /// Origins whose pages may open the live-view socket besides the daemon's own (its embed
    /// page, wherever that is framed). `["*"]` (the default): any — the viewer token in the
    /// URL is the credential, and apps built on the Hyperbeam SDK run on their own origins.
    pub viewer_origins: Vec<String>,
    /// CSP `frame-ancestors` of the embed page (`*`: any site may frame it, as Hyperbeam's).
    pub frame_ancestors: String,
    /// Seconds a browser may take to exit cleanly before its process group is killed.
    pub close_deadline: u64,
    /// Seconds a profile restore may take before the session start fails.
    pub restore_deadline: u64,
    /// Seconds Chromium may take to open DevTools.
    pub start_deadline: u64,
    /// Seconds the daemon waits for saves when stopped (SIGTERM/SIGINT).
    pub shutdown_grace: u64,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Saves running at once; more queue.
    pub max_concurrent_saves: usize,
    /// Seconds between retries of failed saves (their profile directories are kept).
    pub retry_failed_every: u64,
    /// Seconds a profile lease lives without renewal (another node can take the profile
    /// over that long after this one died).
    pub lease_ttl: u64,
    /// The secret nodes of one cluster sign their requests to each other with
    /// (`PV_CLUSTER_SECRET`, at least 16 characters). Required when more than one node runs
    /// on a store.
    pub cluster_secret: Option<Secret>,
    /// The address other nodes reach this one at (`PV_NODE_URL`); default `http://` + the
    /// listen address when that is not a wildcard.
    pub node_url: Option<String>,
    /// Seconds between heartbeats of this node's member record.
    pub cluster_heartbeat_secs: u64,
    /// Seconds after its last heartbeat a node counts as dead (its sessions show `node_lost`).
    pub cluster_node_ttl_secs: u64,
    /// Run browsers without the sandbox (`PV_UNSAFE_NO_SANDBOX`): every tenant and viewer
    /// can then reach the host. Logged at start, shown in `/readyz` and `/metrics`.
    pub unsafe_no_sandbox: bool,
    /// Non-public address ranges (CIDRs) pages may reach all the same (`PV_EGRESS_ALLOW`,
    /// comma-separated), e.g. an intranet.
    pub egress_allow: Vec<String>,
    /// Memory limit of one browser (its whole sandbox), MiB.
    pub sandbox_memory_mb: u64,
    /// Process (and thread) limit of one browser.
    pub sandbox_pids: u64,
    /// CPU limit of one browser, in cores.
    pub sandbox_cpus: f64,
    /// Disk quota of one browser (its profile and downloads), MiB; 0: none.
    pub sandbox_disk_mb: u64,
    /// First uid of the browsers' uid range when the daemon runs as root (one uid per
    /// browser, `max_sessions` + 16 of them).
    pub sandbox_uid_base: u32,
    /// Refuse sessions where per-browser cgroup limits cannot be set
    /// (`PV_SANDBOX_REQUIRE_CGROUPS`). Off, browsers are still sandboxed, without limits of
    /// their own (a Kubernetes pod, whose limits then bound them all).
    pub sandbox_require_cgroups: bool,
    /// How sessions' browsers show themselves to people (`PV_DISPLAY`): `virtual` (default:
    /// headful on a virtual display of their own, Chromium's whole UI in the live view;
    /// falls back to headless with a warning where no X server is installed) or `headless`.
    pub display: DisplayMode,
}

/// `server.display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DisplayMode {
    /// Headful on a virtual display (Xvnc, or Xvfb) inside the sandbox.
    #[default]
    Virtual,
    /// Headless: the live view shows the page only (CDP screencast).
    Headless,
}

impl ServerConfig {
    /// The browser runtime's settings for a node with this config.
    ///
    /// # Errors
    /// A range of `egress_allow` is not a CIDR.
    pub fn browser_settings(
        &self,
        binary: PathBuf,
        data_dir: &Path,
    ) -> Result<crate::browser::Settings, String> {
        let allow = self
            .egress_allow
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::browser::Settings {
            binary,
            unsafe_no_sandbox: self.unsafe_no_sandbox,
            run_dir: data_dir.join("run"),
            egress: std::sync::Arc::new(crate::browser::egress::Policy { allow }),
            limits: crate::browser::cgroup::Limits {
                memory_mb: self.sandbox_memory_mb,
                pids: self.sandbox_pids,
                cpus: self.sandbox_cpus,
                disk_mb: self.sandbox_disk_mb,
            },
            uid_base: self.sandbox_uid_base,
            uid_count: u32::try_from(self.max_sessions + 16).unwrap_or(u32::MAX),
            require_cgroups: self.sandbox_require_cgroups,
            display: self.display == DisplayMode::Virtual,
        })
    }
}

/// A secret from the config: never printed (`Debug` and serialization show `***`).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret of this text.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            chromium: None,
            api_keys_file: None,
            max_sessions: 8,
            max_sessions_per_tenant: 0,
            max_cdp_clients: 16,
            max_cdp_clients_per_tenant: 0,
            max_viewers_per_tenant: 0,
            max_state_jobs: 2,
            max_state_jobs_per_tenant: 1,
            inactive_timeout: 1200,
            absolute_timeout: 0,
            max_session_secs: 86_400,
            allow_older_browser: false,
            store_max_value_bytes: 16 * 1024,
            store_max_keys: 256,
            store_max_bytes: 1 << 20,
            store_writes_per_sec: 5000,
            store_watch_max_secs: 3600,
            profile_data_max_bytes: crate::vault::DEFAULT_DATA_MAX_BYTES,
            max_viewers: 20,
            viewer_input_rate: 400,
            viewer_origins: vec!["*".into()],
            frame_ancestors: "*".into(),
            close_deadline: 30,
            restore_deadline: 300,
            start_deadline: 30,
            shutdown_grace: 120,
            max_body_bytes: 64 * 1024,
            max_concurrent_saves: 2,
            retry_failed_every: 60,
            lease_ttl: 30,
            cluster_secret: None,
            node_url: None,
            cluster_heartbeat_secs: 2,
            cluster_node_ttl_secs: 10,
            unsafe_no_sandbox: false,
            egress_allow: Vec::new(),
            sandbox_memory_mb: 2048,
            sandbox_pids: 1024,
            sandbox_cpus: 2.0,
            sandbox_disk_mb: 4096,
            sandbox_uid_base: 1_800_000,
            sandbox_require_cgroups: true,
            display: DisplayMode::Virtual,
        }
    }
}
