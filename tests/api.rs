//! End-to-end through the HTTP API and the CDP proxy, with real Chromium and a real store.

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::*;

/// The bytes of the restored profile's History file (to check the visited URL is there).
fn history_of(d: &Daemon, profile: &str, dir: &std::path::Path) -> Vec<u8> {
    let mut c = cli_for(d);
    c.args(["restore", profile, "--to"]).arg(dir);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("Default/History")).unwrap()
}

/// The CLI on the daemon's data dir and store, as tenant t1.
pub(crate) fn cli_for(d: &Daemon) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_profile-vault"));
    c.arg("--data-dir").arg(&d.data).args(["--tenant", "t1"]);
    c.env(
        "PV_MASTER_KEYS",
        "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
    )
    .env_remove("PV_STORE");
    if let StoreKind::LocalStack(prefix) = &d.store {
        c.env("PV_STORE", format!("s3://{BUCKET}/{prefix}"))
            .env("AWS_ENDPOINT_URL", endpoint("PV_TEST_LOCALSTACK"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("PV_S3_PATH_STYLE", "true");
    }
    c
}

async fn full_cycle(store: StoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let site = test_site().await;
    let d = Daemon::start(&dir.path().join("data"), store, &[]);
    let marker = format!("v{}", uuid::Uuid::new_v4().simple());

    // 1. A fresh saving session writes cookie, localStorage, IndexedDB and history.
    let s1 = d
        .create(
            KEY_T1,
            json!({"profile": {"save": true}, "width": 1024, "height": 768, "kiosk": true}),
        )
        .await;
    let id1 = s1["session_id"].as_str().unwrap().to_string();
    assert_eq!(s1["profile"]["id"], id1);
    assert_eq!(s1["profile"]["loaded"], false);
    assert_eq!(s1["ignored"], json!(["kiosk"]));
    assert!(s1["embed_url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("http://{}/v0/vm/{id1}", d.addr)));
    let mut cdp = Cdp::connect(s1["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v={marker}")).await;
    cdp.goto(&format!("{site}/visited-{marker}")).await;
    // width and height are the browser's screen (its window fills it, Chromium's own UI
    // included, as in Hyperbeam).
    assert_eq!(cdp.eval("screen.width").await, json!(1024));
    cdp.close().await;
    let ended = d.end_and_wait(KEY_T1, &id1).await;
    assert_eq!(ended["save"]["state"], "saved", "{ended}");
    assert_eq!(ended["save"]["generation"], 1);
    // Later calls on the ended session: GET shows it, the rest answer 410.
    let (st, v) = d
        .call("GET", &format!("/v0/vm/{id1}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200);
    assert!(
        v["termination_date"].is_u64() && v["end_reason"] == "client",
        "{v}"
    );
    let (st, v) = d
        .call("POST", &format!("/v0/vm/{id1}/ping"), Some(KEY_T1), None)
        .await;
    assert_eq!((st, v["error"].as_str()), (410, Some("session_expired")));
    let (st, _) = d
        .call("DELETE", &format!("/v0/vm/{id1}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 410);
    // History reached the saved profile.
    let hist = history_of(&d, &id1, &dir.path().join("h1"));
    let visited = format!("visited-{marker}");
    assert!(
        hist.windows(visited.len()).any(|w| w == visited.as_bytes()),
        "history lacks the visited URL"
    );

    // 2. A read-only load sees everything; it does not save.
    let s2 = d.create(KEY_T1, json!({"profile": {"load": id1}})).await;
    assert_eq!(s2["profile"]["loaded"], true);
    assert_eq!(s2["profile"]["generation"], 1);
    let mut cdp = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let st2 = state(&cdp.eval(READ_STATE).await);
    assert_eq!(st2["cookie"], format!("pv_cookie={marker}"));
    assert_eq!(st2["ls"], marker);
    assert_eq!(st2["idb"], marker);
    cdp.close().await;

    // 3. A continuing session (shorthand) saves back under the first id, while the read-only
    //    one is still open; a second saving session of the profile is refused meanwhile.
    let s3 = d.create(KEY_T1, json!({"profile": id1})).await;
    let id3 = s3["session_id"].as_str().unwrap().to_string();
    assert_eq!(s3["profile"]["id"], id1);
    let (st, v) = d
        .post_vm(KEY_T1, json!({"profile": {"load": id1, "save": true}}))
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("profile_in_use")),
        "{v}"
    );
    // One session's admin token cannot act on another session.
    let tok3 = s3["admin_token"].as_str().unwrap();
    let id2 = s2["session_id"].as_str().unwrap();
    let (st, _) = d
        .call("DELETE", &format!("/v0/vm/{id2}"), Some(tok3), None)
        .await;
    assert_eq!(st, 401);
    let mut cdp = Cdp::connect(s3["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    cdp.eval("localStorage.setItem('pv_ls', 'second-' + localStorage.getItem('pv_ls')); window.__done = true").await;
    let_storage_land().await;
    cdp.close().await;
    // Its own admin token ends it.
    let (st, ended) = d
        .call(
            "DELETE",
            &format!("/v0/vm/{id3}?wait=true"),
            Some(tok3),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(ended["save"]["generation"], 2, "{ended}");
    assert_eq!(ended["profile"]["id"], id1);
    let ended2 = d.end_and_wait(KEY_T1, id2).await;
    assert_eq!(ended2["save"]["state"], "none");

    // 4. Loading by the later session's id finds the same profile, at generation 2.
    let s4 = d.create(KEY_T1, json!({"profile": {"load": id3}})).await;
    assert_eq!(s4["profile"]["id"], id1);
    assert_eq!(s4["profile"]["generation"], 2);
    let mut cdp = Cdp::connect(s4["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let st4 = state(&cdp.eval(READ_STATE).await);
    assert_eq!(st4["ls"], format!("second-{marker}"));
    assert_eq!(st4["cookie"], format!("pv_cookie={marker}"));
    cdp.close().await;
    // GET /v0/vm lists the tenant's active sessions only.
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![s4["session_id"].as_str().unwrap()]);
    d.end_and_wait(KEY_T1, s4["session_id"].as_str().unwrap())
        .await;

    // 5. Another tenant can neither load the profile nor see sessions or profiles.
    let (st, v) = d.post_vm(KEY_T2, json!({"profile": {"load": id1}})).await;
    assert_eq!((st, v["error"].as_str()), (404, Some("profile_not_found")));
    let (st, _) = d
        .call("GET", &format!("/v0/vm/{id1}"), Some(KEY_T2), None)
        .await;
    assert_eq!(st, 404);
    let (st, _) = d
        .call("GET", &format!("/v0/profiles/{id1}"), Some(KEY_T2), None)
        .await;
    assert_eq!(st, 404);
    let (_, v) = d.call("GET", "/v0/profiles", Some(KEY_T2), None).await;
    assert_eq!(v["profiles"], json!([]));
    let (st, v) = d
        .call("GET", &format!("/v0/profiles/{id1}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["generation"], 2);
    assert_eq!(v["generations"].as_array().unwrap().len(), 2);
    assert!(
        v["last_used"].as_u64().unwrap() >= v["last_saved"].as_u64().unwrap(),
        "{v}"
    );

    // 6. Inactivity ends and saves a session.
    let s5 = d
        .create(
            KEY_T1,
            json!({"profile": {"save": true}, "timeout": {"inactive": 2, "absolute": null}}),
        )
        .await;
    let id5 = s5["session_id"].as_str().unwrap().to_string();
    let v = d
        .wait_for(KEY_T1, &id5, 60, |v| v["save"]["state"] == "saved")
        .await;
    assert_eq!(v["end_reason"], "inactive");

    // 7. Deleting a profile: not while a session that will save it runs (its save would
    // leave a generation of a profile no one can list or load), then at once.
    let s6 = d.create(KEY_T1, json!({"profile": id5})).await;
    let (st, v) = d
        .call("DELETE", &format!("/v0/profiles/{id5}"), Some(KEY_T1), None)
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("profile_in_use")),
        "{v}"
    );
    d.end_and_wait(KEY_T1, s6["session_id"].as_str().unwrap())
        .await;
    let (st, _) = d
        .call("DELETE", &format!("/v0/profiles/{id5}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200);
    let (st, _) = d.post_vm(KEY_T1, json!({"profile": {"load": id5}})).await;
    assert_eq!(st, 404);

    // The audit trail names who did what: API keys, admin tokens, timeouts.
    let out = cli_for(&d).args(["audit", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actors: Vec<String> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["actor"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "load api-key:t1#",
        "save api-key:t1",
        "save admin-token:",
        "save daemon:inactive",
        "delete api-key:t1#",
    ] {
        assert!(
            actors.iter().any(|a| a.starts_with(want)),
            "{want} missing from {actors:?}"
        );
    }

    // Secrets never reach the log, even at trace level.
    let log = d.log_text();
    for secret in [
        KEY_T1,
        KEY_T2,
        s1["admin_token"].as_str().unwrap(),
        tok3,
        "AQEBAQEBAQEBAQEBAQEB",
    ] {
        assert!(!log.contains(secret), "a secret leaked into the log");
    }
    assert!(
        !log.contains(&marker) || !log.contains("pv_cookie"),
        "a cookie value leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_remember_on_the_filesystem_store() {
    full_cycle(StoreKind::Fs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_remember_on_localstack() {
    full_cycle(StoreKind::LocalStack(unique("e2e"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (Some(KEY_T1), "{bad json".into(), 400, "invalid_json"),
        (
            Some(KEY_T1),
            r#"{"profile": 5}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"width": "wide"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"frobnicate": true}"#.into(),
            400,
            "unknown_field",
        ),
        (
            Some(KEY_T1),
            r#"{"timeout": {"forever": 1}}"#.into(),
            400,
            "unknown_field",
        ),
        (
            Some(KEY_T1),
            r#"{"profile": {"load": "x", "mode": 1}}"#.into(),
            400,
            "unknown_field",
        ),
        (
            Some(KEY_T1),
            r#"{"start_url": "file:///etc/passwd"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"profile": {"load": "../../etc"}}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"user_agent": "\n"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"start_url": 5}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"timeout": {"absolute": 1e40}}"#.into(),
            400,
            "invalid_request",
        ),
        (
            Some(KEY_T1),
            r#"{"profile": {"load": "no-such-profile"}}"#.into(),
            404,
            "profile_not_found",
        ),
        (None, "{}".into(), 401, "unauthorized"),
        (
            Some("wrong-key-wrong-key"),
            "{}".into(),
            401,
            "unauthorized",
        ),
        (
            Some(KEY_T1),
            format!(r#"{{"tag": "{}"}}"#, "x".repeat(100_000)),
            413,
            "body_too_large",
        ),
    ];
    for (token, body, status, code) in cases {
        let (st, v) = d.call("POST", "/v0/vm", token, Some(&body)).await;
        assert_eq!(st, status, "{} -> {v}", &body[..body.len().min(60)]);
        if !code.is_empty() {
            assert_eq!(v["error"], code, "{v}");
            assert!(v["message"].is_string());
        }
    }
    // Errors the framework answers itself are the documented JSON too.
    let raw = |method: &'static str, path: &'static str, ct: &'static str, body: &'static str| {
        let addr = d.addr.clone();
        async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {KEY_T1}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
                .await
                .unwrap();
            out
        }
    };
    for (method, path, ct, body, status, code) in [
        (
            "POST",
            "/v0/vm",
            "text/plain",
            "{}",
            415,
            "unsupported_media_type",
        ),
        (
            "PATCH",
            "/v0/vm",
            "application/json",
            "",
            405,
            "method_not_allowed",
        ),
        ("GET", "/v0/nope", "application/json", "", 404, "not_found"),
        (
            "GET",
            "/v0/vm?limit=0",
            "application/json",
            "",
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/v0/vm?limit=x",
            "application/json",
            "",
            400,
            "invalid_request",
        ),
    ] {
        let out = raw(method, path, ct, body).await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} {path}: {out}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{out}"
        );
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {out}"));
        assert_eq!(v["error"], code, "{method} {path}: {v}");
        assert!(v["message"].is_string(), "{v}");
    }
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(list["sessions"], json!([]), "no session was started");
    assert_eq!(
        std::fs::read_dir(dir.path().join("data/browsers"))
            .unwrap()
            .count(),
        0
    );
    let (st, v) = d
        .call("GET", "/v0/vm/not-a-session", Some(KEY_T1), None)
        .await;
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")));
    let (st, _) = d.call("GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
    let (st, v) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 200, "{v}");
    let (st, m) = http_raw(&d.addr, "GET", "/metrics", None, None).await;
    assert_eq!(st, 200);
    assert!(
        m.contains("pv_sessions_active 0") && m.contains("pv_saves_total{outcome=\"ok\"}"),
        "{m}"
    );
    for family in [
        "pv_save_duration_seconds_bucket{le=\"+Inf\"}",
        "pv_store_errors_total{kind=\"unavailable\"}",
        "pv_queue_depth{queue=\"saves\"}",
        "pv_save_chunks_total{kind=\"reused\"}",
        "pv_packs_deleted_total",
    ] {
        assert!(m.contains(family), "{family} missing: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playwright_and_puppeteer_connect_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let s = d.create(KEY_T1, json!({})).await;
    let out = run_cdp_clients(s["cdp_url"].as_str().unwrap()).await;
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pwTitle"], "pw-ok");
    assert_eq!(v["ppTitle"], "pp-ok");
    assert!(v["ua"].as_str().unwrap().contains("Chrome/"));
    // The browser's own DevTools port is loopback-only and never in any answer.
    assert!(!s.to_string().contains("devtools/browser"));
}
