//! Input as DevTools commands on the page shown (a browser without a display, or what the
//! display does not take): `Input.dispatchMouseEvent`, `Input.dispatchKeyEvent`,
//! `Input.insertText`, `Input.imeSetComposition`, and navigation through `Page.*`.

use serde_json::json;

use super::{navigable, Fault, Outcome};
use crate::live::hub::Hub;
use crate::live::protocol::{Key, Mouse, MouseAction, Nav, Wheel};
use crate::live::{Live, Role, User};

/// The name DevTools gives a button (`none` for none).
fn button_name(b: Option<crate::display::input::Button>) -> &'static str {
    use crate::display::input::Button;
    match b {
        None => "none",
        Some(Button::Left) => "left",
        Some(Button::Middle) => "middle",
        Some(Button::Right) => "right",
        Some(Button::Back) => "back",
        Some(Button::Forward) => "forward",
    }
}

pub(super) async fn mouse(live: &Live, user: &User, m: &Mouse) -> Result<Outcome, Fault> {
    if m.action == MouseAction::Moved {
        live.share_cursor(user, m.x, m.y);
    }
    live.hub
        .on_active(
            "Input.dispatchMouseEvent",
            json!({
                "type": m.action.name(), "x": m.x, "y": m.y, "button": button_name(m.button),
                "buttons": m.buttons, "clickCount": m.click_count, "modifiers": m.modifiers.0,
            }),
        )
        .await
        .map_err(Fault::Browser)?;
    Ok(Outcome::Done)
}

pub(super) async fn wheel(hub: &Hub, w: &Wheel) -> Result<Outcome, Fault> {
    hub.on_active(
        "Input.dispatchMouseEvent",
        json!({
            "type": "mouseWheel", "x": w.x, "y": w.y, "deltaX": w.dx, "deltaY": w.dy,
            "modifiers": w.modifiers.0,
        }),
    )
    .await
    .map_err(Fault::Browser)?;
    Ok(Outcome::Done)
}

pub(super) async fn text(hub: &Hub, text: &str) -> Result<Outcome, Fault> {
    if !text.is_empty() {
        hub.on_active("Input.insertText", json!({"text": text}))
            .await
            .map_err(Fault::Browser)?;
    }
    Ok(Outcome::Done)
}

pub(super) async fn ime(hub: &Hub, text: &str) -> Result<Outcome, Fault> {
    let n = text.chars().count();
    hub.on_active(
        "Input.imeSetComposition",
        json!({"text": text, "selectionStart": n, "selectionEnd": n}),
    )
    .await
    .map_err(Fault::Browser)?;
    Ok(Outcome::Done)
}

pub(super) async fn nav(hub: &Hub, n: Nav) -> Result<Outcome, Fault> {
    let step = match n {
        Nav::Reload => {
            hub.on_active("Page.reload", json!({}))
                .await
                .map_err(Fault::Browser)?;
            return Ok(Outcome::Done);
        }
        Nav::Back => -1,
        Nav::Forward => 1,
    };
    let h = hub
        .on_active("Page.getNavigationHistory", json!({}))
        .await
        .map_err(Fault::Browser)?;
    let to = h["currentIndex"].as_i64().unwrap_or(0) + step;
    if let Some(e) = usize::try_from(to).ok().and_then(|i| h["entries"].get(i)) {
        hub.on_active("Page.navigateToHistoryEntry", json!({"entryId": e["id"]}))
            .await
            .map_err(Fault::Browser)?;
    }
    Ok(Outcome::Done)
}

pub(super) async fn goto(hub: &Hub, url: &str) -> Result<Outcome, Fault> {
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

/// Reads the selection of the page shown (what a copy took), at most 1 Mi characters. It
/// runs in a world of its own ([`selection`]): the page's scripts cannot replace what it
/// calls, so a page cannot answer a copy with a string of hundreds of megabytes.
const SELECTION: &str = "(() => { const e = document.activeElement; \
    if (e && typeof e.selectionStart === 'number' && typeof e.value === 'string') \
    return e.value.substring(e.selectionStart, Math.min(e.selectionEnd, e.selectionStart + 1048576)); \
    return String(getSelection()).substring(0, 1048576); })()";

/// The selection of the active tab's main frame, read in an isolated world.
async fn selection(live: &Live) -> Result<String, Fault> {
    let tree = live
        .hub
        .on_active("Page.getFrameTree", json!({}))
        .await
        .map_err(Fault::Browser)?;
    let frame = tree["frameTree"]["frame"]["id"]
        .as_str()
        .ok_or_else(|| Fault::Browser("no main frame".into()))?;
    let world = live
        .hub
        .on_active(
            "Page.createIsolatedWorld",
            json!({"frameId": frame, "worldName": "profile-vault-selection"}),
        )
        .await
        .map_err(Fault::Browser)?;
    let context = world["executionContextId"]
        .as_i64()
        .ok_or_else(|| Fault::Browser("no isolated world".into()))?;
    let r = live
        .hub
        .on_active(
            "Runtime.evaluate",
            json!({"returnByValue": true, "expression": SELECTION, "contextId": context}),
        )
        .await
        .map_err(Fault::Browser)?;
    Ok(r["result"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

pub(super) async fn key(live: &Live, user: &User, k: &Key) -> Result<Outcome, Fault> {
    let command = if k.down {
        k.modifiers.shortcut(&k.key)
    } else {
        None
    };
    let ty = match (k.down, &k.text) {
        (false, _) => "keyUp",
        (true, Some(_)) => "keyDown",
        (true, None) => "rawKeyDown",
    };
    let mut p = json!({
        "type": ty,
        "key": k.key,
        "code": k.code,
        "windowsVirtualKeyCode": k.key_code,
        "nativeVirtualKeyCode": k.key_code,
        "modifiers": k.modifiers.0,
    });
    if let Some(t) = &k.text {
        p["text"] = json!(t);
        p["unmodifiedText"] = json!(t);
    }
    if let Some(c) = command {
        p["commands"] = json!([c]);
    }
    live.hub
        .on_active("Input.dispatchKeyEvent", p)
        .await
        .map_err(Fault::Browser)?;
    if command == Some("copy") && user.has(Role::ClipboardCopy) {
        let text = selection(live).await?;
        return Ok(Outcome::Reply(json!({"t": "clipboard", "text": text})));
    }
    Ok(Outcome::Done)
}
