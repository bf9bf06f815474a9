//! What goes between the person and the browser besides the picture: the sound it plays,
//! text typed in any script and copies back to the viewer, and the page-only view a session
//! falls back to where there is no X server.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::viewer::Viewer;
use crate::display::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_browser_plays_reaches_the_viewer() {
    let OnPage {
        dir: _dir,
        d,
        s,
        mut cdp,
    } = on_page("audio", None).await;
    let mut v = Viewer::start().await;
    let a = v
        .ask(json!({"cmd": "open", "name": "a", "url": s["embed_url"], "width": 1280, "height": 720}))
        .await;
    assert_eq!(
        a["audio"]["muted"], true,
        "sound plays before a gesture: {a}"
    );
    // Silence costs nothing: nothing plays yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let quiet = v.ask(json!({"cmd": "state", "name": "a"})).await;
    assert_eq!(quiet["audio"]["packets"], 0, "{quiet}");
    // The person clicks the page's play button (a gesture here and there).
    let (x, y, w, h) = on_screen(&mut cdp, "#play").await;
    click(&mut v, x + w / 2.0, y + h / 2.0).await;
    page_until(
        &mut cdp,
        "a.paused",
        json!(false),
        "the audio element plays",
    )
    .await;
    v.ask(json!({"cmd": "waitFor", "name": "a",
        "expr": "window.__pv.audio.packets > 25 && window.__pv.audio.rms > 0.1 && Math.abs(window.__pv.audio.freq - 440) < 30 && !window.__pv.audio.muted"}))
        .await;
    v.quit().await;
    // Counted in /metrics: the pictures and the sound the session's viewer was sent.
    let (_, m) = http_raw(&d.addr, "GET", "/metrics", None, None).await;
    let value = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(value("pv_live_audio_bytes_total") > 25 * 960, "{m}");
    assert!(value("pv_live_picture_bytes_total") > 0, "{m}");
    cdp.close().await;
    d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_x_server_sessions_fall_back_to_the_page_only_view() {
    // A PATH with bubblewrap and Chromium but no X server (Xvnc, Xvfb).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let bwrap = profile_vault::browser::on_path("bwrap").expect("bubblewrap is installed");
    std::os::unix::fs::symlink(bwrap, bin.join("bwrap")).unwrap();
    let chromium = profile_vault::browser::find_binary(None).unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[
            ("PATH", bin.to_str().unwrap()),
            ("PV_CHROMIUM", chromium.to_str().unwrap()),
        ],
    );
    let (st, r) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 200, "{r}");
    let c = &r["checks"];
    assert_eq!(
        (&c["display"], &c["sound"]),
        (&json!(false), &json!(false)),
        "{r}"
    );
    assert!(
        c["display_detail"]
            .as_str()
            .unwrap()
            .contains("no X server is installed"),
        "{r}"
    );
    assert!(
        d.log_text().contains("no X server is installed"),
        "no warning at start"
    );
    let s = d.create(KEY_T1, json!({"profile": {"save": false}})).await;
    // The viewer gets the page's screencast: whole JPEG frames, no display.
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    let mut meta = None;
    let mut frame = None;
    while frame.is_none() {
        let m = tokio::time::timeout(
            Duration::from_secs(15),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        .expect("a frame")
        .unwrap()
        .unwrap();
        match m {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["t"] == "meta" {
                    meta = Some(v);
                }
            }
            tokio_tungstenite::tungstenite::Message::Binary(b) => frame = Some(b),
            _ => {}
        }
    }
    let meta = meta.expect("meta before the first frame");
    assert!(meta.get("display").is_none_or(|d| d == false), "{meta}");
    let frame = frame.unwrap();
    assert_eq!(&frame[..2], &[0xff, 0xd8], "a whole JPEG");
    d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
        .await;
}

