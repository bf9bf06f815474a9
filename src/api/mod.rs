//! The HTTP API (axum): `/v0/vm` sessions (Hyperbeam-compatible), the CDP WebSocket proxy,
//! `/v0/profiles`, and `/healthz`, `/readyz`, `/metrics`.
//!
//! - [`router`] builds the app from an [`AppState`]; [`serve`] runs it on a listener until
//!   a shutdown future resolves, then ends every session and waits for their saves.
//! - [`error::ApiError`] is the one error type: status + stable code, JSON body.

pub mod auth;
mod cdp;
mod cluster;
pub mod codes;
mod config;
mod cors;
mod data;
mod embed;
pub mod error;
mod extract;
mod files;
mod health;
mod multipart;
pub mod openapi;
mod profiles;
mod room;
mod routes;
pub mod schema;
mod storage_state;
mod tabs;
mod viewer;
mod vm;
pub mod wire;

#[cfg(test)]
mod tests;

pub use config::HttpSection;
pub use routes::ROUTES;

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
    /// The cluster this node belongs to, if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
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
    /// 200 `text/html` to a navigation, `text/javascript` (an ES module) to a script's fetch.
    PageOrModule,
    /// 200 `text/plain`.
    Text,
    /// 200: a file's bytes (`application/octet-stream`, as an attachment).
    File,
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
    /// JSON of this schema, or `multipart/form-data` with it as the part `body` and a zipped
    /// Chrome extension as the part `ex` (Hyperbeam's `POST /v0/vm` with an extension).
    JsonOrExtension(&'static LazyLock<Value>),
    /// `text/html` (a Netscape bookmark file) whose text matches this schema.
    Html(&'static LazyLock<Value>),
    /// `application/octet-stream`: files framed as `live::uploads` says.
    Files,
}

/// An OpenAPI link from a route's success response to another operation.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The target's operation id.
    pub op: &'static str,
    /// Target parameter name and the runtime expression filling it.
    pub params: &'static [(&'static str, &'static str)],
}

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

impl Method {
    /// Its name, upper case.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    fn filter(self) -> axum::routing::MethodFilter {
        use axum::routing::MethodFilter;
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
            Method::Put => MethodFilter::PUT,
            Method::Delete => MethodFilter::DELETE,
        }
    }
}

/// The largest body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `http.max_body_bytes`.
    Default,
    /// A storage state (localStorage is up to 5 MiB an origin).
    StorageState,
    /// The JSON of `POST /v0/vm` with a zipped extension beside it (multipart); the JSON
    /// alone is still held to `http.max_body_bytes`.
    WithExtension,
    /// Files uploaded to the browser.
    Uploads,
    /// A profile data document of the largest allowed size, with room for whitespace.
    ProfileData,
}

impl Limit {
    fn bytes(self, state: &AppState) -> usize {
        let max = state.max_body;
        match self {
            Limit::Default => max,
            Limit::StorageState => max.max(crate::storage_state::MAX_DOCUMENT_BYTES),
            Limit::WithExtension => max + crate::browser::extension::MAX_ZIP_BYTES + 64 * 1024,
            Limit::Uploads => max.max(crate::live::uploads::MAX_BYTES),
            Limit::ProfileData => max.max(state.manager.vault().data_max_bytes() * 2 + 1024),
        }
    }
}

/// One route of the API: the single source of the router, the OpenAPI document, and the
/// schemas the handler enforces.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path with `{id}` parameters.
    pub path: &'static str,
    /// Its handler, for `method`.
    pub handler: fn(axum::routing::MethodFilter) -> axum::routing::MethodRouter<AppState>,
    /// The largest body it takes.
    pub limit: Limit,
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

/// Builds the router from [`ROUTES`]: each route's handler under its body limit.
pub fn router(state: AppState) -> Router {
    let mut by_path: Vec<(&str, axum::routing::MethodRouter<AppState>)> = Vec::new();
    for r in ROUTES {
        let mr = (r.handler)(r.method.filter())
            .layer(axum::extract::DefaultBodyLimit::max(r.limit.bytes(&state)));
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(mr),
            None => by_path.push((r.path, mr)),
        }
    }
    let mut app = Router::new();
    for (path, mr) in by_path {
        app = app.route(path, mr);
    }
    app.fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cluster::edge,
        ))
        .layer(axum::middleware::from_fn(cors::base_url))
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
        413 => "the body is larger than http.max_body_bytes".to_string(),
        _ if text.trim().is_empty() => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        _ => text.trim().to_string(),
    };
    let mut out =
        error::ApiError::with_status(status, codes::ErrorCode::for_status(status), message)
            .into_response();
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
    let cluster = state.cluster.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The sweeper (it renews the leases of sessions still saving) runs until every session's
    // save is done, not only until the signal: shutdown saves can outlast a lease.
    let (swept_tx, swept_rx) = tokio::sync::watch::channel(false);
    let sweeper = tokio::spawn(
        manager
            .clone()
            .run_sweeper(Duration::from_secs(1), swept_rx),
    );
    let heartbeat = cluster.clone().map(|c| {
        let (m1, m2) = (manager.clone(), manager.clone());
        tokio::spawn(c.run_heartbeat(
            move || m1.active_count(),
            move |id| m2.get(id).is_some_and(|s| s.is_active()),
            stop_rx.clone(),
        ))
    });
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
    let _ = swept_tx.send(true);
    let _ = sweeper.await;
    if let Some(h) = heartbeat {
        let _ = h.await;
    }
    // Every session ended and its record says so: the node leaves.
    if let Some(c) = cluster {
        c.leave().await;
    }
    result
}
