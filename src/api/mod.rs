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
mod profiles;
mod vm;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
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

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/v0/vm", post(vm::create).get(vm::list))
        .route("/v0/vm/{id}", get(vm::get_one).delete(vm::delete))
        .route("/v0/vm/{id}/ping", post(vm::ping))
        .route("/v0/vm/{id}/embed", get(vm::embed))
        .route("/v0/vm/{id}/cdp", get(cdp::proxy))
        .route("/v0/vm/{id}/cdp/json/version", get(cdp::version))
        .route("/v0/saves", get(profiles::failed_saves))
        .route("/v0/saves/{id}/retry", post(profiles::retry_save))
        .route("/v0/profiles", get(profiles::list))
        .route(
            "/v0/profiles/{id}",
            get(profiles::get_one).delete(profiles::delete),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { error::ApiError::not_found("route") })
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
