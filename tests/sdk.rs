//! A drop-in for Hyperbeam: a page on another origin loads the real `@hyperbeam/web` SDK (from
//! npm, as an app does), calls `Hyperbeam(div, embed_url)` against the daemon, and the person
//! uses the session through it. Real Chromium on both sides.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::viewer::Viewer;
use crate::display::page_until;
use crate::sdk_app::{start, until, urlencode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_on_the_hyperbeam_sdk_runs_against_embed_url() {
    // The app's pages are under a strict CSP.
    let (site, _dir, d, app) = start().await;
    // What Hyperbeam apps' servers send: fields that cannot be honoured are listed, not
    // refused; `auth` (every user authorized by the app's webhook) is not taken until it is
    // enforced: ignoring it would admit everyone.
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": false}, "start_url": format!("{site}/text"),
                "width": 1280, "height": 720, "max_area": 1280 * 720, "hide_cursor": false,
                "quality": {"mode": "sharp"}, "offline_timeout": 300}),
        )
        .await;
    assert_eq!(
        s["ignored"],
        json!(["hide_cursor", "max_area", "offline_timeout", "quality"]),
        "{s}"
    );
    let id = s["session_id"].as_str().unwrap().to_string();
    let embed = s["embed_url"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp, "document.title", json!("text"), "loaded").await;

    // What the SDK's fetch gets: the module, readable from any origin; a navigation still
    // gets the page; an ended or unknown session is a 4xx the SDK reads (CORS on errors too).
    let module = http_full_get(
        &d.addr,
        &format!("{embed}&no_cbor=1"),
        &[("Sec-Fetch-Dest", "empty"), ("Origin", &app)],
    )
    .await;
    assert_eq!(module.0, 200, "{:?}", module.1);
    assert!(
        module.1.contains("content-type: text/javascript"),
        "{}",
        module.1
    );
    assert!(
        module.1.contains("access-control-allow-origin: *"),
        "{}",
        module.1
    );
    assert!(module.1.contains("vary: sec-fetch-dest"), "{}", module.1);
    assert!(module.2.contains("export default"), "not the module");
    let html = http_full_get(&d.addr, &embed, &[("Sec-Fetch-Dest", "document")]).await;
    assert!(html.1.contains("content-type: text/html"), "{}", html.1);
    let unknown = embed.replace(&id, &uuid::Uuid::new_v4().to_string());
    let gone = http_full_get(
        &d.addr,
        &unknown,
        &[("Sec-Fetch-Dest", "empty"), ("Origin", "null")],
    )
    .await;
    assert!((400..500).contains(&gone.0), "{}", gone.1);
    assert!(
        gone.1.contains("access-control-allow-origin: *"),
        "{}",
        gone.1
    );

    // The app's page: Hyperbeam() resolves with the screen's size, frames arrive.
    let mut v = Viewer::start().await;
    let admin = s["admin_token"].as_str().unwrap().to_string();
    let url = format!(
        "{app}/?embed={}&admin={}",
        urlencode(&embed),
        urlencode(&admin)
    );
    v.ask(
        json!({"cmd": "host", "name": "app", "url": url, "until": "window.state_ !== undefined"}),
    )
    .await;
    let state = v
        .ask(json!({"cmd": "evaluate", "name": "app", "expr": "window.state_"}))
        .await;
    assert_eq!(state, "connected", "Hyperbeam() failed");
    let size = v
        .ask(json!({"cmd": "evaluate", "name": "app", "expr": "[hb.width, hb.height, hb.userId.length > 0]"}))
        .await;
    assert_eq!(size, json!([1280, 720, true]));
    let frames = || json!({"cmd": "evaluate", "name": "app", "expr": "window.frames_"});
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while v.ask(frames()).await.as_u64().unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no frame reached frameCb"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A click on the picture focuses the page's field; typed text reaches it.
    let field = cdp
        .eval("(() => { const r = t.getBoundingClientRect(); return [r.x + 50, r.y + r.height / 2]; })()")
        .await;
    let field = field.as_array().unwrap().clone();
    // The field's place on the screen: the page's viewport starts below Chromium's own UI.
    let top = cdp
        .eval("outerHeight - innerHeight")
        .await
        .as_f64()
        .unwrap();
    let p = v
        .ask(json!({"cmd": "evaluate", "name": "app",
            "expr": format!("toPage({}, {})", field[0], field[1].as_f64().unwrap() + top)}))
        .await;
    v.ask(json!({"cmd": "clickAt", "name": "app", "x": p["x"], "y": p["y"]}))
        .await;
    page_until(
        &mut cdp,
        "document.activeElement && document.activeElement.id",
        json!("t"),
        "the click focused the field",
    )
    .await;
    v.ask(json!({"cmd": "typeText", "name": "app", "text": "hello sdk"}))
        .await;
    page_until(
        &mut cdp,
        "t.value",
        json!("hello sdk"),
        "typed text arrived",
    )
    .await;
    // The app's own input (hb.sendEvent) reaches the page too.
    v.ask(json!({"cmd": "evaluate", "name": "app",
        "expr": "hb.sendEvent({type: 'keydown', key: 'Z'}), hb.sendEvent({type: 'keyup', key: 'Z'}), true"}))
        .await;
    page_until(
        &mut cdp,
        "t.value",
        json!("hello sdkZ"),
        "sendEvent's key arrived",
    )
    .await;

    tabs_through_the_sdk(&d, &mut v, (&site, &embed, &admin)).await;

    // hb.reconnect(): a new socket, the same user (its id, and so its roles and permissions).
    let me = v
        .ask(json!({"cmd": "evaluate", "name": "app", "expr": "hb.userId"}))
        .await;
    v.ask(json!({"cmd": "evaluate", "name": "app", "expr": "hb.reconnect()"}))
        .await;
    until(
        &mut v,
        "app",
        "a reconnect",
        "closes_.length > 0",
        "JSON.stringify(closes_)",
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, users) = d
            .call("GET", &format!("/v0/vm/{id}/users"), Some(&admin), None)
            .await;
        let ids: Vec<&Value> = users["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| &u["user_id"])
            .collect();
        if ids == [&me] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a reconnect: {users}, was {me}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The app's admin calls go through the SDK (REST at base_url, across origins): without
    // `control` the person's keys no longer reach the page; given back, they do.
    let removed = v
        .ask(json!({"cmd": "evaluate", "name": "app",
            "expr": "hb.removeRoles([hb.userId], ['control']).then(() => 'ok', (e) => String(e))"}))
        .await;
    assert_eq!(removed, "ok");
    let (st, users) = d
        .call("GET", &format!("/v0/vm/{id}/users"), Some(&admin), None)
        .await;
    assert_eq!(st, 200, "{users}");
    assert!(
        !users.to_string().contains("\"control\""),
        "control was not removed: {users}"
    );
    v.ask(json!({"cmd": "typeText", "name": "app", "text": "X"}))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cdp.eval("t.value").await,
        json!("hello sdkZ"),
        "input without control"
    );
    let added = v
        .ask(json!({"cmd": "evaluate", "name": "app",
            "expr": "hb.addRoles([hb.userId], ['control']).then(() => 'ok', (e) => String(e))"}))
        .await;
    assert_eq!(added, "ok");
    v.ask(json!({"cmd": "typeText", "name": "app", "text": "!"}))
        .await;
    page_until(
        &mut cdp,
        "t.value",
        json!("hello sdkZ!"),
        "control given back",
    )
    .await;
    // A call the app makes without the admin token is refused by the SDK, one with a wrong
    // token by the daemon.
    let wrong = v
        .ask(json!({"cmd": "evaluate", "name": "app",
            "expr": "(async () => { const keep = hb.adminToken; hb.adminToken = 'not-the-token'; try { await hb.addRoles([hb.userId], ['cursor_data']); return 'accepted'; } catch (e) { return 'refused'; } finally { hb.adminToken = keep; } })()"}))
        .await;
    assert_eq!(wrong, "refused");

    // Two people on the app: one with `cursor_data` sees the other's pointer (onCursor).
    v.ask(
        json!({"cmd": "host", "name": "app2", "url": format!("{app}/?embed={}", urlencode(&embed)),
        "until": "window.state_ !== undefined"}),
    )
    .await;
    let other = v
        .ask(json!({"cmd": "evaluate", "name": "app2", "expr": "hb.userId"}))
        .await;
    let granted = v
        .ask(json!({"cmd": "evaluate", "name": "app",
            "expr": "hb.addRoles([hb.userId], ['cursor_data']).then(() => 'ok', (e) => String(e))"}))
        .await;
    assert_eq!(granted, "ok");
    let at = v
        .ask(json!({"cmd": "evaluate", "name": "app2", "expr": "toPage(640, 600)"}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut nudge = 0.0;
    loop {
        let x = at["x"].as_f64().unwrap() + nudge;
        v.ask(json!({"cmd": "moveAt", "name": "app2", "x": x, "y": at["y"]}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = v
            .ask(json!({"cmd": "evaluate", "name": "app", "expr": "window.cursor_ || null"}))
            .await;
        let near = |k: &str, want: f64| seen[k].as_f64().is_some_and(|v| (v - want).abs() < 0.02);
        if seen["userId"] == other && near("x", 0.5) && near("y", 600.0 / 720.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no onCursor there: {seen}"
        );
        nudge = if nudge == 0.0 { 1.0 } else { 0.0 };
    }
    // setPermissions with the admin token: the second person's keys stop reaching the page.
    v.ask(json!({"cmd": "typeText", "name": "app2", "text": "Q"}))
        .await;
    page_until(
        &mut cdp,
        "t.value",
        json!("hello sdkZ!Q"),
        "the second person types",
    )
    .await;
    let disabled = v
        .ask(json!({"cmd": "evaluate", "name": "app",
            "expr": format!("hb.setPermissions({other}, {{control_disabled: true}}).then(() => 'ok', (e) => String(e))")}))
        .await;
    assert_eq!(disabled, "ok");
    v.ask(json!({"cmd": "typeText", "name": "app2", "text": "W"}))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        cdp.eval("t.value").await,
        json!("hello sdkZ!Q"),
        "keys with control disabled"
    );
    // Nor do its tabs calls that change the browser; reading still works.
    let create = v
        .ask(json!({"cmd": "evaluate", "name": "app2",
            "expr": "hb.tabs.create({url: 'about:blank'}).then(() => 'created', (e) => String(e))"}))
        .await;
    assert!(
        create
            .as_str()
            .is_some_and(|e| e.contains("may not control")),
        "{create}"
    );
    let read = v
        .ask(json!({"cmd": "evaluate", "name": "app2", "expr": "hb.tabs.query({}).then((t) => t.length)"}))
        .await;
    assert_eq!(read, 1);
    // destroy(): the container empties and the user leaves the session.
    let left = v
        .ask(json!({"cmd": "evaluate", "name": "app2",
            "expr": "hb.destroy(), document.getElementById('c').shadowRoot.childNodes.length"}))
        .await;
    assert_eq!(left, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, users) = d
            .call("GET", &format!("/v0/vm/{id}/users"), Some(&admin), None)
            .await;
        if !users.to_string().contains(other.as_str().unwrap()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "destroyed, still a user: {users}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The session ends: the app hears why.
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let why = v
            .ask(json!({"cmd": "evaluate", "name": "app", "expr": "window.disconnect_ || null"}))
            .await;
        if why == "request" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no onDisconnect: {why}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    v.quit().await;
}

/// Chrome's tabs API through the SDK (Chrome's own `Tab` objects and events) and as REST with
/// the admin token; a user without `chrome_apis` is refused.
async fn tabs_through_the_sdk(
    d: &Daemon,
    v: &mut Viewer,
    (site, embed, admin): (&str, &str, &str),
) {
    let eval = |expr: String| json!({"cmd": "evaluate", "name": "app", "expr": expr});
    let listen = "(async () => { window.ev_ = []; for (const e of ['onCreated', 'onUpdated', 'onActivated', 'onRemoved']) await hb.tabs[e].addListener((...a) => window.ev_.push([e, a])); return 'ok'; })()";
    assert_eq!(v.ask(eval(listen.into())).await, "ok");
    let tabs = v.ask(eval("hb.tabs.query({})".into())).await;
    let tabs = tabs.as_array().unwrap_or_else(|| panic!("query: {tabs}"));
    assert_eq!(tabs.len(), 1, "{tabs:?}");
    assert_eq!(tabs[0]["url"], format!("{site}/text"));
    assert_eq!(tabs[0]["title"], "text");
    assert_eq!(tabs[0]["active"], true);
    let first = tabs[0]["id"].as_i64().expect("an integer tab id");
    assert!(
        tabs[0]["windowId"].is_i64() && tabs[0]["index"] == 0,
        "{}",
        tabs[0]
    );

    // A new tab: its Tab comes back, and the listeners hear it created, loaded and active.
    let made = v
        .ask(eval(format!("hb.tabs.create({{url: '{site}/select'}})")))
        .await;
    let second = made["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("create: {made}"));
    assert_ne!(second, first);
    let heard = |want: &'static str| format!("window.ev_.some(([e, a]) => {want})");
    for (what, cond) in [
        (
            "onCreated",
            heard("e === 'onCreated' && a[0].id === SECOND"),
        ),
        (
            "onActivated",
            heard("e === 'onActivated' && a[0].tabId === SECOND"),
        ),
        (
            "onUpdated",
            heard("e === 'onUpdated' && a[0] === SECOND && a[2].title === 'select'"),
        ),
    ] {
        let cond = cond.replace("SECOND", &second.to_string());
        until(v, "app", what, &cond, "JSON.stringify(window.ev_)").await;
    }
    // Back to the first; the second closed.
    let updated = v
        .ask(eval(format!("hb.tabs.update({first}, {{active: true}})")))
        .await;
    assert_eq!(updated["active"], true, "{updated}");
    let cond =
        heard("e === 'onActivated' && a[0].tabId === FIRST").replace("FIRST", &first.to_string());
    until(
        v,
        "app",
        "onActivated (first)",
        &cond,
        "JSON.stringify(window.ev_)",
    )
    .await;
    let removed = v
        .ask(eval(format!(
            "hb.tabs.remove({second}).then(() => 'ok', (e) => String(e))"
        )))
        .await;
    assert_eq!(removed, "ok");
    let cond = heard("e === 'onRemoved' && a[0] === SECOND").replace("SECOND", &second.to_string());
    until(v, "app", "onRemoved", &cond, "JSON.stringify(window.ev_)").await;
    // The last tab stays.
    let last = v
        .ask(eval(format!(
            "hb.tabs.remove({first}).then(() => 'closed', (e) => String(e))"
        )))
        .await;
    assert!(
        last.as_str().is_some_and(|e| e.contains("last tab")),
        "{last}"
    );
    // Chrome's own refusal reaches the app as an error; a page that is not the web's is refused.
    let refused = v
        .ask(eval(
            "hb.tabs.get(1).then(() => 'found', (e) => String(e))".into(),
        ))
        .await;
    assert!(
        refused
            .as_str()
            .is_some_and(|e| e.contains("No tab with id")),
        "{refused}"
    );
    let file = v
        .ask(eval(
            "hb.tabs.create({url: 'file:///etc/passwd'}).then(() => 'opened', (e) => String(e))"
                .into(),
        ))
        .await;
    assert!(
        file.as_str().is_some_and(|e| e.contains("only http(s)")),
        "{file}"
    );

    // The same as REST at base_url with the admin token.
    let base = embed
        .split('?')
        .next()
        .unwrap()
        .replace(&format!("http://{}", d.addr), "");
    let (st, listed) = d
        .call(
            "POST",
            &format!("{base}/tabs.query"),
            Some(admin),
            Some("[{}]"),
        )
        .await;
    assert_eq!(st, 200, "{listed}");
    assert_eq!(listed[0]["id"], first, "{listed}");
    let (st, err) = d
        .call(
            "POST",
            &format!("{base}/tabs.get"),
            Some(admin),
            Some("[1]"),
        )
        .await;
    assert_eq!(
        (st, err["error"].as_str()),
        (422, Some("tabs_refused")),
        "{err}"
    );
    let (st, _) = d
        .call(
            "POST",
            &format!("{base}/tabs.query"),
            Some("not-the-token"),
            Some("[{}]"),
        )
        .await;
    assert_eq!(st, 401);

    // Without chrome_apis, the SDK's calls are refused.
    let dropped = v
        .ask(eval("hb.removeRoles([hb.userId], ['chrome_apis']).then(() => hb.tabs.query({})).then(() => 'answered', (e) => String(e))".into()))
        .await;
    assert!(
        dropped.as_str().is_some_and(|e| e.contains("chrome_apis")),
        "{dropped}"
    );
    let back = v
        .ask(eval(
            "hb.addRoles([hb.userId], ['chrome_apis']).then(() => 'ok', (e) => String(e))".into(),
        ))
        .await;
    assert_eq!(back, "ok");
}

/// A GET of an absolute URL on the daemon with extra headers: (status, head lowercased, body).
async fn http_full_get(addr: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let path = url.split_once(addr).map_or(url, |(_, p)| p);
    let (status, head, body) = http_full(addr, path, headers).await;
    (
        status,
        head.to_lowercase(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}
