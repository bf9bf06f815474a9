//! Files between the person and the browser: a download is offered to the viewer who may
//! control the browser (and to nothing else), and the page's file chooser takes a file from
//! the person's machine, once, however many uploads race for it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::viewer::Viewer;
use crate::display::{click_middle, message, on_page, on_screen, page_until, OnPage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_is_offered_to_the_person_and_nothing_else_leaves() {
    let OnPage { dir, d, s, mut cdp } = on_page("dl", None).await;
    let data = dir.path().join("data");
    let id = s["session_id"].as_str().unwrap().to_string();
    let token = query_token(s["embed_url"].as_str().unwrap());
    let (x, y, w, h) = on_screen(&mut cdp, "#f").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    let hello = message(&mut ws, "hello").await;
    let me = as_user(&hello);
    click_middle(&mut ws, (x, y, w, h)).await;
    let offer = message(&mut ws, "download").await;
    assert_eq!(
        (&offer["name"], &offer["size"]),
        (&json!("report.txt"), &json!(23)),
        "{offer}"
    );
    let base = format!("/v0/vm/{id}/embed/downloads");
    let (st, head, body) = http_full(
        &d.addr,
        &format!("{base}/report.txt?token={token}{me}"),
        &[],
    )
    .await;
    assert_eq!(st, 200, "{head}");
    assert_eq!(body, b"pv-download-content-42\n");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-disposition: attachment"),
        "{head}"
    );
    // What the browser plants in its folder is not followed out of it.
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "not-for-viewers").unwrap();
    let folder = data.join("run").join(&id).join("home/Downloads");
    std::os::unix::fs::symlink(&secret, folder.join("planted.txt")).unwrap();
    for name in ["planted.txt", "..%2F..%2F..%2Fsecret.txt", "missing.txt"] {
        let (st, head, _) =
            http_full(&d.addr, &format!("{base}/{name}?token={token}{me}"), &[]).await;
        assert_eq!(st, 404, "{name}: {head}");
    }
    // The token alone, or with a user that is not connected or a wrong secret, gets nothing.
    let wrong_secret = format!("&user={}&resume=x", hello["user_id"].as_str().unwrap());
    for extra in ["", "&user=nobody&resume=x", wrong_secret.as_str()] {
        let (st, head, _) = http_full(
            &d.addr,
            &format!("{base}/report.txt?token={token}{extra}"),
            &[],
        )
        .await;
        assert_eq!(st, 403, "{extra}: {head}");
    }
    // A user whose control the admin disabled gets nothing either, though the token it
    // joined with was minted with the control role.
    let (st, v) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/embed/setPermissions"),
            Some(s["admin_token"].as_str().unwrap()),
            Some(&json!([hello["user_id"], {"control_disabled": true}]).to_string()),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, head, _) = http_full(
        &d.addr,
        &format!("{base}/report.txt?token={token}{me}"),
        &[],
    )
    .await;
    assert_eq!(st, 403, "{head}");
    // Only a viewer who may control the browser gets files; tokens of other kinds none.
    let admin = s["admin_token"].as_str().unwrap();
    let (st, minted) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/viewers"),
            Some(admin),
            Some(r#"{"roles": []}"#),
        )
        .await;
    assert_eq!(st, 200, "{minted}");
    let view_only = query_token(minted["embed_url"].as_str().unwrap());
    for (t, want) in [
        (view_only.as_str(), 403),
        (admin, 403),
        (KEY_T1, 403),
        ("nope", 401),
    ] {
        let (st, head, _) =
            http_full(&d.addr, &format!("{base}/report.txt?token={t}{me}"), &[]).await;
        assert_eq!(st, want, "{head}");
    }
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;
}

