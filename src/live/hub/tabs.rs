//! The hub's tabs: which page target the view shows, switching, opening and closing tabs,
//! the tab strip published to viewers, and the shown tab's window sized to a viewer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{str_of, Conn, Hub, Tab};

impl Hub {
    /// Shows `target` in the view: stops the old screencast, attaches, starts a new one.
    pub(super) async fn switch_to(&self, conn: &Arc<Conn>, target: &str) -> Result<(), String> {
        if let Some((old, s)) = conn.active_session() {
            if old == target {
                return Ok(());
            }
            if self.screencast {
                let _ = conn.call(Some(&s), "Page.stopScreencast", json!({})).await;
            }
        }
        let known = conn.attached.lock().expect("attached").get(target).cloned();
        let session = match known {
            Some(s) => s,
            None => {
                let r = conn
                    .call(
                        None,
                        "Target.attachToTarget",
                        json!({"targetId": target, "flatten": true}),
                    )
                    .await?;
                let s = str_of(&r["sessionId"]);
                conn.attached
                    .lock()
                    .expect("attached")
                    .insert(target.to_string(), s.clone());
                let _ = conn.call(Some(&s), "Page.enable", json!({})).await;
                if self.intercept_files {
                    let _ = conn
                        .call(
                            Some(&s),
                            "Page.setInterceptFileChooserDialog",
                            json!({"enabled": true}),
                        )
                        .await;
                }
                s
            }
        };
        *conn.active.lock().expect("active") = Some((target.to_string(), session.clone()));
        let _ = conn
            .call(None, "Target.activateTarget", json!({"targetId": target}))
            .await;
        if self.screencast {
            self.start_screencast(conn, &session).await?;
        }
        self.publish_tabs(conn);
        Ok(())
    }

    pub(super) async fn start_screencast(&self, conn: &Conn, session: &str) -> Result<(), String> {
        conn.call(
            Some(session),
            "Page.startScreencast",
            json!({"format": "jpeg", "quality": self.quality, "everyNthFrame": 1}),
        )
        .await
        .map(|_| ())
    }

    pub(super) fn publish_tabs(&self, conn: &Conn) {
        let active = conn.active_session().map(|(t, _)| t);
        let tabs: Vec<Tab> = conn
            .pages
            .lock()
            .expect("pages")
            .iter()
            .map(|(id, title, url)| Tab {
                id: id.clone(),
                title: title.clone(),
                url: url.clone(),
                active: active.as_deref() == Some(id.as_str()),
            })
            .collect();
        self.tabs.send_if_modified(|t| {
            if *t == tabs {
                false
            } else {
                *t = tabs;
                true
            }
        });
    }

