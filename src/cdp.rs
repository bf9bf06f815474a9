//! A minimal DevTools Protocol client for the short-lived browsers the daemon drives itself
//! (storageState import and export): commands with replies, and events on a channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A connection to a browser's DevTools endpoint.
pub struct Cdp {
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    next: AtomicU64,
    timeout: Duration,
}

/// The events of a connection (`{"method", "params", "sessionId"}`), in order.
pub type Events = mpsc::UnboundedReceiver<Value>;

impl std::fmt::Debug for Cdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cdp")
    }
}

impl Cdp {
    /// Connects to `ws_url` (the browser endpoint); every command waits at most `timeout`.
    ///
    /// # Errors
    /// The browser cannot be reached.
    pub async fn connect(ws_url: &str, timeout: Duration) -> Result<(Cdp, Events), String> {
        let mut cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default();
        cfg.max_message_size = Some(64 << 20);
        let (ws, _) = tokio_tungstenite::connect_async_with_config(ws_url, Some(cfg), false)
            .await
            .map_err(|e| format!("cannot reach the browser: {e}"))?;
        let (mut tx, mut rx) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if tx.send(Message::Text(m.into())).await.is_err() {
                    break;
                }
            }
            let _ = tx.close().await;
        });
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = rx.next().await {
                let Message::Text(t) = m else { continue };
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if let Some(id) = v["id"].as_u64() {
                    if let Some(tx) = p.lock().expect("pending").remove(&id) {
                        let _ = tx.send(match v.get("error") {
                            Some(e) => {
                                Err(e["message"].as_str().unwrap_or("CDP error").to_string())
                            }
                            None => Ok(v["result"].clone()),
                        });
                    }
                } else if ev_tx.send(v).is_err() {
                    break;
                }
            }
            // Closed: every waiting command fails.
            p.lock().expect("pending").clear();
        });
        Ok((
            Cdp {
                out,
                pending,
                next: AtomicU64::new(1),
                timeout,
            },
            events,
        ))
    }

    /// Runs `method` (on the page session `session`, or on the browser) and returns its result.
    ///
    /// # Errors
    /// The browser's error message, a closed connection, or a timeout.
    pub async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        self.out
            .send(msg.to_string())
            .map_err(|_| "the browser connection closed".to_string())?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => Err("the browser connection closed".into()),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&id);
                Err(format!("{method}: no answer within {:?}", self.timeout))
            }
        }
    }
}
