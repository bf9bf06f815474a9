//! A viewer's messages, checked against its roles and turned into input: on the browser's
//! display when it has one (the whole browser, [`crate::display::Input`]), else DevTools
//! commands on the page shown (`Input.dispatchMouseEvent`, `Input.dispatchKeyEvent`,
//! `Input.insertText`, `Input.imeSetComposition`); navigation, tabs and window size through
//! DevTools. Input the user may not send is dropped here and never reaches the browser.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{Live, Role, User};
use crate::display::{input::Button, Display};

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

fn num(v: &Value, max: f64) -> Option<f64> {
    v.as_f64()
        .filter(|n| n.is_finite())
        .map(|n| n.clamp(-max, max))
}

fn modifiers(m: &Value) -> u64 {
    m["modifiers"].as_u64().unwrap_or(0) & 0b1111
}

/// Editing commands Chromium runs for shortcuts (headless Chromium has no menu accelerators).
fn shortcut_command(key: &str, mods: u64) -> Option<&'static str> {
    let ctrl_or_meta = mods & (2 | 4) != 0;
    if !ctrl_or_meta || mods & 1 != 0 {
        return None;
    }
    let shift = mods & 8 != 0;
    Some(match (key.to_ascii_lowercase().as_str(), shift) {
        ("a", false) => "selectAll",
        ("c", false) => "copy",
        ("x", false) => "cut",
        ("z", false) => "undo",
        ("z", true) | ("y", false) => "redo",
        _ => return None,
    })
}

/// Whether `url` may be opened from the address bar (no `javascript:`, `file:`, `chrome:`).
pub fn navigable(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://") || url == "about:blank")
        && url.len() <= 8192
        && !url.chars().any(char::is_control)
}

/// Handles one message of `user`.
///
/// Why a message was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The message breaks the protocol (the socket closes with this reason).
    Malformed(String),
    /// The browser refused or did not answer (logged; the viewer stays).
    Browser(String),
}

