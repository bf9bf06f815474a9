//! The HTTP API (axum): `/v0/vm` sessions (Hyperbeam-compatible), the CDP WebSocket proxy,
//! `/v0/profiles`, and `/healthz`, `/readyz`, `/metrics`.
//!
//! - [`router`] builds the app from an [`AppState`]; [`serve`] runs it on a listener until
//!   a shutdown future resolves, then ends every session and waits for their saves.
//! - [`error::ApiError`] is the one error type: status + stable code, JSON body.

pub mod auth;
mod cdp;
mod embed;
pub mod error;
mod health;
pub mod openapi;
mod profiles;
mod room;
pub mod schema;
mod vm;
pub mod wire;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use serde_json::Value;

use crate::session::Manager;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Sessions.
    pub manager: Arc<Manager>,
    /// API keys.
    pub keys: Arc<auth::ApiKeys>,
    /// Base of `embed_url` and `cdp_url` (no trailing slash).
    pub public_url: String,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Origins allowed to open the live-view socket besides the daemon's own.
    pub viewer_origins: Vec<String>,
    /// CSP `frame-ancestors` of the embed page.
    pub frame_ancestors: String,
}

/// How a route authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Open.
    None,
    /// `Authorization: Bearer` with an API key (or, on session routes, the admin token).
    Bearer,
    /// A bearer token or `?token=` (pages and sockets opened by browsers).
    BearerOrToken,
    /// A viewer token in `?token=` (the embed page and its socket).
    ViewerToken,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// 200 with a JSON body of this schema.
    Json(&'static LazyLock<Value>),
    /// 200 with a JSON body of this schema, or `text/event-stream` when asked to watch.
    JsonOrEvents(&'static LazyLock<Value>),
    /// 200 `text/html`.
    Html,
    /// 200 `text/plain`.
    Text,
    /// 101: a WebSocket.
    Upgrade,
}

/// What a route takes as its body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Nothing.
    None,
    /// JSON of this schema.
    Json(&'static LazyLock<Value>),
    /// `text/html` (a Netscape bookmark file) whose text matches this schema.
    Html(&'static LazyLock<Value>),
}

/// An OpenAPI link from a route's success response to another operation.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The target's operation id.
    pub op: &'static str,
    /// Target parameter name and the runtime expression filling it.
    pub params: &'static [(&'static str, &'static str)],
}

/// One route of the API: the single source of the router, the OpenAPI document, and the
/// schemas the handler enforces.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path with `{id}` parameters.
    pub path: &'static str,
    /// OpenAPI operation id.
    pub op: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// How it authenticates.
    pub auth: Auth,
    /// Query parameters.
    pub query: &'static [wire::Param],
    /// Request header parameters.
    pub headers: &'static [wire::Param],
    /// Request body.
    pub body: Body,
    /// Success answer.
    pub reply: Reply,
    /// Error statuses it can answer (each with the error body).
    pub errors: &'static [u16],
    /// Links from its success response.
    pub links: &'static [Link],
}

const SESSION_ERRORS: &[u16] = &[400, 401, 404, 410];
const BY_SESSION: &[(&str, &str)] = &[("id", "$response.body#/session_id")];
const BY_PROFILE: &[(&str, &str)] = &[("id", "$response.body#/profile/id")];
const BY_PATH_ID: &[(&str, &str)] = &[("id", "$request.path.id")];

