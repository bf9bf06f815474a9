//! The live view over HTTP: the embed page and its WebSocket (viewer tokens only), and
//! Hyperbeam's session endpoints at the session's `base_url` (`embed_url` without its query:
//! `/v0/vm/{id}/embed`) — `addRoles`, `removeRoles`, `setPermissions`, `users/{user_id}`,
//! `bookmarks` — plus minting viewer URLs and listing connected users (admin token or API key).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::vm::{authorize, TokenQuery};
use super::{wire, AppState};
use crate::live::{roles, Notice, Role};
use crate::session::Session;

const PAGE: &str = include_str!("../live/embed.html");

/// The session and roles of a viewer token. The admin token and API keys are refused here:
/// they open the API and CDP, not the live view.
pub(super) fn authorize_viewer(
    state: &AppState,
    token: Option<&str>,
    id: &str,
) -> Result<(Arc<Session>, BTreeSet<Role>), ApiError> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    let session = state.manager.get(id);
    if let Some(s) = &session {
        if let Some(roles) = s.live.token_roles(token) {
            return Ok((s.clone(), roles));
        }
        if s.admin_token_matches(token) || state.keys.tenant_of(token) == Some(s.tenant.as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the live view takes a viewer token (embed_url), not the admin token or an API key",
            ));
        }
    }
    Err(ApiError::unauthorized())
}

/// `GET /v0/vm/{id}/embed?token=`: the page.
pub(super) async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let (s, _) = authorize_viewer(&state, q.token.as_deref(), &id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let nonce = crate::live::new_token();
    let html = PAGE
        .replace("{{NONCE}}", &nonce)
        .replace("{{SESSION_ID}}", &s.id);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src blob: data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {}",
        state.frame_ancestors
    );
    let mut resp = (StatusCode::OK, axum::response::Html(html)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// Whether a socket's `Origin` may connect: the daemon's own origin (its embed page, framed
/// anywhere), the configured ones, or none at all (not a browser).
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let own = state.public_url.trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|h| [format!("http://{h}"), format!("https://{h}")]);
    origin == own
        || host.is_some_and(|h| h.iter().any(|o| o == origin))
        || state
            .viewer_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin)
}

/// `GET /v0/vm/{id}/embed/socket?token=`: the viewer's WebSocket.
pub(super) async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this Origin may not open the live view (server.viewer_origins)",
        ));
    }
    let (s, roles) = authorize_viewer(&state, q.token.as_deref(), &id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let ws = ws.map_err(super::cdp::upgrade_error)?;
    let max = s.live.config().max_message;
    let token = q.token.clone().unwrap_or_default();
    let viewers_max = state.manager.config().max_viewers_per_tenant;
    let tenant_full = (viewers_max > 0 && state.manager.tenant_clients(&s.tenant).1 >= viewers_max)
        .then_some(viewers_max);
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| viewer(s, roles, token, tenant_full, socket)))
}

async fn close(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    code: u16,
    reason: &str,
) {
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })))
        .await;
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

fn hello(s: &Session, user: &crate::live::User) -> Value {
    json!({"t": "hello", "user_id": user.id, "session_id": s.id,
        "roles": roles::names(&user.roles()), "control": user.may_control()})
}

