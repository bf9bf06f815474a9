//! A viewer's messages, checked against its roles and turned into input: on the browser's
//! display when it has one (the whole browser, [`crate::display::Input`]), else DevTools
//! commands on the page shown (`Input.dispatchMouseEvent`, `Input.dispatchKeyEvent`,
//! `Input.insertText`, `Input.imeSetComposition`); navigation, tabs and window size through
//! DevTools. Input the user may not send is dropped here and never reaches the browser.

mod page;
mod screen;

use serde_json::{json, Value};

use super::protocol::{Kind, Malformed, Message, Tab, TabsCall};
use super::{Live, Role, User};

/// What handling one message produced for the viewer that sent it.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Forwarded (or nothing to do).
    Done,
    /// Dropped: the user may not do this now.
    Dropped,
    /// A message for the viewer (JSON text).
    Reply(Value),
    /// The viewer stops (`true`) or resumes the picture (`video_paused`); sound goes on.
    VideoPaused(bool),
    /// The tabs events the viewer wants from now on (`tabs_listen`).
    Listen(std::collections::BTreeSet<super::chrome_tabs::EventKind>),
}

/// Whether `url` may be opened from the address bar (no `javascript:`, `file:`, `chrome:`).
pub fn navigable(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://") || url == "about:blank")
        && url.len() <= 8192
        && !url.chars().any(char::is_control)
}

/// Why a message was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The message breaks the protocol (the socket closes with this reason).
    Malformed(String),
    /// The browser refused or did not answer (logged; the viewer stays).
    Browser(String),
}

impl From<Malformed> for Fault {
    fn from(m: Malformed) -> Self {
        Fault::Malformed(m.0)
    }
}

/// Whether `user` may send a message of `kind` now: input and the tab strip need control
/// and input accepted (a user of higher priority in control preempts both), a resize its
/// role. Checked before the message is read: what the user may not send is dropped
/// whatever it holds.
fn permitted(live: &Live, user: &User, kind: Kind) -> bool {
    match kind {
        k if k.is_input() || k == Kind::Tab => live.accept_input(user),
        Kind::Resize => user.has(Role::Resize),
        _ => true,
    }
}

/// Handles one message `m` of `user`.
///
/// # Errors
/// [`Fault`].
pub async fn handle(live: &Live, user: &User, m: &Value) -> Result<Outcome, Fault> {
    let kind = Kind::of(m)?;
    if !permitted(live, user, kind) {
        return Ok(Outcome::Dropped);
    }
    let msg = Message::parse(kind, m)?;
    if let Some(d) = &live.display {
        if let Some(r) = screen::handle(d, live, user, &msg).await {
            return r;
        }
    }
    let hub = &live.hub;
    match msg {
        // Read before anything else when the session has an auth webhook; later, nothing.
        Message::Ping | Message::Auth => Ok(Outcome::Done),
        Message::Mouse(m) => page::mouse(live, user, &m).await,
        Message::Wheel(w) => page::wheel(hub, &w).await,
        Message::Key(k) => page::key(live, user, &k).await,
        Message::Text { text, .. } => page::text(hub, &text).await,
        Message::Ime(text) => page::ime(hub, &text).await,
        Message::Nav(n) => page::nav(hub, n).await,
        Message::Goto(url) => page::goto(hub, &url).await,
        Message::Tab(t) => tab(hub, t).await,
        Message::Resize { width, height } => {
            hub.fit_viewport(
                width.clamp(100, 3840) as u32,
                height.clamp(100, 2160) as u32,
            )
            .await
            .map_err(Fault::Browser)?;
            Ok(Outcome::Done)
        }
        // A round-trip probe (the SDK's `rtt`): echoed, and not activity.
        Message::Rtt(ts) => Ok(Outcome::Reply(json!({"t": "rtt", "ts": ts}))),
        Message::VideoPaused(p) => Ok(Outcome::VideoPaused(p)),
        Message::TabsCall(c) => Ok(tabs_call(live, user, c).await),
        Message::TabsListen(kinds) => Ok(Outcome::Listen(kinds)),
    }
}

async fn tab(hub: &super::hub::Hub, t: Tab) -> Result<Outcome, Fault> {
    match t {
        Tab::Switch(id) => hub.switch(&id).await,
        Tab::Close(id) => hub.close_tab(&id).await,
        Tab::New => hub.new_tab("about:blank").await,
    }
    .map_err(Fault::Browser)?;
    Ok(Outcome::Done)
}

/// `chrome.tabs.<m>(...a)` for a user with `chrome_apis`, answered `{"t": "tabs_result",
/// "i", "r"}` or `{..., "e": message}`.
async fn tabs_call(live: &Live, user: &User, c: TabsCall) -> Outcome {
    let r = match c.method {
        _ if !user.has(Role::ChromeApis) => {
            Err("this user may not use the tabs API (role chrome_apis)".to_string())
        }
        Err(e) => Err(e),
        // What changes the browser is input: control, not disabled, not preempted.
        Ok(method) if !method.reads_only() && !live.accept_input(user) => Err(format!(
            "tabs.{} changes the browser: this user may not control it now (role control)",
            method.name()
        )),
        Ok(method) => live
            .tabs
            .call(method, c.args)
            .await
            .map_err(|e| e.to_string()),
    };
    Outcome::Reply(match r {
        Ok(v) => json!({"t": "tabs_result", "i": c.i, "r": v}),
        Err(e) => json!({"t": "tabs_result", "i": c.i, "e": e}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(navigable("https://example.com"));
        assert!(!navigable("javascript:alert(1)"));
        assert!(!navigable("file:///etc/passwd"));
        assert!(!navigable("chrome://settings"));
    }
}