/// Every route the daemon serves.
pub static ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/v0/vm",
        op: "createSession",
        summary: "Start a browser session (optionally restoring and/or saving a profile)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::Json(&wire::VM_REQUEST),
        reply: Reply::Json(&wire::VM_CREATED),
        errors: &[400, 401, 404, 409, 413, 415, 422, 429, 500, 503, 504],
        links: &[
            Link { op: "getSession", params: BY_SESSION },
            Link { op: "endSession", params: BY_SESSION },
            Link { op: "pingSession", params: BY_SESSION },
            Link { op: "listUsers", params: BY_SESSION },
            Link { op: "listStore", params: BY_SESSION },
            Link { op: "mintViewer", params: BY_SESSION },
            Link { op: "addRoles", params: BY_SESSION },
            Link { op: "setPermissions", params: BY_SESSION },
            Link { op: "addBookmarks", params: BY_SESSION },
            Link { op: "cdpSocket", params: BY_SESSION },
            Link { op: "cdpVersion", params: BY_SESSION },
            Link { op: "retrySave", params: BY_SESSION },
            Link { op: "getProfile", params: BY_PROFILE },
            Link { op: "deleteProfile", params: BY_PROFILE },
        ],
    },
    Route {
        method: "GET",
        path: "/v0/vm",
        op: "listSessions",
        summary: "List the tenant's active sessions (after_id pagination)",
        auth: Auth::Bearer,
        query: vm::LIST_QUERY,
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::SESSION_LIST),
        errors: &[400, 401],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}",
        op: "getSession",
        summary: "One session, including after it ended (termination date, save state)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::SESSION),
        errors: &[400, 401, 404],
        links: &[],
    },
    Route {
        method: "DELETE",
        path: "/v0/vm/{id}",
        op: "endSession",
        summary: "End a session: stop the browser cleanly, then save (?wait=true waits)",
        auth: Auth::Bearer,
        query: vm::DELETE_QUERY,
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::VM_ENDED),
        errors: SESSION_ERRORS,
        links: &[Link { op: "getSession", params: BY_PATH_ID }],
    },
    Route {
        method: "POST",
        path: "/v0/vm/{id}/ping",
        op: "pingSession",
        summary: "Renew the inactivity timeout",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::PINGED),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/embed",
        op: "sessionPage",
        summary: "The live view: one self-contained page showing the browser, for a viewer token (?token=)",
        auth: Auth::ViewerToken,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Html,
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/embed/socket",
        op: "viewerSocket",
        summary: "The live view's WebSocket (frames out, input in) for a viewer token (?token=)",
        auth: Auth::ViewerToken,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Upgrade,
        errors: &[400, 401, 403, 404, 410, 426],
        links: &[],
    },
    Route {
        method: "POST",
        path: "/v0/vm/{id}/embed/addRoles",
        op: "addRoles",
        summary: "Hyperbeam addRoles: [[user ids], [roles], exclusive] (admin token)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::Json(&wire::ROLES_CHANGE),
        reply: Reply::Json(&wire::USERS_CHANGED),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "POST",
        path: "/v0/vm/{id}/embed/removeRoles",
        op: "removeRoles",
        summary: "Hyperbeam removeRoles: [[user ids], [roles], exclusive] (admin token)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::Json(&wire::ROLES_CHANGE),
        reply: Reply::Json(&wire::USERS_CHANGED),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "POST",
        path: "/v0/vm/{id}/embed/setPermissions",
        op: "setPermissions",
        summary: "Hyperbeam setPermissions: [user id, {priority, idle_timeout, control_disabled}] (admin token)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::Json(&wire::PERMISSIONS),
        reply: Reply::Json(&wire::USERS_CHANGED),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "DELETE",
        path: "/v0/vm/{id}/embed/users/{user_id}",
        op: "removeUser",
        summary: "Disconnect a connected user (admin token)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::USERS_CHANGED),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "POST",
        path: "/v0/vm/{id}/embed/bookmarks",
        op: "addBookmarks",
        summary: "Append a Netscape bookmark file to the profile's bookmarks (merged when the browser stops, before the save)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::Html(&wire::BOOKMARK_FILE),
        reply: Reply::Json(&wire::BOOKMARKS_ADDED),
        errors: &[400, 401, 404, 409, 410, 413, 415],
        links: &[],
    },
    Route {
        method: "POST",
        path: "/v0/vm/{id}/viewers",
        op: "mintViewer",
        summary: "Mint another viewer URL whose users start with the given roles",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::Json(&wire::VIEWER_REQUEST),
        reply: Reply::Json(&wire::VIEWER_MINTED),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/users",
        op: "listUsers",
        summary: "The users connected to the live view, with roles and permissions",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::USERS),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/cdp",
        op: "cdpSocket",
        summary: "WebSocket proxy to the browser's DevTools protocol (?token=)",
        auth: Auth::BearerOrToken,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Upgrade,
        errors: &[400, 401, 404, 410, 426, 502],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/cdp/json/version",
        op: "cdpVersion",
        summary: "DevTools discovery for http:// CDP endpoints (?token=)",
        auth: Auth::BearerOrToken,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::CDP_VERSION),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/store",
        op: "listStore",
        summary: "The session's shared store: every key with its value and version (?watch=true: Server-Sent Events, a snapshot then every change; resume with Last-Event-ID)",
        auth: Auth::BearerOrToken,
        query: room::LIST_QUERY,
        headers: &[],
        body: Body::None,
        reply: Reply::JsonOrEvents(&wire::STORE),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/vm/{id}/store/{key}",
        op: "getStoreKey",
        summary: "One key of the session's store",
        auth: Auth::BearerOrToken,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::STORE_ENTRY),
        errors: SESSION_ERRORS,
        links: &[],
    },
    Route {
        method: "PUT",
        path: "/v0/vm/{id}/store/{key}",
        op: "putStoreKey",
        summary: "Set a key of the session's store (body: any JSON; If-Match / If-None-Match: * for compare-and-set)",
        auth: Auth::BearerOrToken,
        query: &[],
        headers: room::WRITE_HEADERS,
        body: Body::Json(&wire::ANY),
        reply: Reply::Json(&wire::STORE_WRITTEN),
        errors: &[400, 401, 403, 404, 410, 412, 413, 415, 422, 429],
        links: &[],
    },
    Route {
        method: "DELETE",
        path: "/v0/vm/{id}/store/{key}",
        op: "deleteStoreKey",
        summary: "Delete a key of the session's store (If-Match for compare-and-set)",
        auth: Auth::BearerOrToken,
        query: &[],
        headers: room::WRITE_HEADERS,
        body: Body::None,
        reply: Reply::Json(&wire::STORE_WRITTEN),
        errors: &[400, 401, 403, 404, 410, 412, 429],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/saves",
        op: "listFailedSaves",
        summary: "Sessions whose save failed (kept on disk, retried)",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::FAILED_SAVES),
        errors: &[401],
        links: &[],
    },
    Route {
        method: "POST",
        path: "/v0/saves/{id}/retry",
        op: "retrySave",
        summary: "Retry one failed save now",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::SAVE_RETRIED),
        errors: &[400, 401, 404, 503],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/profiles",
        op: "listProfiles",
        summary: "The tenant's saved profiles",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::PROFILE_LIST),
        errors: &[401, 503],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/v0/profiles/{id}",
        op: "getProfile",
        summary: "A profile's generations, sizes and last save",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::PROFILE),
        errors: &[400, 401, 404, 503],
        links: &[],
    },
    Route {
        method: "DELETE",
        path: "/v0/profiles/{id}",
        op: "deleteProfile",
        summary: "Delete every generation of a profile",
        auth: Auth::Bearer,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::PROFILE_DELETED),
        errors: &[400, 401, 404, 409, 503],
        links: &[Link { op: "getProfile", params: BY_PATH_ID }],
    },
    Route {
        method: "GET",
        path: "/v0/openapi.json",
        op: "openapi",
        summary: "This OpenAPI document",
        auth: Auth::None,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::DOCUMENT),
        errors: &[],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/healthz",
        op: "healthz",
        summary: "Liveness",
        auth: Auth::None,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::HEALTH),
        errors: &[],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/readyz",
        op: "readyz",
        summary: "Readiness: store reachable, keys loaded, Chromium found, recovery done (503 with the same body when not)",
        auth: Auth::None,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Json(&wire::READY),
        errors: &[],
        links: &[],
    },
    Route {
        method: "GET",
        path: "/metrics",
        op: "metrics",
        summary: "Prometheus metrics",
        auth: Auth::None,
        query: &[],
        headers: &[],
        body: Body::None,
        reply: Reply::Text,
        errors: &[],
        links: &[],
    },
];

