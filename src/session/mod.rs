//! Browser sessions: their lifecycle, the registry, timeouts, and crash recovery.
//!
//! A session owns one sandboxed Chromium ([`crate::browser::Browser`]) on its own user-data-dir
//! under `<data_dir>/browsers/<session_id>` (0700). However it ends (client, admin,
//! inactivity/absolute/offline timeout, browser crash, daemon shutdown) the same path runs:
//! stop the browser cleanly, save a new generation if the session saves, then remove the
//! directory. A save that fails keeps the directory (and the session record) so nothing is lost.
//!
//! The session table lives on disk (`<data_dir>/sessions/<id>.json`, 0600, no secrets), so a
//! daemon that was killed finds the sessions that were running at its next start, stops
//! their orphaned browsers, and saves their profiles ([`Manager::recover`]).

mod config;
mod create;
mod events;
mod held;
mod lease;
mod limits;
mod records;
mod save;
mod start;
mod state;
pub mod timer;
mod upkeep;
pub mod webhook;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::vault::{self, Base, Vault};
use crate::{NoProgress, Progress};
use save::Outcome;

pub use crate::browser::LaunchOptions;
pub use config::{SessionConfig, SessionsSection};
pub use events::{Event, Published, Subscriber};
pub use limits::JobSlot;
use state::{now_ms, token_hash, Status};
pub use state::{BookmarksRefused, EndReason, ProfileInfo, SaveState, Session, SessionInfo};
pub use timer::{TimeoutChange, Timeouts};

/// Errors of session management (mapped onto HTTP errors by the API).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon is shutting down.
    #[error("the daemon is shutting down; retry on another node or later")]
    ShuttingDown,
    /// Too many concurrent sessions.
    #[error("too many concurrent sessions (limit {0})")]
    TooManySessions(usize),
    /// Too many storage-state imports/exports at once (on this node, or of this tenant).
    #[error("too many storage-state jobs at once ({0})")]
    TooManyJobs(String),
    /// Too many concurrent sessions of this tenant.
    #[error(
        "too many concurrent sessions for this tenant (sessions.max_sessions_per_tenant = {0})"
    )]
    TenantLimit(usize),
    /// A saving session already holds this profile.
    #[error("profile {0} is in use by another session that will save it")]
    ProfileInUse(String),
    /// The last save of this profile failed and is held for its retry.
    #[error("profile {0}: the last session's save failed and is queued for retry (GET /v0/saves), or is being retried; try again once it is saved")]
    SavePending(String),
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
    Browser(#[from] crate::browser::Error),
    /// Local I/O.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
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
    /// Browser options (start URL; the identity fields come from `identity`).
    pub launch: LaunchOptions,
    /// Identity fields the request set; they override those pinned to a loaded profile.
    pub identity: vault::Identity,
    /// Who asks, for the audit trail (`api-key:<tenant>#<key id>`).
    pub actor: String,
    /// Timeout webhook.
    pub webhook: Option<webhook::Webhook>,
    /// Auth webhook: every connecting user is admitted by it (Hyperbeam's `auth`).
    pub auth: Option<webhook::Webhook>,
    /// Seconds before a timeout at which the webhook gets a warning.
    pub warning: Option<u64>,
    /// Roles of the users `embed_url` admits.
    pub default_roles: std::collections::BTreeSet<crate::live::Role>,
    /// New viewers start with control disabled.
    pub control_disable_default: bool,
}

/// The on-disk session record (no secrets). Unknown fields are tolerated (a later release may
/// add some); a `format` above 1 means a newer profile-vault wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Where the session is.
    pub state: RecordState,
    /// The browser identity the session ran with (pinned to the profile when it saves).
    #[serde(default)]
    pub identity: vault::Identity,
    /// Why and when its save was refused for good (state `refused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// A save refused for what the profile holds (a restore of it would refuse it): retrying it
/// cannot land until the profile or the limits change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// When, Unix seconds.
    pub at: u64,
    /// Why, as the save said.
    pub reason: String,
}

/// Where a session is, as its record on disk says (what a restarted daemon recovers from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Its browser is being started.
    Starting,
    /// Its browser runs.
    Running,
    /// It ended; its save is under way.
    Ending,
    /// Its save failed; the directory is kept for a retry.
    Failed,
    /// Its save was refused for what the profile holds: not retried, the profile not held;
    /// the directory is kept for `sessions.keep_refused_saves` seconds.
    Refused,
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
    /// Kept directories being saved (a retry's or recovery's), by session id: the outcome
    /// others wanting to save the same directory wait for.
    retrying: Mutex<HashMap<String, tokio::sync::watch::Receiver<Option<bool>>>>,
    /// Failed saves holding their profiles, by session id.
    held: Mutex<HashMap<String, Arc<held::Held>>>,
    node_id: String,
    subscriber: std::sync::OnceLock<Arc<dyn Subscriber>>,
    records: records::Records,
    /// Sessions between their slot's reservation and their start's end, by tenant.
    starting: Mutex<HashMap<String, usize>>,
    /// Storage-state jobs running, by tenant.
    state_jobs: Arc<Mutex<HashMap<String, usize>>>,
    /// DevTools clients being connected, by (tenant, session).
    cdp_connecting: Arc<Mutex<HashMap<(String, String), usize>>>,
    /// When the store last answered `/readyz`'s probe, and how.
    store_probe: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Session records rejected since start (forged, tampered, misplaced).
