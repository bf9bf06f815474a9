//! `[sessions]`: the session service's section of the configuration ([`SessionsSection`]),
//! and its runtime settings, [`SessionConfig`], made from it and the `[live]` and `[room]`
//! sections in one place ([`SessionConfig::from_sections`]) for the daemon, the `saves` job,
//! the benches and the in-process tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::live::LiveSection;
use crate::room::RoomSection;

/// `[sessions]`: how many sessions, for how long, and how they start, stop and save.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Most concurrent sessions.
    pub max_sessions: usize,
    /// Most concurrent sessions of one tenant (0: only `max_sessions`).
    pub max_sessions_per_tenant: usize,
    /// Most DevTools connections to one session's browser, the live view's included (0: no cap).
    pub max_cdp_clients: usize,
    /// Most DevTools connections to all of one tenant's sessions on a node (0: no cap).
    pub max_cdp_clients_per_tenant: usize,
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
    /// Largest profile data document (`/v0/profiles/{id}/data`), serialized, in bytes.
    pub profile_data_max_bytes: usize,
    /// Seconds a browser may take to exit cleanly before its process group is killed.
    pub close_deadline: u64,
    /// Seconds a profile restore may take before the session start fails.
    pub restore_deadline: u64,
    /// Seconds Chromium may take to open DevTools.
    pub start_deadline: u64,
    /// Seconds the daemon waits for saves when stopped (SIGTERM/SIGINT).
    pub shutdown_grace: u64,
    /// Saves running at once; more queue.
    pub max_concurrent_saves: usize,
    /// Seconds between retries of failed saves (their profile directories are kept).
    pub retry_failed_every: u64,
    /// Seconds a profile lease lives without renewal (another node can take the profile
    /// over that long after this one died).
    pub lease_ttl: u64,
    /// Seconds a failed save holds its profile (this node's lock, the lease) while it is
    /// retried, so no session loads the generation before it (0: not held).
    pub hold_failed_saves: u64,
    /// Seconds the directory of a refused save (the profile holds what a restore would
    /// refuse) is kept, not retried, before it is removed (0: removed at the next sweep).
    pub keep_refused_saves: u64,
}

impl Default for SessionsSection {
    fn default() -> Self {
        SessionsSection {
            max_sessions: 8,
            max_sessions_per_tenant: 0,
            max_cdp_clients: 16,
            max_cdp_clients_per_tenant: 0,
            max_state_jobs: 2,
            max_state_jobs_per_tenant: 1,
            inactive_timeout: 1200,
            absolute_timeout: 0,
            max_session_secs: 86_400,
            allow_older_browser: false,
            profile_data_max_bytes: crate::vault::DEFAULT_DATA_MAX_BYTES,
            close_deadline: 30,
            restore_deadline: 300,
            start_deadline: 30,
            shutdown_grace: 120,
            max_concurrent_saves: 2,
            retry_failed_every: 60,
            lease_ttl: 30,
            hold_failed_saves: 3600,
            keep_refused_saves: 86_400,
        }
    }
}

/// Session settings (from the `[sessions]`, `[live]` and `[room]` sections).
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
    /// How long a failed save holds its profile while it is retried (zero: not held).
    pub hold_failed: Duration,
    /// How long a refused save's directory is kept.
    pub keep_refused: Duration,
    /// Live-view limits.
    pub live: crate::live::LiveConfig,
    /// This node's browser version (read once at start), compared with the version that
    /// saved a profile before it is loaded.
    pub browser_version: Option<String>,
    /// Load profiles saved by a newer Chromium all the same (`sessions.allow_older_browser`).
    pub allow_older_browser: bool,
    /// Limits of each session's store.
    pub room: crate::room::RoomConfig,
    /// Longest one store watch (SSE) lasts before the client reconnects.
    pub store_watch_max: Duration,
}

impl SessionConfig {
    /// The settings the sections configure, for browsers started by `browser` (whose
    /// version, read once, is `browser_version`) with state under `data_dir`.
    pub fn from_sections(
        s: &SessionsSection,
        live: &LiveSection,
        room: &RoomSection,
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
            max_viewers_per_tenant: live.max_viewers_per_tenant,
            max_state_jobs: (s.max_state_jobs, s.max_state_jobs_per_tenant),
            inactive_timeout: secs(s.inactive_timeout),
            absolute_timeout: secs(s.absolute_timeout),
            max_session_secs: secs(s.max_session_secs),
            live: crate::live::LiveConfig {
                max_viewers: live.max_viewers.max(1),
                max_input_rate: live.input_rate.max(10),
                send_timeout: Duration::from_secs(live.send_timeout.max(1)),
                ..Default::default()
            },
            close_deadline: Duration::from_secs(s.close_deadline.max(1)),
            restore_deadline: Duration::from_secs(s.restore_deadline.max(1)),
            start_deadline: Duration::from_secs(s.start_deadline.max(1)),
            max_concurrent_saves: s.max_concurrent_saves,
            retry_failed_every: Duration::from_secs(s.retry_failed_every.max(1)),
            lease_ttl: Duration::from_secs(s.lease_ttl.max(2)),
            hold_failed: Duration::from_secs(s.hold_failed_saves),
            keep_refused: Duration::from_secs(s.keep_refused_saves),
            browser_version,
            allow_older_browser: s.allow_older_browser,
            room: crate::room::RoomConfig {
                max_value_bytes: room.max_value_bytes,
                max_keys: room.max_keys,
                max_total_bytes: room.max_bytes,
                max_writes_per_sec: room.writes_per_sec.max(1),
                ..Default::default()
            },
            store_watch_max: Duration::from_secs(room.watch_max_secs.max(1)),
        }
    }
}
