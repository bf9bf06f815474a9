//! The session store through real HTTP clients: compare-and-set races, an SSE watcher that
//! resumes with Last-Event-ID, every limit's error, tenants and tokens, viewers over the embed
//! socket, and the store gone with the session.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::daemon::*;

/// One request with extra headers; (status, headers text, JSON body).
async fn req(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    s.write_all(r.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        status,
        head.to_string(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The value the winner of the compare-and-set race wrote.
fn loser_value(r1: &(u16, String, Value), _r2: &(u16, String, Value)) -> &'static str {
    if r1.0 == 200 {
        "first"
    } else {
        "second"
    }
}

/// An SSE watcher on a raw connection.
struct Watcher {
    lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
}

impl Watcher {
    async fn open(addr: &str, path: &str, token: &str, last_event_id: Option<u64>) -> Watcher {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut r = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            r.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        r.push_str("\r\n");
        s.write_all(r.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let l = lines.next_line().await.unwrap().unwrap();
            if l.is_empty() {
                break;
            }
            assert!(
                !l.to_ascii_lowercase().starts_with("content-type:")
                    || l.contains("text/event-stream"),
                "{l}"
            );
        }
        Watcher { lines }
    }

    /// The next event: (event, id, data). Chunk-size lines of the chunked encoding and
    /// keep-alive comments are skipped.
    async fn next(&mut self) -> (String, u64, Value) {
        let (mut ev, mut id, mut data) = (String::new(), 0, Value::Null);
        loop {
            let l = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("no event within 10 s")
                .unwrap()
                .expect("stream closed");
            if let Some(v) = l.strip_prefix("event: ") {
                ev = v.to_string();
            } else if let Some(v) = l.strip_prefix("id: ") {
                id = v.parse().unwrap();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap();
            } else if l.is_empty() && !ev.is_empty() {
                return (ev, id, data);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_store_is_shared_conditional_watched_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[room]\nmax_keys = 6\nmax_value_bytes = 1024\nmax_bytes = 3000\nwrites_per_sec = 20\n",
    )
    .unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[("PV_CONFIG", cfg.to_str().unwrap())],
    );
    let s = d.create(KEY_T1, json!({"default_roles": []})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let admin = s["admin_token"].as_str().unwrap().to_string();
    let viewer = s["embed_url"]
        .as_str()
        .unwrap()
        .split_once("token=")
        .unwrap()
        .1
        .to_string();
    let base = format!("/v0/vm/{id}/store");
    let a = &d.addr;

    // An API key is taken from the Authorization header only, never from a URL; the
    // session's admin token is (cdp_url carries it).
    for path in [
        format!("{base}?token={KEY_T1}"),
        format!("/v0/vm/{id}/cdp/json/version?token={KEY_T1}"),
    ] {
        let (st, v) = http(a, "GET", &path, None, None).await;
        assert_eq!(st, 401, "{path}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("Authorization header"),
            "{v}"
        );
    }
    let (st, v) = http(a, "GET", &format!("{base}?token={admin}"), None, None).await;
    assert_eq!(st, 200, "{v}");

    // Compare-and-set: of two writers at the same version exactly one wins.
    let (st, _, v) = req(
        a,
        "PUT",
        &format!("{base}/pin"),
        KEY_T1,
        &[("If-None-Match", "*")],
        r#"{"text": "hello"}"#,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let v1 = v["version"].as_u64().unwrap();
    let (st, _, v) = req(
        a,
        "PUT",
        &format!("{base}/pin"),
        KEY_T1,
        &[("If-None-Match", "*")],
        "1",
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (412, Some("precondition_failed")),
        "{v}"
    );
    let m = format!("\"{v1}\"");
    let (pin, cond) = (format!("{base}/pin"), [("If-Match", m.as_str())]);
    let (r1, r2) = tokio::join!(
        req(a, "PUT", &pin, KEY_T1, &cond, r#""first""#),
        req(a, "PUT", &pin, &admin, &cond, r#""second""#)
    );
    let mut statuses = [r1.0, r2.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{r1:?} {r2:?}");
    let loser = if r1.0 == 412 { &r1.2 } else { &r2.2 };
    assert!(
        loser["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{}", v1 + 1)),
        "{loser}"
    );
    let (st, head, v) = req(a, "GET", &format!("{base}/pin"), &viewer, &[], "").await;
    assert_eq!((st, v["version"].as_u64()), (200, Some(v1 + 1)), "{v}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("etag: \"{}\"", v1 + 1)),
        "{head}"
    );

    // A watcher gets a snapshot and then every change; reconnecting with Last-Event-ID
    // resumes without a gap.
    let mut w = Watcher::open(a, &format!("{base}?watch=true"), KEY_T1, None).await;
    let (ev, snap_id, snap) = w.next().await;
    assert_eq!((ev.as_str(), snap_id), ("snapshot", v1 + 1), "{snap}");
    assert_eq!(snap["entries"]["pin"]["version"], json!(v1 + 1));
    for i in 0..4 {
        let (st, _, v) = req(a, "PUT", &format!("{base}/n"), KEY_T1, &[], &i.to_string()).await;
        assert_eq!(st, 200, "{v}");
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (ev, id, data) = w.next().await;
        assert_eq!(ev, "change");
        seen.push((id, data["value"].clone()));
    }
    drop(w);
    let (st, _, _) = req(a, "DELETE", &format!("{base}/n"), KEY_T1, &[], "").await;
    assert_eq!(st, 200);
    let mut w = Watcher::open(a, &format!("{base}?watch=true"), KEY_T1, Some(seen[1].0)).await;
    for _ in 0..3 {
        let (ev, id, data) = w.next().await;
        assert_eq!(ev, "change", "a resumed watch replays changes");
        seen.push((
            id,
            if data["deleted"] == json!(true) {
                json!("deleted")
            } else {
                data["value"].clone()
            },
        ));
    }
    let ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        ids,
        (v1 + 2..v1 + 7).collect::<Vec<_>>(),
        "a gap or a repeat: {seen:?}"
    );
    assert_eq!(
        seen.iter().map(|s| s.1.clone()).collect::<Vec<_>>(),
        vec![json!(0), json!(1), json!(2), json!(3), json!("deleted")]
    );
    drop(w);

    // Watchers of one session are bounded (a viewer could open thousands that never read),
    // viewers' to 24 of the 32, so that they cannot shut the app out; one that goes away
    // gives its place back.
    let mut ws = Vec::new();
    for _ in 0..24 {
        let mut w = Watcher::open(a, &format!("{base}?watch=true"), &viewer, None).await;
        assert_eq!(w.next().await.0, "snapshot");
        ws.push(w);
    }
    let (st, _, v) = req(a, "GET", &format!("{base}?watch=true"), &viewer, &[], "").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("too_many_watchers")),
        "{v}"
    );
    let mut owners = Vec::new();
    for _ in 0..8 {
        let mut w = Watcher::open(a, &format!("{base}?watch=true"), KEY_T1, None).await;
        assert_eq!(w.next().await.0, "snapshot");
        owners.push(w);
    }
    let (st, _, v) = req(a, "GET", &format!("{base}?watch=true"), KEY_T1, &[], "").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("too_many_watchers")),
        "{v}"
    );
    drop(owners);
    ws.pop();
    let start = std::time::Instant::now();
    loop {
        let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
        s.write_all(format!("GET {base}?watch=true HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {viewer}\r\n\r\n").as_bytes()).await.unwrap();
        let mut first = String::new();
        BufReader::new(&mut s).read_line(&mut first).await.unwrap();
        if first.contains(" 200 ") {
            break;
        }
        assert!(first.contains(" 429 "), "{first}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a closed watcher's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(ws);

    // Viewers: a viewer token reads. A viewer writes for a connected user who may control
    // now (not for the roles its token was minted with). The embed socket carries changes.
    let (st, _, v) = req(a, "PUT", &format!("{base}/pin"), &viewer, &[], "1").await;
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let socket = format!("ws://{a}/v0/vm/{id}/embed/socket?token={viewer}");
    let (mut ws, _) = tokio_tungstenite::connect_async(socket).await.unwrap();
    let hello = crate::display::message(&mut ws, "hello").await;
    let user = hello["user_id"].as_str().unwrap();
    let me = format!("user={user}&resume={}", hello["resume"].as_str().unwrap());
    let mut next_store = async || loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no store message")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["t"] == "store" {
                return v;
            }
        }
    };
    let snap = next_store().await;
    assert_eq!(
        (
            snap["type"].as_str(),
            snap["entries"]["pin"]["value"].as_str()
        ),
        (Some("snapshot"), Some(loser_value(&r1, &r2))),
        "{snap}"
    );
    let roles = async |verb: &str| {
        let (st, v) = http(
            a,
            "POST",
            &format!("/v0/vm/{id}/embed/{verb}"),
            Some(&admin),
            Some(&json!([[user], ["control"]]).to_string()),
        )
        .await;
        assert_eq!((st, v["changed"].as_u64()), (200, Some(1)), "{verb}: {v}");
    };
    let viewer_put = async |query: &str| {
        let path = format!("{base}/by-viewer?{query}");
        let (st, _, v) = req(a, "PUT", &path, &viewer, &[], "7").await;
        (st, v)
    };
    // Without control: refused, with or without the user.
    let (st, v) = viewer_put(&me).await;
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    roles("addRoles").await;
    let (st, v) = viewer_put(&me).await;
    assert_eq!(st, 200, "a connected user given control writes: {v}");
    for other in ["", "user=nobody&resume=x", &format!("user={user}&resume=x")] {
        let (st, v) = viewer_put(other).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (403, Some("forbidden")),
            "{other}: {v}"
        );
    }
    roles("removeRoles").await;
    let (st, v) = viewer_put(&me).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (403, Some("forbidden")),
        "a user whose control was removed still wrote: {v}"
    );
    let (st, _, v) = req(
        a,
        "DELETE",
        &format!("{base}/by-viewer?{me}"),
        &viewer,
        &[],
        "",
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, _, v) = req(a, "DELETE", &format!("{base}/by-viewer"), &admin, &[], "").await;
    assert_eq!(st, 200, "{v}");
    // The viewer's one accepted write, and the admin's delete of it.
    let (put, del) = (next_store().await, next_store().await);
    assert_eq!(
        (put["key"].as_str(), &put["value"], &del["deleted"]),
        (Some("by-viewer"), &json!(7), &json!(true)),
        "{put} {del}"
    );
    let (st, _, _) = req(
        a,
        "PUT",
        &format!("{base}/spotlight"),
        &admin,
        &[],
        r#"{"x": 3}"#,
    )
    .await;
    assert_eq!(st, 200);
    let change = next_store().await;
    assert_eq!(
        (change["type"].as_str(), change["key"].as_str()),
        (Some("change"), Some("spotlight")),
        "{change}"
    );
    assert_eq!(change["value"], json!({"x": 3}));
    drop(ws);

    // Every limit has its own error, and changes nothing.
    for (key, body, status, code) in [
        ("bad%20key", "1".to_string(), 400, "invalid_key"),
        (
            "big",
            format!("\"{}\"", "x".repeat(2000)),
            413,
            "value_too_large",
        ),
        ("pin", "not json".to_string(), 400, "invalid_json"),
    ] {
        let (st, _, v) = req(a, "PUT", &format!("{base}/{key}"), KEY_T1, &[], &body).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (status, Some(code)),
            "{key}: {v}"
        );
    }
    for i in 0..3 {
        let (st, _, v) = req(
            a,
            "PUT",
            &format!("{base}/k{i}"),
            KEY_T1,
            &[],
            &format!("\"{}\"", "y".repeat(900)),
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, _, v) = req(
        a,
        "PUT",
        &format!("{base}/k9"),
        KEY_T1,
        &[],
        &format!("\"{}\"", "y".repeat(900)),
    )
    .await;
    assert_eq!((st, v["error"].as_str()), (422, Some("store_full")), "{v}");
    let (st, _, v) = req(a, "PUT", &format!("{base}/k3"), KEY_T1, &[], "1").await;
    assert_eq!(st, 200, "{v}");
    let (st, _, v) = req(a, "PUT", &format!("{base}/k4"), KEY_T1, &[], "1").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("too_many_keys")),
        "{v}"
    );
    let (_, _, all) = req(a, "GET", &base, KEY_T1, &[], "").await;
    assert_eq!(all["entries"].as_object().unwrap().len(), 6, "{all}");
    assert!(all["entries"].get("big").is_none() && all["entries"].get("k4").is_none());
    // Another tenant's key does not find the session.
    let (st, _, v) = req(a, "GET", &base, KEY_T2, &[], "").await;
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")), "{v}");
    // The write rate is bounded (20/s, bursts of 40).
    let mut limited = false;
    for _ in 0..60 {
        let (st, _, v) = req(a, "PUT", &format!("{base}/pin"), KEY_T1, &[], "0").await;
        if st == 429 {
            assert_eq!(v["error"], "rate_limited");
            limited = true;
            break;
        }
    }
    assert!(limited, "60 quick writes were never limited");

    // The store ends with the session; a new session starts empty.
    d.end_and_wait(KEY_T1, &id).await;
    let (st, _, v) = req(a, "GET", &base, KEY_T1, &[], "").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (410, Some("session_expired")),
        "{v}"
    );
    let s2 = d.create(KEY_T1, json!({})).await;
    let (_, _, all) = req(
        a,
        "GET",
        &format!("/v0/vm/{}/store", s2["session_id"].as_str().unwrap()),
        KEY_T1,
        &[],
        "",
    )
    .await;
    assert_eq!(all, json!({"version": 0, "entries": {}}));
    // Nothing of the store reached the log (keys are left out of logged paths too).
    let log = d.log_text();
    assert!(
        log.contains("/store/{key}"),
        "the log does not show store requests"
    );
    for secret in ["hello", "spotlight", "yyyyyyyy"] {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}
