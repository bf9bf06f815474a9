//! The Chrome DevTools Protocol proxy: a WebSocket served by the daemon, authorized by the
//! session's admin token (or an API key of its tenant), relayed to the browser through its
//! DevTools pipe (a client connection of [`crate::browser::mux`]; the browser has no port). Traffic counts as activity; connected clients drive `timeout.offline`.

use crate::api::codes::ErrorCode;
use crate::browser::mux::{Conn, SendError};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as AxMsg, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use futures_util::{SinkExt, StreamExt};

use super::error::ApiError;
use super::vm::{authorize, TokenQuery};
use super::{auth, AppState};

/// The largest message a client may send (the pipe's own cap).
const MAX_MESSAGE: usize = crate::browser::mux::MAX_CLIENT_MESSAGE;

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
    // The live view's and the daemon's own connections count too (one or two).
    let slot = state
        .manager
        .reserve_cdp_client(&s)
        .map_err(|(whose, key, max)| {
            ApiError::new(
                ErrorCode::TooManyClients,
                format!(
                    "{whose} has the most DevTools clients it may have (sessions.{key} = {max})"
                ),
            )
        })?;
    let link = s.cdp().connect().await.map_err(|e| {
        ApiError::new(
            ErrorCode::BrowserUnreachable,
            format!("cannot reach the session's browser: {e}"),
        )
    })?;
    drop(slot);
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |client| async move {
            s.client_connected();
            relay(client, link, &s).await;
            s.client_disconnected();
        }))
}

/// A socket route requested without a usable WebSocket upgrade.
pub(super) fn upgrade_error(e: WebSocketUpgradeRejection) -> ApiError {
    ApiError::new(
        ErrorCode::UpgradeRequired,
        format!("this endpoint is a WebSocket: {e}"),
    )
}

/// Close code for a message over [`MAX_MESSAGE`] (RFC 6455 "message too big").
const TOO_BIG: u16 = 1009;

async fn relay(client: WebSocket, mut link: Conn, s: &crate::session::Session) {
    let (mut c_tx, mut c_rx) = client.split();
    loop {
        tokio::select! {
            m = c_rx.next() => {
                let Some(Ok(m)) = m else { break };
                s.touch();
                let text = match m {
                    AxMsg::Text(t) => t.as_str().to_string(),
                    AxMsg::Binary(b) => match String::from_utf8(b.to_vec()) {
                        Ok(t) => t,
                        Err(_) => break,
                    },
                    AxMsg::Ping(_) | AxMsg::Pong(_) => continue,
                    AxMsg::Close(_) => break,
                };
                match link.send(&text) {
                    Ok(()) => {}
                    Err(SendError::TooLarge(n)) => {
                        let _ = c_tx
                            .send(AxMsg::Close(Some(CloseFrame {
                                code: TOO_BIG,
                                reason: format!("a DevTools message may be at most {MAX_MESSAGE} bytes ({n} sent)").into(),
                            })))
                            .await;
                        break;
                    }
                    Err(SendError::Malformed) => continue,
                    Err(SendError::Closed) => break,
                }
            }
            m = link.recv() => {
                let Some(m) = m else { break };
                s.touch();
                if c_tx.send(AxMsg::Text(m.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = c_tx.close().await;
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
    // Only the session's own admin token is echoed (it is in `cdp_url` already); an API key
    // never is: such a client sends it again as a bearer header on the socket.
    let query = match token {
        Some(t) if s.admin_token_matches(t) => format!("?token={t}"),
        _ => String::new(),
    };
    Ok(Json(serde_json::json!({
        "Browser": "Chromium (profile-vault proxy)",
        "Protocol-Version": "1.3",
        "webSocketDebuggerUrl": format!("{ws_base}/v0/vm/{}/cdp{query}", s.id),
    })))
}
