//! `/v0/vm/{id}/store`: the session room over HTTP — read, conditional writes, and a
//! Server-Sent Events watch that resumes with `Last-Event-ID`. Open to the tenant's API key,
//! the session's admin token, and its viewer tokens. A viewer writes for a connected user
//! (`user` and `resume` from its `hello`, as downloads do) who may control the browser now:
//! a user whose `control` was removed, or whose control is disabled, no longer writes with
//! the token it joined with.

use crate::api::codes::ErrorCode;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{any_json, path_id, Call, Params, RequestBody, RequestQuery};
use super::vm::authorize;
use super::{auth, wire, AppState};
use crate::room::{self, Change, Condition, Start};
use crate::session::Session;

/// Query parameters of `GET /v0/vm/{id}/store`.
pub(super) const LIST_QUERY: &[wire::Param] = &[wire::Param {
    name: "watch",
    schema: wire::wait,
    description:
        "a Server-Sent Events stream: a snapshot, then every change (resume with Last-Event-ID)",
}];

/// Headers of conditional writes.
pub(super) const WRITE_HEADERS: &[wire::Param] = &[
    wire::Param {
        name: "If-Match",
        schema: wire::if_match,
        description: "write only if the entry is at this version",
    },
    wire::Param {
        name: "If-None-Match",
        schema: wire::if_none_match,
        description: "`*`: create only",
    },
];

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    watch: Option<bool>,
}

impl RequestQuery for ListQuery {
    const PARAMS: &'static [wire::Param] = LIST_QUERY;
}

/// Query parameters of the writes besides the token: the connected user a viewer writes for.
pub(super) const WRITE_QUERY: &[wire::Param] = super::files::FILE_QUERY;

/// Who reads or writes a session's store.
enum Caller {
    /// The tenant's API key or the session's admin token: reads and writes.
    Owner,
    /// A viewer token: reads; writes for a connected user ([`viewer_writes`]).
    Viewer { token: String },
}

/// The session and who calls.
fn authorize_room(
    state: &AppState,
    headers: &HeaderMap,
    raw: Option<&str>,
    id: &str,
) -> Result<(Arc<Session>, Caller), ApiError> {
    let query_token = wire::query_value(raw, "token");
    let token = auth::bearer(headers).or(query_token.as_deref());
    match authorize(state, headers, query_token.as_deref(), id) {
        Ok((s, _)) => return Ok((s, Caller::Owner)),
        Err(e) if e.status == StatusCode::NOT_FOUND => return Err(e),
        // An API key in the URL: refused as such, not tried as a viewer token.
        Err(e) if token.is_some_and(|t| state.keys.tenant_of(t).is_some()) => return Err(e),
        Err(_) => {}
    }
    let s = state.manager.get(id).ok_or_else(ApiError::unauthorized)?;
    let token = token
        .filter(|t| s.live.token_roles(t).is_some())
        .ok_or_else(ApiError::unauthorized)?
        .to_string();
    super::embed::viewer_token_alone(&s)?;
    Ok((s, Caller::Viewer { token }))
}

/// Whether a viewer holding `token` writes: for the connected user the query names, who may
/// control the browser now.
fn viewer_writes(s: &Session, token: &str, raw: Option<&str>) -> Result<(), ApiError> {
    let (Some(user), Some(resume)) = (
        wire::query_value(raw, "user"),
        wire::query_value(raw, "resume"),
    ) else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a viewer writes the store for a connected user who may control the browser: add its user and resume (from hello)",
        ));
    };
    match s.live.connected(token, &user, &resume) {
        Some(u) if u.may_control() => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorCode::Forbidden,
            "writing the store needs the control role, and control not disabled",
        )),
        None => Err(ApiError::new(
            ErrorCode::Forbidden,
            "no viewer with that user and resume is connected with this token",
        )),
    }
}

fn active(s: &Session) -> Result<(), ApiError> {
    if s.is_active() {
        Ok(())
    } else {
        Err(ApiError::expired())
    }
}

