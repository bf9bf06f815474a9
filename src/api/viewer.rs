//! One viewer's live-view socket: pictures (display tiles or page frames), sound, tabs, the
//! session store, notices, downloads and file choosers out; input in (checked against the
//! viewer's roles by `live::input`), until the viewer leaves, is kicked, misbehaves, or the
//! session ends. Close codes are in the README ("The live view").

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::display::Tile;
use crate::live::hub::{FileChooser, Frame};
use crate::live::{roles, Notice, Role, User};
use crate::session::Session;

mod admit;
use admit::admit;

/// Who connects: the token that admitted it and the request's user agent.
pub(super) struct Caller {
    pub token: String,
    /// The secret of the user it was before a reconnect (`hello`'s `resume`).
    pub resume: Option<String>,
    pub user_agent: String,
    pub tenant_full: Option<usize>,
}

/// The socket to a viewer, whose every message must go out within `live.send_timeout`: a
/// viewer that stops reading is let go once its socket's buffers are full that long (its
/// handler would otherwise wait on it for good, deaf to kicks and to the session's end,
/// holding a viewer slot and keeping the capture busy).
struct Tx {
    sink: SplitSink<WebSocket, Message>,
    timeout: std::time::Duration,
}

/// Bytes of messages a viewer may send per second, and at once: every message is parsed
/// before its roles are looked at, and a count of messages alone let one viewer have 64 KiB
/// messages parsed 800 times a second. A 64 KiB paste fits many times over.
const INPUT_BYTES_PER_SEC: f64 = 256.0 * 1024.0;
const INPUT_BYTES_BURST: f64 = 1024.0 * 1024.0;

/// Sends `m`; whether it went out in time.
async fn put(tx: &mut Tx, m: Message) -> bool {
    matches!(
        tokio::time::timeout(tx.timeout, tx.sink.send(m)).await,
        Ok(Ok(()))
    )
}

async fn close(tx: &mut Tx, code: u16, reason: &str) {
    let _ = put(
        tx,
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        })),
    )
    .await;
}

/// Closes with `code`, then reads what the viewer still sends until its close answers ours
/// (at most 2 s): a socket dropped with unread input is reset, and the viewer would see 1006
/// instead of the code (and reconnect).
async fn refuse(
    tx: &mut Tx,
    rx: &mut futures_util::stream::SplitStream<WebSocket>,
    code: u16,
    reason: &str,
) {
    close(tx, code, reason).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(m)) = rx.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn text(v: Value) -> Message {
    Message::Text(v.to_string().into())
}

/// The next item of an optional stream; never, without one.
async fn next<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> Result<T, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One connected viewer. Every handler answers whether the socket goes on.
struct Conn {
    s: Arc<Session>,
    user: Arc<User>,
    tx: Tx,
    /// Size of the picture sent last: the page's frames, or the display's screen.
    meta: (u32, u32),
    /// Tiles numbered up to this are in the keyframe the viewer has.
    key_seq: u64,
    store_last: u64,
    offered: HashSet<(String, u64)>,
    budget: f64,
    /// Bytes of messages the viewer may still send now (see [`INPUT_BYTES_PER_SEC`]).
    bytes_budget: f64,
    refilled: Instant,
    /// The viewer paused the picture (`video_paused`): no frames or tiles until it resumes.
    paused: bool,
    /// A close warning was sent and not withdrawn.
    warned: bool,
    /// The tabs events this viewer listens to (`tabs_listen`).
    tabs_listen: std::collections::BTreeSet<crate::live::chrome_tabs::EventKind>,
}

impl Conn {
    async fn send(&mut self, v: Value) -> bool {
        put(&mut self.tx, text(v)).await
    }

    /// The tab strip: every tab for a user who may switch tabs (control) or read them
    /// (`chrome_apis`); for anyone else only the tab in view, which the picture shows anyway
    /// (not the addresses of background tabs: links with secrets in them).
    async fn tabs(&mut self, mut tabs: Vec<crate::live::hub::Tab>) -> bool {
        use crate::live::roles::Role;
        if !self.user.may_control() && !self.user.has(Role::ChromeApis) {
            tabs.retain(|t| t.active);
        }
        self.send(json!({"t": "tabs", "tabs": tabs})).await
    }

    /// Sends a message already written as JSON text.
    async fn send_text(&mut self, t: String) -> bool {
        put(&mut self.tx, Message::Text(t.into())).await
    }

    async fn send_binary(&mut self, b: bytes::Bytes) -> bool {
        put(&mut self.tx, Message::Binary(b)).await
    }

