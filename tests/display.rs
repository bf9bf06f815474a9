//! The person's whole browser: each session's Chromium runs headful on a virtual display of
//! its own, and a person using `embed_url` (a second Chromium driven by Playwright,
//! `tests/node/viewer.mjs`) sees and uses Chromium's own UI in the picture: a `<select>` list
//! opens and an option is picked by mouse, an `alert()` is seen and dismissed with Enter, the
//! "Save password?" bubble saves a login, Ctrl+D bookmarks a page, a permission prompt grants
//! notifications — and the login, the bookmark and the permission come back on a fresh
//! daemon, where Chromium fills the sign-in form. Sound, downloads, uploads, text and the
//! clipboard have tests of their own below (downloads and uploads in `transfer.rs`).
//! The tenant's CDP is used only to find where things are and to check what happened.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::viewer::Viewer;

/// Blue of the page under the select list; the list, the dialog and the bubbles are not.
const PAGE_BLUE: [i64; 3] = [0, 0, 255];
/// Chromium's filled (default) buttons: "Save" in the password bubble, "Done" in the
/// bookmark bubble, "OK" in a dialog.
const BUTTON_BLUE: [i64; 3] = [11, 87, 208];
/// Chromium's tonal buttons ("Block", "Allow" in a permission prompt).
const PROMPT_BUTTON: [i64; 3] = [211, 227, 253];

pub(crate) async fn site() -> String {
    use axum::response::{Html, Redirect};
    let app = axum::Router::new()
        .route(
            "/select",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>select</title>
<body style="margin:0;background:rgb(0,0,255)">
<select id=s style="position:absolute;left:40px;top:40px;width:200px;font-size:20px"
 onchange="document.title = 'picked:' + this.value">
<option value=a>alpha<option value=b>beta<option value=c>gamma<option value=d>delta</select>
<button id=al style="position:absolute;left:400px;top:40px;font-size:20px"
 onclick="alert('pv-alert'); document.title = 'after-alert'">alert</button>"#,
                )
            }),
        )
        .route(
            "/login",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>login</title><body style="margin:0;background:rgb(136,170,221)">
<form method=post action=/welcome style="position:absolute;left:40px;top:40px">
<input id=u name=username autocomplete=username style="font-size:24px"><br>
<input id=p name=password type=password autocomplete=current-password style="font-size:24px"><br>
<button id=b style="font-size:24px">Sign in</button></form>"#,
                )
            }),
        )
        .route(
            "/audio",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>audio</title><body style="margin:0">
<audio id=a src=/tone.wav loop></audio>
<button id=play style="position:absolute;left:40px;top:40px;font-size:30px" onclick="a.play()">play</button>"#,
                )
            }),
        )
        .route("/tone.wav", axum::routing::get(|| async { tone_wav() }))
        .route(
            "/perm",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>perm</title><body style="margin:0;background:#fff">
<button id=n style="position:absolute;left:40px;top:40px;font-size:30px"
 onclick="Notification.requestPermission().then(p => document.title = 'perm:' + p)">notify</button>"#,
                )
            }),
        )
        .route(
            "/upload",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>upload</title><body style="margin:0">
<input type=file id=u style="position:absolute;left:40px;top:40px;font-size:24px"
 onchange="const f = this.files[0]; f.text().then(t => { window.__content = t; document.title = 'got:' + f.name + ':' + f.size; })">"#,
                )
            }),
        )
        .route(
            "/dl",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>dl</title><body style="margin:0">
<a id=f href=/report.txt download style="position:absolute;left:40px;top:40px;font-size:30px">get it</a>"#,
                )
            }),
        )
        .route(
            "/report.txt",
            axum::routing::get(|| async {
                (
                    [("content-type", "text/plain")],
                    "pv-download-content-42\n",
                )
            }),
        )
        .route(
            "/signin",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>signin</title><body style="margin:0">
<button id=in style="position:absolute;left:40px;top:40px;width:300px;height:80px;font-size:24px"
 onclick="document.cookie = 'user=ada; max-age=86400; path=/'; document.title = 'signed in'">sign in</button>"#,
                )
            }),
        )
        .route(
            "/whoami",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>?</title>
<script>document.title = 'user:' + ((document.cookie.match(/user=(\w+)/) || [])[1] || 'nobody')</script>"#,
                )
            }),
        )
        .route(
            "/text",
            axum::routing::get(|| async {
                Html(
                    r#"<!doctype html><title>text</title><body style="margin:0">
<input id=t style="position:absolute;left:40px;top:40px;width:600px;font-size:24px">"#,
                )
            }),
        )
        .route(
            "/welcome",
            axum::routing::get(|| async {
                Html("<!doctype html><title>welcome</title><body style=\"background:rgb(170,255,170)\"><h1>Welcome</h1>")
            })
            // The form's POST: signed in, on to the welcome page.
            .post(|| async { Redirect::to("/welcome") }),
        );
    let listener = tokio::net::TcpListener::bind(SITE_HOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// Five seconds of a 440 Hz sine (16-bit mono WAV at 24 kHz).
fn tone_wav() -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let rate = 24_000u32;
    let pcm: Vec<u8> = (0..rate * 5)
        .flat_map(|i| {
            let t = f64::from(i) / f64::from(rate);
            ((12_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).to_le_bytes()
        })
        .collect();
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 1 | (1 << 16), rate, rate * 2, 2 | (16 << 16)] {
        w.extend_from_slice(&v.to_le_bytes());
    }
    w.extend_from_slice(b"data");
    w.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    w.extend_from_slice(&pcm);
    ([("content-type", "audio/wav")], w)
}

