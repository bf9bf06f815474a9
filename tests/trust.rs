//! The daemon trusts nothing a browser, a tenant or a client can shape: forged session
//! records, internal addresses given as `start_url` or webhook, clients that go away in the
//! middle of a start, concurrent starts past the limit, and oversized DevTools messages.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::common::daemon::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_session_records_are_rejected_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, StoreKind::Fs, &[]);
    // What a forged record names: a directory outside browsers/, and a directory inside it.
    let victim = dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let inside = data.join("browsers/forged-two");
    std::fs::create_dir_all(inside.join("Default")).unwrap();
    std::fs::write(inside.join("Default/Preferences"), b"{}").unwrap();
    let forged = |id: &str, tenant: &str, dir: &std::path::Path, mac: Option<&str>| {
        let mut r = json!({"id": id, "tenant": tenant, "profile_id": "stolen", "save": true,
            "base_generation": null, "dir": dir, "pid": 0, "created_at": 1, "state": "failed"});
        if let Some(m) = mac {
            r["mac"] = json!(m);
        }
        std::fs::write(data.join(format!("sessions/{id}.json")), r.to_string()).unwrap();
    };
    forged("forged-one", "t1", &victim, None);
    forged("forged-two", "t2", &inside, Some(&"ab".repeat(32)));
    // A record copied under another name (its id is not its file name).
    let (st, v) = d
        .call("POST", "/v0/saves/forged-one/retry", Some(KEY_T1), None)
        .await;
    assert_eq!(st, 404, "{v}");
    let (st, v) = d
        .call("POST", "/v0/saves/forged-two/retry", Some(KEY_T2), None)
        .await;
    assert_eq!(st, 404, "{v}");
    let (_, v) = d.call("GET", "/v0/saves", Some(KEY_T2), None).await;
    assert!(!v.to_string().contains("forged"), "{v}");
    // A restart (recovery reads every record) starts, and touches neither.
    d.stop();
    let d = Daemon::start(&data, StoreKind::Fs, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        std::fs::read(victim.join("precious")).unwrap(),
        b"keep me",
        "a forged record deleted a directory"
    );
    assert!(inside.join("Default/Preferences").exists());
    for key in [KEY_T1, KEY_T2] {
        let (st, _) = d.call("GET", "/v0/profiles/stolen", Some(key), None).await;
        assert_eq!(st, 404, "a forged record was saved as a profile");
    }
    let (_, ready) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(
        ready["checks"]["session_records_rejected"].as_u64() >= Some(2),
        "{ready}"
    );
    let (_, metrics) = http_raw(&d.addr, "GET", "/metrics", None, None).await;
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pv_session_records_rejected_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(rejected >= 2, "{metrics}");
    // The daemon's own records still work: a real session saves and is listed nowhere else.
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let v = d
        .end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
        .await;
    assert_eq!(v["save"]["state"], "saved", "{v}");
}