fn room_error(e: room::Error) -> ApiError {
    use room::Error as E;
    let code = match &e {
        E::BadKey => ErrorCode::InvalidKey,
        E::ValueTooLarge(_) => ErrorCode::ValueTooLarge,
        E::TooManyKeys(_) => ErrorCode::TooManyKeys,
        E::Full(_) => ErrorCode::StoreFull,
        E::RateLimited(_) => ErrorCode::RateLimited,
        E::Precondition { .. } => ErrorCode::PreconditionFailed,
        E::NotFound => ErrorCode::NotFound,
    };
    ApiError::new(code, e.to_string())
}

/// The JSON text of a snapshot, `{"version", "entries": {key: {"value", "version"}}}`, with
/// `"t": "store", "type": "snapshot"` first for the live view (`live`). Written straight from
/// the values' JSON text, never parsed into trees.
pub(super) fn snapshot_text(
    version: u64,
    entries: &std::collections::BTreeMap<String, room::Entry>,
    live: bool,
) -> String {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        t: Option<&'static str>,
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        kind: Option<&'static str>,
        version: u64,
        entries: &'a std::collections::BTreeMap<String, room::Entry>,
    }
    let out = Out {
        t: live.then_some("store"),
        kind: live.then_some("snapshot"),
        version,
        entries,
    };
    serde_json::to_string(&out).expect("a snapshot serializes")
}

/// The JSON text of a change as the live view sends it (`"t": "store", "type": "change"`).
pub(super) fn change_text(c: &Change) -> String {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        t: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        change: &'a Change,
    }
    serde_json::to_string(&Out {
        t: "store",
        kind: "change",
        change: c,
    })
    .expect("a change serializes")
}

fn etag(version: u64) -> (axum::http::HeaderName, HeaderValue) {
    (
        axum::http::header::ETAG,
        HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"),
    )
}

