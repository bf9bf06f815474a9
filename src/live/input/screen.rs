//! Input on a display (the whole browser): pointer, wheel, keys and text go in at the X
//! level ([`crate::display::Input`]), and a resize changes the screen. Tabs, navigation and
//! the rest go through the hub ([`super::page`]).

use std::sync::atomic::Ordering;

use serde_json::json;

use super::{Fault, Outcome};
use crate::display::Display;
use crate::live::protocol::{Key, Message, Mouse, MouseAction};
use crate::live::{Live, Role, User};

fn browser(e: crate::display::Error) -> Fault {
    Fault::Browser(e.to_string())
}

/// Handles `msg` on the display `d`; `None`: not a display message.
pub(super) async fn handle(
    d: &Display,
    live: &Live,
    user: &User,
    msg: &Message,
) -> Option<Result<Outcome, Fault>> {
    Some(match msg {
        Message::Ime(text) => {
            // A composition in progress shows in the page as in the page-only view
            // (underlined, as the person's own browser shows it); its result, `text`, then
            // replaces it.
            user.composing.store(!text.is_empty(), Ordering::Relaxed);
            return None;
        }
        Message::Mouse(m) => mouse(d, live, user, m).await,
        Message::Wheel(w) => d
            .input
            .wheel(&user.id, (w.x, w.y), w.dx, w.dy)
            .await
            .map(|()| Outcome::Done)
            .map_err(browser),
        Message::Key(k) => key(d, user, k).await,
        Message::Text { text, pasted } => {
            if !pasted && user.composing.swap(false, Ordering::Relaxed) {
                // The result of a composition shown in the page: it replaces it there.
                live.hub
                    .on_active("Input.insertText", json!({"text": text}))
                    .await
                    .map(|_| Outcome::Done)
                    .map_err(Fault::Browser)
            } else {
                // Checked again before each run of it: a long paste stops once its sender
                // is removed or no longer in control.
                let go_on = || !user.is_removed() && live.accept_input(user);
                match d.input.text(&user.id, text.clone(), go_on).await {
                    Ok(true) => Ok(Outcome::Done),
                    Ok(false) => Ok(Outcome::Dropped),
                    Err(e) => Err(browser(e)),
                }
            }
        }
        Message::Resize { width, height } => resize(d, live, *width, *height).await,
        _ => return None,
    })
}

async fn mouse(d: &Display, live: &Live, user: &User, m: &Mouse) -> Result<Outcome, Fault> {
    match (m.action, m.button) {
        (MouseAction::Moved, _) | (_, None) => {
            live.share_cursor(user, m.x, m.y);
            d.input.pointer(&user.id, m.x, m.y).await.map_err(browser)?;
        }
        (MouseAction::Pressed, Some(b)) => d
            .input
            .button(&user.id, (m.x, m.y), b, true)
            .await
            .map_err(browser)?,
        (MouseAction::Released, Some(b)) => {
            d.input
                .button(&user.id, (m.x, m.y), b, false)
                .await
                .map_err(browser)?;
        }
    }
    Ok(Outcome::Done)
}

async fn key(d: &Display, user: &User, k: &Key) -> Result<Outcome, Fault> {
    // A Mac viewer's Cmd does what Ctrl does in the (Linux) browser: copy, paste, new tab,
    // find...
    let as_key = if k.key == "Meta" { "Control" } else { &k.key };
    d.input
        .key(&user.id, k.code.clone(), as_key.to_string(), k.down)
        .await
        .map_err(browser)?;
    // Ctrl/Cmd+C (or X) copied in the browser: the text reaches the viewer's clipboard.
    let copy = k.down && matches!(k.modifiers.shortcut(&k.key), Some("copy" | "cut"));
    if copy && user.has(Role::ClipboardCopy) {
        // Chromium takes the selection as it handles the key: give it a moment.
        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        if let Some(text) = d.input.clipboard().await.map_err(browser)? {
            return Ok(Outcome::Reply(json!({"t": "clipboard", "text": text})));
        }
    }
    Ok(Outcome::Done)
}

async fn resize(d: &Display, live: &Live, width: u64, height: u64) -> Result<Outcome, Fault> {
    let size = crate::display::screen::clamp(width, height);
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