fn handler(method: &str, path: &str) -> axum::routing::MethodRouter<AppState> {
    use axum::routing::{delete as del, get, post};
    match (method, path) {
        ("POST", "/v0/vm") => post(vm::create),
        ("GET", "/v0/vm") => get(vm::list),
        ("GET", "/v0/vm/{id}") => get(vm::get_one),
        ("DELETE", "/v0/vm/{id}") => del(vm::delete),
        ("POST", "/v0/vm/{id}/ping") => post(vm::ping),
        ("GET", "/v0/vm/{id}/embed") => get(embed::page),
        ("GET", "/v0/vm/{id}/embed/socket") => get(embed::socket),
        ("POST", "/v0/vm/{id}/embed/addRoles") => post(embed::add_roles),
        ("POST", "/v0/vm/{id}/embed/removeRoles") => post(embed::remove_roles),
        ("POST", "/v0/vm/{id}/embed/setPermissions") => post(embed::set_permissions),
        ("DELETE", "/v0/vm/{id}/embed/users/{user_id}") => del(embed::remove_user),
        ("POST", "/v0/vm/{id}/embed/bookmarks") => post(embed::bookmarks),
        ("POST", "/v0/vm/{id}/viewers") => post(embed::mint),
        ("GET", "/v0/vm/{id}/users") => get(embed::users),
        ("GET", "/v0/vm/{id}/cdp") => get(cdp::proxy),
        ("GET", "/v0/vm/{id}/cdp/json/version") => get(cdp::version),
        ("GET", "/v0/vm/{id}/store") => get(room::list),
        ("GET", "/v0/vm/{id}/store/{key}") => get(room::get_key),
        ("PUT", "/v0/vm/{id}/store/{key}") => axum::routing::put(room::put_key),
        ("DELETE", "/v0/vm/{id}/store/{key}") => del(room::delete_key),
        ("GET", "/v0/saves") => get(profiles::failed_saves),
        ("POST", "/v0/saves/{id}/retry") => post(profiles::retry_save),
        ("GET", "/v0/profiles") => get(profiles::list),
        ("GET", "/v0/profiles/{id}") => get(profiles::get_one),
        ("DELETE", "/v0/profiles/{id}") => del(profiles::delete),
        ("GET", "/v0/openapi.json") => get(openapi::serve),
        ("GET", "/healthz") => get(health::healthz),
        ("GET", "/readyz") => get(health::readyz),
        ("GET", "/metrics") => get(health::metrics),
        _ => panic!("route {method} {path} is listed in ROUTES but has no handler"),
    }
}

