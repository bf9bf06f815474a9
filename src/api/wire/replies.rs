//! The schemas of every success and error body the API answers (published in the OpenAPI
//! document; schemathesis checks every answer against them).

use std::sync::LazyLock;

use serde_json::{json, Value};

use super::{nullable, object};
use crate::api::codes::ErrorCode;

fn unix_secs() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn profile_info() -> Value {
    nullable(object(
        json!({
            "id": {"type": "string"},
            "loaded": {"type": "boolean"},
            "generation": {"type": "integer", "minimum": 0, "nullable": true},
            "save": {"type": "boolean"},
            "data": {"description": "POST /v0/vm with profile.load only: the profile's data document (null until written)"},
            "data_version": {"type": "integer", "minimum": 0, "description": "POST /v0/vm with profile.load only: the data document's version"},
        }),
        &["id", "loaded", "generation", "save"],
    ))
}

fn save_state() -> Value {
    object(
        json!({
            "state": {"type": "string", "enum": ["none", "pending", "saving", "saved", "failed", "refused", "conflict"]},
            "generation": {"type": "integer", "minimum": 0},
            "error": {"type": "string"},
            "head": {"type": "integer", "minimum": 0, "nullable": true},
        }),
        &["state"],
    )
}

fn session_info() -> Value {
    object(
        json!({
            "session_id": {"type": "string"},
            "node": {"type": "string", "description": "the node running it"},
            "created_at": unix_secs(),
            "expires_at": nullable(unix_secs()),
            "termination_date": nullable(unix_secs()),
            "end_reason": {"type": "string", "nullable": true,
                "enum": ["client", "admin", "inactive", "absolute", "offline", "crash", "resource_limit", "shutdown", "recovered", "node_lost", null]},
            "profile": profile_info(),
            "save": save_state(),
            "cdp_clients": {"type": "integer", "minimum": 0},
            "viewers": {"type": "array", "items": user_info()},
        }),
        &[
            "session_id",
            "node",
            "created_at",
            "expires_at",
            "termination_date",
            "end_reason",
            "profile",
            "save",
            "cdp_clients",
            "viewers",
        ],
    )
}

/// `POST /v0/vm` 200.
pub static VM_CREATED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({
            "session_id": {"type": "string"},
            "embed_url": {"type": "string"},
            "admin_token": {"type": "string"},
            "cdp_url": {"type": "string"},
            "expires_at": nullable(unix_secs()),
            "profile": profile_info(),
            "ignored": {"type": "array", "items": {"type": "string"}},
        }),
        &[
            "session_id",
            "embed_url",
            "admin_token",
            "cdp_url",
            "expires_at",
            "profile",
            "ignored",
        ],
    )
});

/// `GET /v0/vm/{id}` 200.
pub static SESSION: LazyLock<Value> = LazyLock::new(session_info);

/// `GET /v0/vm` 200.
pub static SESSION_LIST: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({
            "sessions": {"type": "array", "items": session_info()},
            "next_after_id": {"type": "string", "nullable": true},
        }),
        &["sessions", "next_after_id"],
    )
});

/// `DELETE /v0/vm/{id}` 200.
pub static VM_ENDED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"session_id": {"type": "string"}, "save": save_state(), "profile": profile_info()}),
        &["session_id"],
    )
});

/// `POST /v0/vm/{id}/ping` 200.
pub static PINGED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"session_id": {"type": "string"}, "expires_at": nullable(unix_secs())}),
        &["session_id", "expires_at"],
    )
});

/// `GET /v0/vm/{id}/cdp/json/version` 200.
pub static CDP_VERSION: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"Browser": {"type": "string"}, "Protocol-Version": {"type": "string"}, "webSocketDebuggerUrl": {"type": "string"}}),
        &["Browser", "Protocol-Version", "webSocketDebuggerUrl"],
    )
});

/// `GET /v0/saves` 200.
pub static FAILED_SAVES: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"failed_saves": {"type": "array", "items": object(json!({
            "session_id": {"type": "string"},
            "profile": {"type": "string", "nullable": true},
            "base_generation": {"type": "integer", "minimum": 0, "nullable": true},
            "created_at": unix_secs(),
            "state": {"type": "string", "enum": ["failed", "refused"]},
            "refused": {"type": "object", "nullable": true, "properties": {"at": unix_secs(), "reason": {"type": "string"}}, "required": ["at", "reason"]},
        }), &["session_id", "profile", "base_generation", "created_at", "state", "refused"])}}),
        &["failed_saves"],
    )
});

/// `POST /v0/saves/{id}/retry` 200.
pub static SAVE_RETRIED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"session_id": {"type": "string"}, "saved": {"type": "boolean"}}),
        &["session_id", "saved"],
    )
});

