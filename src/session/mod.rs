//! Browser sessions: their lifecycle, the registry, timeouts, and crash recovery.
//!
//! A session owns one Chromium process ([`chromium::Browser`]) on its own user-data-dir
//! under `<data_dir>/browsers/<session_id>` (0700). However it ends (client, admin,
//! inactivity/absolute/offline timeout, browser crash, daemon shutdown) the same path runs:
//! stop the browser cleanly, save a new generation if the session saves, then remove the
//! directory. A save that fails keeps the directory (and the session record) so nothing is lost.
//!
//! The session table lives on disk (`<data_dir>/sessions/<id>.json`, 0600, no secrets), so a
//! daemon that was killed finds the sessions that were running at its next start, stops
//! their orphaned browsers, and saves their profiles ([`Manager::recover`]).

pub mod chromium;
pub mod webhook;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::fsutil;
use crate::vault::{self, Base, Vault};
use crate::{NoProgress, Progress};

pub use chromium::LaunchOptions;

/// Errors of session management (mapped onto HTTP errors by the API).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon is shutting down.
    #[error("the daemon is shutting down; retry on another node or later")]
    ShuttingDown,
    /// Too many concurrent sessions.
    #[error("too many concurrent sessions (limit {0})")]
    TooManySessions(usize),
    /// A saving session already holds this profile.
    #[error("profile {0} is in use by another session that will save it")]
    ProfileInUse(String),
    /// Nothing to load under that id.
    #[error("profile {0} not found")]
    ProfileNotFound(String),
    /// Restoring the profile failed: the session is not started.
    #[error("restoring profile {profile} failed: {source}")]
    Restore {
        /// Profile.
        profile: String,
        /// Cause.
        source: vault::Error,
    },
    /// Restoring took longer than the configured deadline.
    #[error("restoring profile {0} took longer than the restore deadline")]
    RestoreTimeout(String),
    /// The vault failed otherwise.
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// The browser failed to start.
    #[error(transparent)]
    Browser(#[from] chromium::Error),
    /// Local I/O.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// Session settings (from the `[server]` config section).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Browser binary.
    pub chromium: PathBuf,
    /// Data directory (sessions/ and browsers/ live under it).
    pub data_dir: PathBuf,
    /// Most sessions at once.
    pub max_sessions: usize,
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
}

/// Per-session timeouts in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timeouts {
    /// From creation.
    pub absolute: Option<u64>,
    /// Since the last activity (CDP traffic, ping).
    pub inactive: Option<u64>,
    /// With no DevTools client connected.
    pub offline: Option<u64>,
}

/// What to do with a profile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProfileRequest {
    /// No persistence.
    #[default]
    None,
    /// Fresh profile, saved at the end under this session's id.
    New,
    /// Restore `id` first; `save`: save back under the profile's first id.
    Load {
        /// Profile id or the id of a later session of it.
        id: String,
        /// Save at the end.
        save: bool,
    },
}

/// A request to start a session.
#[derive(Debug, Clone, Default)]
pub struct CreateSession {
    /// Profile handling.
    pub profile: ProfileRequest,
    /// Timeouts (already defaulted by the caller).
    pub timeouts: Timeouts,
    /// Browser options.
    pub launch: LaunchOptions,
    /// Who asks, for the audit trail (`api-key:<tenant>#<key id>`).
    pub actor: String,
    /// Timeout webhook.
    pub webhook: Option<webhook::Webhook>,
    /// Seconds before a timeout at which the webhook gets a warning.
    pub warning: Option<u64>,
    /// Roles of the users `embed_url` admits.
    pub default_roles: std::collections::BTreeSet<crate::live::Role>,
    /// New viewers start with control disabled.
    pub control_disable_default: bool,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// DELETE with the API key.
    Client,
    /// DELETE with the session's admin token.
    Admin,
    /// Inactivity timeout.
    Inactive,
    /// Absolute timeout.
    Absolute,
    /// No DevTools client for too long.
    Offline,
    /// The browser exited by itself.
    Crash,
    /// The daemon shut down.
    Shutdown,
    /// Found running after a daemon crash.
    Recovered,
}