/// The query that makes a download or upload call for the user a viewer socket's `hello`
/// names (its id and secret).
fn as_user(hello: &Value) -> String {
    format!(
        "&user={}&resume={}",
        hello["user_id"].as_str().unwrap(),
        hello["resume"].as_str().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_file_chooser_takes_a_file_from_the_person_s_machine() {
    let OnPage { dir, d, s, mut cdp } = on_page("upload", Some(&["control", "file_upload"])).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    // No chooser is open yet: an upload is refused and changes nothing. Uploads are made
    // for a connected user (its hello's user and secret); the token alone gets nothing.
    let token = query_token(s["embed_url"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    let hello = message(&mut ws, "hello").await;
    let me = as_user(&hello);
    for (extra, want) in [("", 403), (me.as_str(), 409)] {
        let (st, v) = d
            .call(
                "POST",
                &format!("/v0/vm/{id}/embed/uploads?token={token}{extra}"),
                None,
                Some(""),
            )
            .await;
        assert_eq!(st, want, "{extra}: {v}");
        if want == 409 {
            assert_eq!(v["error"], "no_file_chooser", "{v}");
        }
    }
    drop(ws);
    // The person clicks the page's file input in the picture; their own browser asks them
    // for a file, and the page gets it.
    let local = dir.path().join("hello from the person.txt");
    std::fs::write(&local, "pv-upload-content-7").unwrap();
    let mut v = Viewer::start().await;
    v.ask(json!({"cmd": "open", "name": "a", "url": s["embed_url"], "width": 1280, "height": 720}))
        .await;
    let (x, y, w, h) = on_screen(&mut cdp, "#u").await;
    v.ask(json!({"cmd": "clickChoose", "name": "a", "x": x + w / 2.0, "y": y + h / 2.0, "path": local}))
        .await;
    page_until(
        &mut cdp,
        "document.title + ' ' + window.__content",
        json!("got:hello from the person.txt:19 pv-upload-content-7"),
        "the page received the person's file",
    )
    .await;
    v.quit().await;
    // Two uploads racing for one chooser: one stores its files and answers it, the other
    // finds none and stores nothing.
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    let me = as_user(&message(&mut ws, "hello").await);
    // The person clicks the input again (again until the live view, back with this viewer,
    // intercepts the chooser).
    let mut open = false;
    for _ in 0..15 {
        click_middle(&mut ws, (x, y, w, h)).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut ws)).await
        {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                open |= serde_json::from_str::<Value>(&t).unwrap()["t"] == "file_chooser";
            }
        }
        if open {
            break;
        }
    }
    assert!(open, "the page's file chooser did not open for the viewer");
    let body = |name: &str| {
        let mut b = Vec::new();
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&3u64.to_be_bytes());
        b.extend_from_slice(b"abc");
        b
    };
    let path = format!("/v0/vm/{id}/embed/uploads?token={token}{me}");
    let (b1, b2) = (body("one.txt"), body("two.txt"));
    let (r1, r2) = tokio::join!(
        http_raw(&d.addr, "POST", &path, None, Some(&b1)),
        http_raw(&d.addr, "POST", &path, None, Some(&b2)),
    );
    let mut codes = [r1.0, r2.0];
    codes.sort_unstable();
    assert_eq!(codes, [200, 409], "{r1:?} {r2:?}");
    let choices = std::fs::read_dir(d.data.join("run").join(&id).join("uploads"))
        .unwrap()
        .count();
    assert_eq!(choices, 2, "the person's choice and the race's winner only");
    drop(ws);
    // A viewer without file_upload may not upload.
    let admin = s["admin_token"].as_str().unwrap();
    let (_, minted) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/viewers"),
            Some(admin),
            Some(r#"{"roles": ["control"]}"#),
        )
        .await;
    let plain = query_token(minted["embed_url"].as_str().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/v0/vm/{id}/embed/socket?token={plain}",
        d.addr
    ))
    .await
    .unwrap();
    let hello = message(&mut ws, "hello").await;
    let (st, v) = d
        .call(
            "POST",
            &format!("/v0/vm/{id}/embed/uploads?token={plain}{}", as_user(&hello)),
            None,
            Some(""),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;
}