/// # Errors
/// [`Fault`].
pub async fn handle(live: &Live, user: &User, m: &Value) -> Result<Outcome, Fault> {
    let hub = &live.hub;
    let t = m["t"]
        .as_str()
        .ok_or_else(|| Fault::Malformed("message without `t`".into()))?;
    let needs_control = matches!(
        t,
        "mouse" | "wheel" | "key" | "ime" | "text" | "paste" | "nav" | "goto"
    );
    if needs_control && !live.accept_input(user) {
        return Ok(Outcome::Dropped);
    }
    if let Some(d) = &live.display {
        if let Some(r) = on_display(d, live, user, t, m).await {
            return r;
        }
    }
    match t {
        // Read before anything else when the session has an auth webhook; later, nothing.
        "ping" | "auth" => Ok(Outcome::Done),
        "mouse" => {
            let ty = m["type"].as_str().unwrap_or_default();
            if !matches!(ty, "mousePressed" | "mouseReleased" | "mouseMoved") {
                return Err(Fault::Malformed(
                    "mouse.type must be mousePressed, mouseReleased or mouseMoved".into(),
                ));
            }
            let (x, y) = (
                num(&m["x"], 1e5).ok_or_else(|| Fault::Malformed("mouse.x".into()))?,
                num(&m["y"], 1e5).ok_or_else(|| Fault::Malformed("mouse.y".into()))?,
            );
            let button = match m["button"].as_str().unwrap_or("none") {
                b @ ("none" | "left" | "middle" | "right" | "back" | "forward") => b,
                _ => return Err(Fault::Malformed("mouse.button".into())),
            };
            if ty == "mouseMoved" {
                live.share_cursor(user, x, y);
            }
            hub.on_active(
                "Input.dispatchMouseEvent",
                json!({
                    "type": ty, "x": x, "y": y, "button": button,
                    "buttons": m["buttons"].as_u64().unwrap_or(0) & 0x1f,
                    "clickCount": m["clickCount"].as_u64().unwrap_or(if ty == "mouseMoved" { 0 } else { 1 }).min(3),
                    "modifiers": modifiers(m),
                }),
            )
            .await.map_err(Fault::Browser)?;
            Ok(Outcome::Done)
        }
        "wheel" => {
            hub.on_active(
                "Input.dispatchMouseEvent",
                json!({
                    "type": "mouseWheel",
                    "x": num(&m["x"], 1e5).ok_or_else(|| Fault::Malformed("wheel.x".into()))?,
                    "y": num(&m["y"], 1e5).ok_or_else(|| Fault::Malformed("wheel.y".into()))?,
                    "deltaX": num(&m["deltaX"], 1e5).unwrap_or(0.0),
                    "deltaY": num(&m["deltaY"], 1e5).unwrap_or(0.0),
                    "modifiers": modifiers(m),
                }),
            )
            .await
            .map_err(Fault::Browser)?;
            Ok(Outcome::Done)
        }
        "key" => key(live, user, m).await,
        "text" | "paste" => {
            let text = m["text"]
                .as_str()
                .ok_or_else(|| Fault::Malformed("text".into()))?;
            if !text.is_empty() {
                hub.on_active("Input.insertText", json!({"text": text}))
                    .await
                    .map_err(Fault::Browser)?;
            }
            Ok(Outcome::Done)
        }
        "ime" => {
            let text = m["text"]
                .as_str()
                .ok_or_else(|| Fault::Malformed("ime.text".into()))?;
            let n = text.chars().count();
            hub.on_active(
                "Input.imeSetComposition",
                json!({"text": text, "selectionStart": n, "selectionEnd": n}),
            )
            .await
            .map_err(Fault::Browser)?;
            Ok(Outcome::Done)
        }
        "nav" => {
            match m["action"].as_str().unwrap_or_default() {
                "reload" => {
                    hub.on_active("Page.reload", json!({}))
                        .await
                        .map_err(Fault::Browser)?;
                }
                a @ ("back" | "forward") => {
                    let h = hub
                        .on_active("Page.getNavigationHistory", json!({}))
                        .await
                        .map_err(Fault::Browser)?;
                    let cur = h["currentIndex"].as_i64().unwrap_or(0);
                    let to = if a == "back" { cur - 1 } else { cur + 1 };
                    if let Some(e) = usize::try_from(to).ok().and_then(|i| h["entries"].get(i)) {
                        hub.on_active("Page.navigateToHistoryEntry", json!({"entryId": e["id"]}))
                            .await
                            .map_err(Fault::Browser)?;
                    }
                }
                _ => {
                    return Err(Fault::Malformed(
                        "nav.action must be back, forward or reload".into(),
                    ))
                }
            }
            Ok(Outcome::Done)
        }
        "goto" => {
            let url = m["url"]
                .as_str()
                .ok_or_else(|| Fault::Malformed("goto.url".into()))?;
            if !navigable(url) {
                return Ok(Outcome::Reply(
                    json!({"t": "error", "message": "only http(s) URLs and about:blank can be opened"}),
                ));
            }
            hub.on_active("Page.navigate", json!({"url": url}))
                .await
                .map_err(Fault::Browser)?;
            Ok(Outcome::Done)
        }
        "tab" => {
            let allowed =
                (user.has(Role::ChromeApis) && user.may_control()) || live.accept_input(user);
            if !allowed {
                return Ok(Outcome::Dropped);
            }
            let id = m["id"].as_str().unwrap_or_default();
            match m["action"].as_str().unwrap_or_default() {
                "switch" => hub.switch(id).await.map_err(Fault::Browser)?,
                "close" => hub.close_tab(id).await.map_err(Fault::Browser)?,
                "new" => hub.new_tab("about:blank").await.map_err(Fault::Browser)?,
                _ => {
                    return Err(Fault::Malformed(
                        "tab.action must be switch, close or new".into(),
                    ))
                }
            }
            Ok(Outcome::Done)
        }
        "resize" => {
            if !user.has(Role::Resize) {
                return Ok(Outcome::Dropped);
            }
            let w = m["width"]
                .as_u64()
                .ok_or_else(|| Fault::Malformed("resize.width".into()))?
                .clamp(100, 3840);
            let h = m["height"]
                .as_u64()
                .ok_or_else(|| Fault::Malformed("resize.height".into()))?
                .clamp(100, 2160);
            hub.fit_viewport(w as u32, h as u32)
                .await
                .map_err(Fault::Browser)?;
            Ok(Outcome::Done)
        }
        // A round-trip probe (the SDK's `rtt`): echoed, and not activity.
        "rtt" => Ok(Outcome::Reply(
            json!({"t": "rtt", "ts": num(&m["ts"], 1e15).unwrap_or(0.0)}),
        )),
        "video_paused" => m["paused"]
            .as_bool()
            .map(Outcome::VideoPaused)
            .ok_or_else(|| Fault::Malformed("video_paused.paused".into())),
        "tabs_call" => tabs_call(live, user, m).await,
        "tabs_listen" => {
            let events = m["events"]
                .as_array()
                .ok_or_else(|| Fault::Malformed("tabs_listen.events".into()))?;
            let kinds = events
                .iter()
                .map(|e| e.as_str().and_then(super::chrome_tabs::EventKind::parse))
                .collect::<Option<_>>()
                .ok_or_else(|| Fault::Malformed("tabs_listen.events: not a tabs event".into()))?;
            Ok(Outcome::Listen(kinds))
        }
        _ => Err(Fault::Malformed(format!("unknown message type `{t}`"))),
    }
}

