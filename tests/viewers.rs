//! Viewers that misbehave, against a real session: one that stops reading is let go, one
//! that sends more than its share is disconnected.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::common::daemon::*;

/// A viewer that stops reading is let go once a message has waited `live.send_timeout` on
/// its full socket: it holds no slot and keeps no session up (the offline timeout ends it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_stops_reading_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[live]\nsend_timeout = 2\n").unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[
            ("PV_DISPLAY", "headless"),
            ("PV_CONFIG", cfg.to_str().unwrap()),
        ],
    );
    let s = d
        .create(
            KEY_T1,
            json!({"width": 800, "height": 600, "timeout": {"offline": 5}}),
        )
        .await;
    let id = s["session_id"].as_str().unwrap().to_string();
    // A page of noise, new each frame: pictures the encoder cannot make small.
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    cdp.eval(
        "(() => { const c = document.createElement('canvas'); c.width = 800; c.height = 600;
          document.body.style.margin = '0'; document.body.append(c);
          const g = c.getContext('2d'); const img = g.createImageData(800, 600);
          const tick = () => {
            for (let i = 0; i < img.data.length; i += 65536)
              crypto.getRandomValues(img.data.subarray(i, i + 65536));
            g.putImageData(img, 0, 0); requestAnimationFrame(tick);
          };
          tick(); return true; })()",
    )
    .await;
    // The viewer: a socket with a small receive buffer, read up to its upgrade and no further.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut sock = sock.connect(d.addr.parse().unwrap()).await.unwrap();
    let token = query_token(s["embed_url"].as_str().unwrap());
    sock.write_all(format!("GET /v0/vm/{id}/embed/socket?token={token} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", d.addr).as_bytes()).await.unwrap();
    let mut head = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut sock, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101", "{}", String::from_utf8_lossy(&head));
    d.wait_for(KEY_T1, &id, 20, |v| {
        v["viewers"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    cdp.close().await;
    // The pictures fill its socket; the viewer is let go, and with no one left the session
    // ends as offline (it stayed up for good while the viewer held its socket open).
    let ended = d
        .wait_for(KEY_T1, &id, 90, |v| !v["termination_date"].is_null())
        .await;
    assert_eq!(ended["end_reason"], "offline", "{ended}");
    drop(sock);
}

/// A viewer that sends more bytes than its share (256 KiB a second, 1 MiB at once) is
/// disconnected with 4029, as one that sends too many messages is: every message is parsed
/// before its roles are looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sending_more_than_its_share_is_disconnected() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[("PV_DISPLAY", "headless")],
    );
    let s = d.create(KEY_T1, json!({"default_roles": []})).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s))
        .await
        .unwrap();
    // 40 messages of 60 KiB: each within the size limit, 40 within the message rate.
    let big = json!({"t": "ping", "p": "x".repeat(60 * 1024)}).to_string();
    for _ in 0..40 {
        if ws.send(Message::Text(big.clone().into())).await.is_err() {
            break;
        }
    }
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the viewer was not disconnected");
    assert_eq!(code, Some(4029));
}