/// `GET /v0/profiles` 200.
pub static PROFILE_LIST: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"profiles": {"type": "array", "items": object(json!({
            "profile": {"type": "string"},
            "generation": {"type": "integer", "minimum": 0},
            "updated_at": unix_secs(),
        }), &["profile", "generation", "updated_at"])}}),
        &["profiles"],
    )
});

/// `GET /v0/profiles/{id}` 200.
pub static PROFILE: LazyLock<Value> = LazyLock::new(|| {
    let n = || json!({"type": "integer", "minimum": 0, "nullable": true});
    object(
        json!({
            "id": {"type": "string"},
            "generation": {"type": "integer", "minimum": 0},
            "last_saved": unix_secs(),
            "last_used": nullable(unix_secs()),
            "generations": {"type": "array", "items": object(json!({
                "generation": {"type": "integer", "minimum": 0},
                "head": {"type": "boolean"},
                "complete": {"type": "boolean"},
                "created_at": n(),
                "bytes_stored": n(),
                "files": n(),
                "bytes": n(),
                "chromium_version": {"type": "string", "nullable": true},
                "clean_exit": {"type": "boolean", "nullable": true},
            }), &["generation", "head", "complete", "created_at", "bytes_stored", "files", "bytes", "chromium_version", "clean_exit"])},
            "identity": identity(),
            "contents": {"type": "object", "nullable": true,
                "description": "what the head generation holds, as counts and site names (cookies per site, origins with localStorage / IndexedDB / service workers, history entries, bookmarks, saved logins, extensions); null when not recorded"},
        }),
        &[
            "id",
            "generation",
            "last_saved",
            "last_used",
            "generations",
            "identity",
            "contents",
        ],
    )
});

fn identity() -> Value {
    let s = || json!({"type": "string", "nullable": true});
    let n = || json!({"type": "integer", "minimum": 0, "nullable": true});
    nullable(object(
        json!({"user_agent": s(), "width": n(), "height": n(), "locale": s(), "timezone": s()}),
        &["user_agent", "width", "height", "locale", "timezone"],
    ))
}

/// `GET /v0/profiles/{id}/data` 200.
pub static PROFILE_DATA: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({
            "id": {"type": "string"},
            "version": {"type": "integer", "minimum": 0},
            "updated_at": nullable(unix_secs()),
            "data": {"description": "the document, any JSON (null at version 0)"},
        }),
        &["id", "version", "updated_at", "data"],
    )
});

/// `PUT /v0/profiles/{id}/data` 200.
pub static PROFILE_DATA_WRITTEN: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"id": {"type": "string"}, "version": {"type": "integer", "minimum": 1}}),
        &["id", "version"],
    )
});

/// `POST /v0/profiles` 200.
pub static PROFILE_IMPORTED: LazyLock<Value> = LazyLock::new(|| {
    let n = || json!({"type": "integer", "minimum": 0});
    object(
        json!({"id": {"type": "string"}, "generation": n(), "cookies": n(), "origins": n()}),
        &["id", "generation", "cookies", "origins"],
    )
});

/// `GET /v0/profiles/{id}/storage_state` 200: Playwright's storageState.
pub static STORAGE_STATE: LazyLock<Value> = LazyLock::new(|| {
    let s = || json!({"type": "string"});
    let b = || json!({"type": "boolean"});
    let cookie = object(
        json!({"name": s(), "value": s(), "domain": s(), "path": s(), "expires": {"type": "number"},
            "httpOnly": b(), "secure": b(), "sameSite": {"type": "string", "enum": ["Strict", "Lax", "None"]},
            "partitionKey": s()}),
        &[
            "name", "value", "domain", "path", "expires", "httpOnly", "secure", "sameSite",
        ],
    );
    let item = object(json!({"name": s(), "value": s()}), &["name", "value"]);
    let origin = object(
        json!({"origin": s(), "localStorage": {"type": "array", "items": item}}),
        &["origin", "localStorage"],
    );
    object(
        json!({"cookies": {"type": "array", "items": cookie}, "origins": {"type": "array", "items": origin}}),
        &["cookies", "origins"],
    )
});

/// `DELETE /v0/profiles/{id}` 200.
pub static PROFILE_DELETED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"id": {"type": "string"}, "deleted_objects": {"type": "integer", "minimum": 0}}),
        &["id", "deleted_objects"],
    )
});

/// `GET /healthz` 200.
pub static HEALTH: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"status": {"type": "string", "enum": ["ok"]}}),
        &["status"],
    )
});

