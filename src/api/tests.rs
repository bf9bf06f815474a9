//! The router in process: requests go straight to the `Router` service (no socket, no
//! daemon binary, no browser), for what needs none — routing, limits, auth and error bodies.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;

use super::codes::ErrorCode;
use super::{auth::ApiKeys, router, AppState, ROUTES};
use crate::config::FileConfig;
use crate::daemon::{Daemon, Http};
use crate::session::SessionConfig;

const KEY: &str = "t1:aaaaaaaaaaaaaaaaaaaa";
const TOKEN: &str = "aaaaaaaaaaaaaaaaaaaa";
const MAX_BODY: usize = 4096;

/// The daemon's state, built as `serve` builds it ([`crate::daemon::Daemon::build`]), on a
/// filesystem store in `dir`, with a browser runtime that starts nothing.
async fn state(dir: &Path) -> AppState {
    let file = FileConfig::default();
    let store = crate::store::fs::LocalFileSystem::new(dir.join("store")).expect("store");
    let ring = crate::Keyring::from_keys(vec![("k".into(), [7; 32])], "k").expect("keyring");
    let vault =
        crate::Vault::new(Arc::new(store), Arc::new(ring), file.vault_options(dir)).expect("vault");
    let browser = crate::browser::Runtime::inert(dir.join("run"));
    let daemon = Daemon::build(
        vault,
        SessionConfig::from_sections(
            &file.sessions,
            &file.live,
            &file.room,
            browser,
            dir.to_path_buf(),
            None,
        ),
        Http {
            keys: ApiKeys::parse(KEY).expect("keys"),
            public_url: "http://127.0.0.1:9".into(),
            max_body: MAX_BODY,
            viewer_origins: Vec::new(),
            frame_ancestors: "'self'".into(),
        },
        None,
    )
    .await
    .expect("daemon");
    daemon.state().clone()
}

/// One request through the router: status, headers, JSON body (null when not JSON).
async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Body::from(body)).expect("request");
    let mut app = router(state.clone());
    let resp = tower_service::Service::call(&mut app, req)
        .await
        .expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn code(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_error_body() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (st, _, v) = call(&s, "GET", "/v0/nothing-here", Some(TOKEN), vec![]).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, h, v) = call(&s, "PATCH", "/v0/vm", Some(TOKEN), vec![]).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    let allow = h
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let (st, _, v) = call(&s, "GET", "/healthz", None, vec![]).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn every_route_needs_its_auth() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    for r in ROUTES.iter().filter(|r| r.auth == super::Auth::Bearer) {
        let path = r
            .path
            .replace("{id}", "abc")
            .replace("{key}", "k")
            .replace("{name}", "n")
            .replace("{user_id}", "u")
            .replace("{tabs_method}", "query");
        let (st, _, v) = call(&s, r.method.as_str(), &path, None, vec![]).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{} {path}",
            r.method.as_str()
        );
        let (st, _, v) = call(
            &s,
            r.method.as_str(),
            &path,
            Some("wrong-token-xxxxxxxxx"),
            vec![],
        )
        .await;
        assert_eq!(
            st,
            StatusCode::UNAUTHORIZED,
            "{} {path}: {v}",
            r.method.as_str()
        );
    }
}

#[tokio::test]
async fn bodies_are_held_to_their_route_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    // Over http.max_body_bytes: refused on a route of the default limit...
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_BODY * 2)).into_bytes();
    // (POST /v0/vm reads more, for a zipped extension beside its JSON, but holds the JSON
    // to the same limit.)
    let (st, _, v) = call(&s, "POST", "/v0/vm", Some(TOKEN), big.clone()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
    // The caller is judged before the body is read: nobody makes the daemon hold a body
    // for a session that is not theirs (or not there), or without a key.
    let (st, _, v) = call(&s, "POST", "/v0/vm/abc/viewers", Some(TOKEN), big.clone()).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, _, v) = call(&s, "POST", "/v0/vm", None, big.clone()).await;
    assert_eq!((st, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    // ...and read on a route that takes more (a storage state), which then judges it.
    let (st, _, v) = call(&s, "POST", "/v0/profiles", Some(TOKEN), big).await;
    assert_ne!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(st.as_u16() / 100, 4, "{v}");
}

#[tokio::test]
async fn malformed_and_unknown_requests_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (st, _, v) = call(&s, "POST", "/v0/vm", Some(TOKEN), b"{not json".to_vec()).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (st, _, v) = call(
        &s,
        "POST",
        "/v0/vm",
        Some(TOKEN),
        br#"{"profile": {"load": "../x"}}"#.to_vec(),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _, v) = call(&s, "GET", "/v0/profiles/nobody", Some(TOKEN), vec![]).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    let (st, _, v) = call(&s, "GET", "/v0/vm/nobody", Some(TOKEN), vec![]).await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"));
    // A browser that cannot start: the documented error, and no session left behind.
    let (st, _, v) = call(&s, "POST", "/v0/vm", Some(TOKEN), b"{}".to_vec()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "browser_failed"),
        "{v}"
    );
    let (st, _, v) = call(&s, "GET", "/v0/vm", Some(TOKEN), vec![]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["sessions"].as_array().map(Vec::len), Some(0), "{v}");
    let (st, _, v) = call(&s, "GET", "/v0/profiles", Some(TOKEN), vec![]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["profiles"].as_array().map(Vec::len), Some(0), "{v}");
}

