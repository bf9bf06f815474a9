//! The one HTTP error type: every failure maps to a status and a stable `error` code, with a
//! message that never carries secrets. Body: `{"error": code, "message": text}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::codes::ErrorCode;
use crate::session;
use crate::vault;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status (the code's, but for the few the framework answers with another).
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with its code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(code.status(), code, message)
    }
    /// An error answered with another status than its code's.
    pub fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400 with a code.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::with_status(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid bearer token")
    }
    /// 401 for an API key sent in a URL (`?token=`): it goes in the `Authorization` header
    /// only (URLs end up in access logs and browser history; the key opens every profile of
    /// its tenant).
    pub fn key_in_url() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "an API key goes in the Authorization header, never in a URL (?token= takes a session's admin or viewer token)",
        )
    }
    /// 404 (also for other tenants' ids).
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    /// 410.
    pub fn expired() -> Self {
        Self::new(ErrorCode::SessionExpired, "the session has ended")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code.name(), "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<session::Error> for ApiError {
    fn from(e: session::Error) -> Self {
        use session::Error as E;
        match &e {
            E::ShuttingDown => Self::new(ErrorCode::ShuttingDown, e.to_string()),
            E::TooManyJobs(_) => Self::new(ErrorCode::TooManyJobs, e.to_string()),
            E::TooManySessions(_) | E::TenantLimit(_) => {
                Self::new(ErrorCode::TooManySessions, e.to_string())
            }
            E::ProfileInUse(_) | E::SavePending(_) => {
                Self::new(ErrorCode::ProfileInUse, e.to_string())
            }
            E::ProfileNotFound(_) => Self::new(ErrorCode::ProfileNotFound, e.to_string()),
            E::RestoreTimeout(_) => Self::new(ErrorCode::RestoreTimeout, e.to_string()),
            E::Restore { source: v, .. } | E::Vault(v) => {
                Self::new(vault_code(v), client_message(v, e.to_string()))
            }
            E::Browser(crate::browser::Error::SandboxUnavailable(_)) => {
                Self::new(ErrorCode::SandboxUnavailable, e.to_string())
            }
            E::Browser(_) => Self::new(ErrorCode::BrowserFailed, e.to_string()),
            E::Io { .. } => {
                tracing::error!(error = %e, "session i/o failure");
                Self::new(ErrorCode::Internal, "internal error; see the daemon log")
            }
        }
    }
}

/// The code a vault error is answered with (its status is the code's).
fn vault_code(e: &vault::Error) -> ErrorCode {
    use vault::Class as C;
    match e.class() {
        C::InvalidId => ErrorCode::InvalidId,
        C::NotFound => ErrorCode::ProfileNotFound,
        C::Conflict => ErrorCode::Conflict,
        C::BrowserTooOld => ErrorCode::BrowserTooOld,
        C::Newer => ErrorCode::NewerFormat,
        C::Unavailable => ErrorCode::StorageUnavailable,
        C::KeysUnavailable => ErrorCode::KeysUnavailable,
        C::Corrupt => ErrorCode::ProfileCorrupt,
        // What a client cannot act on: the node's configuration or a bug.
        C::TargetNotEmpty
        | C::OverLimits
        | C::UnknownKey
        | C::KeyConfig
        | C::StoreMissing
        | C::StoreKey
        | C::StoreRace
        | C::Internal => ErrorCode::Internal,
    }
}

/// What a client is told of a vault error. Master-key errors are logged in full but
/// answered in general terms: KMS messages name key ARNs, the account and IAM roles.
fn client_message(e: &vault::Error, full: String) -> String {
    match e {
        vault::Error::Keys(k) => {
            tracing::error!(error = %full, "master key failure");
            if k.is_transient() {
                "the key service is unavailable; retry later".into()
            } else if k.is_integrity() {
                "the profile's wrapped data key was rejected (changed, moved or wrong key)".into()
            } else {
                "master key failure; see the daemon log".into()
            }
        }
        _ => full,
    }
}

impl From<vault::Error> for ApiError {
    fn from(e: vault::Error) -> Self {
        let full = e.to_string();
        Self::new(vault_code(&e), client_message(&e, full))
    }
}
