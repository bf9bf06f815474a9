//! The screencast hub of one session: ONE internal DevTools connection to the browser, shared
//! by every viewer. It starts with the first viewer and stops with the last; it follows the
//! browser's page targets (the tab strip), moves the view to popups and new tabs, and keeps
//! only the latest frame (a `watch` channel): a viewer that joins gets it at once, and a slow
//! viewer skips frames instead of queueing them, so memory stays bounded whatever viewers do.

mod tabs;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

/// One screencast frame.
#[derive(Debug)]
pub struct Frame {
    /// JPEG bytes.
    pub jpeg: bytes::Bytes,
    /// Viewport width in CSS px.
    pub width: u32,
    /// Viewport height in CSS px.
    pub height: u32,
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// The DevTools session of the tab it shows.
    session: String,
}

/// A tab (page target) of the browser.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tab {
    /// Target id.
    pub id: String,
    /// Title.
    pub title: String,
    /// URL.
    pub url: String,
    /// Shown in the view.
    pub active: bool,
}

/// A file chooser a page opened, intercepted (no dialog on the node): it waits for the
/// person's files (`file_upload`).
#[derive(Debug)]
pub struct FileChooser {
    session: String,
    backend_node_id: i64,
    /// Whether it takes several files.
    pub multiple: bool,
}

/// The running DevTools connection.
struct Conn {
    cdp: crate::cdp::Cdp,
    /// target id -> flat session id.
    attached: Mutex<HashMap<String, String>>,
    /// (target, session) shown now.
    active: Mutex<Option<(String, String)>>,
    /// Page targets in creation order: (id, title, url).
    pages: Mutex<Vec<(String, String, String)>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

impl Conn {
    async fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.cdp.call(session, method, params).await
    }

    /// Sends without waiting for the answer (acks).
    fn notify(&self, session: Option<&str>, method: &str, params: Value) {
        self.cdp.notify(session, method, params);
    }

    fn active_session(&self) -> Option<(String, String)> {
        self.active.lock().expect("active").clone()
    }
}

struct State {
    viewers: usize,
    conn: Option<Arc<Conn>>,
}