/// A name of this machine that resolves to a non-public address (to show that names are
/// checked after resolution, not only literals).
fn internal_name() -> Option<String> {
    use std::net::ToSocketAddrs;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    [host.trim().to_string(), "localhost.".to_string()]
        .into_iter()
        .filter(|h| !h.is_empty())
        .find(|h| {
            (h.as_str(), 80u16).to_socket_addrs().is_ok_and(|mut a| {
                a.next()
                    .is_some_and(|a| !profile_vault::browser::egress::is_public(a.ip()))
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_as_start_url_and_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    // A hook on an internal address that counts what reaches it.
    let (addr, hits) = counting_server("127.0.0.1:0", "ok").await;
    let port = addr.rsplit(':').next().unwrap().to_string();
    for body in [
        json!({"start_url": format!("http://127.0.0.1:{port}/")}),
        json!({"start_url": "http://169.254.169.254/latest/meta-data/"}),
        json!({"start_url": "http://[::1]:9222/json"}),
        json!({"timeout": {"inactive": 60, "webhook": {"url": format!("http://127.0.0.1:{port}/hook"), "bearer": "x"}}}),
        json!({"timeout": {"inactive": 60, "webhook": {"url": "http://10.1.2.3/hook"}}}),
        json!({"timeout": {"inactive": 60, "webhook": {"url": format!("http://localhost:{port}/hook")}}}),
    ] {
        let (st, v) = d.post_vm(KEY_T1, body.clone()).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}: {v}"
        );
    }
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(list.to_string().matches("session_id").count(), 0, "{list}");
    // A name that resolves inside is refused when the daemon connects.
    if let Some(name) = internal_name() {
        let s = d
            .create(
                KEY_T1,
                json!({"timeout": {"inactive": 60, "webhook": {"url": format!("http://{name}:{port}/hook")}}}),
            )
            .await;
        d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
            .await;
        // The "ended" webhook goes out after the save, in the background.
        let start = std::time::Instant::now();
        loop {
            let (_, metrics) = http_raw(&d.addr, "GET", "/metrics", None, None).await;
            if metrics.contains("pv_webhooks_refused_total 1") {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{metrics}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        eprintln!("no name of this machine resolves to an internal address; name check not run");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the daemon called an internal address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_hold_their_limit_and_a_client_that_leaves_takes_nothing_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::with_config(dir.path(), "[sessions]\nmax_sessions = 1\n");
    // Three concurrent starts with room for one.
    let answers =
        futures_util::future::join_all((0..3).map(|_| d.post_vm(KEY_T1, json!({"profile": true}))))
            .await;
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == 200)
        .map(|(_, v)| v)
        .collect();
    let full = answers.iter().filter(|(st, _)| *st == 429).count();
    assert_eq!((ok.len(), full), (1, 2), "{answers:?}");
    d.end_and_wait(KEY_T1, ok[0]["session_id"].as_str().unwrap())
        .await;
    // A client that goes away in the middle of a start (a load with a restore, then the
    // browser's launch) leaves no browser, directory, record, lock or slot behind.
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let profile = s["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &profile).await;
    for delay in [50u64, 250, 500] {
        d.post_vm_and_leave(
            KEY_T1,
            json!({"profile": {"load": profile, "save": true}}),
            Duration::from_millis(delay),
        )
        .await;
        // Either the start was abandoned (nothing left) or it finished (then it is a session,
        // ended here). A start still under way on a loaded machine is waited for.
        let left = |sub: &str| std::fs::read_dir(data.join(sub)).map_or(0, |r| r.count());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        tokio::time::sleep(Duration::from_secs(3)).await;
        loop {
            let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
            for s in list
                .as_array()
                .into_iter()
                .flatten()
                .chain(list["sessions"].as_array().into_iter().flatten())
            {
                if let Some(id) = s["session_id"].as_str() {
                    d.end_and_wait(KEY_T1, id).await;
                }
            }
            let now = (left("run"), left("browsers"), left("sessions"));
            if now == (0, 0, 0) || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            (left("run"), left("browsers"), left("sessions")),
            (0, 0, 0),
            "after a client left at {delay} ms"
        );
        // The slot and the profile are free again.
        let again = d
            .create(KEY_T1, json!({"profile": {"load": profile, "save": true}}))
            .await;
        d.end_and_wait(KEY_T1, again["session_id"].as_str().unwrap())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_devtools_messages_are_refused_without_holding_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let s = d.create(KEY_T1, json!({})).await;
    let url = s["cdp_url"].as_str().unwrap().to_string();
    let pid = d.child.as_ref().unwrap().id();
    let big = format!(
        r#"{{"id":1,"method":"Runtime.evaluate","params":{{"expression":"'{}'"}}}}"#,
        "x".repeat(150 << 20)
    );
    for _ in 0..2 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                big.clone().into(),
            ))
            .await;
        // The daemon closes the socket rather than answering.
        let next = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
        let answered = matches!(
            next,
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_))))
        );
        assert!(!answered, "a 150 MiB message was relayed");
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 200 * 1024,
        "the daemon's memory peaked at {} MiB",
        peak_kib / 1024
    );
    // The session still answers a client of normal size.
    let mut cdp = Cdp::connect(&url).await;
    assert_eq!(cdp.eval("6 * 7").await, json!(42));
    cdp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_has_a_cap_of_its_own_and_no_session_lives_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::with_config(
        dir.path(),
        "[sessions]\nmax_sessions = 3\nmax_sessions_per_tenant = 1\n",
    );
    // No timeout at all: the default lifetime (a day) still ends it.
    let a = d
        .create(
            KEY_T1,
            json!({"timeout": {"absolute": null, "inactive": null}}),
        )
        .await;
    let expires = a["expires_at"].as_u64().expect("a session that never ends");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expires > now && expires <= now + 86_400 + 5, "{a}");
    let (st, v) = d.post_vm(KEY_T1, json!({})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("too_many_sessions")),
        "{v}"
    );
    let b = d.create(KEY_T2, json!({})).await;
    for (key, s) in [(KEY_T1, &a), (KEY_T2, &b)] {
        d.end_and_wait(key, s["session_id"].as_str().unwrap()).await;
    }
    // Its slot is its own again once it ended.
    let c = d.create(KEY_T1, json!({})).await;
    d.end_and_wait(KEY_T1, c["session_id"].as_str().unwrap())
        .await;
}