/// Builds the router from [`ROUTES`].
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body;
    let mut app = Router::new();
    let mut seen = std::collections::HashSet::new();
    for path in ROUTES.iter().map(|r| r.path) {
        if !seen.insert(path) {
            continue;
        }
        let mut mr: axum::routing::MethodRouter<AppState> = axum::routing::MethodRouter::new();
        for route in ROUTES.iter().filter(|r| r.path == path) {
            mr = mr.merge(handler(route.method, route.path));
        }
        app = app.route(path, mr);
    }
    app.fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Turns every error the framework answers by itself (405 of a wrong method, 413 of a body
/// over the limit, rejected extractors, failed WebSocket upgrades) into the documented JSON
/// error body with a stable code; handlers' own errors are JSON already.
async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match status.as_u16() {
        405 => "this route does not take that method (see the Allow header)".to_string(),
        413 => "the body is larger than server.max_body_bytes".to_string(),
        _ if text.trim().is_empty() => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        _ => text.trim().to_string(),
    };
    let mut out =
        error::ApiError::new(status, wire::code_for_status(status), message).into_response();
    for (k, v) in &parts.headers {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Gives every request an id (the client's `X-Request-Id` when it is a sane token, else a
/// new one), runs the handler inside a `request` span carrying it — so every log line of the
/// request has `request_id` — and echoes it in the response. Only the path is logged (store
/// keys left out), never the query (it may hold a session token).
async fn request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    // Store keys are the users' data: the path is logged without them.
    let path = match req.uri().path().split_once("/store/") {
        Some((head, _)) => format!("{head}/store/{{key}}"),
        None => req.uri().path().to_string(),
    };
    let span =
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %path);
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "request done"));
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Serves the API on `listener` until `shutdown` resolves; then stops taking requests, ends
/// every session and waits up to `grace` for their saves.
///
/// # Errors
/// Listener I/O errors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let manager = state.manager.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(
        manager
            .clone()
            .run_sweeper(Duration::from_secs(1), stop_rx.clone()),
    );
    let app = router(state);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    tokio::spawn(signal);
    // On the signal the server stops accepting and the sessions end at once: that closes their
    // proxies, viewer sockets and store watches, so the connections drain. A client that
    // stops reading cannot hold the daemon: the drain is cut off after the grace period.
    let drain = async {
        tokio::select! {
            r = server => r,
            () = async {
                stopped(stop_rx.clone()).await;
                tokio::time::sleep(grace + Duration::from_secs(5)).await;
                tracing::warn!("connections still open after the shutdown grace period: closing them");
            } => Ok(()),
        }
    };
    let end_sessions = async {
        stopped(stop_rx.clone()).await;
        manager.shutdown(grace).await;
    };
    let (result, ()) = tokio::join!(drain, end_sessions);
    let _ = sweeper.await;
    result
}