#[tokio::test]
async fn a_body_is_judged_after_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let bad = b"{not json".to_vec();
    // Every route that takes a JSON body: a caller without a token, then one whose session
    // or profile does not exist, learn that before anything about their body.
    for path in [
        "/v0/vm/nobody/embed/timeout",
        "/v0/vm/nobody/embed/bookmarks",
        "/v0/vm/nobody/viewers",
        "/v0/vm/nobody/embed/addRoles",
        "/v0/vm/nobody/embed/setPermissions",
        "/v0/vm/nobody/embed/tabs.query",
        "/v0/vm/nobody/store/k",
    ] {
        let method = if path.contains("/store/") {
            "PUT"
        } else {
            "POST"
        };
        let (st, _, v) = call(&s, method, path, None, bad.clone()).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{path}"
        );
        let (st, _, v) = call(&s, method, path, Some(TOKEN), bad.clone()).await;
        assert_eq!(
            (st, code(&v)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{path}"
        );
    }
    let (st, _, v) = call(
        &s,
        "PUT",
        "/v0/profiles/nobody/data",
        Some(TOKEN),
        bad.clone(),
    )
    .await;
    assert_eq!((st, code(&v)), (StatusCode::NOT_FOUND, "not_found"), "{v}");
    // A caller who may call learns what is wrong with the body.
    let (st, _, v) = call(&s, "POST", "/v0/profiles", Some(TOKEN), bad.clone()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_json"),
        "{v}"
    );
    // A query is judged after its caller too.
    let (st, _, v) = call(&s, "GET", "/v0/vm?limit=x", None, vec![]).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{v}"
    );
    let (st, _, v) = call(&s, "GET", "/v0/vm?limit=x", Some(TOKEN), vec![]).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{v}"
    );
}

#[tokio::test]
async fn a_path_that_does_not_decode_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let big = vec![b' '; MAX_BODY * 2];
    for (method, path, token, body) in [
        ("GET", "/v0/profiles/%FF", None, vec![]),
        ("GET", "/v0/vm/%FF", None, vec![]),
        ("PUT", "/v0/profiles/%FF/data", Some(TOKEN), big.clone()),
        ("POST", "/v0/vm/%FF/embed/timeout", None, big),
    ] {
        let (st, _, v) = call(&s, method, path, token, body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{method} {path}: {v}");
        assert_eq!(code(&v), ErrorCode::for_status(st).name(), "{v}");
    }
}

#[tokio::test]
async fn the_document_lists_every_route_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (st, _, doc) = call(&s, "GET", "/v0/openapi.json", None, vec![]).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for r in ROUTES {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        assert_eq!(op["operationId"], r.op, "{} {}", r.method.as_str(), r.path);
    }
    let listed: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .expect("the Error schema enumerates its codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(listed, all);
    // Every documented operation is served (and nothing undocumented is routed).
    let mut documented = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            documented += 1;
            assert!(op["summary"].is_string(), "{method} {path}");
            let concrete = path.replace("{id}", "no-such-id").replace("{key}", "k");
            let (_, _, v) = call(&s, &method.to_uppercase(), &concrete, None, b"{}".to_vec()).await;
            assert_ne!(
                v["message"], "route not found",
                "{method} {path} is documented but not served"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());
    // The check can fail: an unknown route is the fallback.
    let (st, _, v) = call(&s, "GET", "/v0/nope", None, vec![]).await;
    assert_eq!(
        (st, v["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("route not found"))
    );
}

#[tokio::test]
async fn without_chromium_the_daemon_answers_but_is_not_ready() {
    // The inert runtime's browser binary does not exist.
    let dir = tempfile::tempdir().unwrap();
    let s = state(dir.path()).await;
    let (st, _, v) = call(&s, "GET", "/readyz", None, vec![]).await;
    assert_eq!(
        (st, &v["checks"]["chromium"]),
        (StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!(false)),
        "{v}"
    );
    let (st, _, v) = call(&s, "POST", "/v0/vm", Some(TOKEN), b"{}".to_vec()).await;
    assert_eq!(
        (st, code(&v)),
        (StatusCode::SERVICE_UNAVAILABLE, "browser_failed"),
        "{v}"
    );
    let (st, _, _) = call(&s, "GET", "/healthz", None, vec![]).await;
    assert_eq!(st, StatusCode::OK);
}
