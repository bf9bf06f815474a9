//! The display's screen follows the person: a viewer with the `resize` role (Hyperbeam's
//! default for `embed_url`) makes the screen the size of its view, and the browser's window
//! fills it; viewers without the role change nothing; sizes are clamped. Real Chromium on
//! both sides, on Xvnc (whose RandR changes the screen's size).

use std::time::Duration;

use serde_json::json;

use crate::common::daemon::*;
use crate::common::viewer::Viewer;
use crate::display::{message, mint_viewer, page_until, same_picture, say, site};

/// What the session's page says about its screen, and whether the window fills it (Chromium
/// makes a window of the screen's size one pixel smaller).
const SCREEN: &str = "[screen.width, screen.height, \
    Math.abs(outerWidth - screen.width) <= 1 && Math.abs(outerHeight - screen.height) <= 1]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_follows_the_viewer_who_may_resize_it() {
    let site = site().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let (_, r) = d.call("GET", "/readyz", None, None).await;
    assert!(
        r["checks"]["display_detail"]
            .as_str()
            .unwrap()
            .contains("Xvnc"),
        "the test script installs Xvnc: {r}"
    );
    let s = d
        .create(
            KEY_T1,
            json!({"profile": {"save": false}, "start_url": format!("{site}/select"),
                "width": 1280, "height": 720}),
        )
        .await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    page_until(&mut cdp, "document.title", json!("select"), "loaded").await;
    page_until(
        &mut cdp,
        SCREEN,
        json!([1280, 720, true]),
        "the session's size",
    )
    .await;

    // A viewer without the role, of another size: it sees the screen as it is.
    let minted = mint_viewer(&d, &s, &["control"]).await;
    let mut v = Viewer::start().await;
    v.ask(json!({"cmd": "open", "name": "w", "url": minted["embed_url"], "width": 900, "height": 600}))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let w = v.ask(json!({"cmd": "state", "name": "w"})).await;
    assert_eq!(
        (&w["meta"]["width"], &w["meta"]["height"], &w["display"]),
        (&json!(1280), &json!(720), &json!(true)),
        "{w}"
    );
    page_until(&mut cdp, SCREEN, json!([1280, 720, true]), "unchanged").await;

    // The person's own embed_url: the screen takes the size of their view, the browser's
    // window fills it, and every viewer is sent the new screen.
    v.ask(json!({"cmd": "open", "name": "a", "url": s["embed_url"], "width": 1000, "height": 640}))
        .await;
    page_until(
        &mut cdp,
        SCREEN,
        json!([1000, 640, true]),
        "the screen follows",
    )
    .await;
    for name in ["a", "w"] {
        v.ask(json!({"cmd": "waitFor", "name": name,
            "expr": "window.__pv.meta.width === 1000 && window.__pv.meta.height === 640"}))
            .await;
    }
    // The picture is the new screen, drawn whole: both viewers show the same pixels up to
    // its far corner (the page's own colour there, not what the old screen left).
    let points = json!([[500, 10], [990, 630], [20, 630]]);
    same_picture(&mut v, ["a", "w"], &points).await;

    // The person's window changes: the screen follows it down.
    v.ask(json!({"cmd": "viewport", "name": "a", "width": 800, "height": 500}))
        .await;
    page_until(
        &mut cdp,
        SCREEN,
        json!([800, 500, true]),
        "the screen shrinks",
    )
    .await;
    v.ask(json!({"cmd": "waitFor", "name": "w",
        "expr": "window.__pv.meta.width === 800 && window.__pv.meta.height === 500"}))
        .await;

    // Sizes are clamped; a viewer without the role changes nothing.
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    message(&mut ws, "hello").await;
    say(
        &mut ws,
        &[json!({"t": "resize", "width": 10, "height": 99_999})],
    )
    .await;
    page_until(&mut cdp, SCREEN, json!([640, 2160, true]), "clamped").await;
    let plain = format!(
        "ws://{}/v0/vm/{id}/embed/socket?token={}",
        d.addr,
        query_token(minted["embed_url"].as_str().unwrap())
    );
    let (mut ws2, _) = tokio_tungstenite::connect_async(plain).await.unwrap();
    message(&mut ws2, "hello").await;
    say(
        &mut ws2,
        &[json!({"t": "resize", "width": 700, "height": 400})],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(cdp.eval(SCREEN).await, json!([640, 2160, true]));
    let alive = v.ask(json!({"cmd": "state", "name": "w"})).await;
    assert_eq!(alive["state"], "open", "{alive}");
    v.quit().await;
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;
}