/// The hub.
pub struct Hub {
    cdp: Arc<crate::browser::mux::Mux>,
    quality: u8,
    /// Whether the picture is the page's screencast (not when a display is captured).
    screencast: bool,
    /// Whether pages' file choosers are intercepted (answered with the person's files).
    intercept_files: bool,
    chooser: watch::Sender<Option<Arc<FileChooser>>>,
    frames: watch::Sender<Option<Arc<Frame>>>,
    tabs: watch::Sender<Vec<Tab>>,
    state: tokio::sync::Mutex<State>,
    seq: AtomicU64,
    /// The session ended ([`Hub::stop`]): no tab is opened any more.
    stopped: std::sync::atomic::AtomicBool,
    me: std::sync::Weak<Hub>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("frames", &self.seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub for the browser behind `cdp`; `screencast`: it also makes the picture (the
    /// page's, through DevTools), else only tabs and DevTools commands.
    pub fn new(
        cdp: Arc<crate::browser::mux::Mux>,
        quality: u8,
        screencast: bool,
        intercept_files: bool,
    ) -> Arc<Hub> {
        Arc::new_cyclic(|me| Hub {
            cdp,
            quality: quality.clamp(1, 100),
            screencast,
            intercept_files,
            chooser: watch::channel(None).0,
            frames: watch::channel(None).0,
            tabs: watch::channel(Vec::new()).0,
            state: tokio::sync::Mutex::new(State {
                viewers: 0,
                conn: None,
            }),
            seq: AtomicU64::new(0),
            stopped: false.into(),
            me: me.clone(),
        })
    }

    /// The latest frame, and every new one.
    pub fn frames(&self) -> watch::Receiver<Option<Arc<Frame>>> {
        self.frames.subscribe()
    }

    /// The tab strip.
    pub fn tabs(&self) -> watch::Receiver<Vec<Tab>> {
        self.tabs.subscribe()
    }

    /// Frames received from the browser so far.
    pub fn frame_count(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// A viewer joins: the first one starts the screencast.
    ///
    /// # Errors
    /// The browser's DevTools endpoint cannot be reached.
    pub async fn join(&self) -> Result<(), String> {
        let mut st = self.state.lock().await;
        if st.conn.is_none() {
            st.conn = Some(self.start().await?);
        }
        st.viewers += 1;
        Ok(())
    }

    /// A viewer leaves: the last one stops the screencast and closes the connection.
    pub async fn leave(&self) {
        let mut st = self.state.lock().await;
        st.viewers = st.viewers.saturating_sub(1);
        if st.viewers == 0 {
            if let Some(c) = st.conn.take() {
                if let Some((_, s)) = c.active_session().filter(|_| self.screencast) {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        c.call(Some(&s), "Page.stopScreencast", json!({})),
                    )
                    .await;
                }
            }
        }
    }

    /// The session ended: drop the connection whoever is watching.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Ok(mut st) = self.state.try_lock() {
            st.conn = None;
        } else if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move {
                me.state.lock().await.conn = None;
            });
        }
    }

    async fn conn(&self) -> Result<Arc<Conn>, String> {
        self.state
            .lock()
            .await
            .conn
            .clone()
            .ok_or_else(|| "the live view is not running".into())
    }

    async fn start(&self) -> Result<Arc<Conn>, String> {
        let (cdp, mut events) = crate::cdp::Cdp::connect(&self.cdp, Duration::from_secs(15))
            .await
            .map_err(|e| format!("cannot reach the session's browser: {e}"))?;
        let conn = Arc::new(Conn {
            cdp,
            attached: Mutex::new(HashMap::new()),
            active: Mutex::new(None),
            pages: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&conn);
        let hub = self.me.clone();
        let reader = tokio::spawn(async move {
            while let Some(v) = events.recv().await {
                let (Some(conn), Some(hub)) = (weak.upgrade(), hub.upgrade()) else {
                    break;
                };
                hub.event(&conn, &v);
            }
        });
        conn.tasks.lock().expect("tasks").push(reader);
        conn.call(None, "Target.setDiscoverTargets", json!({"discover": true}))
            .await?;
        let targets = conn.call(None, "Target.getTargets", json!({})).await?;
        {
            let mut pages = conn.pages.lock().expect("pages");
            for t in targets["targetInfos"].as_array().into_iter().flatten() {
                if t["type"] == "page" {
                    let id = t["targetId"].as_str().unwrap_or_default().to_string();
                    if !pages.iter().any(|p| p.0 == id) {
                        pages.push((
                            id,
                            clipped(&t["title"], TAB_TITLE_MAX),
                            clipped(&t["url"], TAB_URL_MAX),
                        ));
                    }
                }
            }
        }
        let first = conn
            .pages
            .lock()
            .expect("pages")
            .first()
            .map(|p| p.0.clone());
        let target = match first {
            Some(t) => t,
            None => str_of(
                &conn
                    .call(None, "Target.createTarget", json!({"url": "about:blank"}))
                    .await?["targetId"],
            ),
        };
        self.switch_to(&conn, &target).await?;
        Ok(conn)
    }

    fn event(&self, conn: &Arc<Conn>, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str().unwrap_or_default() {
            "Page.screencastFrame" => {
                let from = v["sessionId"].as_str().unwrap_or_default();
                conn.notify(
                    Some(from),
                    "Page.screencastFrameAck",
                    json!({"sessionId": p["sessionId"]}),
                );
                if conn.active_session().map(|(_, s)| s).as_deref() != Some(from) {
                    return;
                }
                let Ok(jpeg) = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    p["data"].as_str().unwrap_or_default(),
                ) else {
                    return;
                };
                let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                let m = &p["metadata"];
                self.frames.send_replace(Some(Arc::new(Frame {
                    jpeg: jpeg.into(),
                    width: m["deviceWidth"].as_f64().unwrap_or(0.0).round() as u32,
                    height: m["deviceHeight"].as_f64().unwrap_or(0.0).round() as u32,
                    seq,
                    session: from.to_string(),
                })));
            }
            "Page.fileChooserOpened" => {
                self.chooser.send_replace(Some(Arc::new(FileChooser {
                    session: v["sessionId"].as_str().unwrap_or_default().to_string(),
                    backend_node_id: p["backendNodeId"].as_i64().unwrap_or(0),
                    multiple: p["mode"] == "selectMultiple",
                })));
            }
            "Target.targetCreated" | "Target.targetInfoChanged" => {
                let t = &p["targetInfo"];
                if t["type"] != "page" {
                    return;
                }
                let id = str_of(&t["targetId"]);
                let created = {
                    let mut pages = conn.pages.lock().expect("pages");
                    let (title, url) = (
                        clipped(&t["title"], TAB_TITLE_MAX),
                        clipped(&t["url"], TAB_URL_MAX),
                    );
                    match pages.iter_mut().find(|x| x.0 == id) {
                        Some(x) => {
                            x.1 = title;
                            x.2 = url;
                            false
                        }
                        None => {
                            pages.push((id.clone(), title, url));
                            true
                        }
                    }
                };
                self.publish_tabs(conn);
                // Popups and links opened in a new tab take the view, as in a real browser.
                if created && t["openerId"].is_string() {
                    self.spawn_switch(conn, id);
                }
            }
            "Target.targetDestroyed" => {
                let id = str_of(&p["targetId"]);
                let last_page = {
                    let mut pages = conn.pages.lock().expect("pages");
                    let was_page = pages.iter().any(|x| x.0 == id);
                    pages.retain(|x| x.0 != id);
                    was_page && pages.is_empty()
                };
                conn.attached.lock().expect("attached").remove(&id);
                let was_active = conn.active_session().is_some_and(|(t, _)| t == id);
                if was_active {
                    *conn.active.lock().expect("active") = None;
                    let next = conn
                        .pages
                        .lock()
                        .expect("pages")
                        .last()
                        .map(|x| x.0.clone());
                    if let Some(n) = next {
                        self.spawn_switch(conn, n);
                    }
                }
                // The last tab closed (a person's Ctrl+W, a window's close button, a
                // tenant's CDP): the browser lives on without a window; a new tab is opened
                // for the people watching (once: the window's other targets go too).
                if last_page {
                    self.spawn_new_tab();
                }
                self.publish_tabs(conn);
            }
            "Target.detachedFromTarget" => {
                let s = p["sessionId"].as_str().unwrap_or_default();
                conn.attached
                    .lock()
                    .expect("attached")
                    .retain(|_, v| v != s);
            }
            _ => {}
        }
    }

    /// Runs a command on the page shown now.
    ///
    /// # Errors
    /// No live view running, or the browser refused.
    pub async fn on_active(&self, method: &str, params: Value) -> Result<Value, String> {
        let conn = self.conn().await?;
        let (_, s) = conn.active_session().ok_or("no tab is shown")?;
        conn.call(Some(&s), method, params).await
    }

    /// Runs a browser-level command.
    ///
    /// # Errors
    /// No live view running, or the browser refused.
    pub async fn on_browser(&self, method: &str, params: Value) -> Result<Value, String> {
        self.conn().await?.call(None, method, params).await
    }

    /// The file chooser waiting for the person's files, if any.
    pub fn file_chooser(&self) -> watch::Receiver<Option<Arc<FileChooser>>> {
        self.chooser.subscribe()
    }

    /// Takes the waiting file chooser, if any: one upload answers it, the others find none
    /// (and store nothing).
    pub fn take_file_chooser(&self) -> Option<Arc<FileChooser>> {
        self.chooser.send_replace(None)
    }

    /// Answers the file chooser `c` (taken with [`Hub::take_file_chooser`]) with `files`
    /// (paths the browser sees; none cancels).
    ///
    /// # Errors
    /// The browser refused.
    pub async fn answer_file_chooser(
        &self,
        c: Arc<FileChooser>,
        files: Vec<String>,
    ) -> Result<(), String> {
        let files = if c.multiple {
            files
        } else {
            files.into_iter().take(1).collect()
        };
        self.conn()
            .await?
            .call(
                Some(&c.session),
                "DOM.setFileInputFiles",
                json!({"files": files, "backendNodeId": c.backend_node_id}),
            )
            .await
            .map(|_| ())
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Longest tab URL and title kept for the tab strip, bytes: a page sets its own (a fragment
/// of megabytes by `history.replaceState`), and every viewer is sent the strip on each change.
const TAB_URL_MAX: usize = 2048;
const TAB_TITLE_MAX: usize = 512;

/// `v`'s string, cut to at most `max` bytes (at a character boundary).
fn clipped(v: &Value, max: usize) -> String {
    let s = v.as_str().unwrap_or_default();
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_sets_no_tab_url_or_title_past_the_limit() {
        let long = format!("https://x/#{}é", "a".repeat(3 << 20));
        let url = clipped(&Value::String(long.clone()), TAB_URL_MAX);
        assert_eq!(url.len(), TAB_URL_MAX);
        assert!(long.starts_with(&url));
        // Cut at a character boundary.
        let title = clipped(&Value::String("é".repeat(400)), TAB_TITLE_MAX);
        assert_eq!(title, "é".repeat(256));
        let odd = clipped(&Value::String("é".repeat(400)), 511);
        assert_eq!(odd, "é".repeat(255));
        assert_eq!(clipped(&Value::Null, 10), "");
    }
}
