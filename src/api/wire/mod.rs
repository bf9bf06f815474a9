//! The wire contract: the JSON Schema of every request and response body, every query
//! parameter, and every error code of the API. [`super::openapi`] publishes these exact
//! values, and the handlers enforce the request schemas with [`super::schema::validate`]
//! ([`body`], [`query`]), so a constraint cannot be documented without being enforced or
//! the other way round. Bodies read into types are declared once, type and schema together
//! (`requests.rs`); bodies read positionally (`addRoles`, `setPermissions`) keep their schema
//! here.

use crate::api::codes::ErrorCode;
use std::sync::LazyLock;

use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::schema::{self, Violation};

mod precondition;
mod replies;
mod requests;
pub use precondition::*;
pub use replies::*;
pub(crate) use requests::{
    AuthRequest, ImportRequest, ProfileObject, TimeoutChangeRequest, ViewerRequest, VmRequest,
    WebhookRequest,
};

/// No control characters (C0, DEL, C1) anywhere in the string.
pub const NO_CONTROL: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
/// A profile, session or tenant id (`vault::validate_id`).
pub const ID: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";
/// An http(s) URL of plain printable ASCII with a host (and an optional port).
pub const HTTP_URL: &str =
    "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][A-Za-z0-9._~:/?#@!$&'()*+,;=%-]*)?$";
/// `start_url`: an http(s) URL or `about:blank`.
pub const START_URL: &str = "^(https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][A-Za-z0-9._~:/?#@!$&'()*+,;=%-]*)?|about:blank)$";

/// An IANA time zone name (`UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`).
pub const TIMEZONE: &str = "^[A-Za-z][A-Za-z0-9_+-]{0,31}(/[A-Za-z0-9_+-]{1,31}){0,2}$";

/// Longest timeout accepted, seconds (ten years).
pub const MAX_TIMEOUT: u64 = 315_360_000;

fn nullable(mut s: Value) -> Value {
    s["nullable"] = json!(true);
    s
}

fn str_max(max: u64) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": NO_CONTROL})
}

fn id_schema(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID, "description": description})
}

fn timeout_secs(description: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT, "nullable": true, "description": description})
}

