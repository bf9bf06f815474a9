//! The profile data document through a real daemon with real Chromium: set by a session
//! before it ends, compare-and-set between two writers, its limit, tokens and tenants,
//! returned by `POST /v0/vm` on load after a daemon restart, sealed in the store, refused
//! when tampered or moved, gone with the profile; and the `data` CLI.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::cli_for;
use crate::common::daemon::*;

/// One request with a bearer token and extra headers; (status, head, JSON body).
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
    s.write_all(r.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Every stored file, with its bytes (audit events left out: they name no data).
fn stored(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_data_document_lives_sealed_with_its_profile() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[sessions]\nprofile_data_max_bytes = 2048\n").unwrap();
    let env = [("PV_CONFIG", cfg.to_str().unwrap())];
    let data_dir = dir.path().join("data");
    let mut d = Daemon::start(&data_dir, StoreKind::Fs, &env);
    let a = d.addr.clone();
    let marker = format!("tab-{}", uuid::Uuid::new_v4().simple());

    // A new saving session sets the document through its admin token before it ends.
    let s = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let admin = s["admin_token"].as_str().unwrap().to_string();
    let viewer = s["embed_url"]
        .as_str()
        .unwrap()
        .split_once("token=")
        .unwrap()
        .1
        .to_string();
    let path = format!("/v0/profiles/{id}/data");
    let (st, head, v) = req(&a, "GET", &path, &admin, &[], "").await;
    assert_eq!(
        (st, &v["version"], &v["data"]),
        (200, &json!(0), &Value::Null),
        "{v}"
    );
    assert!(head.contains("etag: \"0\""), "{head}");
    let doc1 = json!({"open": [format!("https://example.com/{marker}")]});
    let (st, head, v) = req(
        &a,
        "PUT",
        &path,
        &admin,
        &[("If-None-Match", "*")],
        &doc1.to_string(),
    )
    .await;
    assert_eq!((st, &v["version"]), (200, &json!(1)), "{v}");
    assert!(head.contains("etag: \"1\""), "{head}");
    // A viewer's token never reaches it; another tenant and unknown ids see nothing.
    let (st, _, v) = req(&a, "GET", &path, &viewer, &[], "").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (st, _, v) = req(&a, "GET", &path, KEY_T2, &[], "").await;
    assert_eq!((st, v["error"].as_str()), (404, Some("not_found")), "{v}");
    let (st, _, v) = req(&a, "PUT", &path, KEY_T2, &[], "{}").await;
    assert_eq!(st, 404, "{v}");
    let (st, _, v) = req(
        &a,
        "GET",
        "/v0/profiles/no-such-profile/data",
        KEY_T1,
        &[],
        "",
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (st, _, v) = req(
        &a,
        "PUT",
        "/v0/profiles/no-such-profile/data",
        KEY_T1,
        &[],
        "{}",
    )
    .await;
    assert_eq!(st, 404, "{v}");
    let (st, _, v) = req(&a, "GET", &path, "not-a-token", &[], "").await;
    assert_eq!(st, 401, "{v}");
    // The limit, bad JSON and a bad condition answer their errors and change nothing.
    let big = json!({"blob": "x".repeat(3000)}).to_string();
    let (st, _, v) = req(&a, "PUT", &path, KEY_T1, &[], &big).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (413, Some("data_too_large")),
        "{v}"
    );
    let (st, _, v) = req(&a, "PUT", &path, KEY_T1, &[], "{not json").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (400, Some("invalid_json")),
        "{v}"
    );
    let (st, _, v) = req(&a, "PUT", &path, KEY_T1, &[("If-Match", "one")], "{}").await;
    assert_eq!(st, 400, "{v}");
    let (st, _, v) = req(&a, "PUT", &path, KEY_T1, &[("If-None-Match", "*")], "{}").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (412, Some("precondition_failed")),
        "{v}"
    );
    let (_, _, v) = req(&a, "GET", &path, KEY_T1, &[], "").await;
    assert_eq!((&v["version"], &v["data"]), (&json!(1), &doc1), "{v}");

    // The session ends and saves; the document stays with the profile.
    d.end_and_wait(KEY_T1, &id).await;
    let (st, _, v) = req(&a, "PUT", &path, &admin, &[], "{}").await;
    assert_eq!(
        st, 401,
        "an ended session's admin token writes nothing: {v}"
    );

    // Eight writers at the same version: exactly one wins, the others learn the new version.
    let docs: Vec<Value> = (0..8)
        .map(|i| json!({"w": format!("writer-{i}"), "m": marker}))
        .collect();
    let bodies: Vec<String> = docs.iter().map(Value::to_string).collect();
    let cond = [("If-Match", "\"1\"")];
    let results = futures_util::future::join_all(
        bodies
            .iter()
            .map(|b| req(&a, "PUT", &path, KEY_T1, &cond, b)),
    )
    .await;
    let won: Vec<usize> = (0..8).filter(|&i| results[i].0 == 200).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let winner = &docs[won[0]];
    for (i, r) in results.iter().enumerate() {
        if i != won[0] {
            assert_eq!(r.0, 412, "{r:?}");
            assert!(
                r.2["message"].as_str().unwrap().contains("version 2"),
                "{r:?}"
            );
        }
    }

    // Sealed: neither the marker nor the winner's text is readable anywhere in the store.
    let store = data_dir.join("store");
    for (p, bytes) in stored(&store) {
        for needle in [marker.as_bytes(), b"writer-" as &[u8]] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} readable in {p}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    let record = store.join(format!("tenants/t1/profiles/{id}/data.json"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&record).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "data.json is owner-only");

    // After a restart, loading the profile answers its document in the same call.
    d.stop();
    let d = Daemon::start(&data_dir, StoreKind::Fs, &env);
    let a = d.addr.clone();
    let s2 = d
        .create(KEY_T1, json!({"profile": {"load": id, "save": false}}))
        .await;
    assert_eq!(s2["profile"]["data"], *winner, "{s2}");
    assert_eq!(s2["profile"]["data_version"], json!(2), "{s2}");
    let admin2 = s2["admin_token"].as_str().unwrap();
    // That session does not save, so its admin token may read the document but not write it.
    let (st, _, v) = req(&a, "GET", &path, admin2, &[], "").await;
    assert_eq!((st, &v["data"]), (200, winner), "{v}");
    let (st, _, v) = req(&a, "PUT", &path, admin2, &[], "{}").await;
    assert_eq!((st, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    // Nor another profile's.
    let (st, _, _) = req(
        &a,
        "GET",
        "/v0/profiles/other-profile/data",
        admin2,
        &[],
        "",
    )
    .await;
    assert_eq!(st, 404);
    let s2id = s2["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &s2id).await;

    // The CLI reads and writes the same document.
    let out = cli_for(&d).args(["data", &id]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, *winner);
    let file = dir.path().join("doc.json");
    std::fs::write(&file, r#"{"from": "cli"}"#).unwrap();
    let out = cli_for(&d)
        .args([
            "data",
            &id,
            "--set",
            file.to_str().unwrap(),
            "--if-match",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "stale version: {out:?}");
    let out = cli_for(&d)
        .args([
            "--json",
            "data",
            &id,
            "--set",
            file.to_str().unwrap(),
            "--if-match",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, _, v) = req(&a, "GET", &path, KEY_T1, &[], "").await;
    assert_eq!(
        (&v["version"], &v["data"]),
        (&json!(3), &json!({"from": "cli"})),
        "{v}"
    );

    // Tampered, or moved to another profile: refused with a clear error, nothing changed.
    let good = std::fs::read(&record).unwrap();
    let mut rec: Value = serde_json::from_slice(&good).unwrap();
    let sealed = rec["sealed"].as_str().unwrap().to_string();
    let flipped = if sealed.starts_with('A') { "B" } else { "A" };
    rec["sealed"] = json!(format!("{flipped}{}", &sealed[1..]));
    std::fs::write(&record, serde_json::to_vec(&rec).unwrap()).unwrap();
    let (st, _, v) = req(&a, "GET", &path, KEY_T1, &[], "").await;
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("profile_corrupt")),
        "{v}"
    );
    std::fs::write(&record, &good).unwrap();
    let other = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    let other_id = other["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &other_id).await;
    let moved = store.join(format!("tenants/t1/profiles/{other_id}/data.json"));
    std::fs::copy(&record, &moved).unwrap();
    let (st, _, v) = req(
        &a,
        "GET",
        &format!("/v0/profiles/{other_id}/data"),
        KEY_T1,
        &[],
        "",
    )
    .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("profile_corrupt")),
        "{v}"
    );
    let (st, v) = d
        .post_vm(KEY_T1, json!({"profile": {"load": other_id}}))
        .await;
    assert_eq!(
        st, 422,
        "a load whose document cannot be read starts nothing: {v}"
    );
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(list["sessions"], json!([]), "{list}");

    // Deleted with the profile.
    let (st, v) = d
        .call("DELETE", &format!("/v0/profiles/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(!record.exists());
    let (st, _, _) = req(&a, "GET", &path, KEY_T1, &[], "").await;
    assert_eq!(st, 404);
    // The writes are in the audit trail, the document's content is not in the log.
    let out = cli_for(&d)
        .args(["audit", "--profile", &id])
        .output()
        .unwrap();
    let trail = String::from_utf8_lossy(&out.stdout);
    assert!(trail.contains("DataWrite"), "{trail}");
    assert!(
        !d.log_text().contains(&marker),
        "the document reached the log"
    );
}
