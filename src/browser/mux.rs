//! The DevTools multiplexer: ONE pipe to the browser (`--remote-debugging-pipe`, so the
//! browser opens no port at all), shared by every DevTools client of the session — the CDP
//! proxy's clients, the live view, the daemon's own calls.
//!
//! Each client gets a browser session of its own (`Target.attachToBrowserTarget`), so what
//! it enables, auto-attaches or discovers is its own. Command ids are rewritten per client
//! and answers routed back; a client may only address the browser session it was given and
//! the target sessions that were attached through it (anything else is answered with CDP's
//! own "session not found" error). Messages are capped on the way in, and a client whose
//! outgoing queue grows past its budget is cut off instead of holding memory.
//!
//! A browser session may not `Target.attachToTarget` ("Not allowed"; only auto-attach), so
//! a client's attach (and attach to the browser target) runs on the root connection: its
//! `Target.attachedToTarget` event (matched by target id) and the new session go to that
//! client, as if it had attached itself. An event that more than one pending attach could
//! explain (the daemon's own among them) goes to nobody: the new session is then the
//! client's by the attach's answer alone, so no client is given a session another (or the
//! daemon) attached.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

mod conn;
mod frame;
use frame::{Head, Session};

/// The largest message a client may send to the browser.
pub const MAX_CLIENT_MESSAGE: usize = 16 << 20;
/// The largest message the browser may send (screenshots, large DOM snapshots).
pub const MAX_BROWSER_MESSAGE: usize = 256 << 20;
/// How many bytes may wait for a client that does not read before it is cut off.
pub const CLIENT_QUEUE_BUDGET: usize = 256 << 20;
/// How many bytes may wait for all the clients of this process: past it, a client holding
/// more than [`FAIR_QUEUE`] is cut off at its next message (tenants that do not read cannot
/// make the node run out of memory for every other tenant; a client that reads holds little).
pub const NODE_QUEUE_BUDGET: usize = 1 << 30;
/// What a client may hold while the node is over [`NODE_QUEUE_BUDGET`].
pub const FAIR_QUEUE: usize = 16 << 20;

/// Bytes waiting for every client of every browser of this process.
static NODE_QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Why a message from a client was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Over [`MAX_CLIENT_MESSAGE`].
    #[error("message of {0} bytes is over the {MAX_CLIENT_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// Not a JSON object with an integer `id` and a string `method`.
    #[error("not a DevTools command")]
    Malformed,
    /// The browser is gone, or this client was cut off.
    #[error("the browser connection is closed")]
    Closed,
}

enum Route {
    Client {
        client: u64,
        id: Value,
        strip: bool,
        /// A `Target.attach*` command: its answer's `sessionId` is the caller's.
        attach: bool,
    },
    Root(oneshot::Sender<Result<Value, String>>),
}

struct Client {
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<AtomicUsize>,
    browser_session: String,
    /// Counted against the client limits (not the daemon's resident connections).
    counted: bool,
}

/// The "client" of the daemon's own root attaches.
const DAEMON: u64 = 0;

struct RootAttach {
    id: u64,
    target: Option<String>,
    client: u64,
}

fn is_attach(method: &str) -> bool {
    matches!(
        method,
        "Target.attachToTarget" | "Target.attachToBrowserTarget"
    )
}

#[derive(Default)]
struct State {
    next_id: u64,
    next_client: u64,
    pending: HashMap<u64, Route>,
    clients: HashMap<u64, Client>,
    /// Target session id -> owning client.
    sessions: HashMap<String, u64>,
    /// Browser session id -> client.
    browser_sessions: HashMap<String, u64>,
    /// Attaches running on the root connection, a client's or the daemon's ([`DAEMON`]):
    /// the command's id, the target id (`None`: the browser target) and who asked.
    root_attaches: Vec<RootAttach>,
    closed: bool,
}

/// The pipe to one browser.
pub struct Mux {
    out: mpsc::UnboundedSender<Vec<u8>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mux")
    }
}

/// One client's connection: send commands with [`Conn::send`], read answers and events
/// from `rx` (it ends when the browser exits or the client is cut off). Dropping it
/// detaches the client's sessions.
pub struct Conn {
    id: u64,
    mux: Arc<Mux>,
    queued: Arc<AtomicUsize>,
    /// Answers and events for this client, as the browser's JSON text.
    pub rx: mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("id", &self.id).finish()
    }
}

