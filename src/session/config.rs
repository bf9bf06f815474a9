//! The session service's settings: [`SessionConfig`], made from the `[server]` section of the
//! configuration in one place ([`SessionConfig::from_server`]) for the daemon, the `saves`
//! job, the benches and the in-process tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ServerConfig;

/// Session settings (from the `[server]` config section).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Starts the sessions' browsers, sandboxed.
    pub browser: Arc<crate::browser::Runtime>,
    /// Data directory (sessions/ and browsers/ live under it).
    pub data_dir: PathBuf,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions of one tenant at once (0: only `max_sessions`).
    pub max_sessions_per_tenant: usize,
    /// Most DevTools connections to one session's browser (0: no cap).
    pub max_cdp_clients: usize,
    /// Most DevTools connections to all of one tenant's sessions on this node (0: no cap).
    pub max_cdp_clients_per_tenant: usize,
    /// Most live-view viewers of all of one tenant's sessions on this node (0: no cap).
    pub max_viewers_per_tenant: usize,
    /// Storage-state imports/exports (each a browser) at once on this node, and per tenant.
    pub max_state_jobs: (usize, usize),
    /// Default inactivity timeout, seconds (`None`: never).
    pub inactive_timeout: Option<u64>,
    /// Default absolute timeout, seconds.
    pub absolute_timeout: Option<u64>,
    /// Cap on every session's absolute timeout, seconds.
    pub max_session_secs: Option<u64>,
    /// How long a browser may take to exit after `Browser.close` before it is killed.
    pub close_deadline: Duration,
    /// How long a restore may take.
    pub restore_deadline: Duration,
    /// How long Chromium may take to open DevTools.
    pub start_deadline: Duration,
    /// Saves running at once (the rest queue).
    pub max_concurrent_saves: usize,
    /// How often failed saves are retried from their kept directories.
    pub retry_failed_every: Duration,
    /// Lifetime of a profile lease; renewed every third of it while the session lives.
    pub lease_ttl: Duration,
    /// Live-view limits.
    pub live: crate::live::LiveConfig,
    /// This node's browser version (read once at start), compared with the version that
    /// saved a profile before it is loaded.
    pub browser_version: Option<String>,
    /// Load profiles saved by a newer Chromium all the same (`server.allow_older_browser`).
    pub allow_older_browser: bool,
    /// Limits of each session's store.
    pub room: crate::room::RoomConfig,
    /// Longest one store watch (SSE) lasts before the client reconnects.
    pub store_watch_max: Duration,
}

impl SessionConfig {
    /// The settings `server` configures, for browsers started by `browser` (whose version,
    /// read once, is `browser_version`) with state under `data_dir`.
    pub fn from_server(
        s: &ServerConfig,
        browser: Arc<crate::browser::Runtime>,
        data_dir: PathBuf,
        browser_version: Option<String>,
    ) -> SessionConfig {
        let secs = |n: u64| (n > 0).then_some(n);
        SessionConfig {
            browser,
            data_dir,
            max_sessions: s.max_sessions,
            max_sessions_per_tenant: s.max_sessions_per_tenant,
            max_cdp_clients: s.max_cdp_clients,
            max_cdp_clients_per_tenant: s.max_cdp_clients_per_tenant,
            max_viewers_per_tenant: s.max_viewers_per_tenant,
            max_state_jobs: (s.max_state_jobs, s.max_state_jobs_per_tenant),
            inactive_timeout: secs(s.inactive_timeout),
            absolute_timeout: secs(s.absolute_timeout),
            max_session_secs: secs(s.max_session_secs),
            live: crate::live::LiveConfig {
                max_viewers: s.max_viewers.max(1),
                max_input_rate: s.viewer_input_rate.max(10),
                ..Default::default()
            },
            close_deadline: Duration::from_secs(s.close_deadline.max(1)),
            restore_deadline: Duration::from_secs(s.restore_deadline.max(1)),
            start_deadline: Duration::from_secs(s.start_deadline.max(1)),
            max_concurrent_saves: s.max_concurrent_saves,
            retry_failed_every: Duration::from_secs(s.retry_failed_every.max(1)),
            lease_ttl: Duration::from_secs(s.lease_ttl.max(2)),
            browser_version,
            allow_older_browser: s.allow_older_browser,
            room: crate::room::RoomConfig {
                max_value_bytes: s.store_max_value_bytes,
                max_keys: s.store_max_keys,
                max_total_bytes: s.store_max_bytes,
                max_writes_per_sec: s.store_writes_per_sec.max(1),
                ..Default::default()
            },
            store_watch_max: Duration::from_secs(s.store_watch_max_secs.max(1)),
        }
    }
}
