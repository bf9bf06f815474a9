//! What operators rely on, end to end with real Chromium and a real store: a killed daemon's
//! sessions saved at its restart, SIGTERM, a crashed browser, the retention sweeper, timeout
//! webhooks, no secret in the logs and owner-only files, a daemon without Chromium.

use std::time::Duration;

use serde_json::{json, Value};

use crate::api::cli_for;
use crate::common::daemon::*;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_daemon_saves_orphaned_sessions_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let site = test_site().await;
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, StoreKind::Fs, &[]);
    let marker = format!("k{}", uuid::Uuid::new_v4().simple());
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v={marker}")).await;
    cdp.close().await;
    d.kill9();
    // The browser outlived the daemon; a new daemon stops it cleanly and saves the profile.
    let d2 = Daemon::start(&data, StoreKind::Fs, &[]);
    let v = d2.wait_saved(KEY_T1, &id, 60).await;
    assert_eq!(v["generation"], 1, "orphan saved");
    let s2 = d2.create(KEY_T1, json!({"profile": {"load": id}})).await;
    let mut cdp = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let st = state(&cdp.eval(READ_STATE).await);
    assert_eq!(
        st["cookie"],
        format!("pv_cookie={marker}"),
        "cookie survived the crash: {st}"
    );
    assert_eq!(st["ls"], marker);
    cdp.close().await;
    assert!(
        std::fs::read_dir(data.join("sessions"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count()
            <= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_and_saves_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, StoreKind::Fs, &[]);
    let a = d.create(KEY_T1, json!({"profile": true})).await;
    let b = d.create(KEY_T2, json!({"profile": {"save": true}})).await;
    assert!(d.stop().success());
    let d2 = Daemon::start(&data, StoreKind::Fs, &[]);
    for (key, s) in [(KEY_T1, &a), (KEY_T2, &b)] {
        let (st, v) = d2
            .call(
                "GET",
                &format!("/v0/profiles/{}", s["session_id"].as_str().unwrap()),
                Some(key),
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    assert_eq!(
        std::fs::read_dir(data.join("browsers")).unwrap().count(),
        0,
        "browser dirs removed after saving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_browser_is_saved_as_unclean_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("c.toml"), "[server]\nmax_sessions = 2\n").unwrap();
    let d = Daemon::start(
        &data,
        StoreKind::Fs,
        &[("PV_CONFIG", dir.path().join("c.toml").to_str().unwrap())],
    );
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    // Every log line of a request carries its request id (the log is read as it arrives).
    let mut started = None;
    for _ in 0..50 {
        started = d
            .log_text()
            .lines()
            .find(|l| l.contains("session started") && l.contains(&id))
            .map(str::to_string);
        if started.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = started.expect("a 'session started' log line");
    assert!(started.contains("request_id="), "{started}");
    // Session limit (max_sessions = 2 in the config below).
    let s2 = d.create(KEY_T1, json!({})).await;
    let (st, v) = d.call("POST", "/v0/vm", Some(KEY_T2), Some("{}")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("too_many_sessions")),
        "{v}"
    );
    d.end_and_wait(KEY_T1, s2["session_id"].as_str().unwrap())
        .await;
    // Kill the browser process itself.
    let rec: Value =
        serde_json::from_slice(&std::fs::read(data.join(format!("sessions/{id}.json"))).unwrap())
            .unwrap();
    let pid = rec["pid"].as_u64().unwrap();
    assert!(pid > 1);
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let v = d
        .wait_for(KEY_T1, &id, 30, |v| v["save"]["state"] == "saved")
        .await;
    assert_eq!(v["end_reason"], "crash");
    let (st, p) = d
        .call("GET", &format!("/v0/profiles/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(p["generations"][0]["clean_exit"], false, "{p}");
}

fn assert_owner_only(root: &std::path::Path) -> usize {
    use std::os::unix::fs::PermissionsExt;
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.file_type().is_symlink() || !(m.is_file() || m.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with("daemon-") {
                continue; // the test's own log capture
            }
            assert_eq!(
                m.permissions().mode() & 0o077,
                0,
                "{} is readable by others",
                e.path().display()
            );
            n += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_and_every_file_is_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let site = test_site().await;
    let aws_secret = format!("aws-secret-{}", uuid::Uuid::new_v4().simple());
    let data = dir.path().join("data");
    let d = Daemon::start(
        &data,
        StoreKind::LocalStack(unique("secrets")),
        &[("PV_LOG", "trace"), ("AWS_SECRET_ACCESS_KEY", &aws_secret)],
    );
    let marker = format!("c{}", uuid::Uuid::new_v4().simple());
    let s1 = d.create(KEY_T1, json!({"profile": true})).await;
    let id1 = s1["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s1["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v={marker}")).await;
    cdp.close().await;
    // While the browser runs, everything under the data dir is owner-only (umask 077).
    assert!(assert_owner_only(&data) > 20);
    d.end_and_wait(KEY_T1, &id1).await;
    let s2 = d.create(KEY_T1, json!({"profile": {"load": id1}})).await;
    d.end_and_wait(
        s2["admin_token"].as_str().unwrap(),
        s2["session_id"].as_str().unwrap(),
    )
    .await;
    assert_owner_only(&data);
    let log = d.log_text();
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "the log was captured at trace level"
    );
    for (what, secret) in [
        ("API key", KEY_T1.to_string()),
        ("other API key", KEY_T2.to_string()),
        (
            "admin token",
            s1["admin_token"].as_str().unwrap().to_string(),
        ),
        (
            "admin token",
            s2["admin_token"].as_str().unwrap().to_string(),
        ),
        ("master key", "AQEBAQEBAQEBAQEBAQEB".to_string()),
        ("AWS secret key", aws_secret.clone()),
        ("cookie value", marker.clone()),
    ] {
        assert!(!log.contains(&secret), "{what} found in the trace log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweeper_deletes_idle_profiles_but_not_ones_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[retention]\nsweep_every = 1\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[
            ("PV_CONFIG", cfg.to_str().unwrap()),
            ("PV_RETENTION_MAX_IDLE_SECS", "3"),
        ],
    );
    let idle = d.create(KEY_T1, json!({"profile": true})).await;
    let idle_id = idle["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &idle_id).await;
    let busy = d.create(KEY_T1, json!({"profile": true})).await;
    let busy_id = busy["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &busy_id).await;
    // Keep "busy" in use by a live session past the idle limit.
    let live = d.create(KEY_T1, json!({"profile": busy_id})).await;
    let start = std::time::Instant::now();
    loop {
        let (st, _) = d
            .call(
                "GET",
                &format!("/v0/profiles/{idle_id}"),
                Some(KEY_T1),
                None,
            )
            .await;
        if st == 404 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "idle profile never deleted\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, _) = d
        .call(
            "GET",
            &format!("/v0/profiles/{busy_id}"),
            Some(KEY_T1),
            None,
        )
        .await;
    assert_eq!(st, 200, "a profile in use is kept");
    d.end_and_wait(KEY_T1, live["session_id"].as_str().unwrap())
        .await;
    let out = cli_for(&d)
        .args(["audit", "--json", "--profile", &idle_id])
        .output()
        .unwrap();
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "delete" && e["actor"] == "daemon:retention"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_webhooks_warn_before_and_report_the_end() {
    use std::sync::{Arc, Mutex};
    type Calls = Arc<Mutex<Vec<(Option<String>, Value)>>>;
    let got: Calls = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    sink.lock()
                        .unwrap()
                        .push((auth, serde_json::from_slice(&body).unwrap()));
                    "ok"
                }
            },
        ),
    );
    // The hook listens where the test daemons' egress policy allows (127.0.0.2).
    let listener = tokio::net::TcpListener::bind(SITE_HOST).await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let bearer = format!("hook-secret-{}", uuid::Uuid::new_v4().simple());
    let s = d
        .create(KEY_T1, json!({"profile": true, "timeout": {"inactive": 4, "warning": 2, "webhook": {"url": format!("http://{hook_addr}/hook"), "bearer": bearer}}}))
        .await;
    let id = s["session_id"].as_str().unwrap().to_string();
    assert_eq!(
        s["ignored"],
        json!([]),
        "warning and webhook are honoured now"
    );
    let start = std::time::Instant::now();
    loop {
        let events: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v["type"].as_str().unwrap_or("").to_string())
            .collect();
        if events.contains(&"ended".to_string()) {
            assert_eq!(events[0], "timeout_warning", "{events:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no webhook calls: {events:?}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let calls = got.lock().unwrap().clone();
    for (auth, v) in &calls {
        assert_eq!(auth.as_deref(), Some(format!("Bearer {bearer}").as_str()));
        assert_eq!(v["session_id"], id.as_str());
    }
    let ended = calls.iter().find(|(_, v)| v["type"] == "ended").unwrap();
    assert_eq!(ended.1["reason"], "inactive");
    assert_eq!(ended.1["save"]["state"], "saved");
    assert!(
        !d.log_text().contains(&bearer),
        "the webhook bearer leaked into the log"
    );
    // Bad webhooks are refused up front.
    for bad in [
        json!({"url": "ftp://x"}),
        json!({"url": "http://x", "token": "y"}),
        json!("http://x"),
    ] {
        let (st, v) = d
            .post_vm(KEY_T1, json!({"timeout": {"webhook": bad}}))
            .await;
        assert_eq!(st, 400, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chromium_the_daemon_starts_and_says_it_is_not_ready() {
    // What it answers then is tested in process (api::tests); this is the binary starting.
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[("PV_CHROMIUM", "/nonexistent/chromium")],
    );
    let (st, v) = d.call("GET", "/readyz", None, None).await;
    assert_eq!((st, &v["checks"]["chromium"]), (503, &json!(false)), "{v}");
    let (st, _) = d.call("GET", "/healthz", None, None).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_replaces_the_binary_under_the_daemon_does_not_stop_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("profile-vault");
    std::fs::copy(env!("CARGO_BIN_EXE_profile-vault"), &bin).unwrap();
    let d = Daemon::start_binary(&bin, &dir.path().join("data"), StoreKind::Fs, &[]);
    let a = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    // A package upgrade writes the new binary beside the old and renames it over: the file
    // the daemon runs (and hands every sandbox as its init) is deleted.
    let new = dir.path().join("profile-vault.new");
    std::fs::write(&new, b"#!/bin/sh\nexit 1\n").unwrap();
    std::fs::rename(&new, &bin).unwrap();
    // Sessions still start, with the init of the daemon that runs; and again.
    let b = d.create(KEY_T2, json!({"profile": {"save": true}})).await;
    let c = d.create(KEY_T2, json!({"profile": {"save": false}})).await;
    for (key, s) in [(KEY_T1, &a), (KEY_T2, &b), (KEY_T2, &c)] {
        d.end_and_wait(key, s["session_id"].as_str().unwrap()).await;
    }
}
