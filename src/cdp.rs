//! The daemon's own DevTools Protocol client (the live view's hub and the storageState
//! browsers): commands with replies, and events on a channel, over a client connection of
//! the browser's DevTools pipe ([`crate::browser::mux`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Events held for a consumer that has not taken them: past this many, or past
/// [`MAX_EVENT_BYTES`] of their text, new ones are dropped (a page can make the browser send
/// events faster than the live view handles them, and large ones: a 2 MB URL in each
/// `targetInfoChanged`). Answers to commands are never dropped.
pub const MAX_EVENTS: usize = 16_384;

/// The text bytes of the events held for a consumer (see [`MAX_EVENTS`]).
pub const MAX_EVENT_BYTES: usize = 64 << 20;
/// The largest event of the browser the daemon's own connections parse: a parsed message
/// takes many times its text (an array of zeros, 16 times), and the pipe carries up to
/// [`crate::browser::mux::MAX_BROWSER_MESSAGE`]. Larger events are dropped unparsed; an
/// answer to a call of the daemon's is parsed whatever its size (a storage export reads an
/// origin's localStorage, escaped twice, in one answer).
pub const MAX_MESSAGE: usize = 32 << 20;

/// The events of a connection (`{"method", "params", "sessionId"}`), in order, within
/// [`MAX_EVENTS`] and [`MAX_EVENT_BYTES`].
pub struct Events {
    rx: mpsc::Receiver<(Value, usize)>,
    held: Arc<AtomicUsize>,
}

impl Events {
    /// The next event; `None` once the connection closed and every event was taken.
    pub async fn recv(&mut self) -> Option<Value> {
        let (v, n) = self.rx.recv().await?;
        self.held.fetch_sub(n, Ordering::Relaxed);
        Some(v)
    }

    /// The next event if one is there.
    #[cfg(test)]
    fn try_recv(&mut self) -> Result<Value, mpsc::error::TryRecvError> {
        let (v, n) = self.rx.try_recv()?;
        self.held.fetch_sub(n, Ordering::Relaxed);
        Ok(v)
    }
}

/// The sending half of [`Events`].
struct EventSender {
    tx: mpsc::Sender<(Value, usize)>,
    held: Arc<AtomicUsize>,
    dropped: u64,
}

impl EventSender {
    fn pair() -> (EventSender, Events) {
        let (tx, rx) = mpsc::channel(MAX_EVENTS);
        let held = Arc::new(AtomicUsize::new(0));
        (
            EventSender {
                tx,
                held: held.clone(),
                dropped: 0,
            },
            Events { rx, held },
        )
    }

    /// Queues `v` (`len` bytes of text), or drops it past the bounds; `false` once the
    /// consumer is gone.
    fn send(&mut self, v: Value, len: usize) -> bool {
        // Only this sender adds: what it reads is at least what is held.
        let fits = self.held.load(Ordering::Relaxed) + len <= MAX_EVENT_BYTES;
        if fits {
            self.held.fetch_add(len, Ordering::Relaxed);
            match self.tx.try_send((v, len)) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.held.fetch_sub(len, Ordering::Relaxed);
                }
            }
        } else if self.tx.is_closed() {
            return false;
        }
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            tracing::warn!(
                dropped = self.dropped,
                "DevTools events arrive faster than they are handled; dropping"
            );
        }
        true
    }
}

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
        let (mut ev_tx, events) = EventSender::pair();
        let pending: Pending = Arc::default();
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(t) = in_rx.recv().await {
                if t.len() > MAX_MESSAGE
                    && !crate::browser::mux::answer_id(&t)
                        .is_some_and(|id| p.lock().expect("pending").contains_key(&id))
                {
                    tracing::debug!(
                        bytes = t.len(),
                        "an event of the browser over the limit, dropped"
                    );
                    continue;
                }
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
                } else if !ev_tx.send(v, t.len()) {
                    break;
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

    /// Runs a fake browser that answers the connection's attach, then, on its first command,
    /// sends `flood` (events on the connection's session) before the answer; returns how many
    /// events the connection held for a consumer that took none.
    async fn held_after(flood: impl Fn(usize) -> Option<Value> + Send + 'static) -> usize {
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
            let mut say = async |v: Value| {
                let mut b = v.to_string().into_bytes();
                b.push(0);
                out.write_all(&b).await.unwrap();
            };
            let attach = next().await;
            say(json!({"id": attach["id"], "result": {"sessionId": "A"}})).await;
            let cmd = next().await;
            for i in 0.. {
                let Some(mut e) = flood(i) else { break };
                e["sessionId"] = json!("A");
                say(e).await;
            }
            say(json!({"id": cmd["id"], "result": {"ok": true}, "sessionId": "A"})).await;
        });
        let (cdp, mut events) = Cdp::connect(&mux, Duration::from_secs(30)).await.unwrap();
        let r = cdp
            .call(None, "Target.getTargets", json!({}))
            .await
            .unwrap();
        assert_eq!(r, json!({"ok": true}), "the answer came after the flood");
        browser.await.unwrap();
        let mut held = 0;
        while events.try_recv().is_ok() {
            held += 1;
        }
        held
    }

    #[tokio::test]
    async fn events_nobody_takes_are_bounded_and_answers_still_come() {
        let held = held_after(|i| {
            (i < MAX_EVENTS + 4000)
                .then(|| json!({"method": "Target.targetInfoChanged", "params": {"n": i}}))
        })
        .await;
        assert_eq!(
            held, MAX_EVENTS,
            "events held for a consumer that did not take them"
        );
    }

    #[tokio::test]
    async fn large_events_nobody_takes_are_bounded_by_their_bytes() {
        // 48 events of 2 MB URLs: 96 MB of text, few enough to pass the count.
        let url = format!("https://example.com/{}", "a".repeat(2 << 20));
        let held = held_after(move |i| {
            (i < 48).then(|| {
                json!({"method": "Target.targetInfoChanged", "params": {"targetInfo": {"url": url}}})
            })
        })
        .await;
        // 64 MiB hold 31 of them (each is a little over 2 MiB).
        assert!(
            (1..=32).contains(&held),
            "{held} events of 2 MB held (at most {MAX_EVENT_BYTES} bytes)"
        );
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_dropped_before_it_is_parsed() {
        let big = "0".repeat(MAX_MESSAGE + 1);
        let held = held_after(move |i| {
            (i < 2).then(|| json!({"method": "Target.targetInfoChanged", "params": {"s": big}}))
        })
        .await;
        assert_eq!(
            held, 0,
            "events over {MAX_MESSAGE} bytes were parsed and held"
        );
    }
}
