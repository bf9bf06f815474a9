//! The live view of a session: who is watching (users with roles and permissions, in
//! Hyperbeam's shape), the viewer tokens that admit them, and the screencast hub that feeds
//! them frames and takes their input ([`hub::Hub`]).
//!
//! A viewer token opens the embed page and its socket, nothing else. Every connected socket
//! is a [`User`] with a fresh id; its roles start from the token's (the session's
//! `default_roles` for `embed_url`) and change with `addRoles`/`removeRoles`. Input of a user
//! without `control`, with `control_disabled`, or preempted by a user of higher priority is
//! dropped here, on the server.

mod admin;
pub mod bookmarks;
pub mod chrome_tabs;
mod config;
pub mod downloads;
pub mod hub;
pub mod input;
pub mod protocol;
pub mod roles;
pub mod uploads;
mod user;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sha2::Digest;
use subtle::ConstantTimeEq;

pub use config::{LiveConfig, LiveSection};
pub use roles::Role;
use user::Departed;
pub use user::{Notice, Permissions, User, UserInfo};

/// Viewers of one session the auth webhook is asked about at once.
const ADMITTING: usize = 8;

/// One of the [`ADMITTING`] slots ([`Live::admitting`]).
#[derive(Debug)]
pub struct AdmissionSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for AdmissionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a departed user may come back, and how many are remembered, of all and of one
/// viewer token (more than a session's viewers: everyone on a shared `embed_url` comes back
/// after a network blip), so that a token's holder reconnecting in a loop pushes out only
/// the users of its own token.
const RESUME_MS: u64 = 10 * 60 * 1000;
const RESUME_KEPT: usize = 256;
const RESUME_KEPT_PER_TOKEN: usize = 32;

/// Viewer tokens one session holds at most (each viewer request compares against all).
pub const MAX_TOKENS: usize = 1024;

struct ViewerToken {
    hash: [u8; 32],
    roles: BTreeSet<Role>,
}

/// Why a viewer could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// `live.max_viewers` reached.
    #[error("this session has the most viewers it takes (live.max_viewers = {0})")]
    TooManyViewers(usize),
    /// The token was revoked (its user removed) while the viewer was being admitted.
    #[error("this viewer token was revoked")]
    Revoked,
}

/// The live-view state of one session.
pub struct Live {
    cfg: LiveConfig,
    tokens: Mutex<Vec<ViewerToken>>,
    users: Mutex<Vec<Arc<User>>>,
    departed: Mutex<Vec<Departed>>,
    /// Viewers waiting for the auth webhook's answer.
    admitting: Arc<std::sync::atomic::AtomicUsize>,
    control_disable_default: bool,
    /// Frames (page-only view), tabs and input through DevTools.
    pub hub: Arc<hub::Hub>,
    /// Chrome's tabs API (the SDK's `tabs.*`).
    pub tabs: Arc<chrome_tabs::Agent>,
    /// The browser's virtual display (its whole UI), when it has one: the picture and the
    /// input then go through it instead of the hub's screencast.
    pub display: Option<Arc<crate::display::Display>>,
    ended: tokio::sync::watch::Sender<Option<String>>,
    close_warning: tokio::sync::watch::Sender<Option<CloseWarning>>,
}

/// A timeout close ahead (Hyperbeam's `close_warning`): what ends the session, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseWarning {
    /// Which timeout.
    pub kind: WarningKind,
    /// When it fires, on the deadlines' clock (`session::timer::mono_ms`, never shown: the
    /// viewer is told the delay).
    pub at_ms: u64,
}

/// The timeouts viewers are warned of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// No input for `timeout.inactive`.
    Inactive,
    /// `timeout.absolute` after the start.
    Absolute,
}

impl WarningKind {
    /// Hyperbeam's name.
    pub fn name(self) -> &'static str {
        match self {
            WarningKind::Inactive => "inactive",
            WarningKind::Absolute => "absolute",
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("users", &self.users.lock().map(|u| u.len()).unwrap_or(0))
            .finish_non_exhaustive()
    }
}