    /// A display's size and keyframe; the tiles from then on.
    async fn start_display(&mut self) -> Result<Option<broadcast::Receiver<Arc<Tile>>>, ()> {
        let Some(d) = self.s.live.display.clone() else {
            return Ok(None);
        };
        d.capture.viewer_joined();
        match d.capture.watch().await {
            Ok((rx, key)) => {
                let ok = self.send_tile(&key).await;
                self.key_seq = key.seq;
                if ok {
                    Ok(Some(rx))
                } else {
                    Err(())
                }
            }
            Err(e) => {
                tracing::warn!(session = %self.s.id, error = %e, "live view: the display cannot be captured");
                Err(())
            }
        }
    }

    async fn frame(&mut self, f: Option<Arc<Frame>>) -> bool {
        let Some(f) = f.filter(|_| !self.paused) else {
            return true;
        };
        if (f.width, f.height) != self.meta {
            self.meta = (f.width, f.height);
            if !self
                .send(json!({"t": "meta", "width": f.width, "height": f.height}))
                .await
            {
                return false;
            }
        }
        self.send_binary(f.jpeg.clone()).await
    }

    /// A display's tile, after the screen's size when it is not the one the viewer has.
    async fn send_tile(&mut self, t: &Tile) -> bool {
        let screen = (u32::from(t.screen.0), u32::from(t.screen.1));
        if screen != self.meta {
            self.meta = screen;
            let (w, h) = screen;
            if !self
                .send(json!({"t": "meta", "width": w, "height": h, "display": true}))
                .await
            {
                return false;
            }
        }
        self.send_binary(t.message()).await
    }

    async fn tile(&mut self, r: Result<Arc<Tile>, RecvError>) -> bool {
        match r {
            Ok(_) | Err(RecvError::Lagged(_)) if self.paused => true,
            Ok(t) if t.seq <= self.key_seq => true,
            Ok(t) => self.send_tile(&t).await,
            // Behind: skip to the screen as it is now.
            Err(RecvError::Lagged(_)) => self.keyframe().await,
            Err(RecvError::Closed) => false,
        }
    }

    /// The whole screen as it is now (a display's).
    async fn keyframe(&mut self) -> bool {
        let Some(d) = self.s.live.display.clone() else {
            return false;
        };
        match d.capture.keyframe().await {
            Ok(k) => {
                self.key_seq = k.seq;
                self.send_tile(&k).await
            }
            Err(_) => false,
        }
    }

    /// `video_paused`: stops or resumes the picture; a resumed viewer gets the picture as it
    /// is now.
    async fn pause(&mut self, paused: bool) -> bool {
        let resumed = self.paused && !paused;
        self.paused = paused;
        if !resumed {
            true
        } else if self.s.live.display.is_some() {
            self.keyframe().await
        } else {
            let f = self.s.live.hub.frames().borrow().clone();
            self.meta = (0, 0);
            self.frame(f).await
        }
    }

    /// A timeout ahead (`close_warning`: its kind and the milliseconds left), or its
    /// withdrawal once a warning was sent.
    async fn close_warning(&mut self, w: Option<crate::live::CloseWarning>) -> bool {
        match w {
            Some(w) => {
                self.warned = true;
                let left = w.at_ms.saturating_sub(crate::session::timer::mono_ms());
                self.send(json!({"t": "close_warning", "type": w.kind.name(), "delay_ms": left}))
                    .await
            }
            None if self.warned => {
                self.warned = false;
                self.send(json!({"t": "close_warning", "type": null})).await
            }
            None => true,
        }
    }

    async fn tabs_event(
        &mut self,
        r: Result<Arc<crate::live::chrome_tabs::Event>, RecvError>,
    ) -> bool {
        match r {
            Ok(e) if self.tabs_listen.contains(&e.kind) && self.user.has(Role::ChromeApis) => {
                self.send(json!({"t": "tabs_event", "e": e.kind.name(), "a": e.args}))
                    .await
            }
            // Not listened to, or missed (a slow viewer loses the oldest).
            Ok(_) | Err(RecvError::Lagged(_)) => true,
            Err(RecvError::Closed) => false,
        }
    }

    async fn store(&mut self, r: Result<Arc<crate::room::Change>, RecvError>) -> bool {
        match r {
            Ok(c) if c.version <= self.store_last => true,
            Ok(c) => {
                self.store_last = c.version;
                self.send_text(super::room::change_text(&c)).await
            }
            Err(RecvError::Lagged(_)) => {
                let (v, entries) = self.s.room.snapshot();
                self.store_last = v;
                self.send_text(super::room::snapshot_text(v, &entries, true))
                    .await
            }
            Err(RecvError::Closed) => true,
        }
    }

