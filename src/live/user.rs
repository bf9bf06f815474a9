//! A connected viewer ([`User`]): its roles, permissions and notices, and what is kept of it
//! after its socket closes so that it can come back as the same user ([`Departed`]).

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use serde::Serialize;

use super::Role;

/// Hyperbeam's per-user permissions (`setPermissions`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Permissions {
    /// Higher preempts the control of lower.
    pub priority: i64,
    /// Milliseconds without input after which the user no longer preempts (0: never idle).
    pub idle_timeout: u64,
    /// All input ignored.
    pub control_disabled: bool,
}

/// What the server tells one viewer besides frames.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Roles or permissions changed.
    Roles,
    /// Text copied from the browser (`clipboard_copy`).
    Clipboard(String),
    /// Another user's cursor (`cursor_data`).
    Cursor {
        /// Whose.
        user_id: String,
        /// Remote CSS px.
        x: f64,
        /// Remote CSS px.
        y: f64,
    },
}

/// One connected viewer.
#[derive(Debug)]
pub struct User {
    /// User id (uuid).
    pub id: String,
    pub(super) roles: Mutex<BTreeSet<Role>>,
    pub(super) perms: Mutex<Permissions>,
    pub(super) last_input_ms: AtomicU64,
    pub(super) connected_at: u64,
    pub(super) notices: tokio::sync::mpsc::Sender<Notice>,
    /// The viewer token it joined with (hash): revoked when it is removed.
    pub(super) token: [u8; 32],
    /// Fired (never lost, unlike notices) when it is removed: its socket closes.
    pub(super) removed: tokio::sync::Notify,
    /// Set when it is removed (what it had begun stops at the next step).
    pub(super) kicked: std::sync::atomic::AtomicBool,
    /// An IME composition of this user is showing in the page (its result commits it).
    pub composing: std::sync::atomic::AtomicBool,
    /// The secret its viewer presents to come back as this user after a reconnect (sent in
    /// `hello` only).
    pub resume: String,
}

/// A user whose socket closed, kept a while so its viewer can come back as the same user
/// (Hyperbeam's `user_id` is stable across reconnects), with the roles and permissions it had.
pub(super) struct Departed {
    pub(super) resume: [u8; 32],
    pub(super) token: [u8; 32],
    pub(super) id: String,
    pub(super) roles: BTreeSet<Role>,
    pub(super) perms: Permissions,
    pub(super) at_ms: u64,
}

impl User {
    /// Current roles.
    pub fn roles(&self) -> BTreeSet<Role> {
        self.roles.lock().expect("roles").clone()
    }
    /// Whether the user has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.lock().expect("roles").contains(&role)
    }
    /// Current permissions.
    pub fn permissions(&self) -> Permissions {
        *self.perms.lock().expect("perms")
    }
    /// Whether input is accepted at all (role and permission; preemption aside).
    pub fn may_control(&self) -> bool {
        self.has(Role::Control) && !self.permissions().control_disabled
    }
    /// Whether the user was removed.
    pub fn is_removed(&self) -> bool {
        self.kicked.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Resolves once the user was removed (`DELETE <base_url>/users/{id}`).
    pub async fn removed(&self) {
        self.removed.notified().await;
    }

    pub(super) fn notify(&self, n: Notice) {
        // A viewer that does not read its notices loses them (bounded), never blocks others.
        let _ = self.notices.try_send(n);
    }
}

/// The JSON of a connected user (`GET /v0/vm/{id}/users`, `GET /v0/vm/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    /// User id.
    pub user_id: String,
    /// Role names.
    pub roles: Vec<&'static str>,
    /// Permissions.
    #[serde(flatten)]
    pub permissions: Permissions,
    /// Connected since (Unix seconds).
    pub connected_at: u64,
}