/// One viewer's socket: frames and tab changes out, input in, until it leaves, is kicked,
/// misbehaves, or the session ends.
async fn viewer(
    s: Arc<Session>,
    roles: BTreeSet<Role>,
    token: String,
    tenant_full: Option<usize>,
    socket: WebSocket,
) {
    let live = &s.live;
    let (mut tx, mut rx) = socket.split();
    if let Some(max) = tenant_full {
        return close(&mut tx, 4008, &format!("this tenant has the most viewers it may have on this node (server.max_viewers_per_tenant = {max})")).await;
    }
    let (user, mut notices) = match live.join(&token, roles) {
        Ok(u) => u,
        Err(e) => return close(&mut tx, 4008, &e.to_string()).await,
    };
    if let Err(e) = live.hub.join().await {
        tracing::warn!(session = %s.id, error = %e, "live view: cannot start the screencast");
        live.leave(&user);
        return close(&mut tx, 4011, "the browser does not answer").await;
    }
    s.client_connected();
    tracing::info!(session = %s.id, user = %user.id, "viewer connected");
    let mut frames = live.hub.frames();
    frames.mark_changed();
    let mut tabs = live.hub.tabs();
    tabs.mark_changed();
    let mut ended = live.ended();
    ended.mark_changed();
    let rate = f64::from(live.config().max_input_rate);
    let (mut budget, mut refilled) = (rate * 2.0, Instant::now());
    let mut meta = (0, 0);
    let mut ok = tx.send(text(hello(&s, &user))).await.is_ok();
    // A display: the whole screen, then the tiles of what changes.
    let mut tiles = None;
    let mut sound = live
        .display
        .as_ref()
        .and_then(|d| d.sound.as_ref())
        .map(crate::display::Sound::subscribe);
    let mut key_seq = 0;
    if let Some(d) = &live.display {
        d.capture.viewer_joined();
        match d.capture.watch().await {
            Ok((rx, key)) => {
                let (w, h) = d.size;
                ok = ok
                    && tx
                        .send(text(
                            json!({"t": "meta", "width": w, "height": h, "display": true}),
                        ))
                        .await
                        .is_ok();
                ok = ok && tx.send(Message::Binary(key.message())).await.is_ok();
                key_seq = key.seq;
                tiles = Some(rx);
            }
            Err(e) => {
                tracing::warn!(session = %s.id, error = %e, "live view: the display cannot be captured");
                ok = false;
            }
        }
    }
    // The session store reaches viewers too (the page passes it on to its parent window).
    let snapshot =
        |version: u64, entries: &std::collections::BTreeMap<String, crate::room::Entry>| {
            text(
                json!({"t": "store", "type": "snapshot", "version": version, "entries": super::room::entries_json(entries)}),
            )
        };
    let (start, mut store) = s.room.watch(None);
    let mut store_last = 0;
    if let crate::room::Start::Snapshot(v, entries) = start {
        store_last = v;
        ok = ok && tx.send(snapshot(v, &entries)).await.is_ok();
    }
    // A page's file chooser, answered by a viewer who may upload.
    let mut chooser = live.hub.file_chooser();
    chooser.mark_unchanged();
    // Finished downloads, offered to viewers who may control the browser.
    let mut downloads_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut offered = std::collections::HashSet::new();
    while ok {
        tokio::select! {
            r = chooser.changed() => {
                if r.is_err() { break; }
                let c = chooser.borrow_and_update().clone();
                if let Some(c) = c {
                    if user.has(Role::FileUpload) && user.has(Role::Control) && user.may_control() {
                        ok = tx.send(text(json!({"t": "file_chooser", "multiple": c.multiple}))).await.is_ok();
                    }
                }
            }
            _ = downloads_tick.tick(), if s.downloads.is_some() && user.has(Role::Control) => {
                ok = offer_downloads(&s, &mut offered, &mut tx).await;
            }
            r = frames.changed() => {
                if r.is_err() { break; }
                let f = frames.borrow_and_update().clone();
                if let Some(f) = f {
                    if (f.width, f.height) != meta {
                        meta = (f.width, f.height);
                        ok = tx.send(text(json!({"t": "meta", "width": f.width, "height": f.height}))).await.is_ok();
                    }
                    ok = ok && tx.send(Message::Binary(f.jpeg.clone())).await.is_ok();
                }
            }
            r = next_tile(&mut tiles) => match r {
                Ok(t) if t.seq <= key_seq => {}
                Ok(t) => ok = tx.send(Message::Binary(t.message())).await.is_ok(),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Behind: skip to the screen as it is now.
                    match live.display.as_ref().map(|d| d.capture.clone()) {
                        Some(c) => match c.keyframe().await {
                            Ok(k) => {
                                key_seq = k.seq;
                                ok = tx.send(Message::Binary(k.message())).await.is_ok();
                            }
                            Err(_) => break,
                        },
                        None => break,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            r = next_packet(&mut sound) => match r {
                Ok(p) => ok = tx.send(Message::Binary(p)).await.is_ok(),
                // A viewer behind on sound skips what it missed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => sound = None,
            },
            r = tabs.changed() => {
                if r.is_err() { break; }
                let t = tabs.borrow_and_update().clone();
                ok = tx.send(text(json!({"t": "tabs", "tabs": t}))).await.is_ok();
            }
            r = ended.changed() => {
                if r.is_err() { break; }
                let reason = ended.borrow_and_update().clone();
                if let Some(reason) = reason {
                    let _ = tx.send(text(json!({"t": "ended", "reason": reason}))).await;
                    close(&mut tx, 4000 + 1, "the session has ended").await;
                    break;
                }
            }
            r = store.recv() => match r {
                Ok(c) if c.version <= store_last => {}
                Ok(c) => {
                    store_last = c.version;
                    ok = tx.send(text(json!({"t": "store", "type": "change", "version": c.version, "key": c.key, "value": c.value, "deleted": c.deleted}))).await.is_ok();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (v, entries) = s.room.snapshot();
                    store_last = v;
                    ok = tx.send(snapshot(v, &entries)).await.is_ok();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            n = notices.recv() => match n {
                None => break,
                Some(Notice::Roles) => {
                    ok = tx.send(text(json!({"t": "roles", "roles": roles::names(&user.roles()), "control": user.may_control()}))).await.is_ok();
                }
                Some(Notice::Clipboard(t)) => {
                    ok = tx.send(text(json!({"t": "clipboard", "text": t}))).await.is_ok();
                }
                Some(Notice::Cursor { user_id, x, y }) => {
                    ok = tx.send(text(json!({"t": "cursor", "user_id": user_id, "x": x, "y": y}))).await.is_ok();
                }
            },
            () = user.removed() => {
                let _ = tx.send(text(json!({"t": "ended", "reason": "kicked"}))).await;
                close(&mut tx, 4010, "removed from the session").await;
                break;
            }
            m = rx.next() => {
                let t = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        close(&mut tx, 4003, "viewers send JSON text messages only").await;
                        break;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        // Oversized messages end up here.
                        tracing::debug!(session = %s.id, error = %e, "viewer socket error");
                        close(&mut tx, 1009, "message too large or malformed").await;
                        break;
                    }
                };
                budget = (budget + refilled.elapsed().as_secs_f64() * rate).min(rate * 2.0);
                refilled = Instant::now();
                budget -= 1.0;
                if budget < 0.0 {
                    close(&mut tx, 4029, "too many input messages").await;
                    break;
                }
                let Ok(msg) = serde_json::from_str::<Value>(t.as_str()) else {
                    close(&mut tx, 4002, "messages must be JSON").await;
                    break;
                };
                s.touch();
                match crate::live::input::handle(live, &user, &msg).await {
                    Ok(crate::live::input::Outcome::Reply(v)) => ok = tx.send(text(v)).await.is_ok(),
                    Ok(_) => {}
                    Err(crate::live::input::Fault::Malformed(e)) => {
                        close(&mut tx, 4002, &e).await;
                        break;
                    }
                    Err(crate::live::input::Fault::Browser(e)) => {
                        tracing::debug!(session = %s.id, error = %e, "viewer input failed");
                    }
                }
            }
        }
    }
    if let Some(d) = &live.display {
        d.capture.viewer_left();
        if user.may_control() {
            let _ = d.input.release_all().await;
        }
    }
    live.leave(&user);
    live.hub.leave().await;
    s.client_disconnected();
    tracing::info!(session = %s.id, user = %user.id, "viewer disconnected");
}

/// Tells the viewer of downloads it has not heard of; whether the socket is still open.
async fn offer_downloads(
    s: &Session,
    offered: &mut std::collections::HashSet<(String, u64)>,
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
) -> bool {
    let Some(d) = s.downloads.clone() else {
        return true;
    };
    let items = tokio::task::spawn_blocking(move || d.list())
        .await
        .unwrap_or_default();
    for it in items {
        if offered.insert((it.name.clone(), it.size)) {
            let m = json!({"t": "download", "name": it.name, "size": it.size});
            if tx.send(text(m)).await.is_err() {
                return false;
            }
        }
    }
    true
}

/// The next tile of a display's capture; never, without one.
async fn next_tile(
    tiles: &mut Option<tokio::sync::broadcast::Receiver<Arc<crate::display::Tile>>>,
) -> Result<Arc<crate::display::Tile>, tokio::sync::broadcast::error::RecvError> {
    match tiles {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next sound packet; never, without sound.
async fn next_packet(
    sound: &mut Option<tokio::sync::broadcast::Receiver<bytes::Bytes>>,
) -> Result<bytes::Bytes, tokio::sync::broadcast::error::RecvError> {
    match sound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The session of an admin-token or API-key caller, still running.
fn admin(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Arc<Session>, ApiError> {
    let (s, _) = authorize(state, headers, None, id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    Ok(s)
}

fn changed(s: &Session, n: usize) -> Json<Value> {
    Json(json!({"changed": n, "users": s.live.users()}))
}

fn role_set(v: &Value) -> BTreeSet<Role> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().and_then(Role::parse))
        .collect()
}

async fn change_roles(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    add: bool,
) -> Result<Json<Value>, ApiError> {
    let s = admin(&state, &headers, &id)?;
    let v: Value = wire::body(&wire::ROLES_CHANGE, &headers, &body)?;
    let ids: Vec<String> = v[0]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    let n = s
        .live
        .change_roles(&ids, &role_set(&v[1]), v[2].as_bool().unwrap_or(false), add);
    Ok(changed(&s, n))
}

/// `POST <base_url>/addRoles`.
pub(super) async fn add_roles(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    change_roles(state, headers, id, body, true).await
}

/// `POST <base_url>/removeRoles`.
pub(super) async fn remove_roles(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    change_roles(state, headers, id, body, false).await
}

/// `POST <base_url>/setPermissions`.
pub(super) async fn set_permissions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let s = admin(&state, &headers, &id)?;
    let v: Value = wire::body(&wire::PERMISSIONS, &headers, &body)?;
    let p = &v[1];
    // Like addRoles, a user who is not (or no longer) connected changes nothing.
    let found = s.live.set_permissions(
        v[0].as_str().unwrap_or_default(),
        p["priority"].as_i64(),
        p["idle_timeout"].as_u64(),
        p["control_disabled"].as_bool(),
    );
    Ok(changed(&s, usize::from(found)))
}

/// Path of `DELETE <base_url>/users/{user_id}`.
#[derive(Debug, Deserialize)]
pub(super) struct UserPath {
    id: String,
    user_id: String,
}

/// `DELETE <base_url>/users/{user_id}`.
pub(super) async fn remove_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(p): Path<UserPath>,
) -> Result<Json<Value>, ApiError> {
    let s = admin(&state, &headers, &p.id)?;
    if !s.live.kick(&p.user_id) {
        return Err(ApiError::not_found("user"));
    }
    Ok(changed(&s, 1))
}

/// `POST <base_url>/bookmarks` (a Netscape bookmark file).
pub(super) async fn bookmarks(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let s = admin(&state, &headers, &id)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !ct.starts_with("text/html") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the bookmark file as Content-Type: text/html",
        ));
    }
    let html = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_request", "the bookmark file is not UTF-8"))?;
    wire::check(&wire::BOOKMARK_FILE, &Value::String(html.to_string()))?;
    let nodes = crate::live::bookmarks::parse(html)
        .map_err(|e| ApiError::bad_request("invalid_request", e))?;
    let n = nodes.len();
    if !s.add_bookmarks(nodes) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this session does not save its profile, so bookmarks would be lost",
        ));
    }
    Ok(Json(
        json!({"added": n, "merged": "when the browser stops, before the save"}),
    ))
}

/// `POST /v0/vm/{id}/viewers`: another viewer URL.
pub(super) async fn mint(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let s = admin(&state, &headers, &id)?;
    let v: Value = wire::body(&wire::VIEWER_REQUEST, &headers, &body)?;
    let roles = if v["roles"].is_array() {
        role_set(&v["roles"])
    } else {
        s.default_roles.clone()
    };
    let token = s.live.mint(roles.clone());
    Ok(Json(json!({
        "embed_url": format!("{}/v0/vm/{}/embed?token={token}", state.public_url, s.id),
        "roles": roles::names(&roles),
    })))
}

/// `GET /v0/vm/{id}/users`.
pub(super) async fn users(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (s, _) = authorize(&state, &headers, None, &id)?;
    Ok(Json(json!({"users": s.live.users()})))
}