/// Mints a viewer URL with `roles` for session `s` (its admin token).
pub(crate) async fn mint_viewer(d: &Daemon, s: &Value, roles: &[&str]) -> Value {
    let id = s["session_id"].as_str().unwrap();
    let (st, minted) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/viewers"),
            Some(s["admin_token"].as_str().unwrap()),
            Some(&json!({ "roles": roles }).to_string()),
        )
        .await;
    assert_eq!(st, 200, "{minted}");
    minted
}

/// Two viewers show the same pixels at `points` (remote px), within JPEG's noise, within 5 s
/// (one viewer's picture may be a frame behind the other's when they are sampled).
pub(crate) async fn same_picture(v: &mut Viewer, names: [&str; 2], points: &Value) {
    let [a, b] = names;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let pa = v
            .ask(json!({"cmd": "sample", "name": a, "points": points}))
            .await;
        let pb = v
            .ask(json!({"cmd": "sample", "name": b, "points": points}))
            .await;
        let same = pa
            .as_array()
            .unwrap()
            .iter()
            .zip(pb.as_array().unwrap())
            .all(|(x, y)| {
                let want: Vec<i64> = x
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_i64().unwrap())
                    .collect();
                near(y, [want[0], want[1], want[2]], 24)
            });
        if same {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "viewers {a} and {b} differ: {pa} vs {pb}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn near(rgb: &Value, want: [i64; 3], tol: i64) -> bool {
    rgb.as_array().is_some_and(|a| {
        a.iter()
            .zip(want)
            .all(|(v, w)| (v.as_i64().unwrap_or(-999) - w).abs() <= tol)
    })
}

/// Where an element of the session's page is on the screen: (x, y, width, height), the page
/// starting below Chromium's own toolbar.
pub(crate) async fn on_screen(cdp: &mut Cdp, selector: &str) -> (f64, f64, f64, f64) {
    let v = cdp
        .eval(&format!(
            "(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); \
             return [r.x + screenX + (outerWidth - innerWidth) / 2, r.y + screenY + outerHeight - innerHeight, r.width, r.height]; }})()"
        ))
        .await;
    let n = |i: usize| v[i].as_f64().unwrap_or_else(|| panic!("{selector}: {v}"));
    (n(0), n(1), n(2), n(3))
}

async fn sample(v: &mut Viewer, name: &str, x: f64, y: f64) -> Value {
    v.ask(json!({"cmd": "sample", "name": name, "points": [[x.round(), y.round()]]}))
        .await[0]
        .clone()
}

/// Polls the picture of viewer `name` until `test` holds for the pixel at (x, y).
async fn picture_until(
    v: &mut Viewer,
    name: &str,
    (x, y): (f64, f64),
    test: impl Fn(&Value) -> bool,
    what: &str,
) {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = sample(v, name, x, y).await;
        if test(&last) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: the picture at ({x}, {y}) stayed {last}");
}

