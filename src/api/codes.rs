//! Every error code the API answers: its stable name, its status and when it happens, in one
//! table ([`ErrorCode`]) that the handlers answer with, the OpenAPI document lists and the
//! `Error` schema enumerates.

use axum::http::StatusCode;

macro_rules! codes {
    ($($variant:ident $name:literal $status:literal $doc:literal,)*) => {
        /// A stable, machine-readable error code (the `error` member of every error body).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order the documentation lists them.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// Its name on the wire.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// The status it is answered with.
            #[must_use]
            pub fn status(self) -> StatusCode {
                let code: u16 = match self {
                    $(ErrorCode::$variant => $status,)*
                };
                StatusCode::from_u16(code).expect("a valid status")
            }

            /// When it happens.
            #[must_use]
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)*
                }
            }
        }
    };
}

codes! {
    InvalidJson "invalid_json" 400 "the body is not JSON",
    InvalidRequest "invalid_request" 400 "a field or query parameter breaks its schema",
    UnknownField "unknown_field" 400 "the body has a field the schema does not list",
    InvalidId "invalid_id" 400 "an id is malformed",
    InvalidStorageState "invalid_storage_state" 400 "a storageState document that is malformed, has unknown members, or a cookie the browser refuses (a public suffix)",
    Unauthorized "unauthorized" 401 "missing or invalid bearer token",
    Forbidden "forbidden" 403 "the token is valid but may not do this",
    NotFound "not_found" 404 "no such route, session or profile (also another tenant's)",
    ProfileNotFound "profile_not_found" 404 "no profile under that id",
    MethodNotAllowed "method_not_allowed" 405 "the route exists, the method does not",
    Conflict "conflict" 409 "another save moved the profile's head",
    ProfileInUse "profile_in_use" 409 "a saving session (or its failed save, held for a retry) holds the profile",
    NoFileChooser "no_file_chooser" 409 "an upload when no page has a file chooser open",
    InvalidKey "invalid_key" 400 "a store key outside [A-Za-z0-9._:-]{1,128}",
    PreconditionFailed "precondition_failed" 412 "If-Match / If-None-Match did not hold (the message names the current version)",
    ValueTooLarge "value_too_large" 413 "a store value over room.max_value_bytes",
    DataTooLarge "data_too_large" 413 "a profile data document over sessions.profile_data_max_bytes",
    TooManyKeys "too_many_keys" 422 "the session's store holds room.max_keys keys",
    StoreFull "store_full" 422 "the session's store would exceed room.max_bytes",
    RateLimited "rate_limited" 429 "more store writes per second than room.writes_per_sec",
    BrowserTooOld "browser_too_old" 409 "the profile was written by a newer Chromium than this node's (both versions named)",
    NewerFormat "newer_format" 409 "a newer profile-vault wrote this profile's records or objects; upgrade this node",
    SessionExpired "session_expired" 410 "the session has ended",
    BodyTooLarge "body_too_large" 413 "the body is larger than http.max_body_bytes",
    UnsupportedMediaType "unsupported_media_type" 415 "a body that is not application/json",
    ProfileCorrupt "profile_corrupt" 422 "the stored profile failed authentication or validation",
    StateTooLarge "state_too_large" 422 "the profile holds more than a storageState document may (localStorage of 500 origins, 16 MiB)",
    TabsRefused "tabs_refused" 422 "Chrome's tabs API refused the call or did not complete it within 5 s (its own message: no tab with that id, an argument it does not take)",
    ClusterAuthFailed "cluster_auth_failed" 401 "a request between nodes failed the cluster secret check",
    UpgradeRequired "upgrade_required" 426 "a WebSocket endpoint requested without an upgrade",
    TooManySessions "too_many_sessions" 429 "sessions.max_sessions sessions are running (or sessions.max_sessions_per_tenant of the tenant's)",
    TooManyJobs "too_many_jobs" 429 "sessions.max_state_jobs storage-state imports/exports are running (or the tenant's share)",
    TooManyClients "too_many_clients" 429 "sessions.max_cdp_clients DevTools clients are connected to the session",
    TooManyWatchers "too_many_watchers" 429 "the session's store has as many watchers as it takes (32)",
    Internal "internal" 500 "a bug or local I/O failure; see the daemon log",
    BrowserUnreachable "browser_unreachable" 502 "the session's browser does not answer",
    StorageUnavailable "storage_unavailable" 503 "the object store is unavailable; retry",
    UploadFailed "upload_failed" 503 "the uploaded files could not be written for the browser; retry",
    KeysUnavailable "keys_unavailable" 503 "the key service is unavailable; retry",
    BrowserFailed "browser_failed" 503 "Chromium could not be started",
    SandboxUnavailable "sandbox_unavailable" 503 "the browser sandbox cannot be built on this node (see /readyz); sessions are refused",
    ShuttingDown "shutting_down" 503 "the daemon is shutting down",
    NodeUnreachable "node_unreachable" 503 "the cluster node running the session cannot be reached",
    SaveFailed "save_failed" 503 "a retried save failed again (it stays queued)",
    RestoreTimeout "restore_timeout" 504 "restoring the profile took too long",
}

impl ErrorCode {
    /// The code of a status the framework produced itself (no handler ran).
    #[must_use]
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status.as_u16() {
            400 | 422 => ErrorCode::InvalidRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            413 => ErrorCode::BodyTooLarge,
            415 => ErrorCode::UnsupportedMediaType,
            426 => ErrorCode::UpgradeRequired,
            412 => ErrorCode::PreconditionFailed,
            429 => ErrorCode::TooManySessions,
            503 => ErrorCode::ShuttingDown,
            _ => ErrorCode::Internal,
        }
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.name()), "{} twice", c.name());
            assert!(c
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
    }

    #[test]
    fn framework_statuses_have_codes_of_their_class() {
        for s in [400u16, 401, 403, 404, 405, 412, 413, 415, 426, 429, 503] {
            let c = ErrorCode::for_status(StatusCode::from_u16(s).unwrap());
            assert_eq!(c.status().as_u16() / 100, s / 100, "{s} -> {}", c.name());
        }
    }
}