impl Mux {
    /// Starts the reader and writer of the pipe: `to_browser` is the write end of the
    /// browser's fd 3, `from_browser` the read end of its fd 4.
    ///
    /// # Errors
    /// The fds are not pipes.
    pub fn start(to_browser: OwnedFd, from_browser: OwnedFd) -> std::io::Result<Arc<Mux>> {
        let mut writer = tokio::net::unix::pipe::Sender::from_owned_fd(to_browser)?;
        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(from_browser)?;
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let mux = Arc::new(Mux {
            out,
            state: Mutex::new(State::default()),
        });
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if writer.write_all(&m).await.is_err() {
                    break;
                }
            }
        });
        let weak = Arc::downgrade(&mux);
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
            let mut chunk = vec![0u8; 1 << 16];
            let mut scanned = 0;
            loop {
                let n = match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(pos) = buf[scanned..].iter().position(|b| *b == 0) {
                    let end = scanned + pos;
                    let msg: Vec<u8> = buf.drain(..=end).take(end).collect();
                    scanned = 0;
                    let Some(mux) = weak.upgrade() else { return };
                    mux.dispatch(&msg);
                }
                scanned = buf.len();
                if buf.len() > MAX_BROWSER_MESSAGE {
                    tracing::warn!(
                        "a DevTools message from the browser is over the limit; closing"
                    );
                    break;
                }
            }
            if let Some(mux) = weak.upgrade() {
                mux.shut();
            }
        });
        Ok(mux)
    }

    /// A pipe whose browser is already gone (every call fails): for code that needs a
    /// [`Mux`] without a browser, such as unit tests.
    pub fn closed() -> Arc<Mux> {
        let (out, _) = mpsc::unbounded_channel();
        Arc::new(Mux {
            out,
            state: Mutex::new(State {
                closed: true,
                ..State::default()
            }),
        })
    }

    fn shut(&self) {
        let mut st = self.state.lock().expect("mux");
        st.closed = true;
        // What waits for the clients no longer counts against the node (their `Conn`s
        // find the mux closed and take nothing back).
        for c in st.clients.values() {
            NODE_QUEUED.fetch_sub(c.queued.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
        st.clients.clear();
        st.sessions.clear();
        st.browser_sessions.clear();
        for (_, r) in st.pending.drain() {
            if let Route::Root(tx) = r {
                let _ = tx.send(Err("the browser connection closed".into()));
            }
        }
    }

    fn write(&self, v: &Value) -> bool {
        let mut bytes = serde_json::to_vec(v).unwrap_or_default();
        bytes.push(0);
        self.out.send(bytes).is_ok()
    }

    /// A command on the daemon's own root connection (not visible to clients).
    ///
    /// # Errors
    /// The browser's error message, a closed pipe, or no answer within `timeout`.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.state.lock().expect("mux");
            if st.closed {
                return Err("the browser connection closed".into());
            }
            st.next_id += 1;
            let id = st.next_id;
            st.pending.insert(id, Route::Root(tx));
            if is_attach(method) {
                let target = params["targetId"].as_str().map(str::to_string);
                st.root_attaches.push(RootAttach {
                    id,
                    target,
                    client: DAEMON,
                });
            }
            id
        };
        if !self.write(&json!({"id": id, "method": method, "params": params})) {
            return Err("the browser connection closed".into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r.map_err(|e| format!("{method}: {e}")),
            Ok(Err(_)) => Err("the browser connection closed".into()),
            Err(_) => {
                let mut st = self.state.lock().expect("mux");
                st.pending.remove(&id);
                st.root_attaches.retain(|a| a.id != id);
                Err(format!("{method}: no answer within {timeout:?}"))
            }
        }
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        let st = self.state.lock().expect("mux");
        st.clients.values().filter(|c| c.counted).count()
    }

    /// A new client connection with a browser session of its own.
    ///
    /// # Errors
    /// The browser is gone or did not answer.
    pub async fn connect(self: &Arc<Self>) -> Result<Conn, String> {
        self.connect_as(true).await
    }

    /// The daemon's own connection for as long as the browser runs (the tabs agent's): not
    /// counted against the limits of clients ([`Mux::client_count`]).
    ///
    /// # Errors
    /// The browser is gone or did not answer.
    pub async fn connect_resident(self: &Arc<Self>) -> Result<Conn, String> {
        self.connect_as(false).await
    }

    async fn connect_as(self: &Arc<Self>, counted: bool) -> Result<Conn, String> {
        let r = self
            .call(
                "Target.attachToBrowserTarget",
                json!({}),
                Duration::from_secs(10),
            )
            .await?;
        let session = r["sessionId"]
            .as_str()
            .ok_or("no browser session")?
            .to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut st = self.state.lock().expect("mux");
        if st.closed {
            return Err("the browser connection closed".into());
        }
        st.next_client += 1;
        let id = st.next_client;
        st.browser_sessions.insert(session.clone(), id);
        st.clients.insert(
            id,
            Client {
                tx,
                queued: queued.clone(),
                browser_session: session,
                counted,
            },
        );
        Ok(Conn {
            id,
            mux: self.clone(),
            queued,
            rx,
        })
    }

    fn deliver(st: &mut State, client: u64, text: String) {
        let Some(c) = st.clients.get(&client) else {
            return;
        };
        let n = c.queued.fetch_add(text.len(), Ordering::Relaxed) + text.len();
        let all = NODE_QUEUED.fetch_add(text.len(), Ordering::Relaxed) + text.len();
        if n > CLIENT_QUEUE_BUDGET
            || (all > NODE_QUEUE_BUDGET && n > FAIR_QUEUE)
            || c.tx.send(text).is_err()
        {
            tracing::warn!(
                client,
                "a DevTools client does not read its messages; cutting it off"
            );
            Self::drop_client(st, client);
        }
    }

    fn drop_client(st: &mut State, client: u64) -> Vec<String> {
        let mut detach = Vec::new();
        st.root_attaches.retain(|a| a.client != client);
        if let Some(c) = st.clients.remove(&client) {
            // What still waits for it no longer counts against the node.
            NODE_QUEUED.fetch_sub(c.queued.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            st.browser_sessions.remove(&c.browser_session);
            detach.push(c.browser_session);
        }
        st.sessions.retain(|s, owner| {
            if *owner == client {
                detach.push(s.clone());
                false
            } else {
                true
            }
        });
        detach
    }

    fn root_event_owner(st: &mut State, h: &Head<'_>) -> Option<u64> {
        let p = h.params.as_ref()?;
        match h.method.as_deref()? {
            "Target.attachedToTarget" => {
                let info = p.target_info.as_ref();
                let target = info.and_then(|i| i.target_id.as_deref());
                let browser = info.and_then(|i| i.kind.as_deref()) == Some("browser");
                let session = p.session()?;
                if st.sessions.contains_key(session) || st.browser_sessions.contains_key(session) {
                    return None;
                }
                let mut could = st.root_attaches.iter().filter(|a| match &a.target {
                    Some(t) => Some(t.as_str()) == target,
                    None => browser,
                });
                let (Some(one), None) = (could.next(), could.next()) else {
                    return None;
                };
                let client = one.client;
                if client == DAEMON {
                    return None;
                }
                st.sessions.insert(session.to_string(), client);
                Some(client)
            }
            "Target.detachedFromTarget" => st.sessions.remove(p.session()?),
            "Target.receivedMessageFromTarget" => st.sessions.get(p.session()?).copied(),
            _ => None,
        }
    }

    /// Routes one message of the browser. Only its top level is read (see [`frame`]); an
    /// answer to the daemon's own call is parsed whole for the caller.
    fn dispatch(&self, raw: &[u8]) {
        let Ok(text) = std::str::from_utf8(raw) else {
            return;
        };
        let Some(h) = frame::head(text) else {
            return;
        };
        let mut st = self.state.lock().expect("mux");
        if let Some(id) = h.id.as_ref().and_then(serde_json::Number::as_u64) {
            st.root_attaches.retain(|a| a.id != id);
            match st.pending.remove(&id) {
                Some(Route::Root(tx)) => {
                    drop(st);
                    let r = match serde_json::from_str::<Value>(text) {
                        Ok(mut v) => match v.get("error") {
                            Some(e) => {
                                Err(e["message"].as_str().unwrap_or("CDP error").to_string())
                            }
                            None => Ok(v["result"].take()),
                        },
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = tx.send(r);
                }
                Some(Route::Client {
                    client,
                    id,
                    strip,
                    attach,
                }) => {
                    let attached = h.result.as_ref().and_then(|r| r.session_id.as_deref());
                    if let (true, Some(s)) = (attach, attached) {
                        // Target.attachToTarget (flatten): the new session is the caller's,
                        // unless it is known already.
                        if !st.browser_sessions.contains_key(s) {
                            st.sessions.entry(s.to_string()).or_insert(client);
                        }
                    }
                    let session = if strip {
                        Session::Remove
                    } else {
                        Session::Keep
                    };
                    if let Some(out) = frame::rewrite(text, Some(&id.to_string()), session) {
                        Self::deliver(&mut st, client, out);
                    }
                }
                None => {}
            }
            return;
        }
        let Some(session) = h.session_id.as_deref() else {
            // Events of the root connection: those of attaches made for a client go to it.
            if let Some(client) = Self::root_event_owner(&mut st, &h) {
                Self::deliver(&mut st, client, text.to_string());
            }
            return;
        };
        let (client, strip) = match st.browser_sessions.get(session) {
            Some(c) => (*c, true),
            None => match st.sessions.get(session) {
                Some(c) => (*c, false),
                None => return,
            },
        };
        let named = h.params.as_ref().and_then(|p| p.session());
        match (h.method.as_deref(), named) {
            (Some("Target.attachedToTarget"), Some(s)) => {
                st.sessions.insert(s.to_string(), client);
            }
            (Some("Target.detachedFromTarget"), Some(s)) => {
                st.sessions.remove(s);
            }
            _ => {}
        }
        if strip {
            if let Some(out) = frame::rewrite(text, None, Session::Remove) {
                Self::deliver(&mut st, client, out);
            }
        } else {
            // Forwarded as the browser wrote it.
            Self::deliver(&mut st, client, text.to_string());
        }
    }
}

/// The top-level `id` of a message from the browser, read without parsing the rest (which
/// large messages are answers to a pending call, and which are events).
pub fn answer_id(text: &str) -> Option<u64> {
    frame::head(text)?.id.as_ref()?.as_u64()
}

#[cfg(test)]
mod tests;