    pub(super) fn spawn_switch(&self, conn: &Arc<Conn>, target: String) {
        let (Some(hub), conn) = (self.me.upgrade(), conn.clone()) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = hub.switch_to(&conn, &target).await {
                tracing::debug!(error = %e, "live view: switching tabs failed");
            }
        });
    }

    /// Opens a blank tab and shows it (the last one closed).
    pub(super) fn spawn_new_tab(&self) {
        let Some(hub) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            // Not while the session ends (its browser is being closed).
            if hub.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if let Err(e) = hub.new_tab("about:blank").await {
                tracing::warn!(error = %e, "live view: the last tab closed and no new one could be opened");
            }
        });
    }

    /// The connection, the DevTools session of the tab shown now, and its window
    /// (`Browser.getWindowForTarget`).
    async fn shown_window(&self) -> Result<(Arc<Conn>, String, Value), String> {
        let conn = self.conn().await?;
        let (target, session) = conn.active_session().ok_or("no tab is shown")?;
        let win = conn
            .call(
                None,
                "Browser.getWindowForTarget",
                json!({"targetId": &target}),
            )
            .await?;
        Ok((conn, session, win))
    }

    /// Makes the window of the tab shown now fill a screen of `size` (a display's, after it
    /// changed size: no window manager does it).
    ///
    /// # Errors
    /// No live view running, no tab shown, or the browser refused.
    pub async fn fill_screen(&self, (width, height): (u16, u16)) -> Result<(), String> {
        let (conn, _, win) = self.shown_window().await?;
        set_bounds(
            &conn,
            &win,
            json!({"left": 0, "top": 0, "width": width, "height": height}),
        )
        .await
    }

    /// Sizes the window of the tab shown now so that its viewport is `width` x `height` CSS
    /// px: the window is that plus the browser's own UI, which is the window less the viewport
    /// of that tab's latest frame (or, before it sent one, less its layout viewport). The
    /// screencast is restarted when no frame of the new size follows.
    ///
    /// # Errors
    /// No live view running, no tab shown, or the browser refused.
    pub async fn fit_viewport(&self, width: u32, height: u32) -> Result<(), String> {
        let (conn, session, win) = self.shown_window().await?;
        let shown = self
            .frames
            .borrow()
            .clone()
            .filter(|f| f.session == session);
        let (vw, vh) = match shown {
            Some(f) => (f.width, f.height),
            None => {
                let m = conn
                    .call(Some(&session), "Page.getLayoutMetrics", json!({}))
                    .await?;
                let v = &m["cssLayoutViewport"];
                let px = |v: &Value| v.as_f64().unwrap_or(0.0).round() as u32;
                (px(&v["clientWidth"]), px(&v["clientHeight"]))
            }
        };
        let b = &win["bounds"];
        let ui = |window: &Value, view: u32| {
            u32::try_from(window.as_u64().unwrap_or(0))
                .unwrap_or(0)
                .saturating_sub(view)
                .min(400)
        };
        let (dw, dh) = (ui(&b["width"], vw), ui(&b["height"], vh));
        let mut frames = self.frames.subscribe();
        set_bounds(
            &conn,
            &win,
            json!({"width": width + dw, "height": height + dh}),
        )
        .await?;
        // A still page may not send a frame for its new size; without one, viewers (and the
        // next measure) would keep the old size. Wait a moment for it, then ask for a fresh one.
        let resized = tokio::time::timeout(Duration::from_millis(500), async {
            while frames.changed().await.is_ok() {
                if frames
                    .borrow_and_update()
                    .as_ref()
                    .is_some_and(|f| f.session == session && (f.width, f.height) != (vw, vh))
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !resized && self.screencast {
            let _ = conn
                .call(Some(&session), "Page.stopScreencast", json!({}))
                .await;
            self.start_screencast(&conn, &session).await?;
        }
        Ok(())
    }

    /// The target shown now.
    pub async fn active_target(&self) -> Option<String> {
        self.conn().await.ok()?.active_session().map(|(t, _)| t)
    }

    /// Shows another tab.
    ///
    /// # Errors
    /// Unknown tab or browser failure.
    pub async fn switch(&self, target: &str) -> Result<(), String> {
        let conn = self.conn().await?;
        if !conn
            .pages
            .lock()
            .expect("pages")
            .iter()
            .any(|p| p.0 == target)
        {
            return Err("no such tab".into());
        }
        self.switch_to(&conn, target).await
    }

    /// Shows `target` when the view runs and knows it: the browser's own tab switches
    /// (Chromium's tab strip, an app's `tabs.update`). Nothing when nobody watches.
    ///
    /// # Errors
    /// Unknown tab or browser failure.
    pub async fn follow(&self, target: &str) -> Result<(), String> {
        if self.conn().await.is_err() {
            return Ok(());
        }
        self.switch(target).await
    }

    /// Opens a new tab and shows it.
    ///
    /// # Errors
    /// Browser failure.
    pub async fn new_tab(&self, url: &str) -> Result<(), String> {
        let conn = self.conn().await?;
        let r = conn
            .call(None, "Target.createTarget", json!({"url": url}))
            .await?;
        let id = str_of(&r["targetId"]);
        {
            let mut pages = conn.pages.lock().expect("pages");
            if !pages.iter().any(|p| p.0 == id) {
                pages.push((
                    id.clone(),
                    String::new(),
                    super::clipped(&serde_json::Value::from(url), super::TAB_URL_MAX),
                ));
            }
        }
        self.switch_to(&conn, &id).await
    }

    /// Closes a tab (the last one is replaced by a blank tab first).
    ///
    /// # Errors
    /// Unknown tab or browser failure.
    pub async fn close_tab(&self, target: &str) -> Result<(), String> {
        let conn = self.conn().await?;
        let (known, count) = {
            let pages = conn.pages.lock().expect("pages");
            (pages.iter().any(|p| p.0 == target), pages.len())
        };
        if !known {
            return Err("no such tab".into());
        }
        if count == 1 {
            self.new_tab("about:blank").await?;
        }
        conn.call(None, "Target.closeTarget", json!({"targetId": target}))
            .await?;
        Ok(())
    }
}

/// Sets the bounds of `win` (a `Browser.getWindowForTarget` answer), from the normal state
/// (a maximized or full-screen window takes no size).
async fn set_bounds(conn: &Conn, win: &Value, bounds: Value) -> Result<(), String> {
    if win["bounds"]["windowState"]
        .as_str()
        .is_some_and(|s| s != "normal")
    {
        conn.call(
            None,
            "Browser.setWindowBounds",
            json!({"windowId": win["windowId"], "bounds": {"windowState": "normal"}}),
        )
        .await?;
    }
    conn.call(
        None,
        "Browser.setWindowBounds",
        json!({"windowId": win["windowId"], "bounds": bounds}),
    )
    .await
    .map(|_| ())
}