/// `GET /readyz` 200 and 503.
pub static READY: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({
            "ready": {"type": "boolean"},
            "checks": object(json!({
                "store": {"type": "boolean"},
                "chromium": {"type": "boolean"},
                "keys": {"type": "boolean"},
                "recovering_sessions": {"type": "integer", "minimum": 0},
                "browser_version": {"type": "string", "nullable": true},
                "sandbox": {"type": "boolean"},
                "sandbox_detail": {"type": "string"},
                "display": {"type": "boolean", "description": "sessions' browsers are headful on a virtual display of their own (else headless: the live view shows the page only)"},
                "display_detail": {"type": "string"},
                "sound": {"type": "boolean", "description": "sessions have sound (PulseAudio)"},
                "session_records_rejected": {"type": "integer", "minimum": 0},
                "key_files_skipped": {"type": "integer", "minimum": 0},
            }), &["store", "chromium", "keys", "recovering_sessions", "browser_version", "sandbox", "sandbox_detail", "display", "display_detail", "sound", "session_records_rejected", "key_files_skipped"]),
        }),
        &["ready", "checks"],
    )
});

/// `GET /v0/openapi.json` 200.
pub static DOCUMENT: LazyLock<Value> = LazyLock::new(
    || json!({"type": "object", "required": ["openapi", "info", "paths"], "properties": {"openapi": {"type": "string"}}}),
);

fn user_info() -> Value {
    object(
        json!({
            "user_id": {"type": "string"},
            "roles": {"type": "array", "items": {"type": "string"}},
            "priority": {"type": "integer"},
            "idle_timeout": {"type": "integer", "minimum": 0},
            "control_disabled": {"type": "boolean"},
            "connected_at": unix_secs(),
        }),
        &[
            "user_id",
            "roles",
            "priority",
            "idle_timeout",
            "control_disabled",
            "connected_at",
        ],
    )
}

/// `GET /v0/vm/{id}/users` 200.
pub static USERS: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"users": {"type": "array", "items": user_info()}}),
        &["users"],
    )
});

/// Answer of `POST <base_url>/timeout`: when the session now ends, and why.
pub static TIMEOUT_CHANGED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({
            "expires_at": {"type": "integer", "nullable": true, "description": "Unix seconds of the nearest timeout (null: none)"},
            "absolute": {"type": "integer", "nullable": true},
            "inactive": {"type": "integer", "nullable": true},
            "offline": {"type": "integer", "nullable": true},
            "warning": {"type": "integer"},
        }),
        &["expires_at", "absolute", "inactive", "offline", "warning"],
    )
});

/// Answer of the user-changing endpoints.
pub static USERS_CHANGED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"changed": {"type": "integer", "minimum": 0}, "users": {"type": "array", "items": user_info()}}),
        &["changed", "users"],
    )
});

/// `POST <base_url>/bookmarks` 200.
pub static BOOKMARKS_ADDED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"added": {"type": "integer", "minimum": 0}, "merged": {"type": "string", "enum": ["when the browser stops, before the save"]}}),
        &["added", "merged"],
    )
});

/// `POST /v0/vm/{id}/viewers` 200.
pub static VIEWER_MINTED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"embed_url": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}}}),
        &["embed_url", "roles"],
    )
});

/// The error body.
pub static ERROR: LazyLock<Value> = LazyLock::new(|| {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
    object(
        json!({"error": {"type": "string", "enum": codes}, "message": {"type": "string"}}),
        &["error", "message"],
    )
});

fn store_entries() -> Value {
    json!({"type": "object", "additionalProperties": object(json!({
        "value": {"description": "any JSON value"},
        "version": {"type": "integer", "minimum": 1},
    }), &["value", "version"])})
}

/// `GET /v0/vm/{id}/store` 200 (JSON; with `watch=true` an SSE stream of `snapshot` and
/// `change` events whose data are this and [`STORE_CHANGE`]).
pub static STORE: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"version": {"type": "integer", "minimum": 0}, "entries": store_entries()}),
        &["version", "entries"],
    )
});

/// A change event of the watch.
pub static STORE_CHANGE: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"version": {"type": "integer", "minimum": 1}, "key": {"type": "string"},
            "value": {"description": "the new value (null when deleted)"}, "deleted": {"type": "boolean"}}),
        &["version", "key", "value", "deleted"],
    )
});

/// `GET /v0/vm/{id}/store/{key}` 200.
pub static STORE_ENTRY: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"key": {"type": "string"}, "value": {"description": "any JSON value"}, "version": {"type": "integer", "minimum": 1}}),
        &["key", "value", "version"],
    )
});

/// `PUT`/`DELETE /v0/vm/{id}/store/{key}` 200.
pub static STORE_WRITTEN: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"key": {"type": "string"}, "version": {"type": "integer", "minimum": 1}}),
        &["key", "version"],
    )
});

/// `POST /v0/vm/{id}/embed/uploads` 200.
pub static UPLOADED: LazyLock<Value> = LazyLock::new(|| {
    object(
        json!({"files": {"type": "integer", "minimum": 0, "description": "files handed to the page's chooser"}}),
        &["files"],
    )
});