/// The live-view socket of another person: a viewer URL minted with `roles`.
async fn another_person(
    d: &Daemon,
    s: &Value,
    roles: &[&str],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let minted = mint_viewer(d, s, roles).await;
    let socket = format!(
        "ws://{}/v0/vm/{}/embed/socket?token={}",
        d.addr,
        s["session_id"].as_str().unwrap(),
        query_token(minted["embed_url"].as_str().unwrap())
    );
    tokio_tungstenite::connect_async(socket).await.unwrap().0
}

/// 44 letters no US keyboard map has.
const MANY: &str = " абвгдежзийклмнопрстуфхцчшщъыьэюя αβγδεζηθικλμ";

/// A key event of the viewer protocol.
fn key(ty: &str, key: &str, code: &str, mods: u32) -> Value {
    json!({"t": "key", "type": ty, "key": key, "code": code, "modifiers": mods})
}

/// Clicks the middle of the page's field `#t` (at `at`) through `ws`; returns once it has focus.
async fn focus_field(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    cdp: &mut Cdp,
    at: (f64, f64, f64, f64),
) {
    click_middle(ws, at).await;
    page_until(
        cdp,
        "document.activeElement.id",
        json!("t"),
        "the field has focus",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_in_any_script_goes_in_and_a_copy_reaches_the_viewer() {
    let OnPage {
        dir: _dir,
        d,
        s,
        mut cdp,
    } = on_page("text", Some(&["control", "clipboard_copy"])).await;
    let (x, y, w, h) = on_screen(&mut cdp, "#t").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    focus_field(&mut ws, &mut cdp, (x, y, w, h)).await;
    cdp.eval("window.keys_ = []; t.addEventListener('keydown', (e) => keys_.push(e.key + (e.shiftKey ? '+Shift' : ''))); 1")
        .await;
    // Keys (with Shift), then committed text in scripts the keyboard map lacks. A key whose
    // value the map has only in the other Shift column (a German Shift+7 is "/"; a "Q" sent
    // without Shift, as scripted input sends it) means that value; Shift stays held for a key
    // it does not change (Shift+Space); Caps Lock turns letters as the viewer's did.
    say(
        &mut ws,
        &[
            key("keyDown", "Shift", "ShiftLeft", 8),
            key("keyDown", "H", "KeyH", 8),
            key("keyUp", "H", "KeyH", 8),
            key("keyDown", "/", "Digit7", 8),
            key("keyUp", "/", "Digit7", 8),
            key("keyDown", " ", "Space", 8),
            key("keyUp", " ", "Space", 8),
            key("keyUp", "Shift", "ShiftLeft", 0),
            key("keyDown", "i", "KeyI", 0),
            key("keyUp", "i", "KeyI", 0),
            key("keyDown", "Q", "KeyQ", 0),
            key("keyUp", "Q", "KeyQ", 0),
            key("keyDown", "CapsLock", "CapsLock", 0),
            key("keyUp", "CapsLock", "CapsLock", 0),
            key("keyDown", "A", "KeyA", 0),
            key("keyUp", "A", "KeyA", 0),
            key("keyDown", "Shift", "ShiftLeft", 8),
            key("keyDown", "b", "KeyB", 8),
            key("keyUp", "b", "KeyB", 8),
            key("keyUp", "Shift", "ShiftLeft", 0),
            key("keyDown", "CapsLock", "CapsLock", 0),
            key("keyUp", "CapsLock", "CapsLock", 0),
            json!({"t": "text", "text": " — héllo, мир, 日本語 ✓"}),
            // More characters the map lacks than it has spare keys: spares are reused.
            json!({"t": "text", "text": MANY}),
        ],
    )
    .await;
    page_until(
        &mut cdp,
        "document.querySelector('#t').value",
        json!(format!("H/ iQAb — héllo, мир, 日本語 ✓{MANY}")),
        "typed text",
    )
    .await;
    let keys = cdp.eval("keys_.join(',')").await;
    assert!(
        keys.as_str().unwrap_or_default().contains(" +Shift"),
        "Shift+Space: {keys}"
    );
    // An IME composition shows in the page, then its result replaces it.
    say(
        &mut ws,
        &[
            json!({"t": "ime", "text": "か"}),
            json!({"t": "ime", "text": "かな"}),
            json!({"t": "text", "text": "仮名"}),
        ],
    )
    .await;
    let want = format!("H/ iQAb — héllo, мир, 日本語 ✓{MANY}仮名");
    page_until(
        &mut cdp,
        "document.querySelector('#t').value",
        json!(want),
        "typed text",
    )
    .await;
    // Ctrl+A, Ctrl+C in the browser: the viewer is handed the text for its clipboard, read
    // where the page's scripts cannot answer for it.
    cdp.eval("String.prototype.substring = function () { return 'forged by the page'; }; window.getSelection = () => 'forged too'; 1")
        .await;
    say(
        &mut ws,
        &[
            key("keyDown", "Control", "ControlLeft", 2),
            key("keyDown", "a", "KeyA", 2),
            key("keyUp", "a", "KeyA", 2),
            key("keyDown", "c", "KeyC", 2),
            key("keyUp", "c", "KeyC", 2),
            key("keyUp", "Control", "ControlLeft", 0),
        ],
    )
    .await;
    let got = message(&mut ws, "clipboard").await;
    assert_eq!(got["text"], json!(want));
    // Keys held at once are bounded: 40 different keys pressed, none released yet, type
    // 32 (`display::input::MAX_HELD`): every one held stayed in a map looked through on each
    // key, and a viewer pressing codes without end grew it without bound.
    cdp.eval("t.value = ''; 1").await;
    let keys40: Vec<String> = "abcdefghijklmnopqrstuvwx0123456789-=[];'"
        .chars()
        .map(String::from)
        .collect();
    let mut flood: Vec<Value> = keys40
        .iter()
        .enumerate()
        .map(|(i, k)| key("keyDown", k, &format!("Flood{i}"), 0))
        .collect();
    flood.extend(
        keys40
            .iter()
            .enumerate()
            .map(|(i, k)| key("keyUp", k, &format!("Flood{i}"), 0)),
    );
    flood.extend([key("keyDown", "z", "KeyZ", 0), key("keyUp", "z", "KeyZ", 0)]);
    say(&mut ws, &flood).await;
    page_until(
        &mut cdp,
        "t.value.endsWith('z')",
        json!(true),
        "the key after the flood",
    )
    .await;
    let typed = cdp.eval("t.value").await;
    assert_eq!(
        typed,
        json!(format!(
            "{}z",
            &"abcdefghijklmnopqrstuvwx0123456789-=[];'"[..32]
        )),
        "keys held at once"
    );
    cdp.close().await;
    d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
        .await;
}

/// The display's keyframes made so far (`/metrics`).
async fn keyframes_made(d: &Daemon) -> u64 {
    let (_, m) = http_raw(&d.addr, "GET", "/metrics", None, None).await;
    m.lines()
        .find_map(|l| l.strip_prefix("pv_live_pictures_total{kind=\"keyframe\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no keyframe count in {m}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_resuming_its_picture_in_a_loop_does_not_make_the_capture_encode_each_time() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let OnPage {
        dir: _dir,
        d,
        s,
        cdp,
    } = on_page("select", None).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    let pictures = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, n: usize| {
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) if b.first() == Some(&1) => got += 1,
                Ok(Some(Ok(_))) => {}
                other => panic!("{got} of {n} pictures, then {other:?}"),
            }
        }
    };
    // The picture the viewer joins with.
    pictures(&mut ws, 1).await;
    let before = keyframes_made(&d).await;
    // Any viewer may pause its picture (one without a role too): 60 pauses and resumes at once, each resume
    // answered with the picture as it is now.
    let flaps: Vec<Value> = (0..60)
        .flat_map(|_| {
            [
                json!({"t": "video_paused", "paused": true}),
                json!({"t": "video_paused", "paused": false}),
            ]
        })
        .collect();
    say(&mut ws, &flaps).await;
    pictures(&mut ws, 60).await;
    // The page does not change: the capture sends its last keyframe again (one a resume
    // made each, before).
    let made = keyframes_made(&d).await - before;
    assert!(
        made <= 5,
        "{made} keyframes for 60 resumes of an unchanged screen"
    );
    cdp.close().await;
    d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_paste_lets_others_type_and_stops_when_its_sender_is_removed() {
    let OnPage {
        dir: _dir,
        d,
        s,
        mut cdp,
    } = on_page("text", Some(&["control"])).await;
    let id = s["session_id"].as_str().unwrap();
    let (x, y, w, h) = on_screen(&mut cdp, "#t").await;
    let (mut a, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    let a_id = message(&mut a, "hello").await["user_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut b = another_person(&d, &s, &["control"]).await;
    focus_field(&mut a, &mut cdp, (x, y, w, h)).await;
    // 400 characters the keyboard map lacks, all different: typed in runs of as many as
    // there are spare keys, each run waiting for the browser (seconds in all).
    let paste: String = (0x4E00..0x4E00 + 400).filter_map(char::from_u32).collect();
    say(&mut a, &[json!({"t": "paste", "text": paste})]).await;
    let typed = "[...document.querySelector('#t').value]";
    page_until(
        &mut cdp,
        &format!("{typed}.length >= 32"),
        json!(true),
        "the paste's first run",
    )
    .await;
    // The other person's key goes in between two runs of the paste, not after all of it.
    say(
        &mut b,
        &[key("keyDown", "z", "KeyZ", 0), key("keyUp", "z", "KeyZ", 0)],
    )
    .await;
    page_until(
        &mut cdp,
        &format!("(v => v.includes('z') && v[v.length - 1] !== 'z')({typed})"),
        json!(true),
        "the other person's key, then more of the paste",
    )
    .await;
    // Its sender is removed: the rest of the paste is dropped.
    let (st, v) = d
        .call(
            "DELETE",
            &format!("/v0/vm/{id}/embed/users/{a_id}"),
            Some(s["admin_token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let then = cdp.eval(&format!("{typed}.length")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = cdp.eval(&format!("{typed}.length")).await;
    assert_eq!(then, now, "the paste went on after its sender was removed");
    assert!(
        now.as_u64().unwrap() < 401,
        "all of the paste went in: {now}"
    );
    cdp.close().await;
    d.end_and_wait(KEY_T1, id).await;
}

/// One person holds Control down and another types: the other's key goes in as itself, not
/// as a shortcut (keys held are the holder's: they go up when someone else's input comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_one_viewer_holds_do_not_change_anothers() {
    let OnPage {
        dir: _dir,
        d,
        s,
        mut cdp,
    } = on_page("text", Some(&["control"])).await;
    let id = s["session_id"].as_str().unwrap();
    let (x, y, w, h) = on_screen(&mut cdp, "#t").await;
    let (mut a, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    message(&mut a, "hello").await;
    let mut b = another_person(&d, &s, &["control"]).await;
    message(&mut b, "hello").await;
    focus_field(&mut a, &mut cdp, (x, y, w, h)).await;
    cdp.eval("window.keys_ = []; t.addEventListener('keydown', (e) => keys_.push(e.key + (e.ctrlKey ? '+Ctrl' : ''))); 1")
        .await;
    say(&mut a, &[key("keyDown", "Control", "ControlLeft", 2)]).await;
    page_until(
        &mut cdp,
        "keys_.includes('Control+Ctrl')",
        json!(true),
        "the first person's Control",
    )
    .await;
    // The other's pointer moving leaves the first person's Control held (a Ctrl+A of theirs
    // is still one)...
    say(
        &mut b,
        &[json!({"t": "mouse", "type": "mouseMoved", "x": 5.0, "y": 300.0})],
    )
    .await;
    say(
        &mut a,
        &[key("keyDown", "a", "KeyA", 2), key("keyUp", "a", "KeyA", 2)],
    )
    .await;
    page_until(
        &mut cdp,
        "keys_.includes('a+Ctrl')",
        json!(true),
        "the first person's Ctrl+A after the other's pointer moved",
    )
    .await;
    // ... and the other's key goes in as itself.
    say(
        &mut b,
        &[key("keyDown", "v", "KeyV", 0), key("keyUp", "v", "KeyV", 0)],
    )
    .await;
    page_until(
        &mut cdp,
        "keys_.some(k => k.startsWith('v'))",
        json!(true),
        "the second person's key",
    )
    .await;
    assert_eq!(
        cdp.eval("keys_.filter(k => k.startsWith('v')).join()")
            .await,
        json!("v")
    );
    page_until(&mut cdp, "t.value", json!("v"), "the key typed").await;
    cdp.close().await;
    d.end_and_wait(KEY_T1, id).await;
}

/// The page's tabs (page targets), by URL.
async fn page_urls(cdp: &mut Cdp) -> Vec<String> {
    let t = cdp.raw("Target.getTargets", json!({})).await;
    t["result"]["targetInfos"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["type"] == "page")
        .map(|t| t["url"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A person in control uses the browser's own shortcuts: no incognito window the session does
/// not know opens, and closing the last tab does not end the session for everyone (the
/// browser ended, and the session with it): a blank tab takes its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_in_control_neither_leaves_the_session_nor_ends_it() {
    let OnPage {
        dir: _dir,
        d,
        s,
        mut cdp,
    } = on_page("text", Some(&["control"])).await;
    let id = s["session_id"].as_str().unwrap();
    let (x, y, w, h) = on_screen(&mut cdp, "#t").await;
    let (mut a, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    message(&mut a, "hello").await;
    focus_field(&mut a, &mut cdp, (x, y, w, h)).await;
    cdp.eval("window.keys_ = []; addEventListener('keydown', (e) => keys_.push(e.key + (e.ctrlKey ? '+Ctrl' : ''))); 1")
        .await;
    // Ctrl+Shift+N is no shortcut without incognito windows: the page gets it, and keeps
    // the focus (an incognito window took it).
    let chord = |k: &str, code: &str| {
        vec![
            key("keyDown", "Control", "ControlLeft", 2),
            key("keyDown", "Shift", "ShiftLeft", 10),
            key("keyDown", k, code, 10),
            key("keyUp", k, code, 10),
            key("keyUp", "Shift", "ShiftLeft", 2),
            key("keyUp", "Control", "ControlLeft", 0),
        ]
    };
    say(&mut a, &chord("N", "KeyN")).await;
    page_until(
        &mut cdp,
        "keys_.includes('N+Ctrl') && document.hasFocus()",
        json!(true),
        "Ctrl+Shift+N in the page",
    )
    .await;
    assert_eq!(page_urls(&mut cdp).await.len(), 1);
    // Ctrl+W on the only tab.
    say(
        &mut a,
        &[
            key("keyDown", "Control", "ControlLeft", 2),
            key("keyDown", "w", "KeyW", 2),
            key("keyUp", "w", "KeyW", 2),
            key("keyUp", "Control", "ControlLeft", 0),
        ],
    )
    .await;
    // (Target commands go to the browser: this client's page is gone.)
    let start = std::time::Instant::now();
    loop {
        let urls = page_urls(&mut cdp).await;
        if urls == ["about:blank"] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "after the last tab closed: {urls:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, v) = d
        .call("GET", &format!("/v0/vm/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(v["ended_at"].is_null() && v["termination"].is_null(), "{v}");
    cdp.close().await;
    d.end_and_wait(KEY_T1, id).await;
}