fn hash(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A new random token (URL-safe base64 of 32 bytes).
pub fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Live {
    /// The live view of a browser, through its DevTools pipe (and its display, if any);
    /// `tabs_extension`: the id of the tabs agent it loaded. Needs a Tokio runtime.
    pub fn new(
        cfg: LiveConfig,
        cdp: Arc<crate::browser::mux::Mux>,
        display: Option<Arc<crate::display::Display>>,
        (file_uploads, control_disable_default): (bool, bool),
        tabs_extension: Option<&str>,
    ) -> Live {
        let quality = cfg.jpeg_quality;
        let hub = hub::Hub::new(cdp.clone(), quality, display.is_none(), file_uploads);
        let tabs = chrome_tabs::Agent::start(cdp, tabs_extension);
        // The view follows the browser's own tab switches (Chromium's tab strip, tabs.update).
        let mut activated = tabs.activated();
        let follower = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Ok(target) = activated.recv().await {
                let Some(hub) = follower.upgrade() else { break };
                if let Err(e) = hub.follow(&target).await {
                    tracing::debug!(error = %e, "live view: not following the active tab");
                }
            }
        });
        Live {
            cfg,
            tokens: Mutex::new(Vec::new()),
            users: Mutex::new(Vec::new()),
            departed: Mutex::new(Vec::new()),
            admitting: Arc::default(),
            control_disable_default,
            hub,
            tabs,
            display,
            ended: tokio::sync::watch::channel(None).0,
            close_warning: tokio::sync::watch::channel(None).0,
        }
    }

    /// Settings.
    pub fn config(&self) -> &LiveConfig {
        &self.cfg
    }

    /// Mints a viewer token whose users start with `roles`; `None` when the session holds
    /// [`MAX_TOKENS`] already.
    pub fn mint(&self, roles: BTreeSet<Role>) -> Option<String> {
        let mut tokens = self.tokens.lock().expect("tokens");
        if tokens.len() >= MAX_TOKENS {
            return None;
        }
        let t = new_token();
        tokens.push(ViewerToken {
            hash: hash(&t),
            roles,
        });
        Some(t)
    }

    /// The roles a viewer token admits with, comparing against every token in constant time.
    pub fn token_roles(&self, token: &str) -> Option<BTreeSet<Role>> {
        let h = hash(token);
        let mut found = None;
        for t in self.tokens.lock().expect("tokens").iter() {
            if bool::from(t.hash.ct_eq(&h)) {
                found = Some(t.roles.clone());
            }
        }
        found
    }

    /// Admits a viewer holding `token` with `roles`; its notices arrive on the returned
    /// receiver.
    ///
    /// # Errors
    /// [`JoinError::TooManyViewers`].
    pub fn join(
        &self,
        token: &str,
        roles: BTreeSet<Role>,
    ) -> Result<(Arc<User>, tokio::sync::mpsc::Receiver<Notice>), JoinError> {
        self.join_resuming(token, roles, None)
    }

    /// [`Live::join`], as the user that left with the secret `resume` (same token, within
    /// ten minutes, once): its id, roles and permissions come back. Any other secret makes a
    /// new user.
    ///
    /// # Errors
    /// [`JoinError::TooManyViewers`].
    pub fn join_resuming(
        &self,
        token: &str,
        roles: BTreeSet<Role>,
        resume: Option<&str>,
    ) -> Result<(Arc<User>, tokio::sync::mpsc::Receiver<Notice>), JoinError> {
        self.join_as(token, roles, resume, None)
    }

    /// The id a viewer holding `token` (and `resume`) will join with: the departed user's it
    /// comes back as, else a new one (what the auth webhook is asked about before it joins).
    pub fn pending_id(&self, token: &str, resume: Option<&str>) -> String {
        let (t, now) = (hash(token), now_ms());
        resume
            .and_then(|r| {
                let h = hash(r);
                let departed = self.departed.lock().expect("departed");
                departed
                    .iter()
                    .find(|d| {
                        now.saturating_sub(d.at_ms) < RESUME_MS
                            && bool::from(d.resume.ct_eq(&h))
                            && bool::from(d.token.ct_eq(&t))
                    })
                    .map(|d| d.id.clone())
            })
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }

    /// The connected user `id` that joined with `token`, proved by `resume` (the secret its
    /// `hello` gave it): HTTP calls made for a user (downloads, uploads) are judged by what
    /// that user may do now, not by what its token was minted with.
    pub fn connected(&self, token: &str, id: &str, resume: &str) -> Option<Arc<User>> {
        let (t, r) = (hash(token), hash(resume));
        let users = self.users.lock().expect("users");
        users
            .iter()
            .find(|u| {
                u.id == id && bool::from(u.token.ct_eq(&t)) && bool::from(hash(&u.resume).ct_eq(&r))
            })
            .cloned()
    }

    /// [`Live::join_resuming`]; a new user takes `fresh_id` (from [`Live::pending_id`]) if
    /// given and not connected.
    ///
    /// # Errors
    /// [`JoinError::TooManyViewers`].
    pub fn join_as(
        &self,
        token: &str,
        roles: BTreeSet<Role>,
        resume: Option<&str>,
        fresh_id: Option<String>,
    ) -> Result<(Arc<User>, tokio::sync::mpsc::Receiver<Notice>), JoinError> {
        let mut users = self.users.lock().expect("users");
        // Admission can take a while (the auth message, the webhook): a user removed
        // meanwhile took the token with it (checked under the users' lock, which a removal
        // takes before it revokes).
        if self.token_roles(token).is_none() {
            return Err(JoinError::Revoked);
        }
        if users.len() >= self.cfg.max_viewers {
            return Err(JoinError::TooManyViewers(self.cfg.max_viewers));
        }
        let token_hash = hash(token);
        let back = resume.and_then(|r| {
            let (h, now) = (hash(r), now_ms());
            let mut departed = self.departed.lock().expect("departed");
            departed.retain(|d| now.saturating_sub(d.at_ms) < RESUME_MS);
            let i = departed.iter().position(|d| {
                bool::from(d.resume.ct_eq(&h)) && bool::from(d.token.ct_eq(&token_hash))
            })?;
            Some(departed.remove(i))
        });
        let fresh = fresh_id
            .filter(|f| !users.iter().any(|u| &u.id == f))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (id, roles, perms) = match back {
            Some(d) => (d.id, d.roles, d.perms),
            None => (
                fresh,
                roles,
                Permissions {
                    control_disabled: self.control_disable_default,
                    ..Permissions::default()
                },
            ),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let user = Arc::new(User {
            id,
            roles: Mutex::new(roles),
            perms: Mutex::new(perms),
            last_input_ms: AtomicU64::new(0),
            connected_at: now_ms() / 1000,
            notices: tx,
            token: hash(token),
            removed: tokio::sync::Notify::new(),
            kicked: false.into(),
            composing: std::sync::atomic::AtomicBool::new(false),
            resume: new_token(),
        });
        users.push(user.clone());
        Ok((user, rx))
    }

    /// A slot to ask the auth webhook about a viewer (at most [`ADMITTING`] at once), released
    /// on drop; `None` when every slot is taken.
    pub fn admitting(&self) -> Option<AdmissionSlot> {
        let n = self.admitting.fetch_add(1, Ordering::SeqCst);
        let slot = AdmissionSlot(self.admitting.clone());
        (n < ADMITTING).then_some(slot)
    }

    /// A viewer left: it may come back as the same user ([`Live::join_resuming`]), unless
    /// it was removed.
    pub fn leave(&self, user: &User) {
        let was_here = {
            let mut users = self.users.lock().expect("users");
            let n = users.len();
            users.retain(|u| u.id != user.id);
            users.len() < n
        };
        if was_here {
            let mut departed = self.departed.lock().expect("departed");
            // The oldest of this token's, when it has its share; else the oldest of all.
            let mine = departed.iter().filter(|d| d.token == user.token).count();
            if mine >= RESUME_KEPT_PER_TOKEN {
                if let Some(i) = departed.iter().position(|d| d.token == user.token) {
                    departed.remove(i);
                }
            } else if departed.len() >= RESUME_KEPT {
                departed.remove(0);
            }
            departed.push(Departed {
                resume: hash(&user.resume),
                token: user.token,
                id: user.id.clone(),
                roles: user.roles(),
                perms: user.permissions(),
                at_ms: now_ms(),
            });
        }
    }

    /// Connected viewers.
    pub fn viewer_count(&self) -> usize {
        self.users.lock().expect("users").len()
    }

    /// The connected users.
    pub fn users(&self) -> Vec<UserInfo> {
        self.users
            .lock()
            .expect("users")
            .iter()
            .map(|u| UserInfo {
                user_id: u.id.clone(),
                roles: roles::names(&u.roles()),
                permissions: u.permissions(),
                connected_at: u.connected_at,
            })
            .collect()
    }

    /// Whether `user`'s input is forwarded now: it may control and no connected user of
    /// higher priority that may control is active (input within its `idle_timeout`, or any
    /// time when that is 0). Records the input when it is.
    pub fn accept_input(&self, user: &User) -> bool {
        let ok = self.may_input(user);
        if ok {
            user.last_input_ms.store(now_ms(), Ordering::Relaxed);
        }
        ok
    }

    /// Whether `user` may send input now ([`Live::accept_input`] without counting it as
    /// input: asking does not make it active).
    pub fn may_input(&self, user: &User) -> bool {
        if !user.may_control() || user.is_removed() {
            return false;
        }
        let now = now_ms();
        let mine = user.permissions().priority;
        let preempted = self.users.lock().expect("users").iter().any(|o| {
            let p = o.permissions();
            o.id != user.id
                && p.priority > mine
                && o.may_control()
                && (p.idle_timeout == 0
                    || now.saturating_sub(o.last_input_ms.load(Ordering::Relaxed)) < p.idle_timeout)
        });
        !preempted
    }

    /// Tells the users with `cursor_data` where `from` points.
    pub fn share_cursor(&self, from: &User, x: f64, y: f64) {
        for u in self.users.lock().expect("users").iter() {
            if u.id != from.id && u.has(Role::CursorData) {
                u.notify(Notice::Cursor {
                    user_id: from.id.clone(),
                    x,
                    y,
                });
            }
        }
    }

    /// The session ended (`reason` as in the API): every viewer is told and disconnected.
    pub fn end(&self, reason: &str) {
        self.ended.send_replace(Some(reason.to_string()));
        self.hub.stop();
    }

    /// Warns viewers of a timeout ahead (`None`: none is near, or it moved away).
    pub fn warn_close(&self, w: Option<CloseWarning>) {
        self.close_warning.send_if_modified(|c| {
            let changed = *c != w;
            *c = w;
            changed
        });
    }

    /// The timeout ahead, and every change of it.
    pub fn close_warning(&self) -> tokio::sync::watch::Receiver<Option<CloseWarning>> {
        self.close_warning.subscribe()
    }

    /// Resolves when the session has ended, with the reason.
    pub fn ended(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.ended.subscribe()
    }
}

#[cfg(test)]
mod tests;