/// Waits for Chromium's filled blue button in `rect` of the picture; its centre.
async fn blue_button(v: &mut Viewer, rect: [u32; 4], what: &str) -> (f64, f64) {
    for _ in 0..100 {
        let f = v
            .ask(json!({"cmd": "find", "name": "a", "rgb": BUTTON_BLUE, "tol": 30, "rect": rect}))
            .await;
        if f["count"].as_u64().unwrap_or(0) > 300 {
            return (f["x"].as_f64().unwrap(), f["y"].as_f64().unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path =
        std::env::temp_dir().join(format!("pv-display-{}.png", uuid::Uuid::new_v4().simple()));
    v.ask(json!({"cmd": "save", "name": "a", "path": path}))
        .await;
    panic!(
        "{what}: no button in the picture (it is in {})",
        path.display()
    );
}

async fn no_blue_button(v: &mut Viewer, rect: [u32; 4], what: &str) {
    for _ in 0..100 {
        let f = v
            .ask(json!({"cmd": "find", "name": "a", "rgb": BUTTON_BLUE, "tol": 30, "rect": rect}))
            .await;
        if f["count"].as_u64().unwrap_or(1) < 50 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path =
        std::env::temp_dir().join(format!("pv-display-{}.png", uuid::Uuid::new_v4().simple()));
    v.ask(json!({"cmd": "save", "name": "a", "path": path}))
        .await;
    panic!(
        "{what}: the bubble stayed open (the picture is in {})",
        path.display()
    );
}

/// A session on the filesystem store whose browser shows the test site's `page` (titled
/// with its name), loaded and painted; `roles`, when given, are its `default_roles`.
pub(crate) struct OnPage {
    pub dir: tempfile::TempDir,
    pub d: Daemon,
    pub s: Value,
    pub cdp: Cdp,
}

pub(crate) async fn on_page(page: &str, roles: Option<&[&str]>) -> OnPage {
    let site = site().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let mut body = json!({"profile": {"save": false}, "start_url": format!("{site}/{page}")});
    if let Some(r) = roles {
        body["default_roles"] = json!(r);
    }
    let s = d.create(KEY_T1, body).await;
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp, "document.title", json!(page), "the page loaded").await;
    settle(&mut cdp).await;
    OnPage { dir, d, s, cdp }
}

pub(crate) async fn page_until(cdp: &mut Cdp, expr: &str, want: Value, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let got = cdp.eval(expr).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: {expr} is {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the page has loaded and paints: Chromium drops input while it holds the
/// first paint of a navigation.
pub(crate) async fn settle(cdp: &mut Cdp) {
    page_until(
        cdp,
        "document.readyState",
        json!("complete"),
        "the page loaded",
    )
    .await;
    cdp.eval("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

pub(crate) async fn click(v: &mut Viewer, x: f64, y: f64) {
    v.ask(json!({"cmd": "click", "name": "a", "x": x, "y": y}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_whole_browser_and_it_is_remembered() {
    let site = site().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, StoreKind::Fs, &[]);
    let (_, r) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (&r["checks"]["display"], &r["checks"]["sound"]),
        (&json!(true), &json!(true)),
        "{r}"
    );
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": true}, "start_url": format!("{site}/select"),
                "width": 1280, "height": 720}),
        )
        .await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let embed = s["embed_url"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    let mut v = Viewer::start().await;
    let a = v
        .ask(json!({"cmd": "open", "name": "a", "url": embed, "width": 1280, "height": 720}))
        .await;
    assert_eq!(
        (&a["meta"]["width"], &a["meta"]["height"], &a["display"]),
        (&json!(1280), &json!(720), &json!(true)),
        "the picture is the whole screen: {a}"
    );
    page_until(
        &mut cdp,
        "document.title",
        json!("select"),
        "the page loaded",
    )
    .await;

    // The picture holds Chromium's own UI above the page: its toolbar is not the page.
    let (sx, sy, sw, sh) = on_screen(&mut cdp, "#s").await;
    assert!(
        sy > 40.0,
        "the page starts at the top of the screen: no browser UI"
    );
    let top_bar = sample(&mut v, "a", 640.0, 10.0).await;
    assert!(
        !near(&top_bar, PAGE_BLUE, 60),
        "the tab strip is missing: {top_bar}"
    );

    // Two viewers see the same screen; one of another size without the `resize` role sees it
    // letterboxed (and does not change it).
    let minted = mint_viewer(&d, &s, &["control"]).await;
    v.ask(json!({"cmd": "open", "name": "b", "url": minted["embed_url"], "width": 900, "height": 600}))
        .await;
    let points = json!([[640, 10], [100, 62], [sx + 20.0, sy + 100.0], [900, 600]]);
    same_picture(&mut v, ["a", "b"], &points).await;
    v.ask(json!({"cmd": "close", "name": "b"})).await;

    // A <select> opens in the picture, and an option is picked by mouse.
    let below = (sx + 50.0, sy + sh + 40.0);
    picture_until(
        &mut v,
        "a",
        below,
        |p| near(p, PAGE_BLUE, 40),
        "page under the select",
    )
    .await;
    click(&mut v, sx + sw / 2.0, sy + sh / 2.0).await;
    picture_until(
        &mut v,
        "a",
        below,
        |p| !near(p, PAGE_BLUE, 60),
        "the select list opened",
    )
    .await;
    // The list: from the select's bottom down to where the page's blue shows again.
    let column: Vec<Value> = (0..300)
        .map(|i| json!([sx + 50.0, sy + sh + f64::from(i)]))
        .collect();
    let px = v
        .ask(json!({"cmd": "sample", "name": "a", "points": column}))
        .await;
    let height = px
        .as_array()
        .unwrap()
        .iter()
        .position(|p| near(p, PAGE_BLUE, 40))
        .expect("the list ends above the page's blue") as f64;
    assert!(height > 60.0, "a list of four options is {height} px high");
    click(&mut v, sx + 50.0, sy + sh + height * 2.5 / 4.0).await;
    page_until(
        &mut cdp,
        "document.querySelector('#s').value",
        json!("c"),
        "gamma picked",
    )
    .await;

    // An alert() is seen in the picture, and Enter dismisses it.
    let (bx, by, bw, bh) = on_screen(&mut cdp, "#al").await;
    let far = (1100.0, 600.0);
    click(&mut v, bx + bw / 2.0, by + bh / 2.0).await;
    blue_button(&mut v, [300, 60, 980, 400], "the alert's OK button").await;
    // The page behind the dialog is dimmed.
    picture_until(
        &mut v,
        "a",
        far,
        |p| !near(p, PAGE_BLUE, 30),
        "the dialog dims the page",
    )
    .await;
    v.ask(json!({"cmd": "press", "name": "a", "key": "Enter"}))
        .await;
    picture_until(
        &mut v,
        "a",
        far,
        |p| near(p, PAGE_BLUE, 30),
        "the dialog closed",
    )
    .await;
    page_until(
        &mut cdp,
        "document.title",
        json!("after-alert"),
        "the page went on",
    )
    .await;

    // A sign-in: Chromium's "Save password?" bubble, and a click on Save.
    cdp.send("Page.navigate", json!({"url": format!("{site}/login")}))
        .await;
    page_until(&mut cdp, "document.title", json!("login"), "the login page").await;
    settle(&mut cdp).await;
    let (ux, uy, uw, uh) = on_screen(&mut cdp, "#u").await;
    click(&mut v, ux + uw / 2.0, uy + uh / 2.0).await;
    page_until(
        &mut cdp,
        "document.activeElement.id",
        json!("u"),
        "the click focused the field",
    )
    .await;
    v.ask(json!({"cmd": "type", "name": "a", "text": "alice"}))
        .await;
    let (qx, qy, qw, qh) = on_screen(&mut cdp, "#p").await;
    click(&mut v, qx + qw / 2.0, qy + qh / 2.0).await;
    page_until(
        &mut cdp,
        "document.activeElement.id",
        json!("p"),
        "the click focused the field",
    )
    .await;
    v.ask(json!({"cmd": "type", "name": "a", "text": "s3cret-Pass"}))
        .await;
    page_until(
        &mut cdp,
        "document.querySelector('#u').value + ' ' + document.querySelector('#p').value",
        json!("alice s3cret-Pass"),
        "typed into the form",
    )
    .await;
    let (gx, gy, gw, gh) = on_screen(&mut cdp, "#b").await;
    click(&mut v, gx + gw / 2.0, gy + gh / 2.0).await;
    let bubble = [640, 60, 1280, 600];
    let (save_x, save_y) = blue_button(&mut v, bubble, "the Save password bubble").await;
    // Chromium ignores clicks on a bubble in its first moments (a guard against clickjacking),
    // as a person's reaction time would.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    click(&mut v, save_x, save_y).await;
    no_blue_button(&mut v, bubble, "Save password").await;

    // Ctrl+D: Chromium's bookmark bubble; Enter takes it.
    v.ask(json!({"cmd": "press", "name": "a", "key": "Control+d"}))
        .await;
    blue_button(&mut v, bubble, "the bookmark bubble").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    v.ask(json!({"cmd": "press", "name": "a", "key": "Enter"}))
        .await;
    no_blue_button(&mut v, bubble, "bookmark").await;
    // A site permission, granted in Chromium's own prompt (its right-hand button, Allow).
    cdp.send("Page.navigate", json!({"url": format!("{site}/perm")}))
        .await;
    page_until(
        &mut cdp,
        "document.title",
        json!("perm"),
        "the permission page",
    )
    .await;
    let (nx, ny, nw, nh) = on_screen(&mut cdp, "#n").await;
    click(&mut v, nx + nw / 2.0, ny + nh / 2.0).await;
    let prompt_rect = json!([0, 80, 640, 400]);
    let mut allow = None;
    for i in 0..200 {
        if i == 100 {
            // Not shown within 10 s (a busy machine, or the click landed before the page
            // took input): the person clicks again.
            click(&mut v, nx + nw / 2.0, ny + nh / 2.0).await;
        }
        let f = v
            .ask(json!({"cmd": "find", "name": "a", "rgb": PROMPT_BUTTON, "tol": 12, "rect": prompt_rect}))
            .await;
        if f["count"].as_u64().unwrap_or(0) > 400 {
            allow = Some((f["maxX"].as_f64().unwrap() - 30.0, f["y"].as_f64().unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ax, ay) = allow.expect("Chromium's permission prompt in the picture");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    click(&mut v, ax, ay).await;
    page_until(
        &mut cdp,
        "document.title",
        json!("perm:granted"),
        "the permission was granted",
    )
    .await;
    v.quit().await;
    cdp.close().await;

    // Saved: the generation's contents report counts the login and the bookmark.
    d.end_and_wait(KEY_T1, &id).await;
    let (st, p) = d
        .call("GET", &format!("/v0/profiles/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{p}");
    let c = &p["contents"];
    assert_eq!(
        (&c["saved_logins"], &c["bookmarks"]),
        (&json!(1), &json!(1)),
        "{c}"
    );
    d.stop();

    // A fresh daemon loads it: Chromium fills the sign-in form, the bookmark is there.
    let d2 = Daemon::start(&data, StoreKind::Fs, &[]);
    let s2 = d2
        .create(
            KEY_T1,
            json!({"profile": {"load": id, "save": false}, "start_url": format!("{site}/login")}),
        )
        .await;
    let mut cdp2 = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    // The last session's tabs come back too: the one this connection has may be another.
    cdp2.send("Page.navigate", json!({"url": format!("{site}/login")}))
        .await;
    page_until(
        &mut cdp2,
        "document.title",
        json!("login"),
        "the login page after load",
    )
    .await;
    page_until(
        &mut cdp2,
        // (Chromium keeps filled values from the page's script until the person acts.)
        "document.querySelector('#u').matches(':autofill') && document.querySelector('#p').matches(':autofill')",
        json!(true),
        "Chromium filled the saved login",
    )
    .await;
    cdp2.send("Page.navigate", json!({"url": format!("{site}/perm")}))
        .await;
    page_until(
        &mut cdp2,
        "document.title",
        json!("perm"),
        "the permission page after load",
    )
    .await;
    page_until(
        &mut cdp2,
        "Notification.permission",
        json!("granted"),
        "the permission came back",
    )
    .await;
    let sid2 = s2["session_id"].as_str().unwrap();
    let bookmarks =
        std::fs::read_to_string(data.join("browsers").join(sid2).join("Default/Bookmarks"))
            .unwrap_or_default();
    assert!(
        bookmarks.contains("/welcome"),
        "the bookmark is gone: {bookmarks}"
    );
    cdp2.close().await;
    d2.end_and_wait(KEY_T1, sid2).await;
}

/// Sends viewer messages on a raw live-view socket.
pub(crate) async fn say(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    msgs: &[Value],
) {
    use futures_util::SinkExt;
    for m in msgs {
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            m.to_string().into(),
        ))
        .await
        .unwrap();
    }
}

/// A left click at the middle of the rectangle `(x, y, w, h)`, sent on a raw live-view
/// socket as a person's mouse.
pub(crate) async fn click_middle(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    (x, y, w, h): (f64, f64, f64, f64),
) {
    let (cx, cy) = (x + w / 2.0, y + h / 2.0);
    say(
        ws,
        &[
            json!({"t": "mouse", "type": "mousePressed", "x": cx, "y": cy, "button": "left"}),
            json!({"t": "mouse", "type": "mouseReleased", "x": cx, "y": cy, "button": "left"}),
        ],
    )
    .await;
}

/// The next text message of type `t` on a raw live-view socket (within 15 s).
pub(crate) async fn message(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    t: &str,
) -> Value {
    use futures_util::StreamExt;
    let wait = async {
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = m {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["t"] == t {
                    return v;
                }
            }
        }
        Value::Null
    };
    tokio::time::timeout(Duration::from_secs(15), wait)
        .await
        .unwrap_or_else(|_| panic!("no {t} message on the viewer socket"))
}