/// Save progress of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SaveState {
    /// The session does not save.
    None,
    /// Will save when it ends.
    Pending,
    /// Saving now.
    Saving,
    /// Saved as this generation.
    Saved {
        /// Generation written.
        generation: u64,
    },
    /// The save failed; the profile directory is kept and the save is retried.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Saved as a generation that is not the head, because another save moved the head first.
    Conflict {
        /// Generation written (listed by `versions`).
        generation: u64,
        /// The head at that time.
        head: Option<u64>,
    },
}

#[derive(Debug)]
struct Status {
    ended: Option<(u64, EndReason)>,
    save: SaveState,
    generation: Option<u64>,
}

/// One browser session.
pub struct Session {
    /// Session id (uuid).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    admin_token_hash: [u8; 32],
    /// Profile id (the first session's id), if the session has a profile.
    pub profile_id: Option<String>,
    /// Whether it saves at the end.
    pub save: bool,
    /// Whether a profile was restored into it.
    pub loaded: bool,
    /// Head generation when it was loaded.
    pub base_generation: Option<u64>,
    /// Creation, Unix seconds.
    pub created_at: u64,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Fields accepted but not honoured.
    pub ignored: Vec<String>,
    /// Roles of the users `embed_url` admits.
    pub default_roles: std::collections::BTreeSet<crate::live::Role>,
    dir: PathBuf,
    browser: tokio::sync::Mutex<Option<chromium::Browser>>,
    browser_ws: String,
    last_activity_ms: AtomicU64,
    clients: AtomicUsize,
    offline_since_ms: AtomicU64,
    lease: tokio::sync::Mutex<Option<vault::Lease>>,
    webhook: Option<webhook::Webhook>,
    warning: u64,
    warned: std::sync::atomic::AtomicBool,
    lease_renewed_ms: AtomicU64,
    status: Mutex<Status>,
    done: tokio::sync::watch::Sender<bool>,
    /// The live view: viewers, their tokens and roles, the screencast.
    pub live: crate::live::Live,
    /// Bookmarks to merge into the profile after the browser stopped (`POST <base_url>/bookmarks`).
    pending_bookmarks: Mutex<Vec<crate::live::bookmarks::Node>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("profile_id", &self.profile_id)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn token_hash(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A public view of a session (the JSON of `GET /v0/vm/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// Creation, Unix seconds.
    pub created_at: u64,
    /// When a timeout would end it now (Unix seconds), if any.
    pub expires_at: Option<u64>,
    /// When it ended (Unix seconds).
    pub termination_date: Option<u64>,
    /// Why it ended.
    pub end_reason: Option<EndReason>,
    /// Profile state.
    pub profile: Option<ProfileInfo>,
    /// Save state.
    pub save: SaveState,
    /// DevTools clients connected through the proxy, and viewers of the live view.
    pub cdp_clients: usize,
    /// Users connected to the live view.
    pub viewers: Vec<crate::live::UserInfo>,
}

/// Profile part of [`SessionInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct ProfileInfo {
    /// Profile id (the first session's id).
    pub id: String,
    /// Whether it was restored into this session.
    pub loaded: bool,
    /// Generation loaded, or the one saved last.
    pub generation: Option<u64>,
    /// Whether the session saves.
    pub save: bool,
}

impl Session {
    /// Checks an admin token in constant time.
    pub fn admin_token_matches(&self, token: &str) -> bool {
        bool::from(self.admin_token_hash.ct_eq(&token_hash(token)))
    }

    /// Whether the session is still running.
    pub fn is_active(&self) -> bool {
        self.status.lock().expect("status lock").ended.is_none()
    }

    /// Records activity (renews the inactivity timeout).
    pub fn touch(&self) {
        self.last_activity_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The loopback DevTools URL of the browser (for the proxy only).
    pub fn browser_ws(&self) -> &str {
        &self.browser_ws
    }

    /// A DevTools client connected.
    pub fn client_connected(&self) {
        self.clients.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    /// A DevTools client disconnected.
    pub fn client_disconnected(&self) {
        if self.clients.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.offline_since_ms.store(now_ms(), Ordering::SeqCst);
        }
        self.touch();
    }

    /// When the session would time out now (Unix seconds), and why.
    fn deadline(&self) -> Option<(u64, EndReason)> {
        let mut best: Option<(u64, EndReason)> = None;
        let mut consider = |at_ms: u64, why| {
            if best.is_none_or(|(b, _)| at_ms < b) {
                best = Some((at_ms, why));
            }
        };
        if let Some(a) = self.timeouts.absolute {
            consider(self.created_at * 1000 + a * 1000, EndReason::Absolute);
        }
        if let Some(i) = self.timeouts.inactive {
            consider(
                self.last_activity_ms.load(Ordering::Relaxed) + i * 1000,
                EndReason::Inactive,
            );
        }
        if let Some(o) = self.timeouts.offline {
            if self.clients.load(Ordering::SeqCst) == 0 {
                consider(
                    self.offline_since_ms.load(Ordering::SeqCst) + o * 1000,
                    EndReason::Offline,
                );
            }
        }
        best
    }

    /// The public view.
    pub fn info(&self) -> SessionInfo {
        let st = self.status.lock().expect("status lock");
        SessionInfo {
            session_id: self.id.clone(),
            created_at: self.created_at,
            expires_at: if st.ended.is_none() {
                self.deadline().map(|(ms, _)| ms.div_ceil(1000))
            } else {
                None
            },
            termination_date: st.ended.map(|(t, _)| t),
            end_reason: st.ended.map(|(_, r)| r),
            profile: self.profile_id.as_ref().map(|id| ProfileInfo {
                id: id.clone(),
                loaded: self.loaded,
                generation: st.generation,
                save: self.save,
            }),
            save: st.save.clone(),
            cdp_clients: self.clients.load(Ordering::SeqCst),
            viewers: self.live.users(),
        }
    }

    /// Queues bookmarks for the profile (merged after the browser stops, before the save).
    /// False when the session does not save (nothing would keep them).
    pub fn add_bookmarks(&self, nodes: Vec<crate::live::bookmarks::Node>) -> bool {
        if !self.save {
            return false;
        }
        self.pending_bookmarks
            .lock()
            .expect("bookmarks")
            .extend(nodes);
        true
    }

    /// Waits until the session has ended and its save finished (or failed).
    pub async fn wait_done(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}

/// The on-disk session record (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Session id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Profile id.
    pub profile_id: Option<String>,
    /// Saves at the end.
    pub save: bool,
    /// Head generation when loaded.
    pub base_generation: Option<u64>,
    /// user-data-dir.
    pub dir: PathBuf,
    /// Browser pid (0 before it started).
    pub pid: u32,
    /// Creation, Unix seconds.
    pub created_at: u64,
    /// `running`, `ending` or `failed`.
    pub state: String,
}

/// Counters the metrics endpoint reports.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions started.
    pub started: AtomicU64,
    /// Sessions ended.
    pub ended: AtomicU64,
    /// Saves that succeeded.
    pub saves_ok: AtomicU64,
    /// Saves that failed.
    pub saves_failed: AtomicU64,
    /// Restores that succeeded.
    pub restores_ok: AtomicU64,
    /// Restores that failed.
    pub restores_failed: AtomicU64,
    /// Bytes saved (stored).
    pub bytes_saved: AtomicU64,
    /// Total save time, milliseconds.
    pub save_ms: AtomicU64,
    /// Total restore time, milliseconds.
    pub restore_ms: AtomicU64,
}

/// The registry of sessions.
pub struct Manager {
    vault: Vault,
    cfg: SessionConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    saving: Mutex<HashMap<(String, String), String>>,
    shutting_down: std::sync::atomic::AtomicBool,
    save_slots: Arc<tokio::sync::Semaphore>,
    /// Metrics.
    pub counters: Counters,
    recovering: AtomicUsize,
    retrying: Mutex<std::collections::HashSet<String>>,
    node_id: String,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// This node's id, kept in `<data_dir>/node-id` so a restarted daemon is the same node.
fn node_id(data_dir: &Path) -> Result<String, Error> {
    let path = data_dir.join("node-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let id = format!("node-{}", uuid::Uuid::new_v4().simple());
    fsutil::write_private_atomic(&path, id.as_bytes()).map_err(io_at(&path))?;
    Ok(id)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Manager {
    /// A manager over `vault`.
    ///
    /// # Errors
    /// The session directories cannot be created.
    pub fn new(vault: Vault, cfg: SessionConfig) -> Result<Arc<Self>, Error> {
        for d in [cfg.data_dir.join("sessions"), cfg.data_dir.join("browsers")] {
            fsutil::create_private_dir(&d).map_err(io_at(&d))?;
        }
        let slots = cfg.max_concurrent_saves.max(1);
        let node_id = node_id(&cfg.data_dir)?;
        Ok(Arc::new(Manager {
            vault,
            cfg,
            sessions: Mutex::new(HashMap::new()),
            saving: Mutex::new(HashMap::new()),
            shutting_down: false.into(),
            save_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            counters: Counters::default(),
            recovering: AtomicUsize::new(0),
            retrying: Mutex::new(std::collections::HashSet::new()),
            node_id,
        }))
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The config.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Sessions still being recovered after a restart.
    pub fn recovering(&self) -> usize {
        self.recovering.load(Ordering::SeqCst)
    }

    /// Active sessions (all tenants).
    pub fn active_count(&self) -> usize {
        self.sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.is_active())
            .count()
    }

    /// Looks a session up by id (active or recently ended).
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(id)
            .cloned()
    }

    /// The tenant's sessions, sorted by id.
    pub fn list(&self, tenant: &str, active_only: bool) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.tenant == tenant && (!active_only || s.is_active()))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.cfg
            .data_dir
            .join("sessions")
            .join(format!("{id}.json"))
    }

    fn write_record(&self, r: &Record) {
        let path = self.record_path(&r.id);
        let body = serde_json::to_vec_pretty(r).expect("record serializes");
        if let Err(e) = fsutil::write_private_atomic(&path, &body) {
            tracing::error!(session = %r.id, error = %e, "cannot write the session record");
        }
    }

    fn release_profile(&self, tenant: &str, profile: &str, session: &str) {
        let mut m = self.saving.lock().expect("saving lock");
        if m.get(&(tenant.to_string(), profile.to_string()))
            .is_some_and(|s| s == session)
        {
            m.remove(&(tenant.to_string(), profile.to_string()));
        }
    }

    /// Starts a session: restores its profile (if any), then starts Chromium.
    /// Returns the session and its admin token (shown once).
    ///
    /// # Errors
    /// Limits, profile-in-use, unknown profile, failed restore (the session is not started),
    /// browser start failures.
    pub async fn create(
        self: &Arc<Self>,
        tenant: &str,
        req: CreateSession,
        ignored: Vec<String>,
    ) -> Result<(Arc<Session>, String), Error> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        if self.active_count() >= self.cfg.max_sessions {
            return Err(Error::TooManySessions(self.cfg.max_sessions));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let mut token_bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token_bytes);
        let admin_token = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token_bytes,
        );

        let (profile_id, save, loaded, base_generation) = match &req.profile {
            ProfileRequest::None => (None, false, false, None),
            ProfileRequest::New => (Some(id.clone()), true, false, None),
            ProfileRequest::Load { id: load_id, save } => {
                vault::validate_id("profile", load_id)
                    .map_err(|_| Error::ProfileNotFound(load_id.clone()))?;
                match self.vault.resolve_profile(tenant, load_id).await? {
                    Some((p, g)) => (Some(p), *save, true, g),
                    None => return Err(Error::ProfileNotFound(load_id.clone())),
                }
            }
        };
        if let (Some(p), true) = (&profile_id, save) {
            let mut m = self.saving.lock().expect("saving lock");
            let k = (tenant.to_string(), p.clone());
            if m.contains_key(&k) {
                return Err(Error::ProfileInUse(p.clone()));
            }
            m.insert(k, id.clone());
        }
        let cleanup_lock = |this: &Self| {
            if let (Some(p), true) = (&profile_id, save) {
                this.release_profile(tenant, p, &id);
            }
        };
        // Across nodes: a lease in the store (only a continued profile can be contended).
        let mut lease = None;
        if let (Some(p), true, true) = (&profile_id, save, loaded) {
            match self
                .vault
                .acquire_lease(tenant, p, &self.node_id, &id, self.cfg.lease_ttl)
                .await
            {
                Ok(Some(l)) => lease = Some(l),
                Ok(None) => {
                    cleanup_lock(self);
                    return Err(Error::ProfileInUse(p.clone()));
                }
                Err(e) => {
                    cleanup_lock(self);
                    return Err(e.into());
                }
            }
        }
        let dir = self.cfg.data_dir.join("browsers").join(&id);
        let mut record = Record {
            id: id.clone(),
            tenant: tenant.into(),
            profile_id: profile_id.clone(),
            save,
            base_generation,
            dir: dir.clone(),
            pid: 0,
            created_at: now_ms() / 1000,
            state: "starting".into(),
        };
        let started = self.start_browser(tenant, &req, &record, loaded).await;
        let browser = match started {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_file(self.record_path(&id));
                // Released before answering, so the client's next attempt finds it free.
                if let Some(l) = &lease {
                    if let Err(le) = self.vault.release_lease(l).await {
                        tracing::warn!(session = %id, error = %le, "could not release the profile lease; it expires by itself");
                    }
                }
                cleanup_lock(self);
                return Err(e);
            }
        };
        record.pid = browser.pid();
        record.state = "running".into();
        self.write_record(&record);
        if loaded {
            if let Some(p) = &profile_id {
                if let Err(e) = self.vault.write_alias(tenant, &id, p).await {
                    tracing::warn!(session = %id, error = %e, "could not record the session alias of the profile");
                }
            }
        }
        let now = now_ms();
        let (done, _) = tokio::sync::watch::channel(false);
        let browser_ws = browser.ws_url();
        let live = crate::live::Live::new(
            self.cfg.live.clone(),
            browser_ws.clone(),
            req.control_disable_default,
        );
        let session = Arc::new(Session {
            id: id.clone(),
            tenant: tenant.into(),
            admin_token_hash: token_hash(&admin_token),
            profile_id,
            save,
            loaded,
            base_generation,
            created_at: record.created_at,
            timeouts: req.timeouts,
            ignored,
            default_roles: req.default_roles.clone(),
            dir,
            browser_ws,
            browser: tokio::sync::Mutex::new(Some(browser)),
            last_activity_ms: AtomicU64::new(now),
            clients: AtomicUsize::new(0),
            offline_since_ms: AtomicU64::new(now),
            lease: tokio::sync::Mutex::new(lease),
            webhook: req.webhook.clone(),
            warning: req.warning.unwrap_or(60),
            warned: false.into(),
            lease_renewed_ms: AtomicU64::new(now),
            status: Mutex::new(Status {
                ended: None,
                save: if save {
                    SaveState::Pending
                } else {
                    SaveState::None
                },
                generation: base_generation,
            }),
            done,
            live,
            pending_bookmarks: Mutex::new(Vec::new()),
        });
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(id.clone(), session.clone());
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        tracing::info!(session = %id, tenant, profile = ?session.profile_id, loaded, save, "session started");
        Ok((session, admin_token))
    }

