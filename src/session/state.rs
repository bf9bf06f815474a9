//! One session's state: identity and admin token, its timer ([`super::timer`]),
//! connected clients, save progress, its live view, and the public view of all that
//! ([`SessionInfo`], the JSON of `GET /v0/vm/{id}`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::timer::{TimeoutChange, Timeouts, Timer};
use super::webhook;
use crate::vault;

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
    /// The browser hit its memory or process limit (the sandbox's cgroup).
    ResourceLimit,
    /// The daemon shut down.
    Shutdown,
    /// Found running after a daemon crash.
    Recovered,
    /// The node running it stopped answering (seen from the other nodes of a cluster).
    NodeLost,
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
    /// The save was refused for what the profile holds (over a limit a restore enforces):
    /// the profile stays at its last generation; the directory is kept a while, not retried.
    Refused {
        /// Why.
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
pub(super) struct Status {
    pub(super) ended: Option<(u64, EndReason)>,
    pub(super) save: SaveState,
    pub(super) generation: Option<u64>,
}

/// Why bookmarks were not queued ([`Session::add_bookmarks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookmarksRefused {
    /// The session does not save its profile.
    NotSaving,
    /// [`crate::live::bookmarks::MAX_NODES`] are waiting already.
    Full,
}

/// One browser session.
pub struct Session {
    /// Session id (uuid).
    pub id: String,
    /// The node running it.
    pub node: String,
    /// Owning tenant.
    pub tenant: String,
    pub(super) admin_token_hash: [u8; 32],
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
    /// Timeouts (`POST <base_url>/timeout` changes them) and the counters they run on.
    pub(super) timer: Timer,
    /// Fields accepted but not honoured.
    pub ignored: Vec<String>,
    /// Roles of the users `embed_url` admits.
    pub default_roles: std::collections::BTreeSet<crate::live::Role>,
    pub(super) dir: PathBuf,
    pub(super) browser: tokio::sync::Mutex<Option<crate::browser::Browser>>,
    pub(super) cdp: std::sync::Arc<crate::browser::mux::Mux>,
    /// Its profile's lease, kept until its save is done.
    pub(super) lease: Arc<super::lease::KeptLease>,
    pub(super) webhook: Option<webhook::Webhook>,
    /// The auth webhook that admits each connecting user, if the session has one.
    pub auth: Option<webhook::Webhook>,
    pub(super) status: Mutex<Status>,
    pub(super) done: tokio::sync::watch::Sender<bool>,
    /// The session's shared store (cleared with the session: it lives only here).
    pub room: crate::room::Room,
    /// The live view: viewers, their tokens and roles, the screencast.
    pub live: crate::live::Live,
    /// Where a person's uploads for the page's file chooser go (sandboxed browsers).
    pub uploads: Option<crate::live::uploads::Uploads>,
    /// What the browser downloaded (sandboxed browsers).
    pub downloads: Option<crate::live::downloads::Downloads>,
    /// Bookmarks to merge into the profile after the browser stopped (`POST <base_url>/bookmarks`).
    pub(super) pending_bookmarks: Mutex<Vec<crate::live::bookmarks::Node>>,
    /// The profile's data document as it was when the profile was loaded.
    pub data_at_load: Option<vault::DataDoc>,
    /// The browser identity it runs with (pinned to the profile when it saves).
    pub identity: vault::Identity,
    /// Serializes writes of its cluster record, so the last state is the last written.
    pub(super) published: tokio::sync::Mutex<()>,
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

pub(super) use super::timer::unix_ms as now_ms;

pub(super) fn token_hash(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A public view of a session (the JSON of `GET /v0/vm/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// The node running it.
    pub node: String,
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

    /// Checks, in constant time, the SHA-256 (lowercase hex) of an admin token another node
    /// of the cluster was shown (it vouches for the hash of what the caller presented; this
    /// node holds the token itself).
    pub fn admin_token_sha256_matches(&self, sha256_hex: &str) -> bool {
        bool::from(
            crate::crypt::hex(&self.admin_token_hash)
                .as_bytes()
                .ct_eq(sha256_hex.as_bytes()),
        )
    }

    /// Whether the session is still running.
    pub fn is_active(&self) -> bool {
        self.status.lock().expect("status lock").ended.is_none()
    }

    /// Records activity (renews the inactivity timeout).
    pub fn touch(&self) {
        self.timer.touch();
    }

    /// The DevTools pipe of the browser (the proxy, the live view and the daemon connect
    /// through it).
    pub fn cdp(&self) -> &std::sync::Arc<crate::browser::mux::Mux> {
        &self.cdp
    }

    /// A DevTools client connected.
    pub fn client_connected(&self) {
        self.timer.client_connected();
    }

    /// A DevTools client disconnected.
    pub fn client_disconnected(&self) {
        self.timer.client_disconnected();
    }

    /// The timeouts now.
    pub fn timeouts(&self) -> Timeouts {
        self.timer.timeouts()
    }

    /// Seconds before a timeout at which the webhook and the viewers are warned.
    pub fn warning_secs(&self) -> u64 {
        self.timer.warning_secs()
    }

    /// `POST <base_url>/timeout` ([`Timer::change`]).
    pub fn change_timeouts(&self, change: TimeoutChange, cap: Option<u64>) {
        self.timer.change(change, cap);
    }

    /// The public view.
    pub fn info(&self) -> SessionInfo {
        let st = self.status.lock().expect("status lock");
        SessionInfo {
            session_id: self.id.clone(),
            node: self.node.clone(),
            created_at: self.created_at,
            expires_at: if st.ended.is_none() {
                self.timer
                    .deadline()
                    .map(|(ms, _)| super::timer::to_unix(ms).div_ceil(1000))
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
            cdp_clients: self.timer.clients(),
            viewers: self.live.users(),
        }
    }

    /// Queues bookmarks for the profile (merged after the browser stops, before the save).
    ///
    /// # Errors
    /// The session does not save (nothing would keep them), or more than
    /// [`crate::live::bookmarks::MAX_NODES`] would wait.
    pub fn add_bookmarks(
        &self,
        nodes: Vec<crate::live::bookmarks::Node>,
    ) -> Result<(), BookmarksRefused> {
        use crate::live::bookmarks::{count, MAX_NODES};
        if !self.save {
            return Err(BookmarksRefused::NotSaving);
        }
        let mut pending = self.pending_bookmarks.lock().expect("bookmarks");
        if count(&pending) + count(&nodes) > MAX_NODES {
            return Err(BookmarksRefused::Full);
        }
        pending.extend(nodes);
        Ok(())
    }

    /// Waits until the session has ended and its save finished (or failed).
    pub async fn wait_done(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }
}
