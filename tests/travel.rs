//! Profiles that travel: the browser identity pinned to a profile, and the contents report of
//! every generation, through a real daemon with real Chromium.

use serde_json::{json, Value};

use crate::api::cli_for;
use crate::common::daemon::*;

/// What the page sees of the browser's identity. A loaded session reopens its last tabs, so
/// the page may navigate under the first attempt: it is retried.
async fn identity_seen(s: &Value) -> Value {
    let url = s["cdp_url"].as_str().unwrap().to_string();
    for _ in 0..20 {
        let u = url.clone();
        let attempt = tokio::spawn(async move {
            let mut cdp = Cdp::connect(&u).await;
            let v = cdp
                .eval(
                    "JSON.stringify({ua: navigator.userAgent, tz: Intl.DateTimeFormat().resolvedOptions().timeZone, lang: navigator.language, w: screen.width, h: screen.height})",
                )
                .await;
            cdp.close().await;
            // width and height: the browser's screen (its window, Chromium's UI included).
            serde_json::from_str::<Value>(v.as_str().unwrap()).unwrap()
        })
        .await;
        if let Ok(v) = attempt {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    panic!("the page never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_profile_keeps_its_browser_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let ua = "Mozilla/5.0 (X11; Linux x86_64) ProfileVaultTest/1.0";
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": true}, "user_agent": ua, "width": 1000, "height": 760,
                "locale": "de-DE", "timezone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(s["ignored"], json!([]), "timezone is honoured now: {s}");
    let id = s["session_id"].as_str().unwrap().to_string();
    let first = identity_seen(&s).await;
    assert_eq!(first["ua"], json!(ua), "{first}");
    assert_eq!(first["tz"], json!("Asia/Tokyo"), "{first}");
    assert_eq!(first["lang"], json!("de-DE"), "{first}");
    assert_eq!(
        (&first["w"], &first["h"]),
        (&json!(1000), &json!(760)),
        "{first}"
    );
    d.end_and_wait(KEY_T1, &id).await;
    let p = d.wait_saved(KEY_T1, &id, 60).await;
    assert_eq!(
        p["identity"],
        json!({"user_agent": ua, "width": 1000, "height": 760, "locale": "de-DE", "timezone": "Asia/Tokyo"}),
        "{p}"
    );

    // Loaded without asking: the same device.
    let s2 = d
        .create(KEY_T1, json!({"profile": {"load": id, "save": true}}))
        .await;
    let again = identity_seen(&s2).await;
    assert_eq!(again, first, "the pinned identity came back");
    d.end_and_wait(KEY_T1, s2["session_id"].as_str().unwrap())
        .await;

    // A field given in the request overrides the pinned one and is pinned from then on.
    let s3 = d
        .create(
            KEY_T1,
            json!({"profile": {"load": id, "save": true}, "timezone": "Europe/Berlin"}),
        )
        .await;
    let moved = identity_seen(&s3).await;
    assert_eq!(moved["tz"], json!("Europe/Berlin"), "{moved}");
    assert_eq!(
        (&moved["ua"], &moved["lang"]),
        (&first["ua"], &first["lang"])
    );
    d.end_and_wait(KEY_T1, s3["session_id"].as_str().unwrap())
        .await;
    let s4 = d.create(KEY_T1, json!({"profile": {"load": id}})).await;
    let kept = identity_seen(&s4).await;
    assert_eq!(kept["tz"], json!("Europe/Berlin"), "{kept}");
    assert_eq!(kept["w"], json!(1000), "{kept}");
    d.end_and_wait(KEY_T1, s4["session_id"].as_str().unwrap())
        .await;

    // A time zone that is not a zone name is refused before anything starts.
    let (st, v) = d
        .post_vm(KEY_T1, json!({"timezone": "../../etc/passwd"}))
        .await;
    assert_eq!(st, 400, "{v}");

    // The identity is sealed: the user agent is readable nowhere in the store.
    let store = dir.path().join("data/store");
    let mut stack = vec![store];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    !bytes.windows(17).any(|w| w == b"ProfileVaultTest/"),
                    "identity readable in {}",
                    e.path().display()
                );
            }
        }
    }
    // versions --contents shows the pinned identity of every generation.
    let out = cli_for(&d)
        .args(["--json", "versions", &id, "--contents"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let gens: Value = serde_json::from_slice(&out.stdout).unwrap();
    let zones: Vec<&Value> = gens
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["identity"]["timezone"])
        .collect();
    assert_eq!(
        zones,
        [
            &json!("Asia/Tokyo"),
            &json!("Asia/Tokyo"),
            &json!("Europe/Berlin")
        ],
        "{gens}"
    );
}