/// `GET /v0/vm/{id}/store[?watch=true]`.
pub(super) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Reader(s, caller): Reader,
    Params(q): Params<ListQuery>,
) -> Result<Response, ApiError> {
    if q.watch != Some(true) {
        let (version, entries) = s.room.snapshot();
        return Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            snapshot_text(version, &entries, false),
        )
            .into_response());
    }
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let max = state.manager.config().store_watch_max;
    let viewer = matches!(caller, Caller::Viewer { .. });
    let slot = s.room.watch_slot(viewer).ok_or_else(|| {
        ApiError::new(
            ErrorCode::TooManyWatchers,
            format!(
                "the session's store has {} watchers ({} of them viewers at most); close one",
                room::MAX_WATCHERS,
                room::MAX_VIEWER_WATCHERS
            ),
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(room::WATCH_QUEUE);
    tokio::spawn(async move {
        let _slot = slot;
        // Bounded as a whole: a watcher that stops reading is not waited on past `max`.
        let _ = tokio::time::timeout(max, watch(s, after, tx, max)).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn snapshot_event(
    version: u64,
    entries: &std::collections::BTreeMap<String, room::Entry>,
) -> Event {
    Event::default()
        .event("snapshot")
        .id(version.to_string())
        .data(snapshot_text(version, entries, false))
}

fn change_event(c: &Change) -> Event {
    Event::default()
        .event("change")
        .id(c.version.to_string())
        .data(serde_json::to_string(c).expect("change serializes"))
}

/// Feeds one SSE watcher until it goes away, the session ends, or `max` has passed (it then
/// reconnects with `Last-Event-ID`, as EventSource does by itself).
async fn watch(
    s: Arc<Session>,
    after: Option<u64>,
    tx: tokio::sync::mpsc::Sender<Event>,
    max: Duration,
) {
    let (start, mut rx) = s.room.watch(after);
    let mut last = match start {
        Start::Snapshot(v, entries) => {
            if tx.send(snapshot_event(v, &entries)).await.is_err() {
                return;
            }
            v
        }
        Start::Replay(changes) => {
            let mut last = after.unwrap_or(0);
            for c in changes {
                last = c.version;
                if tx.send(change_event(&c)).await.is_err() {
                    return;
                }
            }
            last
        }
    };
    let mut ended = s.live.ended();
    if ended.borrow().is_some() {
        return;
    }
    let deadline = tokio::time::sleep(max);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return,
            // The watcher went away: its slot is given back now, not at the next change.
            () = tx.closed() => return,
            r = ended.changed() => {
                if r.is_err() || ended.borrow().is_some() {
                    return;
                }
            }
            r = rx.recv() => match r {
                Ok(c) if c.version <= last => {}
                Ok(c) => {
                    last = c.version;
                    if tx.send(change_event(&c)).await.is_err() {
                        return;
                    }
                }
                // Fell behind (stopped reading): start again from a snapshot.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (v, entries) = s.room.snapshot();
                    last = v;
                    if tx.send(snapshot_event(v, &entries)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Path of the key routes.
#[derive(Debug, Deserialize)]
pub(super) struct KeyPath {
    key: String,
}

/// `GET /v0/vm/{id}/store/{key}`.
pub(super) async fn get_key(
    Path(p): Path<KeyPath>,
    Reader(s, _): Reader,
) -> Result<Response, ApiError> {
    if !room::valid_key(&p.key) {
        return Err(room_error(room::Error::BadKey));
    }
    let e = s
        .room
        .get(&p.key)
        .ok_or_else(|| ApiError::not_found("key"))?;
    Ok((
        [etag(e.version)],
        Json(json!({"key": p.key, "value": e.value, "version": e.version})),
    )
        .into_response())
}

fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    Ok(match wire::precondition(headers)? {
        None => Condition::Always,
        Some(wire::Precondition::Version(v)) => Condition::Version(v),
        Some(wire::Precondition::Absent) => Condition::Absent,
    })
}

fn written(s: &Session, c: &Change) -> Response {
    let _ = s;
    (
        [etag(c.version)],
        Json(json!({"key": c.key, "version": c.version})),
    )
        .into_response()
}

/// The running session of a caller who may read its store, and who calls.
pub(super) struct Reader(Arc<Session>, Caller);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = path_id(parts, state).await?;
        let (s, caller) = authorize_room(state, &parts.headers, parts.uri.query(), &id)?;
        active(&s)?;
        Ok(Reader(s, caller))
    }
}

/// The running session of a caller who may write its store.
pub(super) struct Writer(Arc<Session>);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Reader(s, caller) = Reader::from_request_parts(parts, state).await?;
        if let Caller::Viewer { token } = caller {
            viewer_writes(&s, &token, parts.uri.query())?;
        }
        Ok(Writer(s))
    }
}

/// The body of `PUT /v0/vm/{id}/store/{key}`: the value, any JSON.
pub(super) struct StoreValue(Value);

impl RequestBody for StoreValue {
    fn read(_: &AppState, headers: &HeaderMap, raw: Bytes) -> Result<Self, ApiError> {
        any_json(headers, &raw, "the body is the value: any JSON").map(StoreValue)
    }
}

/// `PUT /v0/vm/{id}/store/{key}` (body: any JSON value).
pub(super) async fn put_key(
    headers: HeaderMap,
    Path(p): Path<KeyPath>,
    Call {
        caller: Writer(s),
        body: StoreValue(value),
    }: Call<Writer, StoreValue>,
) -> Result<Response, ApiError> {
    let cond = condition(&headers)?;
    let c = s.room.put(&p.key, value, cond).map_err(room_error)?;
    Ok(written(&s, &c))
}

/// `DELETE /v0/vm/{id}/store/{key}`.
pub(super) async fn delete_key(
    headers: HeaderMap,
    Path(p): Path<KeyPath>,
    Writer(s): Writer,
) -> Result<Response, ApiError> {
    let c = s
        .room
        .delete(&p.key, condition(&headers)?)
        .map_err(room_error)?;
    Ok(written(&s, &c))
}
