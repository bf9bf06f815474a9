//! The daemon's own DevTools Protocol client (the live view's hub and the storageState
//! browsers): commands with replies, and events on a channel, over a client connection of
//! the browser's DevTools pipe ([`crate::browser::mux`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// A connection to a browser's DevTools endpoint.
pub struct Cdp {
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    next: AtomicU64,
    timeout: Duration,
}

/// The events of a connection (`{"method", "params", "sessionId"}`), in order.
pub type Events = mpsc::Receiver<Value>;

/// Events held for a consumer that has not taken them: past this, new ones are dropped (a
/// page can make the browser send events faster than the live view handles them; answers
/// to commands are never dropped).
pub const MAX_EVENTS: usize = 16_384;

impl std::fmt::Debug for Cdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cdp")
    }
}

impl Cdp {
    /// Connects through the browser's DevTools pipe; every command waits at most `timeout`.
    ///
    /// # Errors
    /// The browser cannot be reached.
    pub async fn connect(
        mux: &Arc<crate::browser::mux::Mux>,
        timeout: Duration,
    ) -> Result<(Cdp, Events), String> {
        let link = mux
            .connect()
            .await
            .map_err(|e| format!("cannot reach the browser: {e}"))?;
        Ok(Self::over(link, timeout))
    }

    /// Like [`Cdp::connect`], on a resident connection (not counted against client limits:
    /// [`crate::browser::mux::Mux::connect_resident`]).
    ///
    /// # Errors
    /// The browser cannot be reached.
    pub async fn connect_resident(
        mux: &Arc<crate::browser::mux::Mux>,
        timeout: Duration,
    ) -> Result<(Cdp, Events), String> {
        let link = mux
            .connect_resident()
            .await
            .map_err(|e| format!("cannot reach the browser: {e}"))?;
        Ok(Self::over(link, timeout))
    }

    fn over(link: crate::browser::mux::Conn, timeout: Duration) -> (Cdp, Events) {
        let (out, mut in_rx, _pump) = link.into_channels();
        let (ev_tx, events) = mpsc::channel(MAX_EVENTS);
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            let mut dropped = 0u64;
            while let Some(t) = in_rx.recv().await {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
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
                } else {
                    match ev_tx.try_send(v) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            dropped += 1;
                            if dropped.is_power_of_two() {
                                tracing::warn!(
                                    dropped,
                                    "DevTools events arrive faster than they are handled; dropping"
                                );
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
            // Closed: every waiting command fails.
            p.lock().expect("pending").clear();
        });
        (
            Cdp {
                out,
                pending,
                next: AtomicU64::new(1),
                timeout,
            },
            events,
        )
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

    /// Sends `method` without waiting for its answer (acknowledgements).
    pub fn notify(&self, session: Option<&str>, method: &str, params: Value) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let _ = self.out.send(msg.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn events_nobody_takes_are_bounded_and_answers_still_come() {
        let (to_browser_rx, to_browser_tx) = std::io::pipe().unwrap();
        let (from_browser_rx, from_browser_tx) = std::io::pipe().unwrap();
        let mux =
            crate::browser::mux::Mux::start(to_browser_tx.into(), from_browser_rx.into()).unwrap();
        let mut commands = tokio::io::BufReader::new(
            tokio::net::unix::pipe::Receiver::from_owned_fd(to_browser_rx.into()).unwrap(),
        );
        let mut out =
            tokio::net::unix::pipe::Sender::from_owned_fd(from_browser_tx.into()).unwrap();
        let browser = tokio::spawn(async move {
            let mut next = async || {
                let mut b = Vec::new();
                commands.read_until(0, &mut b).await.unwrap();
                b.pop();
                serde_json::from_slice::<Value>(&b).unwrap()
            };
            let attach = next().await;
            let mut say = Vec::new();
            say.extend(
                json!({"id": attach["id"], "result": {"sessionId": "A"}})
                    .to_string()
                    .bytes(),
            );
            say.push(0);
            out.write_all(&say).await.unwrap();
            // A flood of events on the connection's browser session, then the answer to the
            // command that follows.
            let cmd = next().await;
            let mut flood = Vec::new();
            for i in 0..(MAX_EVENTS + 4000) {
                flood.extend(
                    json!({"method": "Target.targetInfoChanged", "params": {"n": i}, "sessionId": "A"})
                        .to_string()
                        .bytes(),
                );
                flood.push(0);
            }
            flood.extend(
                json!({"id": cmd["id"], "result": {"ok": true}, "sessionId": "A"})
                    .to_string()
                    .bytes(),
            );
            flood.push(0);
            out.write_all(&flood).await.unwrap();
            out
        });
        let (cdp, mut events) = Cdp::connect(&mux, Duration::from_secs(10)).await.unwrap();
        let r = cdp
            .call(None, "Target.getTargets", json!({}))
            .await
            .unwrap();
        assert_eq!(r, json!({"ok": true}), "the answer came after the flood");
        let _out = browser.await.unwrap();
        let mut held = 0;
        while events.try_recv().is_ok() {
            held += 1;
        }
        assert_eq!(
            held, MAX_EVENTS,
            "events held for a consumer that did not take them"
        );
    }
}