    async fn notice(&mut self, n: Option<Notice>) -> bool {
        let user = self.user.clone();
        match n {
            None => false,
            Some(Notice::Roles) => {
                // Keys and buttons it holds go up once it may no longer send input.
                if let Some(d) = &self.s.live.display {
                    if !self.s.live.may_input(&user) {
                        let _ = d.input.release(&user.id).await;
                    }
                }
                // What the tab strip shows depends on the roles: sent again as they are now.
                let tabs = self.s.live.hub.tabs().borrow().clone();
                self.send(json!({"t": "roles", "roles": roles::names(&user.roles()), "control": user.may_control()}))
                    .await
                    && self.tabs(tabs).await
            }
            Some(Notice::Clipboard(t)) => self.send(json!({"t": "clipboard", "text": t})).await,
            Some(Notice::Cursor { user_id, x, y }) => {
                self.send(json!({"t": "cursor", "user_id": user_id, "x": x, "y": y}))
                    .await
            }
        }
    }

    async fn chooser(&mut self, c: Option<Arc<FileChooser>>) -> bool {
        let u = &self.user;
        match c {
            Some(c) if u.has(Role::FileUpload) && u.has(Role::Control) && u.may_control() => {
                self.send(json!({"t": "file_chooser", "multiple": c.multiple}))
                    .await
            }
            _ => true,
        }
    }

    /// Tells the viewer of finished downloads it has not heard of.
    async fn downloads(&mut self) -> bool {
        let Some(d) = self.s.downloads.clone() else {
            return true;
        };
        let items = tokio::task::spawn_blocking(move || d.list())
            .await
            .unwrap_or_default();
        for it in items {
            if self.offered.insert((it.name.clone(), it.size))
                && !self
                    .send(json!({"t": "download", "name": it.name, "size": it.size}))
                    .await
            {
                return false;
            }
        }
        true
    }

    async fn ended(&mut self, reason: Option<String>) -> bool {
        let Some(reason) = reason else {
            return true;
        };
        let _ = self.send(json!({"t": "ended", "reason": reason})).await;
        close(&mut self.tx, 4001, "the session has ended").await;
        false
    }

    /// One message from the viewer: rate-limited, parsed, handled.
    async fn input(&mut self, m: Option<Result<Message, axum::Error>>) -> bool {
        let t = match m {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                close(&mut self.tx, 4003, "viewers send JSON text messages only").await;
                return false;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return true,
            Some(Ok(Message::Close(_))) | None => return false,
            Some(Err(e)) => {
                // Oversized messages end up here.
                tracing::debug!(session = %self.s.id, error = %e, "viewer socket error");
                close(&mut self.tx, 1009, "message too large or malformed").await;
                return false;
            }
        };
        let rate = f64::from(self.s.live.config().max_input_rate);
        let elapsed = self.refilled.elapsed().as_secs_f64();
        self.budget = (self.budget + elapsed * rate).min(rate * 2.0);
        self.bytes_budget =
            (self.bytes_budget + elapsed * INPUT_BYTES_PER_SEC).min(INPUT_BYTES_BURST);
        self.refilled = Instant::now();
        self.budget -= 1.0;
        self.bytes_budget -= t.len() as f64;
        if self.budget < 0.0 || self.bytes_budget < 0.0 {
            close(&mut self.tx, 4029, "too many input messages").await;
            return false;
        }
        let Ok(msg) = serde_json::from_str::<Value>(t.as_str()) else {
            close(&mut self.tx, 4002, "messages must be JSON").await;
            return false;
        };
        let activity = crate::live::protocol::Kind::of(&msg)
            .is_ok_and(crate::live::protocol::Kind::is_activity);
        let done = crate::live::input::handle(&self.s.live, &self.user, &msg).await;
        // What the user may not do (dropped) does not keep the session alive either.
        if activity && !matches!(done, Ok(crate::live::input::Outcome::Dropped)) {
            self.s.touch();
        }
        match done {
            Ok(crate::live::input::Outcome::Reply(v)) => self.send(v).await,
            Ok(crate::live::input::Outcome::VideoPaused(p)) => self.pause(p).await,
            Ok(crate::live::input::Outcome::Listen(kinds)) => {
                self.tabs_listen = kinds;
                true
            }
            Ok(_) => true,
            Err(crate::live::input::Fault::Malformed(e)) => {
                close(&mut self.tx, 4002, &e).await;
                false
            }
            Err(crate::live::input::Fault::Browser(e)) => {
                tracing::debug!(session = %self.s.id, error = %e, "viewer input failed");
                true
            }
        }
    }
}

