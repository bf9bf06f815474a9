//! The HTTP API (axum): `/v0/vm` sessions (Hyperbeam-compatible), the CDP WebSocket proxy,
//! `/v0/profiles`, and `/healthz`, `/readyz`, `/metrics`.
//!
//! - [`router`] builds the app from an [`AppState`]; [`serve`] runs it on a listener until
//!   a shutdown future resolves, then ends every session and waits for their saves.
//! - [`error::ApiError`] is the one error type: status + stable code, JSON body.

pub mod auth;
mod cdp;
pub mod error;
mod health;
pub mod openapi;
mod profiles;
mod vm;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

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
}

/// One route of the API: the single source of both the router and the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path with `{id}` parameters.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Whether it needs a bearer token (an API key or a session's admin token).
    pub auth: bool,
}

const fn r(method: &'static str, path: &'static str, summary: &'static str, auth: bool) -> Route {
    Route {
        method,
        path,
        summary,
        auth,
    }
}

/// Every route the daemon serves.
pub const ROUTES: &[Route] = &[
    r(
        "POST",
        "/v0/vm",
        "Start a browser session (optionally restoring and/or saving a profile)",
        true,
    ),
    r(
        "GET",
        "/v0/vm",
        "List the tenant's active sessions (after_id pagination)",
        true,
    ),
    r(
        "GET",
        "/v0/vm/{id}",
        "One session, including after it ended (termination date, save state)",
        true,
    ),
    r(
        "DELETE",
        "/v0/vm/{id}",
        "End a session: stop the browser cleanly, then save (?wait=true waits)",
        true,
    ),
    r(
        "POST",
        "/v0/vm/{id}/ping",
        "Renew the inactivity timeout",
        true,
    ),
    r(
        "GET",
        "/v0/vm/{id}/embed",
        "The session page for its token holder (?token=)",
        true,
    ),
    r(
        "GET",
        "/v0/vm/{id}/cdp",
        "WebSocket proxy to the browser's DevTools protocol (?token=)",
        true,
    ),
    r(
        "GET",
        "/v0/vm/{id}/cdp/json/version",
        "DevTools discovery for http:// CDP endpoints (?token=)",
        true,
    ),
    r(
        "GET",
        "/v0/saves",
        "Sessions whose save failed (kept on disk, retried)",
        true,
    ),
    r(
        "POST",
        "/v0/saves/{id}/retry",
        "Retry one failed save now",
        true,
    ),
    r("GET", "/v0/profiles", "The tenant's saved profiles", true),
    r(
        "GET",
        "/v0/profiles/{id}",
        "A profile's generations, sizes and last save",
        true,
    ),
    r(
        "DELETE",
        "/v0/profiles/{id}",
        "Delete every generation of a profile",
        true,
    ),
    r("GET", "/v0/openapi.json", "This OpenAPI document", false),
    r("GET", "/healthz", "Liveness", false),
    r(
        "GET",
        "/readyz",
        "Readiness: store reachable, keys loaded, Chromium found, recovery done",
        false,
    ),
    r("GET", "/metrics", "Prometheus metrics", false),
];

fn handler(method: &str, path: &str) -> axum::routing::MethodRouter<AppState> {
    use axum::routing::{delete as del, get, post};
    match (method, path) {
        ("POST", "/v0/vm") => post(vm::create),
        ("GET", "/v0/vm") => get(vm::list),
        ("GET", "/v0/vm/{id}") => get(vm::get_one),
        ("DELETE", "/v0/vm/{id}") => del(vm::delete),
        ("POST", "/v0/vm/{id}/ping") => post(vm::ping),
        ("GET", "/v0/vm/{id}/embed") => get(vm::embed),
        ("GET", "/v0/vm/{id}/cdp") => get(cdp::proxy),
        ("GET", "/v0/vm/{id}/cdp/json/version") => get(cdp::version),
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
    let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
    paths.dedup();
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
        .layer(axum::middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an id (the client's `X-Request-Id` when it is a sane token, else a
/// new one), runs the handler inside a `request` span carrying it — so every log line of the
/// request has `request_id` — and echoes it in the response. Only the path is logged, never
/// the query (it may hold a session token).
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
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
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
    let mut stop_for_server = stop_rx;
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_for_server.wait_for(|s| *s).await;
    });
    tokio::spawn(signal);
    // Sessions end first (their proxies close with the browsers), then the server drains.
    let result = server.await;
    manager.shutdown(grace).await;
    let _ = sweeper.await;
    result
}
