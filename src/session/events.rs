//! What the session manager tells whoever listens: a session changed, an admin token was
//! issued or retired, ended sessions were forgotten. The manager knows nothing of its
//! listeners (a cluster node publishes these as records other nodes read); the daemon
//! subscribes them when it wires the parts together.

use futures_util::future::BoxFuture;

/// One session as the other nodes see it (no secret: the admin token only as its SHA-256).
#[derive(Debug, Clone)]
pub struct Published {
    /// Session id.
    pub session_id: String,
    /// Tenant.
    pub tenant: String,
    /// The node running it.
    pub node: String,
    /// Lowercase hex SHA-256 of the admin token.
    pub admin_token_sha256: String,
    /// Not ended yet.
    pub active: bool,
    /// When this view was taken (ms since the epoch).
    pub updated_ms: u64,
    /// The session's `GET /v0/vm/{id}` body.
    pub info: serde_json::Value,
}

/// A change of the manager's sessions.
#[derive(Debug, Clone)]
pub enum Event {
    /// A session started or changed (state, save progress, end).
    Changed(Published),
    /// A session of a saved profile started: its admin token (hashed) names it.
    AdminTokenIssued {
        /// Lowercase hex SHA-256 of the admin token.
        token_sha256: String,
        /// The session.
        session_id: String,
    },
    /// That session is ending: its admin token no longer names a running session.
    AdminTokenRetired {
        /// Lowercase hex SHA-256 of the admin token.
        token_sha256: String,
    },
    /// Ended sessions dropped from memory.
    Forgotten(Vec<String>),
}

/// Someone listening to a manager's [`Event`]s. A listener's failure is its own: the
/// manager goes on (what it publishes is best effort, and the next change publishes again).
pub trait Subscriber: Send + Sync + std::fmt::Debug {
    /// Handles one event; the manager awaits it, so events of one session arrive in order.
    fn notify(&self, event: Event) -> BoxFuture<'_, ()>;
}
