//! The live view as a person uses it: a second headless Chromium (Playwright,
//! `tests/node/viewer.mjs`) opens `embed_url` of a real session and clicks, types, scrolls,
//! opens a popup; what it does is checked on the session's page over CDP, and what it sees
//! by sampling pixels of a screenshot of the viewer. Roles, tokens, presence and bookmarks
//! are checked through the API.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::api::cli_for;
use crate::common::daemon::*;
use crate::common::viewer::Viewer;

/// The page the session shows: a button, a counter, a text field, a popup opener, and enough
/// height to scroll. A click on the first button turns the background red.
async fn site() -> String {
    use axum::response::Html;
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>live-test</title>
<body style="margin:0;background:rgb(34,170,102);height:4000px">
<button id=b style="position:absolute;left:50px;top:50px;width:200px;height:80px">Click</button>
<button id=n style="position:absolute;left:50px;top:150px;width:200px;height:40px">Count</button>
<input id=i style="position:absolute;left:50px;top:220px;width:300px;height:40px">
<button id=p style="position:absolute;left:300px;top:50px;width:200px;height:80px">Popup</button>
<script>
window.count = 0;
b.onclick = () => { document.body.style.background = 'rgb(204,51,51)'; window.clicked = true; };
n.onclick = () => { window.count++; };
p.onclick = () => { window.open('/popup'); };
</script>"#,
                )
            }),
        )
        .route(
            "/popup",
            axum::routing::get(|| async {
                Html("<!doctype html><title>popup</title><body style=\"margin:0;background:rgb(20,40,220)\">popup")
            }),
        );
    let listener = tokio::net::TcpListener::bind(SITE_HOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A TCP relay to the daemon whose connections can all be cut at once (a network blip).
struct Blip {
    addr: String,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Blip {
    async fn start(to: &str) -> Blip {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (to, list) = (to.to_string(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut a, _)) = l.accept().await {
                let to = to.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut b) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                list.lock().unwrap().push(h.abort_handle());
            }
        });
        Blip { addr, conns }
    }

    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

fn near(rgb: &Value, want: [i64; 3]) -> bool {
    rgb.as_array().is_some_and(|a| {
        a.iter()
            .zip(want)
            .all(|(v, w)| (v.as_i64().unwrap_or(-999) - w).abs() <= 40)
    })
}