/// Runs `tests/node/state.mjs`: a user's own Playwright opening `site` with `state`.
async fn playwright_with_state(state: &Value, site: &str) -> Value {
    let node_dir = std::path::PathBuf::from(crate::common::endpoint("PV_TEST_NODE_DIR"));
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let script = node_dir.join(format!("state-{tag}.mjs"));
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/state.mjs"),
        &script,
    )
    .unwrap();
    let file = node_dir.join(format!("state-{tag}.json"));
    std::fs::write(&file, state.to_string()).unwrap();
    let chromium = profile_vault::browser::find_binary(None).unwrap();
    let out = tokio::process::Command::new("node")
        .env("PV_VIEWER_CHROMIUM", chromium)
        .arg(&script)
        .arg(&file)
        .arg(site)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_state_goes_out_to_playwright_and_comes_back_in() {
    let dir = tempfile::tempdir().unwrap();
    let site = test_site().await;
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let mark = format!("m{}", uuid::Uuid::new_v4().simple());

    // A session logs in (an HttpOnly session cookie) and writes a cookie and localStorage.
    let s = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/login?v=S{mark}")).await;
    cdp.goto(&format!("{site}/set?v={mark}")).await;
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;

    // The contents report names what generation 1 holds, never values.
    let host = site_host(&site);
    let p = d.wait_saved(KEY_T1, &id, 60).await;
    let c = &p["contents"];
    assert_eq!(
        c["cookies"][&host],
        json!({"persistent": 1, "session": 1}),
        "{p}"
    );
    assert!(
        c["local_storage"]
            .as_array()
            .unwrap()
            .contains(&json!(site)),
        "{p}"
    );
    assert!(
        c["indexed_db"].as_array().unwrap().contains(&json!(site)),
        "{p}"
    );
    assert!(c["history_entries"].as_u64().unwrap() >= 2, "{p}");
    assert!(!p.to_string().contains(&mark), "the report holds no values");

    let path = format!("/v0/profiles/{id}/storage_state");
    let (st, state) = d
        .call("GET", &format!("{path}?generation=1"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{state}");
    let cookies = state["cookies"].as_array().unwrap();
    let find = |n: &str| cookies.iter().find(|c| c["name"] == n).cloned();
    let session = find("pv_session").unwrap_or_else(|| panic!("no session cookie: {state}"));
    assert_eq!(session["value"], json!(format!("S{mark}")));
    assert_eq!(
        (&session["httpOnly"], &session["expires"]),
        (&json!(true), &json!(-1.0)),
        "{session}"
    );
    let persistent = find("pv_cookie").unwrap();
    assert!(
        persistent["expires"].as_f64().unwrap() > 1e9,
        "{persistent}"
    );
    let origin = state["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["origin"] == site.as_str())
        .unwrap_or_else(|| panic!("no origin {site}: {state}"));
    assert_eq!(
        origin["localStorage"],
        json!([{"name": "pv_ls", "value": mark}])
    );
    // Only the API key: not another tenant's, not a viewer's, not the (ended) admin token.
    let (st, _) = d.call("GET", &path, Some(KEY_T2), None).await;
    assert_eq!(st, 404);
    let viewer = s["embed_url"]
        .as_str()
        .unwrap()
        .split_once("token=")
        .unwrap()
        .1;
    let (st, _) = d.call("GET", &path, Some(viewer), None).await;
    assert_eq!(st, 401);
    let (st, v) = d
        .call("GET", &format!("{path}?generation=9"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 404, "{v}");
    // Clients that hang up part way: each export runs to its end all the same and leaves
    // no decrypted copy of the profile behind in the daemon's work directory.
    let work = dir.path().join("data/state-work");
    for after_ms in [0, 30, 100, 300, 800] {
        let mut c = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY_T1}\r\n\r\n",
            d.addr
        );
        tokio::io::AsyncWriteExt::write_all(&mut c, req.as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
        drop(c);
    }
    let start = std::time::Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(&work)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "left in the work directory by exports whose client hung up: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // Their job slots are given back once each has been audited, just after.
    let again = loop {
        let (st, again) = d.call("GET", &path, Some(KEY_T1), None).await;
        if st == 200 {
            break again;
        }
        assert!(
            st == 429 && start.elapsed() < std::time::Duration::from_secs(60),
            "their job slots were given back: {st} {again}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(again["cookies"].is_array(), "{again}");
    let audit = cli_for(&d)
        .args(["audit", "--profile", &id])
        .output()
        .unwrap();
    let exports = String::from_utf8_lossy(&audit.stdout)
        .matches("ExportState")
        .count();
    // Two before (generation 1, generation 9), the one after, and at least one admitted of
    // those that hung up (the others were refused while it held the tenant's job slot).
    assert!(
        exports >= 4,
        "an export whose client hung up ran to its end and was audited: {}",
        String::from_utf8_lossy(&audit.stdout)
    );

    // A user's own Playwright, with that state, is logged in.
    let seen = playwright_with_state(&state, &site).await;
    let header = seen["cookies"].as_str().unwrap();
    assert!(header.contains(&format!("pv_session=S{mark}")), "{seen}");
    assert!(header.contains(&format!("pv_cookie={mark}")), "{seen}");
    assert_eq!(seen["ls"], json!(mark), "{seen}");

    // A later session logs out and clears the storage: `diff` shows what generation 2 lost.
    let s3 = d
        .create(KEY_T1, json!({"profile": {"load": id, "save": true}}))
        .await;
    let mut cdp = Cdp::connect(s3["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    cdp.eval("localStorage.clear(); document.cookie = 'pv_cookie=; Max-Age=0; path=/'; true")
        .await;
    let_storage_land().await;
    cdp.close().await;
    d.end_and_wait(KEY_T1, s3["session_id"].as_str().unwrap())
        .await;
    let out = cli_for(&d)
        .args(["--json", "diff", &id, "1", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let changes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines: Vec<&str> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        lines.contains(&format!("-origin {site} (localStorage)").as_str()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("-1 ") && l.contains(&host)),
        "{lines:?}"
    );

    // The CLI exports the same, to an owner-only file.
    let out_file = dir.path().join("state.json");
    let out = cli_for(&d)
        .args(["export-state", &id, "--output", out_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let from_cli: Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(
        from_cli["origins"],
        json!([]),
        "the head (generation 2) has no localStorage left"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&out_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0);
    // Exports are audited; their contents never reach the log.
    let audit = cli_for(&d)
        .args(["audit", "--profile", &id])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&audit.stdout).contains("ExportState"));
    assert!(
        !d.log_text().contains(&mark),
        "a cookie value reached the log"
    );

    // Import: a Playwright state becomes generation 1 of a new profile...
    let host = site_host(&site);
    let imported = json!({
        "cookies": [
            {"name": "pv_session", "value": "IMP", "domain": host, "path": "/", "expires": -1,
             "httpOnly": true, "secure": false, "sameSite": "Lax"},
            {"name": "pv_cookie", "value": "IMPC", "domain": host, "path": "/", "expires": 4102444800u64,
             "httpOnly": false, "secure": false, "sameSite": "Lax"}
        ],
        "origins": [{"origin": site, "localStorage": [{"name": "pv_ls", "value": "IMPLS"}],
            "indexedDB": [{"name": "pvdb", "version": 1, "stores": [{"name": "kv", "autoIncrement": false,
                "records": [{"key": "pv_idb", "value": "IMPIDB"}], "indexes": []}]}]}]
    });
    let body = json!({"id": "imported-1", "storage_state": imported}).to_string();
    let (st, v) = d
        .call("POST", "/v0/profiles", Some(KEY_T1), Some(&body))
        .await;
    assert_eq!((st, &v["generation"]), (200, &json!(1)), "{v}");
    let (st, _) = d
        .call("POST", "/v0/profiles", Some(KEY_T1), Some(&body))
        .await;
    assert_eq!(st, 409, "an existing id is not overwritten");
    // ...which a session loads, logged in.
    let s2 = d
        .create(KEY_T1, json!({"profile": {"load": "imported-1"}}))
        .await;
    let mut cdp = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/echo")).await;
    let header = cdp.eval("document.getElementById('c').textContent").await;
    let got = crate::common::daemon::state(&cdp.eval(READ_STATE).await);
    cdp.close().await;
    let header = header.as_str().unwrap();
    assert!(
        header.contains("pv_session=IMP") && header.contains("pv_cookie=IMPC"),
        "{header}"
    );
    assert_eq!(
        (&got["ls"], &got["idb"]),
        (&json!("IMPLS"), &json!("IMPIDB")),
        "{got}"
    );
    d.end_and_wait(KEY_T1, s2["session_id"].as_str().unwrap())
        .await;

    // Bad documents: a clear 4xx, and no profile.
    let refused = |doc: Value| json!({"id": "never", "storage_state": doc}).to_string();
    let mut c = imported["cookies"][1].clone();
    c["sameParty"] = json!(true);
    let public_suffix = json!({"name": "x", "value": "1", "domain": ".co.uk", "path": "/", "expires": -1,
        "httpOnly": false, "secure": false, "sameSite": "Lax"});
    for (body, status, code) in [
        ("{not json".to_string(), 400, "invalid_json"),
        (refused(json!({"cookies": [c]})), 400, "unknown_field"),
        (
            refused(json!({"cookies": [public_suffix]})),
            400,
            "invalid_storage_state",
        ),
        (
            refused(json!({"origins": [{"origin": "https://a.test/x", "localStorage": []}]})),
            400,
            "invalid_request",
        ),
        (
            json!({"id": "never", "storage_state": {"cookies": []}, "extra": 1}).to_string(),
            400,
            "unknown_field",
        ),
        (
            refused(
                json!({"cookies": [], "origins": [{"origin": site, "localStorage": [{"name": "big", "value": "x".repeat(17 << 20)}]}]}),
            ),
            413,
            "body_too_large",
        ),
    ] {
        let (st, v) = d
            .call("POST", "/v0/profiles", Some(KEY_T1), Some(&body))
            .await;
        assert_eq!(
            (st, v["error"].as_str()),
            (status, Some(code)),
            "{}: {v}",
            &body[..body.len().min(200)]
        );
    }
    let (st, _) = d
        .call("GET", "/v0/profiles/never", Some(KEY_T1), None)
        .await;
    assert_eq!(st, 404, "a refused import leaves no profile");
    // The CLI imports too, and refuses what the API refuses (exit 2).
    let file = dir.path().join("in.json");
    std::fs::write(&file, imported.to_string()).unwrap();
    let out = cli_for(&d)
        .args([
            "import-state",
            file.to_str().unwrap(),
            "--profile",
            "imported-2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&file, json!({"cookies": [{"name": "x"}]}).to_string()).unwrap();
    let out = cli_for(&d)
        .args([
            "import-state",
            file.to_str().unwrap(),
            "--profile",
            "imported-3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let left = std::fs::read_dir(dir.path().join("data/state-work"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "work directories are removed");
}
