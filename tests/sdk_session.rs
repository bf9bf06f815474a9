//! The rest of a Hyperbeam app's life on the SDK against the daemon: the session's sound as a
//! live track (`audioTrackCb`), `hb.rtt`, `videoPaused`, `onCloseWarning` then `onDisconnect`
//! for an inactive session; the app in a sandboxed iframe (origin `null`); the persistence
//! flow (save, end, load by the first id: still signed in); and an auth webhook that decides
//! who is let in. Real Chromium on both
//! sides, the SDK from npm, the app's pages under a strict CSP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::viewer::Viewer;
use crate::display::page_until;
use crate::sdk_app::{eval, open, start, until, urlencode};

/// Clicks, through the SDK's picture on the app's page `name`, the middle of the element
/// `selector` of the session's page.
async fn click_through(v: &mut Viewer, name: &str, cdp: &mut Cdp, selector: &str) {
    let at = cdp
        .eval(&format!("(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2 + outerHeight - innerHeight]; }})()"))
        .await;
    let p = eval(v, name, format!("toPage({}, {})", at[0], at[1])).await;
    v.ask(json!({"cmd": "clickAt", "name": name, "x": p["x"], "y": p["y"]}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_hears_the_session_pauses_its_picture_and_is_warned_before_it_ends() {
    let (site, _dir, d, app) = start().await;
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": false}, "start_url": format!("{site}/audio"),
                "timeout": {"inactive": 14, "warning": 10}}),
        )
        .await;
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp, "document.title", json!("audio"), "loaded").await;
    let mut v = Viewer::start().await;
    let url = format!(
        "{app}/?audio=1&embed={}",
        urlencode(s["embed_url"].as_str().unwrap())
    );
    open(&mut v, "app", url, "window.state_ !== undefined").await;
    assert_eq!(eval(&mut v, "app", "window.state_").await, "connected");
    // audioTrackCb: a live audio track, before any sound.
    let track = eval(
        &mut v,
        "app",
        "[audio_ instanceof MediaStreamTrack, audio_.kind, audio_.readyState]",
    )
    .await;
    assert_eq!(track, json!([true, "audio", "live"]));
    until(
        &mut v,
        "app",
        "hb.rtt",
        "typeof hb.rtt === 'number' && hb.rtt >= 0",
        "hb.rtt",
    )
    .await;

    // The person starts the page's sound through the SDK; the app hears it on the track.
    click_through(&mut v, "app", &mut cdp, "#play").await;
    page_until(&mut cdp, "a.paused", json!(false), "the tone plays").await;
    assert_eq!(eval(&mut v, "app", "listen()").await, "running");
    until(
        &mut v,
        "app",
        "sound on the track",
        "level() > 0.02",
        "level()",
    )
    .await;

    // videoPaused: no frames while paused (the page keeps changing), the sound goes on; then
    // the picture comes back.
    cdp.eval("setInterval(() => { document.body.style.background = document.body.style.background === 'red' ? 'blue' : 'red'; }, 100)")
        .await;
    until(
        &mut v,
        "app",
        "frames while it changes",
        "window.frames_ > 5",
        "window.frames_",
    )
    .await;
    eval(&mut v, "app", "hb.videoPaused = true").await;
    // What was already on its way arrives; then the count stands still (a slow machine may
    // take a while to drain it).
    let mut before = eval(&mut v, "app", "window.frames_")
        .await
        .as_u64()
        .unwrap();
    // Still for 2 s in a row (one stall of a busy machine is not the end of the stream).
    let settle = std::time::Instant::now() + Duration::from_secs(15);
    let mut still = 0;
    while still < 4 && std::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = eval(&mut v, "app", "window.frames_")
            .await
            .as_u64()
            .unwrap();
        still = if now == before { still + 1 } else { 0 };
        before = now;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = eval(&mut v, "app", "window.frames_")
        .await
        .as_u64()
        .unwrap();
    assert!(
        after <= before + 1,
        "frames while paused: {before} -> {after}"
    );
    // Sound goes on: its level is sampled until it shows (one sample can fall in a gap of
    // the audio stream on a loaded machine).
    let heard = std::time::Instant::now() + Duration::from_secs(5);
    let mut level = 0.0;
    while level <= 0.02 && std::time::Instant::now() < heard {
        level = eval(&mut v, "app", "level()").await.as_f64().unwrap();
        if level <= 0.02 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(level > 0.02, "the sound stopped with the picture");
    eval(&mut v, "app", "hb.videoPaused = false").await;
    let resumed = format!("window.frames_ > {after} + 3");
    until(
        &mut v,
        "app",
        "frames after resuming",
        &resumed,
        "window.frames_",
    )
    .await;

    // No input from now on: the app is warned (10 s before the 14 s of inactivity), hb.ping()
    // withdraws the warning, and the session then ends for inactivity.
    cdp.close().await;
    until(
        &mut v,
        "app",
        "onCloseWarning",
        "warn_.some((w) => w.type === 'inactive' && w.deadline && w.deadline.delay <= 10000 && !isNaN(Date.parse(w.deadline.closeDate)))",
        "JSON.stringify(warn_)",
    )
    .await;
    eval(&mut v, "app", "hb.ping()").await;
    until(
        &mut v,
        "app",
        "the warning withdrawn",
        "warn_.length > 1 && warn_[warn_.length - 1].deadline === null",
        "JSON.stringify(warn_)",
    )
    .await;
    until(
        &mut v,
        "app",
        "onDisconnect",
        "window.disconnect_ === 'inactive'",
        "window.disconnect_",
    )
    .await;
    v.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framed_app_works_and_a_signed_in_profile_comes_back() {
    let (site, _dir, d, app) = start().await;
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": true}, "start_url": format!("{site}/signin")}),
        )
        .await;
    let first = s["session_id"].as_str().unwrap().to_string();
    let embed = urlencode(s["embed_url"].as_str().unwrap());
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp, "document.title", json!("signin"), "loaded").await;
    let mut v = Viewer::start().await;

    // In a sandboxed iframe (origin null): it connects, frames arrive, calls are answered.
    open(
        &mut v,
        "framed",
        format!("{app}/framed?embed={embed}"),
        "window.inner_ && window.inner_.state !== undefined",
    )
    .await;
    let inner = eval(
        &mut v,
        "framed",
        "[inner_.state, innerFrom_, inner_.origin]",
    )
    .await;
    assert_eq!(inner, json!(["connected", "null", "null"]), "{inner}");
    until(
        &mut v,
        "framed",
        "frames in the frame",
        "inner_.frames > 0",
        "JSON.stringify(inner_)",
    )
    .await;

    // Signed in through the app's picture; the session ends and saves.
    open(
        &mut v,
        "app",
        format!("{app}/?embed={embed}"),
        "window.state_ !== undefined",
    )
    .await;
    assert_eq!(eval(&mut v, "app", "window.state_").await, "connected");
    click_through(&mut v, "app", &mut cdp, "#in").await;
    page_until(&mut cdp, "document.title", json!("signed in"), "signed in").await;
    cdp.close().await;
    d.end_and_wait(KEY_T1, &first).await;
    until(
        &mut v,
        "app",
        "onDisconnect",
        "window.disconnect_ === 'request'",
        "window.disconnect_",
    )
    .await;

    // The next session loads the profile by the first session's id: still signed in.
    let s2 = d
        .create(
            KEY_T1,
            json!({"profile": {"load": first}, "start_url": format!("{site}/whoami")}),
        )
        .await;
    let embed2 = urlencode(s2["embed_url"].as_str().unwrap());
    open(
        &mut v,
        "app2",
        format!("{app}/?embed={embed2}"),
        "window.state_ !== undefined",
    )
    .await;
    // Its tabs, through the SDK: the one left open came back beside the new start page, whose
    // title says the cookie came back (which tab DevTools names first is not fixed).
    let titles = "hb.tabs.query({}).then((t) => JSON.stringify(t.map((x) => x.title).sort()))";
    let want = r#"["signin","user:ada"]"#;
    until(
        &mut v,
        "app2",
        "signed in again",
        &format!("{titles}.then((t) => t === '{want}')"),
        titles,
    )
    .await;
    d.end_and_wait(KEY_T1, s2["session_id"].as_str().unwrap())
        .await;
    v.quit().await;
}