/// Sends `PUT path` with `body` and the cluster headers of `a` signed as `signed`.
async fn put_signed(
    addr: &str,
    path: &str,
    a: &profile_vault::cluster::sign::Assertion,
    body: &[u8],
) -> (u16, String) {
    use profile_vault::cluster::sign;
    use tokio::io::AsyncReadExt;
    let sig = sign::sign(CLUSTER_SECRET, a, "PUT", path);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in [
        (sign::H_NODE, a.node.as_str()),
        (sign::H_TARGET, a.target.as_str()),
        (sign::H_TIME, &a.time_ms.to_string()),
        (sign::H_ACTOR, a.actor.as_str()),
        (sign::H_NONCE, a.nonce.as_str()),
        (sign::H_BODY, a.body_sha256.as_str()),
        (sign::H_SIG, sig.as_str()),
    ] {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    response_status(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_forwarded_request_is_neither_replayed_nor_given_another_body() {
    use profile_vault::cluster::sign;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let env = [("PV_STORE", store.as_str())];
    let a = Daemon::start(&dir.path().join("a"), StoreKind::Fs, &env);
    let b = Daemon::start(&dir.path().join("b"), StoreKind::Fs, &env);
    let s = b.create(KEY_T1, json!({})).await;
    let id = s["session_id"].as_str().unwrap();
    let node = |d: &Daemon| {
        std::fs::read_to_string(d.data.join("node-id"))
            .unwrap()
            .trim()
            .to_string()
    };
    let path = format!("/v0/vm/{id}/store/pin");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // What node A sends node B for a tenant's write.
    let mut asserted = sign::Assertion {
        node: node(&a),
        target: node(&b),
        time_ms: now,
        actor: "api-key:t1#captured".into(),
        nonce: sign::Assertion::new_nonce(),
        body_sha256: sign::body_hash(b"1"),
    };
    let (st, r) = put_signed(&b.addr, &path, &asserted, b"1").await;
    assert_eq!(st, 200, "{r}");
    // Captured and sent again: as it was, and with another body.
    let (st, r) = put_signed(&b.addr, &path, &asserted, b"1").await;
    assert!(
        st == 401 && r.contains("cluster_auth_failed"),
        "a replay was accepted: {r}"
    );
    let (st, r) = put_signed(&b.addr, &path, &asserted, b"2").await;
    assert_eq!(st, 401, "a swapped body was accepted: {r}");
    // A fresh nonce does not let another body through either.
    asserted.nonce = sign::Assertion::new_nonce();
    let (st, r) = put_signed(&b.addr, &path, &asserted, b"3").await;
    assert_eq!(
        st, 401,
        "a body other than the signed one was accepted: {r}"
    );
    let (_, v) = b
        .call("GET", &format!("/v0/vm/{id}/store"), Some(KEY_T1), None)
        .await;
    assert_eq!(v["entries"]["pin"]["value"], json!(1), "{v}");
    // Forwarding itself still works: the store written through node A.
    let (st, v) = a.call("PUT", &path, Some(KEY_T1), Some("5")).await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = b
        .call("GET", &format!("/v0/vm/{id}/store"), Some(KEY_T1), None)
        .await;
    assert_eq!(v["entries"]["pin"]["value"], json!(5), "{v}");
    b.end_and_wait(KEY_T1, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_takes_a_bounded_number_of_devtools_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::with_config(dir.path(), "[sessions]\nmax_cdp_clients = 2\nmax_cdp_clients_per_tenant = 3\n[live]\nmax_viewers_per_tenant = 1\n");
    let s = d.create(KEY_T1, json!({})).await;
    let url = s["cdp_url"].as_str().unwrap().to_string();
    // A burst of clients at once gets no more places than one after the other.
    let burst: Vec<_> = (0..20)
        .map(|_| tokio::spawn(tokio_tungstenite::connect_async(url.clone())))
        .collect();
    let mut let_in = Vec::new();
    for b in burst {
        match b.await.unwrap() {
            Ok((ws, _)) => let_in.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        let_in.len(),
        2,
        "a burst of DevTools clients got past the limit"
    );
    for mut ws in let_in {
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = Cdp::connect(&url).await;
    let mut b = Cdp::connect(&url).await;
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!(
            "a third DevTools client was let in: {:?}",
            other.map(|_| ())
        ),
    }
    // The ones connected keep working, and a slot frees when one leaves.
    assert_eq!(b.eval("1 + 2").await, json!(3));
    a.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Cdp::connect(&url).await;
    assert_eq!(c.eval("2 + 2").await, json!(4));
    // Across the tenant's sessions: 2 here and 1 on another session make 3, the tenant's cap.
    let other = d.create(KEY_T1, json!({})).await;
    let other_url = other["cdp_url"].as_str().unwrap().to_string();
    let e = Cdp::connect(&other_url).await;
    match tokio_tungstenite::connect_async(&other_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("the tenant's cap let a client in: {:?}", other.map(|_| ())),
    }
    // Another tenant is not held by it.
    let t2 = d.create(KEY_T2, json!({})).await;
    let t2c = Cdp::connect(t2["cdp_url"].as_str().unwrap()).await;
    b.close().await;
    c.close().await;
    e.close().await;
    t2c.close().await;
    // Viewers: one for the tenant on this node; the second, on another session, is refused.
    let viewer = |s: &Value| viewer_socket(&d, s);
    let (mut first, _) = tokio_tungstenite::connect_async(viewer(&s)).await.unwrap();
    let hello = tokio::time::timeout(Duration::from_secs(20), first.next()).await;
    assert!(
        matches!(hello, Ok(Some(Ok(_)))),
        "the first viewer was let in"
    );
    let (mut second, _) = tokio_tungstenite::connect_async(viewer(&other))
        .await
        .unwrap();
    let mut closed = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), second.next()).await {
        if let tokio_tungstenite::tungstenite::Message::Close(Some(f)) = m {
            closed = Some(u16::from(f.code));
            break;
        }
    }
    assert_eq!(closed, Some(4008), "the tenant's second viewer was let in");
    let _ = first.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_state_jobs_have_a_limit_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    // Two imports of one tenant at once (max_state_jobs_per_tenant = 1 by default): one runs,
    // the other is refused at once and changes nothing.
    let body =
        |id: &str| json!({"id": id, "storage_state": {"cookies": [], "origins": []}}).to_string();
    let (b1, b2) = (body("job-one"), body("job-two"));
    let (r1, r2) = tokio::join!(
        d.call("POST", "/v0/profiles", Some(KEY_T1), Some(&b1)),
        d.call("POST", "/v0/profiles", Some(KEY_T1), Some(&b2)),
    );
    let mut codes = [r1.0, r2.0];
    codes.sort_unstable();
    assert_eq!(codes, [200, 429], "{r1:?} {r2:?}");
    let refused = if r1.0 == 429 {
        (&r1.1, "job-one")
    } else {
        (&r2.1, "job-two")
    };
    assert_eq!(refused.0["error"], "too_many_jobs", "{}", refused.0);
    let (st, _) = d
        .call(
            "GET",
            &format!("/v0/profiles/{}", refused.1),
            Some(KEY_T1),
            None,
        )
        .await;
    assert_eq!(st, 404, "a refused import left a profile");
    // The slot is free again once the job ended.
    let (st, v) = d
        .call(
            "POST",
            "/v0/profiles",
            Some(KEY_T1),
            Some(&body("job-three")),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // A client that goes away in the middle of an import (its browser running) leaves no
    // browser, work directory, profile or job slot behind.
    let pid = d.child.as_ref().unwrap().id();
    let cookies: Vec<Value> = (0..150)
        .map(|i| json!({"name": format!("c{i}"), "value": "v", "domain": "example.com", "path": "/"}))
        .collect();
    let left_body = json!({"id": "job-left", "storage_state": {"cookies": cookies, "origins": [
        {"origin": "https://example.com", "localStorage": [{"name": "k", "value": "v"}]}]}})
    .to_string();
    let mut saw_browser = false;
    for delay in [300u64, 800, 1500] {
        let mut sock = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
        let req = format!(
            "POST /v0/profiles HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY_T1}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{left_body}",
            d.addr,
            left_body.len()
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        saw_browser |= !descendants(pid).is_empty();
        drop(sock);
        let gone = async {
            while !descendants(pid).is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "an import left at {delay} ms left processes {:?}",
                    descendants(pid)
                )
            });
        // The job ends either way (abandoned, or finishing its save): then nothing of its
        // run or work directories is left.
        let left = |sub: &str| std::fs::read_dir(d.data.join(sub)).map_or(0, |r| r.count());
        let mut waited = 0;
        while (left("run"), left("state-work")) != (0, 0) && waited < 150 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
        assert_eq!((left("run"), left("state-work")), (0, 0), "at {delay} ms");
        // Either the import finished before the client left, or nothing of it exists.
        let (st, _) = d
            .call("GET", "/v0/profiles/job-left", Some(KEY_T1), None)
            .await;
        if st == 200 {
            let (st, v) = d
                .call("DELETE", "/v0/profiles/job-left", Some(KEY_T1), None)
                .await;
            assert!(st < 300, "{st} {v}");
        } else {
            assert_eq!(st, 404, "at {delay} ms");
        }
        let (st, v) = d
            .call(
                "POST",
                "/v0/profiles",
                Some(KEY_T1),
                Some(&body("job-after")),
            )
            .await;
        assert_eq!(st, 200, "the job slot was not freed at {delay} ms: {v}");
        let (st, v) = d
            .call("DELETE", "/v0/profiles/job-after", Some(KEY_T1), None)
            .await;
        assert!(st < 300, "{st} {v}");
    }
    assert!(saw_browser, "no import browser ran while the client waited");
}