/// `{"t": "tabs_call", "i", "m", "a"}`: `chrome.tabs.<m>(...a)` for a user with
/// `chrome_apis`, answered `{"t": "tabs_result", "i", "r"}` or `{..., "e": message}`.
async fn tabs_call(live: &Live, user: &User, m: &Value) -> Result<Outcome, Fault> {
    let i = m["i"]
        .as_u64()
        .ok_or_else(|| Fault::Malformed("tabs_call.i".into()))?;
    let args = match &m["a"] {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        _ => return Err(Fault::Malformed("tabs_call.a must be an array".into())),
    };
    let method = m["m"].as_str().and_then(super::chrome_tabs::Method::parse);
    let r = match method {
        _ if !user.has(Role::ChromeApis) => {
            Err("this user may not use the tabs API (role chrome_apis)".to_string())
        }
        None => Err(format!("not a tabs method: {}", m["m"])),
        // What changes the browser is input: control, not disabled, not preempted.
        Some(method) if !method.reads_only() && !live.accept_input(user) => Err(format!(
            "tabs.{} changes the browser: this user may not control it now (role control)",
            method.name()
        )),
        Some(method) => live
            .tabs
            .call(method, args)
            .await
            .map_err(|e| e.to_string()),
    };
    Ok(Outcome::Reply(match r {
        Ok(v) => json!({"t": "tabs_result", "i": i, "r": v}),
        Err(e) => json!({"t": "tabs_result", "i": i, "e": e}),
    }))
}

fn button_of(m: &Value) -> Result<Option<Button>, Fault> {
    Ok(match m["button"].as_str().unwrap_or("none") {
        "none" => None,
        "left" => Some(Button::Left),
        "middle" => Some(Button::Middle),
        "right" => Some(Button::Right),
        "back" => Some(Button::Back),
        "forward" => Some(Button::Forward),
        _ => return Err(Fault::Malformed("mouse.button".into())),
    })
}