pub fn records_rejected() -> u64 {
    records::REJECTED.load(Ordering::Relaxed)
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
        let records = records::Records::open(&cfg.data_dir).map_err(io_at(&cfg.data_dir))?;
        Ok(Arc::new(Manager {
            records,
            starting: Mutex::new(HashMap::new()),
            store_probe: tokio::sync::Mutex::new(None),
            state_jobs: Arc::default(),
            cdp_connecting: Arc::default(),
            vault,
            cfg,
            sessions: Mutex::new(HashMap::new()),
            saving: Mutex::new(HashMap::new()),
            shutting_down: false.into(),
            save_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            counters: Counters::default(),
            recovering: AtomicUsize::new(0),
            retrying: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            node_id,
            subscriber: std::sync::OnceLock::new(),
        }))
    }

    /// This node's id (`<data_dir>/node-id`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Subscribes `to` this manager's [`Event`]s (a cluster node publishing its sessions).
    /// Set once; later calls are ignored.
    pub fn subscribe(&self, to: Arc<dyn Subscriber>) {
        let _ = self.subscriber.set(to);
    }

    /// Tells the subscriber, if any, of `event`.
    pub(crate) async fn notify(&self, event: Event) {
        if let Some(sub) = self.subscriber.get() {
            sub.notify(event).await;
        }
    }

    /// Publishes the session's public view, in the order of its changes.
    pub(crate) async fn publish(&self, s: &Session) {
        if self.subscriber.get().is_none() {
            return;
        }
        let _order = s.published.lock().await;
        let info = s.info();
        let view = Published {
            session_id: s.id.clone(),
            tenant: s.tenant.clone(),
            node: self.node_id.clone(),
            admin_token_sha256: crate::crypt::hex(&s.admin_token_hash),
            active: info.end_reason.is_none(),
            updated_ms: now_ms(),
            info: serde_json::to_value(&info).expect("info serializes"),
        };
        self.notify(Event::Changed(view)).await;
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

    /// The active session whose admin token this is (each compared in constant time).
    pub fn by_admin_token(&self, token: &str) -> Option<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.is_active())
            .find(|s| s.admin_token_matches(token))
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
        self.records.path(id)
    }

    fn write_record(&self, r: &Record) {
        if let Err(e) = self.records.write(r) {
            tracing::error!(session = %r.id, error = %e, "cannot write the session record");
        }
    }

    /// Deletes a profile (as `actor`) unless a saving session on this node (or its failed
    /// save, held for a retry) or a session of any node (its lease) holds it; holding it
    /// meanwhile, so that no session starts on it while it goes.
    ///
    /// # Errors
    /// [`Error::ProfileInUse`]; the vault's errors.
    pub async fn delete_profile(
        &self,
        at: &crate::layout::ProfileAddr,
        actor: &str,
    ) -> Result<usize, Error> {
        let key = (at.tenant().to_string(), at.profile().to_string());
        let holder = format!("delete:{}", uuid::Uuid::new_v4());
        {
            let mut m = self.saving.lock().expect("saving lock");
            if m.contains_key(&key) {
                return Err(Error::ProfileInUse(at.profile().into()));
            }
            m.insert(key.clone(), holder.clone());
        }
        let r = self
            .vault
            .with_actor(actor)
            .delete_unleased(at, &self.node_id, &holder, self.cfg.lease_ttl)
            .await;
        self.release_profile(&key.0, &key.1, &holder);
        match r {
            Err(vault::Error::Leased { .. }) => Err(Error::ProfileInUse(at.profile().into())),
            r => Ok(r?),
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

    /// Whether the store answers (a LIST), probed at most once per `max_age`: `/readyz` may
    /// be called by anyone, as often as they like.
    pub async fn store_reachable(&self, max_age: Duration) -> bool {
        let mut cache = self.store_probe.lock().await;
        if let Some((at, ok)) = *cache {
            if at.elapsed() < max_age {
                return ok;
            }
        }
        let store = self.vault.store().clone();
        let ok = tokio::time::timeout(Duration::from_secs(5), store.list("readyz/"))
            .await
            .is_ok_and(|r| r.is_ok());
        *cache = Some((std::time::Instant::now(), ok));
        ok
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
}