/// Polls `expr` on the session's page over CDP until it equals `want` (within 10 s).
async fn page_until(cdp: &mut Cdp, expr: &str, want: Value, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let got = cdp.eval(expr).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {expr} is {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_session_through_embed_url() {
    let site = site().await;
    let dir = tempfile::tempdir().unwrap();
    // The page-only view (headless browsers: `browser.display = "headless"`, or no Xvfb), with
    // the embed page's own tab strip and address bar; tests/display.rs has the whole browser.
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[("PV_DISPLAY", "headless")],
    );
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": true}, "start_url": format!("{site}/"), "width": 800, "height": 600,
                "timeout": {"offline": 6}, "default_roles": ["control", "clipboard_copy"]}),
        )
        .await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let admin = s["admin_token"].as_str().unwrap().to_string();
    let embed = s["embed_url"].as_str().unwrap().to_string();
    let viewer_token = query_token(&embed);
    let base = format!("/v0/vm/{id}/embed");

    // Tokens: embed_url carries its own; the viewer token opens the live view only.
    assert!(!embed.contains(&admin), "the admin token is in embed_url");
    assert_ne!(viewer_token, admin);
    for (method, path) in [
        ("GET", format!("/v0/vm/{id}")),
        ("DELETE", format!("/v0/vm/{id}")),
        ("POST", format!("/v0/vm/{id}/ping")),
        (
            "GET",
            format!("/v0/vm/{id}/cdp/json/version?token={viewer_token}"),
        ),
        ("GET", format!("/v0/vm/{id}/cdp?token={viewer_token}")),
        ("POST", format!("{base}/addRoles")),
        ("GET", "/v0/vm".to_string()),
    ] {
        let (st, v) = d.call(method, &path, Some(&viewer_token), None).await;
        assert_eq!(st, 401, "{method} {path} with a viewer token: {v}");
    }
    // Another site's page opens the viewer socket with the token (the token is the
    // credential: apps on the Hyperbeam SDK run on their own origins), and reads embed_url.
    let other = {
        let mut sock = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
        sock.write_all(format!("GET {base}/socket?token={viewer_token} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://app.example\r\n\r\n", d.addr).as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut sock, &mut buf)
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(other.starts_with("HTTP/1.1 101"), "{other}");
    for t in [&admin, &KEY_T1.to_string()] {
        let (st, v) = d
            .call("GET", &format!("{base}/socket?token={t}"), None, None)
            .await;
        assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    }
    let (st, page) = http_raw(
        &d.addr,
        "GET",
        &format!("{base}?token={viewer_token}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(
        !page.contains(&admin) && !page.contains(&viewer_token),
        "a token is in the page"
    );
    let (_, head) = {
        let mut sock = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
        sock.write_all(
            format!(
                "GET {base}?token={viewer_token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut sock, &mut out)
            .await
            .unwrap();
        (
            (),
            out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase(),
        )
    };
    for h in [
        "content-security-policy: default-src 'none'",
        "frame-ancestors *",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
    ] {
        assert!(head.contains(h), "{h} missing in\n{head}");
    }

    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    let mut v = Viewer::start().await;
    let a = v
        .ask(json!({"cmd": "open", "name": "a", "url": embed}))
        .await;
    assert_eq!(a["roles"], json!(["control", "clipboard_copy"]), "{a}");
    let p = v.ask(json!({"cmd": "page", "name": "a"})).await;
    assert!(
        !p["url"].as_str().unwrap().contains("token="),
        "the token stays in the address bar: {p}"
    );
    // It shows the page.
    let px = v
        .ask(json!({"cmd": "pixel", "name": "a", "x": 600, "y": 400}))
        .await;
    assert!(
        near(&px, [34, 170, 102]),
        "viewer does not show the page's green: {px}"
    );

    // A click through the viewer clicks the page; the viewer then shows its effect.
    v.ask(json!({"cmd": "click", "name": "a", "x": 150, "y": 90}))
        .await;
    page_until(
        &mut cdp,
        "window.clicked === true",
        json!(true),
        "click reached the page",
    )
    .await;
    let mut shown = false;
    for _ in 0..50 {
        let px = v
            .ask(json!({"cmd": "pixel", "name": "a", "x": 600, "y": 400}))
            .await;
        if near(&px, [204, 51, 51]) {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown, "the viewer never showed the red background");

    // Typing: Shift, plain keys and Backspace arrive exactly; Ctrl+A selects all.
    v.ask(json!({"cmd": "click", "name": "a", "x": 200, "y": 240}))
        .await;
    v.ask(json!({"cmd": "press", "name": "a", "key": "Shift+KeyA"}))
        .await;
    v.ask(json!({"cmd": "type", "name": "a", "text": "bcx"}))
        .await;
    v.ask(json!({"cmd": "press", "name": "a", "key": "Backspace"}))
        .await;
    page_until(
        &mut cdp,
        "document.getElementById('i').value",
        json!("Abc"),
        "typed text arrived",
    )
    .await;
    v.ask(json!({"cmd": "press", "name": "a", "key": "Control+a"}))
        .await;
    v.ask(json!({"cmd": "type", "name": "a", "text": "Zé"}))
        .await;
    page_until(
        &mut cdp,
        "document.getElementById('i').value",
        json!("Zé"),
        "Ctrl+A replaced the text",
    )
    .await;

    // The wheel scrolls.
    v.ask(json!({"cmd": "wheel", "name": "a", "x": 600, "y": 400, "dy": 600}))
        .await;
    page_until(
        &mut cdp,
        "window.scrollY > 0",
        json!(true),
        "the wheel scrolled",
    )
    .await;
    cdp.eval("window.scrollTo(0, 0)").await;

    // A view-only viewer (minted without roles) changes nothing ...
    let (st, minted) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/viewers"),
            Some(&admin),
            Some(r#"{"roles": []}"#),
        )
        .await;
    assert_eq!(st, 200, "{minted}");
    let b = v
        .ask(json!({"cmd": "open", "name": "b", "url": minted["embed_url"]}))
        .await;
    let b_id = b["userId"].as_str().unwrap().to_string();
    assert_eq!(b["control"], false, "{b}");
    let (_, users) = d
        .call("GET", &format!("/v0/vm/{id}/users"), Some(&admin), None)
        .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 2, "{users}");
    let (_, info) = d
        .call("GET", &format!("/v0/vm/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(info["viewers"].as_array().unwrap().len(), 2, "{info}");
    v.ask(json!({"cmd": "click", "name": "b", "x": 150, "y": 170}))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        cdp.eval("window.count").await,
        json!(0),
        "a view-only viewer clicked"
    );
    // ... until addRoles gives it control.
    let (st, r) = d
        .call(
            "POST",
            &format!("{base}/addRoles"),
            Some(&admin),
            Some(&json!([[b_id], ["control"]]).to_string()),
        )
        .await;
    assert_eq!((st, r["changed"].as_u64()), (200, Some(1)), "{r}");
    v.ask(json!({"cmd": "waitFor", "name": "b", "expr": "window.__pv.control === true"}))
        .await;
    v.ask(json!({"cmd": "click", "name": "b", "x": 150, "y": 170}))
        .await;
    page_until(
        &mut cdp,
        "window.count",
        json!(1),
        "control granted by addRoles",
    )
    .await;
    // Removing a user disconnects it.
    let (st, _) = d
        .call(
            "DELETE",
            &format!("{base}/users/{b_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, 200);
    v.ask(json!({"cmd": "waitFor", "name": "b", "expr": "window.__pv.lastEnded === 'kicked' || window.__pv.state === 'refused'"})).await;
    let (_, users) = d
        .call("GET", &format!("/v0/vm/{id}/users"), Some(&admin), None)
        .await;
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    // Its token is revoked: the page (or anyone holding the URL) cannot come back with it.
    let b_token = query_token(minted["embed_url"].as_str().unwrap());
    let (st, _) = d
        .call(
            "GET",
            &format!("/v0/vm/{id}/embed?token={b_token}"),
            None,
            None,
        )
        .await;
    assert_eq!(st, 401, "a removed viewer's token still opens the view");
    let socket = format!("ws://{}/v0/vm/{id}/embed/socket?token={b_token}", d.addr);
    assert!(
        tokio_tungstenite::connect_async(socket).await.is_err(),
        "a removed viewer's token still opens the socket"
    );

    // window.open moves the view to the new tab.
    v.ask(json!({"cmd": "click", "name": "a", "x": 400, "y": 90}))
        .await;
    v.ask(json!({"cmd": "waitFor", "name": "a",
        "expr": "window.__pv.tabs.length === 2 && window.__pv.tabs.some(t => t.active && t.url.endsWith('/popup'))"}))
        .await;
    let mut blue = false;
    for _ in 0..50 {
        let px = v
            .ask(json!({"cmd": "pixel", "name": "a", "x": 400, "y": 300}))
            .await;
        if near(&px, [20, 40, 220]) {
            blue = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(blue, "the viewer does not show the popup");

    // A viewer with `resize` gets the browser's viewport matched to its frame (900 x 500 page,
    // less the 66 px toolbar), and one behind a network blip reconnects by itself, as the
    // same user (the page comes back with its hello's secret).
    let (st, minted) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/viewers"),
            Some(&admin),
            Some(r#"{"roles": ["resize"]}"#),
        )
        .await;
    assert_eq!(st, 200, "{minted}");
    let proxy = Blip::start(&d.addr).await;
    let url = minted["embed_url"]
        .as_str()
        .unwrap()
        .replace(&d.addr, &proxy.addr);
    let c = v
        .ask(json!({"cmd": "open", "name": "c", "url": url, "width": 900, "height": 500}))
        .await;
    v.ask(json!({"cmd": "waitFor", "name": "c",
        "expr": "Math.abs(window.__pv.meta.width - 900) <= 2 && Math.abs(window.__pv.meta.height - 434) <= 2"}))
        .await;
    // Without control or chrome_apis it is sent only the tab in view, not the addresses of
    // the others (a has both tabs).
    v.ask(json!({"cmd": "waitFor", "name": "c",
        "expr": "window.__pv.tabs.length === 1 && window.__pv.tabs[0].active && window.__pv.tabs[0].url.endsWith('/popup')"}))
        .await;
    v.ask(json!({"cmd": "waitFor", "name": "a", "expr": "window.__pv.tabs.length === 2"}))
        .await;
    proxy.cut();
    let old = c["userId"].as_str().unwrap();
    v.ask(json!({"cmd": "waitFor", "name": "c", "timeout": 20000,
        "expr": format!("window.__pv.state === 'open' && window.__pv.hellos >= 2 && window.__pv.userId === '{old}'")}))
        .await;
    v.ask(json!({"cmd": "close", "name": "c"})).await;

    // Bookmarks posted to base_url are saved with the profile.
    let post = async |bookmarks: &str| {
        let mut sock = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
        sock.write_all(format!("POST {base}/bookmarks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {admin}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{bookmarks}", bookmarks.len()).as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut sock, &mut out)
            .await
            .unwrap();
        out
    };
    let resp = post(r#"<!DOCTYPE NETSCAPE-Bookmark-file-1><DL><p><DT><A HREF="https://bookmarked.example/">Kept</A></DL>"#).await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("\"added\":1"),
        "{resp}"
    );
    // What waits for the save is bounded (10,000 bookmarks): past it, nothing is added.
    for batch in 0..7 {
        let many: String = (0..1500)
            .map(|i| format!("<DT><A HREF=\"https://b{batch}.test/{i}\">{i}</A>"))
            .collect();
        let resp = post(&format!("<DL><p>{many}</DL>")).await;
        let want = if batch < 6 {
            "HTTP/1.1 200"
        } else {
            "HTTP/1.1 409"
        };
        assert!(resp.starts_with(want), "batch {batch}: {resp:.300}");
    }

    // Presence: with a viewer connected the offline timeout (6 s) does not fire ...
    cdp.close().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, info) = d
        .call("GET", &format!("/v0/vm/{id}"), Some(KEY_T1), None)
        .await;
    assert!(
        info["termination_date"].is_null(),
        "ended with a viewer connected: {info}"
    );
    // ... and does once the last viewer has left.
    v.quit().await;
    let ended = d
        .wait_for(KEY_T1, &id, 40, |v| v["save"]["state"] == "saved")
        .await;
    assert_eq!(ended["end_reason"], "offline", "{ended}");
    let to = dir.path().join("restored");
    let out = cli_for(&d)
        .args(["restore", &id, "--to"])
        .arg(&to)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marks = std::fs::read_to_string(to.join("Default/Bookmarks")).unwrap();
    assert!(marks.contains("https://bookmarked.example/"), "{marks}");
    assert!(marks.contains("https://b5.test/1499"), "{marks:.300}");
    assert!(!marks.contains("https://b6.test/"), "{marks:.300}");
    // No token reached the daemon's log (it runs at trace level for profile-vault).
    let log = d.log_text();
    assert!(
        log.contains("viewer connected"),
        "the log is not the daemon's"
    );
    for (what, t) in [("admin token", &admin), ("viewer token", &viewer_token)] {
        assert!(!log.contains(t.as_str()), "the {what} is in the daemon log");
    }
}
