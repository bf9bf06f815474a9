//! The one HTTP error type: every failure maps to a status and a stable `error` code, with a
//! message that never carries secrets. Body: `{"error": code, "message": text}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::session;
use crate::vault;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid bearer token",
        )
    }
    /// 404 (also for other tenants' ids).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    /// 410.
    pub fn expired() -> Self {
        Self::new(StatusCode::GONE, "session_expired", "the session has ended")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<session::Error> for ApiError {
    fn from(e: session::Error) -> Self {
        use session::Error as E;
        match &e {
            E::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            E::TooManyJobs(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_jobs",
                e.to_string(),
            ),
            E::TooManySessions(_) | E::TenantLimit(_) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sessions",
                e.to_string(),
            ),
            E::ProfileInUse(_) => Self::new(StatusCode::CONFLICT, "profile_in_use", e.to_string()),
            E::ProfileNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "profile_not_found", e.to_string())
            }
            E::RestoreTimeout(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "restore_timeout",
                e.to_string(),
            ),
            E::Restore { source: v, .. } | E::Vault(v) => {
                let (status, code) = vault_status(v);
                Self::new(status, code, client_message(v, e.to_string()))
            }
            E::Browser(crate::browser::Error::SandboxUnavailable(_)) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "sandbox_unavailable",
                e.to_string(),
            ),
            E::Browser(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "browser_failed",
                e.to_string(),
            ),
            E::Io { .. } => {
                tracing::error!(error = %e, "session i/o failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the daemon log",
                )
            }
        }
    }
}

fn vault_status(e: &vault::Error) -> (StatusCode, &'static str) {
    use vault::Error as V;
    match e {
        V::InvalidId { .. } => (StatusCode::BAD_REQUEST, "invalid_id"),
        V::ProfileNotFound { .. } | V::GenerationNotFound { .. } => {
            (StatusCode::NOT_FOUND, "profile_not_found")
        }
        V::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        V::BrowserTooOld { .. } => (StatusCode::CONFLICT, "browser_too_old"),
        e if e.is_newer() => (StatusCode::CONFLICT, "newer_format"),
        V::Store(s) if s.is_transient() => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        V::PacksCollected { .. } => (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable"),
        V::Keys(k) if k.is_transient() => (StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable"),
        e if e.is_integrity() => (StatusCode::UNPROCESSABLE_ENTITY, "profile_corrupt"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
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
        let (status, code) = vault_status(&e);
        let full = e.to_string();
        Self::new(status, code, client_message(&e, full))
    }
}