    async fn start_browser(
        &self,
        tenant: &str,
        req: &CreateSession,
        record: &Record,
        loaded: bool,
    ) -> Result<chromium::Browser, Error> {
        self.write_record(record);
        let dir = &record.dir;
        if loaded {
            let profile = record
                .profile_id
                .as_deref()
                .expect("loaded sessions have a profile");
            let t = std::time::Instant::now();
            let vault = self.vault.with_actor(&req.actor);
            let restore = vault.restore(
                tenant,
                profile,
                record.base_generation,
                dir,
                Arc::new(NoProgress) as Arc<dyn Progress>,
            );
            match tokio::time::timeout(self.cfg.restore_deadline, restore).await {
                Ok(Ok(_)) => {
                    self.counters.restores_ok.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .restore_ms
                        .fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    crate::metrics::METRICS.restore_seconds.observe(t.elapsed());
                }
                Ok(Err(e)) => {
                    self.counters
                        .restores_failed
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Restore {
                        profile: profile.into(),
                        source: e,
                    });
                }
                Err(_) => {
                    self.counters
                        .restores_failed
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::RestoreTimeout(profile.into()));
                }
            }
        } else {
            fsutil::create_private_dir(dir).map_err(io_at(dir))?;
        }
        let mut launch = req.launch.clone();
        launch.restore_last_session = loaded;
        Ok(
            chromium::Browser::launch(&self.cfg.chromium, dir, &launch, self.cfg.start_deadline)
                .await?,
        )
    }

    /// Ends a session (idempotent): marks it ended now and runs stop + save in the background.
    pub fn end(self: &Arc<Self>, session: &Arc<Session>, reason: EndReason) -> bool {
        {
            let mut st = session.status.lock().expect("status lock");
            if st.ended.is_some() {
                return false;
            }
            st.ended = Some((now_ms() / 1000, reason));
        }
        tracing::info!(session = %session.id, ?reason, "session ending");
        let why = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        session.live.end(&why);
        let this = self.clone();
        let s = session.clone();
        tokio::spawn(async move { this.finish(s).await });
        true
    }

    async fn finish(self: Arc<Self>, s: Arc<Session>) {
        let mut record = Record {
            id: s.id.clone(),
            tenant: s.tenant.clone(),
            profile_id: s.profile_id.clone(),
            save: s.save,
            base_generation: s.base_generation,
            dir: s.dir.clone(),
            pid: 0,
            created_at: s.created_at,
            state: "ending".into(),
        };
        if let Some(mut b) = s.browser.lock().await.take() {
            record.pid = b.pid();
            self.write_record(&record);
            b.close(self.cfg.close_deadline).await;
        }
        let bookmarks = std::mem::take(&mut *s.pending_bookmarks.lock().expect("bookmarks"));
        if !bookmarks.is_empty() {
            match crate::live::bookmarks::merge_into(&s.dir, &bookmarks) {
                Ok(n) => {
                    tracing::info!(session = %s.id, added = n, "bookmarks merged into the profile")
                }
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "could not merge bookmarks into the profile")
                }
            }
        }
        let ok = self.save_record(&record, Some(&s)).await;
        if ok {
            self.forget(&s.id, &s.dir);
        } else {
            record.state = "failed".into();
            self.write_record(&record);
        }
        // The store lease first, then the local lock: whoever takes the profile next finds both free.
        if let Some(l) = s.lease.lock().await.take() {
            if ok {
                if let Err(e) = self.vault.release_lease(&l).await {
                    tracing::warn!(session = %s.id, error = %e, "could not release the profile lease; it expires by itself");
                }
            }
        }
        if let (Some(p), true) = (&s.profile_id, s.save) {
            self.release_profile(&s.tenant, p, &s.id);
        }
        self.counters.ended.fetch_add(1, Ordering::Relaxed);
        s.done.send_replace(true);
        if let Some(hook) = &s.webhook {
            let info = s.info();
            let body = serde_json::json!({"session_id": s.id, "type": "ended", "reason": info.end_reason, "termination_date": info.termination_date, "save": info.save});
            if let Err(e) = webhook::send(hook, &body).await {
                tracing::warn!(session = %s.id, error = %e, "timeout webhook (ended) not delivered");
            }
        }
    }

    /// Saves a stopped browser's directory; returns whether nothing is left to do.
    async fn save_dir(
        &self,
        tenant: &str,
        profile: Option<&str>,
        save: bool,
        base: Option<u64>,
        dir: &Path,
        s: Option<&Session>,
    ) -> bool {
        let (Some(profile), true) = (profile, save) else {
            return true;
        };
        if !dir.is_dir() {
            return true;
        }
        let waiting = &crate::metrics::METRICS.saves_waiting;
        waiting.fetch_add(1, Ordering::Relaxed);
        let _slot = self
            .save_slots
            .acquire()
            .await
            .expect("semaphore never closed");
        waiting.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = s {
            s.status.lock().expect("status lock").save = SaveState::Saving;
        }
        let t = std::time::Instant::now();
        let actor = match s {
            Some(s) => match s.status.lock().expect("status lock").ended.map(|(_, r)| r) {
                Some(EndReason::Client) => format!("api-key:{tenant}"),
                Some(EndReason::Admin) => format!("admin-token:{}", s.id),
                Some(other) => format!(
                    "daemon:{}",
                    serde_json::to_value(other)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                None => "daemon".into(),
            },
            None => "daemon:recovery".into(),
        };
        let r = self
            .vault
            .with_actor(&actor)
            .save(
                tenant,
                profile,
                dir,
                Base::Expect(base),
                Arc::new(NoProgress),
            )
            .await;
        self.counters
            .save_ms
            .fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        crate::metrics::METRICS.save_seconds.observe(t.elapsed());
        match r {
            Ok(rep) => {
                self.counters.saves_ok.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_saved
                    .fetch_add(rep.bytes_stored, Ordering::Relaxed);
                if let Some(s) = s {
                    let mut st = s.status.lock().expect("status lock");
                    st.save = SaveState::Saved {
                        generation: rep.generation,
                    };
                    st.generation = Some(rep.generation);
                }
                true
            }
            // Another save moved the head first: this generation is stored and listed, so
            // nothing is lost and the directory can go; the head is not moved over theirs.
            Err(vault::Error::Conflict { kept, head, .. }) => {
                self.counters.saves_ok.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant, profile, kept, ?head, "the profile moved on while this session ran: saved as a non-head generation (roll back to it to use it)");
                if let Some(s) = s {
                    s.status.lock().expect("status lock").save = SaveState::Conflict {
                        generation: kept,
                        head,
                    };
                }
                true
            }
            Err(e) => {
                self.counters.saves_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(tenant, profile, error = %e, dir = %dir.display(), "saving the profile failed; its directory is kept");
                if let Some(s) = s {
                    s.status.lock().expect("status lock").save = SaveState::Failed {
                        error: e.to_string(),
                    };
                }
                false
            }
        }
    }

    /// Saves the directory a session record names (see [`Manager::save_dir`]).
    async fn save_record(&self, r: &Record, s: Option<&Session>) -> bool {
        self.save_dir(
            &r.tenant,
            r.profile_id.as_deref(),
            r.save,
            r.base_generation,
            &r.dir,
            s,
        )
        .await
    }

    /// Removes a finished session's directory and record.
    fn forget(&self, id: &str, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_file(self.record_path(id));
    }

    /// Session records whose save failed (their directories are kept), for `tenant` or all.
    pub fn failed_saves(&self, tenant: Option<&str>) -> Vec<Record> {
        let dir = self.cfg.data_dir.join("sessions");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<Record> = rd
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Record>(&b).ok())
            .filter(|r| r.state == "failed" && tenant.is_none_or(|t| r.tenant == t))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Retries the failed save of session `id` now. Returns whether it is saved.
    ///
    /// # Errors
    /// [`Error::ProfileNotFound`] when there is no failed save with that id.
    pub async fn retry_save(
        self: &Arc<Self>,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<bool, Error> {
        let Some(r) = self.failed_saves(tenant).into_iter().find(|r| r.id == id) else {
            return Err(Error::ProfileNotFound(id.into()));
        };
        {
            let mut busy = self.retrying.lock().expect("retrying lock");
            if !busy.insert(r.id.clone()) {
                return Ok(false);
            }
        }
        let session = self.get(&r.id);
        let ok = self.save_record(&r, session.as_deref()).await;
        if ok {
            self.forget(&r.id, &r.dir);
            tracing::info!(session = %r.id, profile = ?r.profile_id, "failed save retried successfully");
        }
        self.retrying.lock().expect("retrying lock").remove(&r.id);
        Ok(ok)
    }

    /// Retries every failed save once; returns how many are now saved.
    pub async fn retry_failed_saves(self: &Arc<Self>) -> usize {
        let mut n = 0;
        for r in self.failed_saves(None) {
            if let Ok(true) = self.retry_save(None, &r.id).await {
                n += 1;
            }
        }
        n
    }

    /// Checks timeouts and crashed browsers once; returns how many sessions it ended.
    pub async fn sweep(self: &Arc<Self>) -> usize {
        let active: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.is_active())
            .cloned()
            .collect();
        let now = now_ms();
        let mut n = 0;
        let renew_every = (self.cfg.lease_ttl.as_millis() as u64 / 3).max(1);
        for s in &active {
            if now.saturating_sub(s.lease_renewed_ms.load(Ordering::Relaxed)) < renew_every {
                continue;
            }
            s.lease_renewed_ms.store(now, Ordering::Relaxed);
            let (this, s) = (self.clone(), s.clone());
            tokio::spawn(async move {
                let mut g = s.lease.lock().await;
                if let Some(l) = g.as_mut() {
                    match this.vault.renew_lease(l, this.cfg.lease_ttl).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(session = %s.id, "profile lease lost to another node; its save will be kept as a non-head generation if the profile moved")
                        }
                        Err(e) => {
                            tracing::warn!(session = %s.id, error = %e, "could not renew the profile lease; retrying")
                        }
                    }
                }
            });
        }
        for s in active {
            let crashed = match s.browser.try_lock() {
                Ok(mut g) => g.as_mut().is_some_and(|b| b.try_exited()),
                Err(_) => false,
            };
            if let (Some(hook), Some((at, why))) = (&s.webhook, s.deadline()) {
                if at > now + s.warning * 1000 {
                    // The deadline moved away again (activity): re-arm the warning.
                    s.warned.store(false, Ordering::SeqCst);
                } else if at > now && !s.warned.swap(true, Ordering::SeqCst) {
                    let (hook, id) = (hook.clone(), s.id.clone());
                    let body = serde_json::json!({"session_id": id, "type": "timeout_warning", "reason": why, "expires_at": at.div_ceil(1000)});
                    tokio::spawn(async move {
                        if let Err(e) = webhook::send(&hook, &body).await {
                            tracing::warn!(session = %id, error = %e, "timeout webhook (warning) not delivered");
                        }
                    });
                }
            }
            if crashed {
                tracing::warn!(session = %s.id, "browser exited by itself; saving what reached disk");
                n += usize::from(self.end(&s, EndReason::Crash));
            } else if let Some((at, why)) = s.deadline() {
                if at <= now {
                    n += usize::from(self.end(&s, why));
                }
            }
        }
        // Forget sessions that ended more than an hour ago.
        let cutoff = now / 1000 - 3600.min(now / 1000);
        self.sessions.lock().expect("sessions lock").retain(|_, s| {
            s.status
                .lock()
                .expect("status lock")
                .ended
                .is_none_or(|(t, _)| t > cutoff)
                || !*s.done.borrow()
        });
        n
    }

    /// Runs [`Manager::sweep`] every `every` until `stop` fires.
    pub async fn run_sweeper(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        let mut last_retry = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.sweep().await;
                    if last_retry.elapsed() >= self.cfg.retry_failed_every {
                        last_retry = tokio::time::Instant::now();
                        let this = self.clone();
                        tokio::spawn(async move { this.retry_failed_saves().await });
                    }
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    }

    /// Stops taking sessions, ends every session and waits (up to `grace`) for their saves.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let all: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .cloned()
            .collect();
        for s in &all {
            self.end(s, EndReason::Shutdown);
        }
        let wait = async {
            for s in &all {
                s.wait_done().await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::error!("shutdown grace period over with saves still running; their directories and records are kept and will be saved at the next start");
        }
    }

    /// Removes what killed processes leave on local disk: restore staging directories and
    /// downloads beside browser dirs, and spool files older than an hour (a CLI job may share
    /// the spool directory, so young files are left alone).
    fn collect_garbage(&self) {
        let browsers = self.cfg.data_dir.join("browsers");
        for e in std::fs::read_dir(&browsers).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".pv-") {
                tracing::info!(path = %e.path().display(), "removing a staging directory left by a killed restore");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let spool = self.cfg.data_dir.join("spool");
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for e in std::fs::read_dir(&spool).into_iter().flatten().flatten() {
            if e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago)
            {
                tracing::info!(path = %e.path().display(), "removing a spool file left by a killed save");
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Finds sessions left by a previous daemon (crash, kill -9): stops their browsers and
    /// saves their profiles. Returns how many were recovered.
    pub async fn recover(self: &Arc<Self>) -> usize {
        self.collect_garbage();
        let dir = self.cfg.data_dir.join("sessions");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut records = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            {
                Some(r) => records.push(r),
                None => {
                    tracing::warn!(path = %path.display(), "unreadable session record left alone")
                }
            }
        }
        self.recovering.store(records.len(), Ordering::SeqCst);
        let mut n = 0;
        for r in records {
            if let (Some(p), true) = (&r.profile_id, r.save) {
                self.saving
                    .lock()
                    .expect("saving lock")
                    .insert((r.tenant.clone(), p.clone()), r.id.clone());
            }
            if r.pid > 0 && chromium::is_browser_on(r.pid, &r.dir) {
                tracing::warn!(session = %r.id, pid = r.pid, "stopping a browser left by the previous daemon");
                chromium::stop_orphan(r.pid, self.cfg.close_deadline).await;
            }
            let ok = self.save_record(&r, None).await;
            if ok {
                self.forget(&r.id, &r.dir);
                tracing::info!(session = %r.id, profile = ?r.profile_id, "recovered session saved");
                n += 1;
            }
            if let (Some(p), true) = (&r.profile_id, r.save) {
                self.release_profile(&r.tenant, p, &r.id);
            }
            self.recovering.fetch_sub(1, Ordering::SeqCst);
        }
        n
    }
}