fn object(props: Value, required: &[&str]) -> Value {
    let mut o = json!({"type": "object", "additionalProperties": false, "properties": props});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

/// The body of `POST /v0/vm` ([`VmRequest`]).
pub static VM_REQUEST: LazyLock<Value> = LazyLock::new(VmRequest::schema);

/// Hyperbeam's fields that `POST /v0/vm` accepts and reports as `ignored`.
pub const VM_IGNORED_FIELDS: &[&str] = &[
    "kiosk",
    "ublock",
    "adblock",
    "draw",
    "webgl",
    "fps",
    "hide_cursor",
    "region",
    "extension",
    "tag",
    "quality",
    "dark",
    "touch_gestures",
    "search_engine",
    "hide_bar",
    "tabs",
    "webrtc",
    "max_area",
    "offline_timeout",
];

fn role_list() -> Value {
    let names: Vec<&str> = crate::live::roles::ALL.iter().map(|r| r.1).collect();
    json!({"type": "array", "maxItems": 16, "items": {"type": "string", "enum": names}})
}

fn user_ids() -> Value {
    json!({"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 128, "pattern": NO_CONTROL}})
}

/// `addRoles` / `removeRoles`: `[[user ids], [roles], exclusive]`.
pub static ROLES_CHANGE: LazyLock<Value> = LazyLock::new(|| {
    json!({"type": "array", "minItems": 2, "maxItems": 3, "additionalItems": false,
        "items": [user_ids(), role_list(), {"type": "boolean"}],
        "description": "[[user ids], [roles], exclusive]: exclusive applies the change to every user except those listed"})
});

/// `POST <base_url>/timeout`: new timeouts for a running session ([`TimeoutChangeRequest`]).
pub static TIMEOUT_CHANGE: LazyLock<Value> = LazyLock::new(TimeoutChangeRequest::schema);

/// `tabs.<method>`: its arguments, as `chrome.tabs.<method>` takes them.
pub static TABS_ARGS: LazyLock<Value> = LazyLock::new(|| {
    json!({"type": "array", "maxItems": 4,
        "description": "The arguments of chrome.tabs.<method> (e.g. [{}] for query, [tabId, {\"url\": \"https://…\"}] for update); only http(s) URLs and about:blank open"})
});

/// `tabs.<method>`: Chrome's answer.
pub static TABS_RESULT: LazyLock<Value> = LazyLock::new(
    || json!({"description": "What chrome.tabs.<method> resolves to: a Tab (id, index, windowId, active, url, title, favIconUrl, status, …), an array of them, a number (getZoom), an object (getZoomSettings, highlight's Window), a string (detectLanguage), or null"}),
);

/// `setPermissions`: `[user id, {priority, idle_timeout, control_disabled}]`.
pub static PERMISSIONS: LazyLock<Value> = LazyLock::new(|| {
    json!({"type": "array", "minItems": 2, "maxItems": 2, "additionalItems": false,
        "items": [
            {"type": "string", "maxLength": 128, "pattern": NO_CONTROL},
            object(json!({
                "priority": {"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000},
                "idle_timeout": {"type": "integer", "minimum": 0, "maximum": 86_400_000},
                "control_disabled": {"type": "boolean"},
            }), &[]),
        ],
        "description": "[user id, permissions]: keys left out keep their value"})
});

/// `POST <base_url>/bookmarks` body: a Netscape bookmark file (it has a `<DL>` list).
pub static BOOKMARK_FILE: LazyLock<Value> = LazyLock::new(
    || json!({"type": "string", "pattern": "<[Dd][Ll]", "description": "a Netscape bookmark file (as Chrome and Firefox export)"}),
);

/// `POST /v0/vm/{id}/viewers` body ([`ViewerRequest`]).
pub static VIEWER_REQUEST: LazyLock<Value> = LazyLock::new(ViewerRequest::schema);

/// A query parameter of a route.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// Its schema.
    pub schema: fn() -> Value,
    /// What it does.
    pub description: &'static str,
}

/// `after_id` of `GET /v0/vm`.
pub fn after_id() -> Value {
    json!({"type": "string", "maxLength": 128, "pattern": NO_CONTROL})
}
/// `limit` of `GET /v0/vm`.
pub fn limit() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
}
/// Any JSON value (a store entry).
pub static ANY: LazyLock<Value> = LazyLock::new(|| json!({"description": "any JSON value"}));

/// The value of query parameter `name` (undecoded forms decoded), if given.
pub fn query_value(raw: Option<&str>, name: &str) -> Option<String> {
    form_pairs(raw.unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `generation` of `GET /v0/profiles/{id}/storage_state`: as large as [`query`] reads
/// integers (a larger one is schema-valid otherwise, and refused).
pub fn generation() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": i64::MAX})
}

/// The longest `origins[].origin`: with the shortest scheme (`http://`) the host stays within
/// DNS's 253 characters, which `storage_state::parse` also enforces.
const ORIGIN_MAX_LEN: usize = 260;
/// `origins[].origin`: at most nine labels of 1-63 characters, an optional port 1-65535.
const ORIGIN_PATTERN: &str = concat!(
    "^https?://[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,8}",
    "(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$"
);

/// A Playwright storageState document, as `storage_state::parse` takes it (which also
/// checks what a schema cannot: the browser must accept every cookie).
fn storage_state_schema() -> Value {
    let text = |max: u32| json!({"type": "string", "maxLength": max, "pattern": "^[^\\x00-\\x1f\\x7f;]*$"});
    let b = || json!({"type": "boolean"});
    let host = "^\\.?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?){0,8}$";
    let cookie = object(
        json!({
            "name": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[!#-'*+.0-9A-Z^-z|~-]+$"},
            "value": text(3800),
            "domain": {"type": "string", "maxLength": 253, "pattern": host},
            "path": {"type": "string", "maxLength": 1024, "pattern": "^/[^\\x00-\\x1f\\x7f;]*$"},
            "expires": {"type": "number", "description": "Unix seconds, or -1 for a session cookie"},
            "httpOnly": b(), "secure": b(),
            "sameSite": {"type": "string", "enum": ["Strict", "Lax", "None"], "description": "None needs secure: true"},
            "partitionKey": {"type": "string", "maxLength": 300},
        }),
        &["name", "value", "domain", "path"],
    );
    let item = object(
        json!({"name": {"type": "string", "maxLength": 4096}, "value": {"type": "string"}}),
        &["name", "value"],
    );
    let origin = object(
        json!({
            "origin": {"type": "string", "maxLength": ORIGIN_MAX_LEN, "pattern": ORIGIN_PATTERN,
                "description": "http(s)://host[:port]: DNS labels of 1-63 characters, a host of at most 253, a port 1-65535"},
            "localStorage": {"type": "array", "items": item},
            "indexedDB": {"type": "array", "items": {"type": "object"}, "description": "as Playwright's storageState({indexedDB: true}) writes it; plain-JSON keys and values"},
        }),
        &["origin"],
    );
    let mut s = object(
        json!({
            "cookies": {"type": "array", "maxItems": crate::storage_state::MAX_COOKIES, "items": cookie},
            "origins": {"type": "array", "maxItems": crate::storage_state::MAX_ORIGINS, "items": origin},
        }),
        &[],
    );
    s["description"] = json!("a Playwright storageState document");
    s
}

/// `POST /v0/profiles`: a new profile from a Playwright storage state ([`ImportRequest`]).
pub static IMPORT_REQUEST: LazyLock<Value> = LazyLock::new(ImportRequest::schema);

/// `wait` of `DELETE /v0/vm/{id}`.
pub fn wait() -> Value {
    json!({"type": "boolean", "default": false})
}

/// Checks a JSON body against `schema` and deserializes it.
///
/// # Errors
/// `invalid_json`, `unknown_field`, `invalid_request`, `unsupported_media_type`.
pub fn body<T: serde::de::DeserializeOwned>(
    schema: &Value,
    headers: &axum::http::HeaderMap,
    raw: &[u8],
) -> Result<T, ApiError> {
    let empty = raw.iter().all(u8::is_ascii_whitespace);
    if !empty {
        let ct = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let json = ct.is_some_and(|ct| {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        });
        if !json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
    }
    let v: Value = if empty {
        json!({})
    } else {
        serde_json::from_slice(raw).map_err(|e| {
            ApiError::bad_request(ErrorCode::InvalidJson, format!("invalid JSON: {e}"))
        })?
    };
    check(schema, &v)?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))
}

/// Checks a value against `schema`.
///
/// # Errors
/// `unknown_field` or `invalid_request`.
pub fn check(schema: &Value, v: &Value) -> Result<(), ApiError> {
    schema::validate(schema, v, "").map_err(|e| match e {
        Violation::UnknownField(_) => ApiError::bad_request(ErrorCode::UnknownField, e.to_string()),
        Violation::Invalid { .. } => {
            ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string())
        }
    })
}

/// Parses a query string against the route's declared parameters (each converted to its
/// schema's type, then validated); undeclared parameters are ignored.
///
/// # Errors
/// `invalid_request` naming the parameter.
pub fn query<T: serde::de::DeserializeOwned>(
    params: &[Param],
    raw: Option<&str>,
) -> Result<T, ApiError> {
    let mut out = Map::new();
    for (k, v) in form_pairs(raw.unwrap_or("")) {
        let Some(p) = params.iter().find(|p| p.name == k) else {
            continue;
        };
        let schema = (p.schema)();
        let bad = || {
            ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!(
                    "query parameter `{k}`: expected {}",
                    schema["type"].as_str().unwrap_or("a value")
                ),
            )
        };
        let value = match schema["type"].as_str() {
            Some("integer") => Value::from(v.parse::<i64>().map_err(|_| bad())?),
            Some("boolean") => match v.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad()),
            },
            _ => Value::String(v),
        };
        schema::validate(&schema, &value, &format!("query parameter `{k}`"))
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?;
        out.insert(k, value);
    }
    serde_json::from_value(Value::Object(out))
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` decoded, bad escapes kept).
fn form_pairs(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 3;
                            continue;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests;
