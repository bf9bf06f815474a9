//! A client's side of the multiplexer ([`Conn`]): its commands checked and rewritten onto the
//! pipe, its answers and events read (and counted against its budget), its sessions detached
//! when it goes.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::frame::{self, Session};
use super::{is_attach, Conn, Mux, RootAttach, Route, SendError, MAX_CLIENT_MESSAGE, NODE_QUEUED};

impl Conn {
    /// Sends one command (the client's JSON text).
    ///
    /// # Errors
    /// [`SendError`]; a command for a session that is not this client's is answered with
    /// an error message on `rx` instead.
    pub fn send(&self, text: &str) -> Result<(), SendError> {
        if text.len() > MAX_CLIENT_MESSAGE {
            return Err(SendError::TooLarge(text.len()));
        }
        // NUL frames messages on the pipe, and no control byte belongs in JSON text: none
        // may pass (the text goes to the browser as written, but for its top level).
        if text
            .bytes()
            .any(|c| c < 0x20 && !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Err(SendError::Malformed);
        }
        let h = frame::head(text).ok_or(SendError::Malformed)?;
        let (Some(orig), Some(method)) = (h.id.clone(), h.method.as_deref()) else {
            return Err(SendError::Malformed);
        };
        if !orig.is_u64() && !orig.is_i64() {
            return Err(SendError::Malformed);
        }
        let mut st = self.mux.state.lock().expect("mux");
        let Some(me) = st.clients.get(&self.id) else {
            return Err(SendError::Closed);
        };
        let attach = is_attach(method);
        let root_attach = h.session_id.is_none() && attach;
        let target = h
            .params
            .as_ref()
            .and_then(|p| p.target_id.as_deref())
            .map(str::to_string);
        if method == "Target.attachToTarget" && target.is_none() {
            // Which target it is for must be known to route its event.
            return Err(SendError::Malformed);
        }
        let (session, strip) = match h.session_id.as_deref() {
            None if root_attach => (String::new(), false),
            None => (me.browser_session.clone(), true),
            Some(s) if s == me.browser_session || st.sessions.get(s) == Some(&self.id) => {
                (s.to_string(), false)
            }
            Some(s) => {
                let answer = json!({"id": orig, "error": {"code": -32001,
                    "message": "Session with given id not found."}, "sessionId": s});
                Mux::deliver(&mut st, self.id, answer.to_string());
                return Ok(());
            }
        };
        st.next_id += 1;
        let id = st.next_id;
        let out = frame::rewrite(
            text,
            Some(&id.to_string()),
            if root_attach {
                Session::Keep
            } else {
                Session::Set(&session)
            },
        )
        .ok_or(SendError::Malformed)?;
        if root_attach {
            st.root_attaches.push(RootAttach {
                id,
                target,
                client: self.id,
            });
        }
        st.pending.insert(
            id,
            Route::Client {
                client: self.id,
                id: Value::Number(orig),
                strip,
                attach,
            },
        );
        drop(st);
        let mut bytes = out.into_bytes();
        bytes.push(0);
        if self.mux.out.send(bytes).is_ok() {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }

    /// Marks `n` bytes taken from `rx` as read (the budget of [`CLIENT_QUEUE_BUDGET`]).
    fn read_done(&self, n: usize) {
        let took = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q - n.min(q)))
            .map_or(0, |q| n.min(q));
        NODE_QUEUED.fetch_sub(took, Ordering::Relaxed);
    }

    /// Hands the connection to a task of its own: send commands on the first channel, read
    /// answers and events on the second. The task ends (and the client detaches) when either
    /// side closes; abort the handle to end it sooner.
    pub fn into_channels(
        mut self,
    ) -> (
        mpsc::UnboundedSender<String>,
        mpsc::UnboundedReceiver<String>,
        tokio::task::JoinHandle<()>,
    ) {
        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = mpsc::unbounded_channel::<String>();
        let pump = tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) if self.send(&m).is_ok() => {}
                        _ => break,
                    },
                    m = self.recv() => match m {
                        Some(m) => {
                            if in_tx.send(m).is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        (out, in_rx, pump)
    }

    /// Receives the next message, counting it as read.
    pub async fn recv(&mut self) -> Option<String> {
        let m = self.rx.recv().await?;
        self.read_done(m.len());
        Some(m)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let detach = {
            let mut st = self.mux.state.lock().expect("mux");
            if st.closed {
                return;
            }
            Mux::drop_client(&mut st, self.id)
        };
        // The browser session first; its target sessions normally go with it.
        for s in detach {
            let mut bytes =
                serde_json::to_vec(&json!({"id": 0, "method": "Target.detachFromTarget",
                "params": {"sessionId": s}}))
                .unwrap_or_default();
            bytes.push(0);
            let _ = self.mux.out.send(bytes);
        }
    }
}