/// Input on a display (the whole browser): pointer, wheel, keys and text go in at the X
/// level, and a resize changes the screen. `None`: not a display message (tabs and
/// navigation go through the hub).
async fn on_display(
    d: &Display,
    live: &Live,
    user: &User,
    t: &str,
    m: &Value,
) -> Option<Result<Outcome, Fault>> {
    if t == "ime" {
        // A composition in progress shows in the page as in the page-only view (underlined,
        // as the person's own browser shows it); its result, `text`, then replaces it.
        let composing = m["text"].as_str().is_some_and(|x| !x.is_empty());
        user.composing.store(composing, Ordering::Relaxed);
        return None;
    }
    if !matches!(t, "mouse" | "wheel" | "key" | "text" | "paste" | "resize") {
        return None;
    }
    let browser = |e: crate::display::Error| Fault::Browser(e.to_string());
    let xy = |what: &str| -> Result<(f64, f64), Fault> {
        Ok((
            num(&m["x"], 1e5).ok_or_else(|| Fault::Malformed(format!("{what}.x")))?,
            num(&m["y"], 1e5).ok_or_else(|| Fault::Malformed(format!("{what}.y")))?,
        ))
    };
    let r = async {
        match t {
            "mouse" => {
                let ty = m["type"].as_str().unwrap_or_default();
                let (x, y) = xy("mouse")?;
                let button = button_of(m)?;
                match (ty, button) {
                    ("mouseMoved", _) | (_, None) => {
                        live.share_cursor(user, x, y);
                        d.input.pointer(x, y).await.map_err(browser)?;
                    }
                    ("mousePressed", Some(b)) => {
                        d.input.button(x, y, b, true).await.map_err(browser)?
                    }
                    ("mouseReleased", Some(b)) => {
                        d.input.button(x, y, b, false).await.map_err(browser)?
                    }
                    _ => {
                        return Err(Fault::Malformed(
                            "mouse.type must be mousePressed, mouseReleased or mouseMoved".into(),
                        ))
                    }
                }
                Ok(Outcome::Done)
            }
            "wheel" => {
                let (x, y) = xy("wheel")?;
                let (dx, dy) = (
                    num(&m["deltaX"], 1e5).unwrap_or(0.0),
                    num(&m["deltaY"], 1e5).unwrap_or(0.0),
                );
                d.input.wheel(x, y, dx, dy).await.map_err(browser)?;
                Ok(Outcome::Done)
            }
            "key" => {
                let ty = m["type"].as_str().unwrap_or_default();
                if !matches!(ty, "keyDown" | "keyUp") {
                    return Err(Fault::Malformed("key.type must be keyDown or keyUp".into()));
                }
                let key = m["key"]
                    .as_str()
                    .ok_or_else(|| Fault::Malformed("key.key".into()))?;
                let code = m["code"].as_str().unwrap_or_default();
                if key.len() > 32 || code.len() > 32 {
                    return Err(Fault::Malformed("key.key too long".into()));
                }
                let down = ty == "keyDown";
                // A Mac viewer's Cmd does what Ctrl does in the (Linux) browser: copy, paste,
                // new tab, find...
                let as_key = if key == "Meta" { "Control" } else { key };
                d.input
                    .key(code.to_string(), as_key.to_string(), down)
                    .await
                    .map_err(browser)?;
                // Ctrl/Cmd+C (or X) copied in the browser: the text reaches the viewer's clipboard.
                let copy =
                    down && matches!(shortcut_command(key, modifiers(m)), Some("copy" | "cut"));
                if copy && user.has(Role::ClipboardCopy) {
                    // Chromium takes the selection as it handles the key: give it a moment.
                    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
                    if let Some(text) = d.input.clipboard().await.map_err(browser)? {
                        return Ok(Outcome::Reply(json!({"t": "clipboard", "text": text})));
                    }
                }
                Ok(Outcome::Done)
            }
            "text" | "paste" => {
                let text = m["text"]
                    .as_str()
                    .ok_or_else(|| Fault::Malformed("text".into()))?;
                if t == "text" && user.composing.swap(false, Ordering::Relaxed) {
                    // The result of a composition shown in the page: it replaces it there.
                    live.hub
                        .on_active("Input.insertText", json!({"text": text}))
                        .await
                        .map_err(Fault::Browser)?;
                } else {
                    d.input.text(text.to_string()).await.map_err(browser)?;
                }
                Ok(Outcome::Done)
            }
            "resize" => {
                if !user.has(Role::Resize) {
                    return Ok(Outcome::Dropped);
                }
                let side = |k: &str| {
                    m[k].as_u64()
                        .ok_or_else(|| Fault::Malformed(format!("resize.{k}")))
                };
                let size = crate::display::screen::clamp(side("width")?, side("height")?);
                if d.capture.size() == size {
                    return Ok(Outcome::Done);
                }
                match d.input.resize(size).await {
                    // Xvfb: the screen keeps the session's size.
                    Err(crate::display::Error::NotResizable) => return Ok(Outcome::Dropped),
                    r => r.map_err(browser)?,
                }
                live.hub.fill_screen(size).await.map_err(Fault::Browser)?;
                Ok(Outcome::Done)
            }
            _ => Ok(Outcome::Dropped),
        }
    }
    .await;
    Some(r)
}

