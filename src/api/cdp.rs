//! The Chrome DevTools Protocol proxy: a WebSocket served by the daemon, authorized by the
//! session's admin token (or an API key of its tenant), relayed to the browser's loopback
//! DevTools endpoint. Traffic counts as activity; connected clients drive `timeout.offline`.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as AxMsg, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as TMsg;

use super::error::ApiError;
use super::vm::{authorize, TokenQuery};
use super::{auth, AppState};

const MAX_MESSAGE: usize = 256 << 20;

/// `GET /v0/vm/{id}/cdp` (WebSocket upgrade).
pub(super) async fn proxy(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (s, _) = authorize(&state, &headers, q.token.as_deref(), &id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let ws = ws.map_err(upgrade_error)?;
    let upstream_url = s.browser_ws().to_string();
    let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
    cfg.max_message_size = Some(MAX_MESSAGE);
    cfg.max_frame_size = Some(MAX_MESSAGE);
    let (upstream, _) =
        tokio_tungstenite::connect_async_with_config(upstream_url, Some(cfg), false)
            .await
            .map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::BAD_GATEWAY,
                    "browser_unreachable",
                    format!("cannot reach the session's browser: {e}"),
                )
            })?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |client| async move {
            s.client_connected();
            relay(client, upstream, &s).await;
            s.client_disconnected();
        }))
}

/// A socket route requested without a usable WebSocket upgrade.
pub(super) fn upgrade_error(e: WebSocketUpgradeRejection) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UPGRADE_REQUIRED,
        "upgrade_required",
        format!("this endpoint is a WebSocket: {e}"),
    )
}

async fn relay(
    client: WebSocket,
    upstream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    s: &crate::session::Session,
) {
    let (mut c_tx, mut c_rx) = client.split();
    let (mut u_tx, mut u_rx) = upstream.split();
    let to_browser = async {
        while let Some(Ok(m)) = c_rx.next().await {
            s.touch();
            let out = match m {
                AxMsg::Text(t) => TMsg::Text(t.as_str().into()),
                AxMsg::Binary(b) => TMsg::Binary(b),
                AxMsg::Ping(p) => TMsg::Ping(p),
                AxMsg::Pong(p) => TMsg::Pong(p),
                AxMsg::Close(_) => break,
            };
            if u_tx.send(out).await.is_err() {
                break;
            }
        }
        let _ = u_tx.close().await;
    };
    let to_client = async {
        while let Some(Ok(m)) = u_rx.next().await {
            s.touch();
            let out = match m {
                TMsg::Text(t) => AxMsg::Text(t.as_str().into()),
                TMsg::Binary(b) => AxMsg::Binary(b),
                TMsg::Ping(p) => AxMsg::Ping(p),
                TMsg::Pong(p) => AxMsg::Pong(p),
                TMsg::Close(_) | TMsg::Frame(_) => break,
            };
            if c_tx.send(out).await.is_err() {
                break;
            }
        }
        let _ = c_tx.close().await;
    };
    tokio::select! {
        () = to_browser => {},
        () = to_client => {},
    }
}

/// `GET /v0/vm/{id}/cdp/json/version`: lets clients given an http:// endpoint (Playwright's
/// `connectOverCDP("http://…")`) discover the proxied WebSocket URL.
pub(super) async fn version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token = auth::bearer(&headers).or(q.token.as_deref());
    let (s, _) = authorize(&state, &headers, q.token.as_deref(), &id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let ws_base = state
        .public_url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let t = token.unwrap_or_default();
    Ok(Json(serde_json::json!({
        "Browser": "Chromium (profile-vault proxy)",
        "Protocol-Version": "1.3",
        "webSocketDebuggerUrl": format!("{ws_base}/v0/vm/{}/cdp?token={t}", s.id),
    })))
}