/// Serves one viewer's socket.
pub(super) async fn run(
    s: Arc<Session>,
    roles: BTreeSet<Role>,
    caller: Caller,
    policy: Arc<crate::browser::egress::Policy>,
    socket: WebSocket,
) {
    let live = &s.live;
    let (sink, mut rx) = socket.split();
    let mut tx = Tx {
        sink,
        timeout: live.config().send_timeout,
    };
    let Some((user, mut notices)) = admit(&s, roles, &caller, &policy, &mut tx, &mut rx).await
    else {
        return;
    };
    s.client_connected();
    tracing::info!(session = %s.id, user = %user.id, "viewer connected");
    let rate = f64::from(live.config().max_input_rate);
    let mut c = Conn {
        s: s.clone(),
        user: user.clone(),
        tx,
        meta: (0, 0),
        key_seq: 0,
        store_last: 0,
        offered: HashSet::new(),
        budget: rate * 2.0,
        bytes_budget: INPUT_BYTES_BURST,
        refilled: Instant::now(),
        tabs_listen: std::collections::BTreeSet::new(),
        paused: false,
        warned: false,
    };
    let mut warning = live.close_warning();
    warning.mark_changed();
    let mut tabs_events = live.tabs.events();
    let mut frames = live.hub.frames();
    frames.mark_changed();
    let mut tabs = live.hub.tabs();
    tabs.mark_changed();
    let mut ended = live.ended();
    ended.mark_changed();
    let mut chooser = live.hub.file_chooser();
    chooser.mark_unchanged();
    let mut sound = live
        .display
        .as_ref()
        .and_then(|d| d.sound.as_ref())
        .map(crate::display::Sound::subscribe);
    let hello = json!({"t": "hello", "user_id": user.id, "session_id": s.id, "resume": user.resume,
        "roles": roles::names(&user.roles()), "control": user.may_control()});
    let mut ok = c.send(hello).await;
    // A display: the whole screen, then the tiles of what changes.
    let mut tiles = match c.start_display().await {
        Ok(t) => t,
        Err(()) => {
            ok = false;
            None
        }
    };
    // The session store reaches viewers too (the page passes it on to its parent window).
    let (start, mut store) = s.room.watch(None);
    if let crate::room::Start::Snapshot(v, entries) = start {
        c.store_last = v;
        ok = ok
            && c.send_text(super::room::snapshot_text(v, &entries, true))
                .await;
    }
    let mut downloads_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    while ok {
        ok = tokio::select! {
            r = frames.changed() => r.is_ok() && { let f = frames.borrow_and_update().clone(); c.frame(f).await },
            r = next(&mut tiles) => c.tile(r).await,
            r = next(&mut sound) => match r {
                Ok(p) => c.send_binary(p).await,
                // A viewer behind on sound skips what it missed.
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => { sound = None; true }
            },
            r = tabs.changed() => r.is_ok() && { let t = tabs.borrow_and_update().clone(); c.tabs(t).await },
            r = ended.changed() => r.is_ok() && { let e = ended.borrow_and_update().clone(); c.ended(e).await },
            r = store.recv() => c.store(r).await,
            r = tabs_events.recv() => c.tabs_event(r).await,
            r = warning.changed() => r.is_ok() && { let w = *warning.borrow_and_update(); c.close_warning(w).await },
            n = notices.recv() => c.notice(n).await,
            r = chooser.changed() => r.is_ok() && { let x = chooser.borrow_and_update().clone(); c.chooser(x).await },
            _ = downloads_tick.tick(), if s.downloads.is_some() && user.may_control() => c.downloads().await,
            () = user.removed() => {
                let _ = c.send(json!({"t": "ended", "reason": "kicked"})).await;
                close(&mut c.tx, 4010, "removed from the session").await;
                false
            }
            m = rx.next() => c.input(m).await,
        };
    }
    if let Some(d) = &live.display {
        d.capture.viewer_left();
        let _ = d.input.release(&user.id).await;
    }
    live.leave(&user);
    live.hub.leave().await;
    s.client_disconnected();
    tracing::info!(session = %s.id, user = %user.id, "viewer disconnected");
}