async fn key(live: &Live, user: &User, m: &Value) -> Result<Outcome, Fault> {
    let hub = &live.hub;
    let ty = m["type"].as_str().unwrap_or_default();
    if !matches!(ty, "keyDown" | "keyUp") {
        return Err(Fault::Malformed("key.type must be keyDown or keyUp".into()));
    }
    let key = m["key"]
        .as_str()
        .ok_or_else(|| Fault::Malformed("key.key".into()))?;
    if key.len() > 32 {
        return Err(Fault::Malformed("key.key too long".into()));
    }
    let mods = modifiers(m);
    let code = m["keyCode"].as_u64().unwrap_or(0).min(255);
    let text = m["text"]
        .as_str()
        .filter(|t| t.chars().count() <= 2 && ty == "keyDown");
    let command = if ty == "keyDown" {
        shortcut_command(key, mods)
    } else {
        None
    };
    let mut p = json!({
        "type": if ty == "keyUp" { "keyUp" } else if text.is_some() { "keyDown" } else { "rawKeyDown" },
        "key": key,
        "code": m["code"].as_str().unwrap_or_default(),
        "windowsVirtualKeyCode": code,
        "nativeVirtualKeyCode": code,
        "modifiers": mods,
    });
    if let Some(t) = text {
        p["text"] = json!(t);
        p["unmodifiedText"] = json!(t);
    }
    if let Some(c) = command {
        p["commands"] = json!([c]);
    }
    hub.on_active("Input.dispatchKeyEvent", p)
        .await
        .map_err(Fault::Browser)?;
    if command == Some("copy") && user.has(Role::ClipboardCopy) {
        let r = hub
            .on_active(
                "Runtime.evaluate",
                json!({"returnByValue": true, "expression": "(() => { const e = document.activeElement; \
                    if (e && typeof e.selectionStart === 'number' && typeof e.value === 'string') \
                    return e.value.substring(e.selectionStart, e.selectionEnd); \
                    return String(getSelection()); })()"}),
            )
            .await.map_err(Fault::Browser)?;
        let text = r["result"]["value"].as_str().unwrap_or_default();
        return Ok(Outcome::Reply(json!({"t": "clipboard", "text": text})));
    }
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_and_urls() {
        assert_eq!(shortcut_command("a", 2), Some("selectAll"));
        assert_eq!(shortcut_command("A", 4), Some("selectAll"));
        assert_eq!(shortcut_command("z", 2 | 8), Some("redo"));
        assert_eq!(shortcut_command("a", 0), None);
        assert_eq!(shortcut_command("a", 8), None);
        assert!(navigable("https://example.com"));
        assert!(!navigable("javascript:alert(1)"));
        assert!(!navigable("file:///etc/passwd"));
        assert!(!navigable("chrome://settings"));
    }
}