/// The app's auth webhook: admits `{"name": "ada"}` (control disabled), refuses anyone else;
/// remembers what it was asked.
async fn auth_webhook(seen: Arc<Mutex<Vec<(String, String, Value)>>>) -> String {
    let hook = axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
        let seen = seen.clone();
        async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            seen.lock()
                .unwrap()
                .push((h("authorization"), h("hb-user-agent"), v.clone()));
            let ok = h("authorization") == "Bearer hook-secret" && v["userdata"]["name"] == "ada";
            axum::Json(if ok {
                json!({"authorized": true, "permissions": {"control_disabled": true}})
            } else {
                json!({"authorized": false})
            })
        }
    });
    let l = tokio::net::TcpListener::bind(format!("{}:0", SITE_ALLOW.split('/').next().unwrap()))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, axum::Router::new().route("/auth", hook)).await });
    format!("http://{addr}/auth")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_webhook_decides_who_sees_the_session() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook = auth_webhook(seen.clone()).await;
    let (_, _dir, d, app) = start().await;
    let s = d
        .create(
            KEY_T1,
            json!({"auth": {"type": "webhook", "value": {"url": hook, "bearer": "hook-secret"}}}),
        )
        .await;
    assert_eq!(s["ignored"], json!([]), "{s}");
    let (id, admin) = (
        s["session_id"].as_str().unwrap(),
        s["admin_token"].as_str().unwrap(),
    );
    let embed = urlencode(s["embed_url"].as_str().unwrap());
    let mut v = Viewer::start().await;

    // Ada is admitted, with the permissions the webhook gave; it was asked with her id and data.
    let ada = urlencode(r#"{"name":"ada"}"#);
    open(
        &mut v,
        "ada",
        format!("{app}/?embed={embed}&userdata={ada}"),
        "window.state_ !== undefined",
    )
    .await;
    assert_eq!(eval(&mut v, "ada", "window.state_").await, "connected");
    let ada_id = eval(&mut v, "ada", "hb.userId").await;
    until(
        &mut v,
        "ada",
        "frames for ada",
        "window.frames_ > 0",
        "window.frames_",
    )
    .await;
    let asked = seen.lock().unwrap().clone();
    let (bearer, agent, body) = asked.last().cloned().expect("the webhook was asked");
    assert_eq!(bearer, "Bearer hook-secret");
    assert!(agent.contains("Chrome"), "HB-User-Agent: {agent}");
    assert_eq!(
        body,
        json!({"user_id": ada_id, "userdata": {"name": "ada"}})
    );
    let (_, users) = d
        .call("GET", &format!("/v0/vm/{id}/users"), Some(admin), None)
        .await;
    assert_eq!(users["users"][0]["control_disabled"], true, "{users}");

    // The viewer token alone reaches nothing else of the session (the store, the files).
    let token = s["embed_url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap()
        .to_string();
    let (st, e) = d
        .call(
            "GET",
            &format!("/v0/vm/{id}/store?token={token}"),
            None,
            None,
        )
        .await;
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    // Eve is refused before she sees anything: no frame, onDisconnect "unauthorized".
    let eve = urlencode(r#"{"name":"eve"}"#);
    open(
        &mut v,
        "eve",
        format!("{app}/?embed={embed}&userdata={eve}"),
        "window.disconnect_ !== undefined",
    )
    .await;
    // Refused once, with the code the SDK reads (not a dropped socket it would retry).
    assert_eq!(
        eval(
            &mut v,
            "eve",
            "[window.disconnect_, window.frames_, closes_.map((c) => c[0])]"
        )
        .await,
        json!(["unauthorized", 0, [1008]])
    );
    let (_, users) = d
        .call("GET", &format!("/v0/vm/{id}/users"), Some(admin), None)
        .await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1), "{users}");
    // The embed page (no userdata) is asked about too, and refused.
    let page = v
        .ask(json!({"cmd": "host", "name": "page", "url": s["embed_url"], "until": "window.__pv && window.__pv.state === 'refused'"}))
        .await;
    assert_eq!(page, true);
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 3, "{asked:?}");
    // POST <base_url>/timeout: three seconds from now; Ada hears why it ended.
    let base = format!("/v0/vm/{id}/embed");
    let (st, bad) = d
        .call(
            "POST",
            &format!("{base}/timeout"),
            Some(admin),
            Some(r#"{"absolute": -1}"#),
        )
        .await;
    assert_eq!(
        (st, bad["error"].as_str()),
        (400, Some("invalid_request")),
        "{bad}"
    );
    let (st, _) = d
        .call(
            "POST",
            &format!("{base}/timeout"),
            None,
            Some(r#"{"absolute": 3}"#),
        )
        .await;
    assert_eq!(st, 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (st, t) = d
        .call(
            "POST",
            &format!("{base}/timeout"),
            Some(admin),
            Some(r#"{"absolute": 3, "warning": 2}"#),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    let at = t["expires_at"].as_u64().unwrap();
    assert!(
        (now + 2..=now + 4).contains(&at),
        "expires_at {at}, now {now}: {t}"
    );
    assert_eq!(
        (&t["absolute"], &t["warning"]),
        (&json!(3), &json!(2)),
        "{t}"
    );
    until(
        &mut v,
        "ada",
        "onDisconnect",
        "window.disconnect_ === 'absolute'",
        "window.disconnect_",
    )
    .await;
    v.quit().await;
}

/// A zip of `files` (name, text), made by Python's zipfile (names kept as given).
fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.zip");
    let spec = serde_json::to_string(files).unwrap();
    let st = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\nfor n, t in json.loads(sys.argv[2]): z.writestr(n, t)\nz.close()",
        ])
        .arg(&out)
        .arg(spec)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read(out).unwrap()
}

/// `POST /v0/vm` as Hyperbeam apps send an extension: multipart, the request as `body`, the
/// zip as `ex`.
async fn post_with_extension(d: &Daemon, body: &Value, zip: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = "pvBoundary7MA4YWxk";
    let mut payload = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\n{body}\r\n--{b}\r\nContent-Disposition: form-data; name=\"ex\"; filename=\"extension.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    payload.extend_from_slice(zip);
    payload.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let mut sock = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
    let head = format!(
        "POST /v0/vm HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY_T1}\r\nContent-Type: multipart/form-data; boundary={b}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        d.addr,
        payload.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&payload).await.unwrap();
    let mut resp = Vec::new();
    sock.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp);
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_extension_runs_in_its_own_session() {
    let (site, _dir, d, _) = start().await;
    let manifest = r#"{"manifest_version": 3, "name": "mark", "version": "1",
        "content_scripts": [{"matches": ["<all_urls>"], "js": ["mark.js"]}]}"#;
    let mark = "document.documentElement.dataset.ext = 'marked';";
    // In a folder, as apps zip an extension's directory.
    let zip = zip_of(&[("mark/manifest.json", manifest), ("mark/mark.js", mark)]);
    let (st, s) =
        post_with_extension(&d, &json!({"start_url": format!("{site}/text")}), &zip).await;
    assert_eq!(st, 200, "{s}");
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp, "document.title", json!("text"), "loaded").await;
    // Chromium loads flag extensions while it starts: the very first page may load before
    // the content script is registered; a page loaded after has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if cdp
            .eval("document.documentElement.dataset.ext || null")
            .await
            == "marked"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the extension's content script never ran"
        );
        cdp.eval("location.reload(), 1").await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // Another session does not have it.
    let other = d
        .create(KEY_T1, json!({"start_url": format!("{site}/text")}))
        .await;
    let mut cdp2 = Cdp::connect(other["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp2, "document.title", json!("text"), "loaded").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cdp2.eval("document.documentElement.dataset.ext || null")
            .await,
        Value::Null
    );

    // Refused before anything starts: a name climbing out, no manifest, not a zip.
    let climbing = zip_of(&[("manifest.json", manifest), ("../escape.js", mark)]);
    let no_manifest = zip_of(&[("mark.js", mark)]);
    let keyed_manifest = manifest.replace(
        "\"version\": \"1\",",
        "\"version\": \"1\", \"key\": \"L3B2L3RhYnMtZXh0\",",
    );
    assert!(keyed_manifest.contains("key"));
    let keyed = zip_of(&[("manifest.json", &keyed_manifest), ("mark.js", mark)]);
    for (what, z) in [
        ("climbing", climbing),
        ("no manifest", no_manifest),
        ("a key (an id of its choosing)", keyed),
        ("not a zip", b"PK not really".to_vec()),
    ] {
        let (st, e) = post_with_extension(&d, &json!({}), &z).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("invalid_request")),
            "{what}: {e}"
        );
    }
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(2), "{list}");
    cdp.close().await;
    cdp2.close().await;
    for s in [&s, &other] {
        d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
            .await;
    }
}
