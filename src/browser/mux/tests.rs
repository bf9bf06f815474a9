//! Tests of `mux` against a fake browser on a pair of pipes.

use super::*;

use tokio::io::AsyncBufReadExt;

/// The browser's side of the pipes: commands in, messages out.
struct FakeBrowser {
    commands: tokio::io::BufReader<tokio::net::unix::pipe::Receiver>,
    out: tokio::net::unix::pipe::Sender,
}

impl FakeBrowser {
    async fn next(&mut self) -> Value {
        let mut buf = Vec::new();
        self.commands.read_until(0, &mut buf).await.unwrap();
        buf.pop();
        serde_json::from_slice(&buf).unwrap()
    }

    async fn say(&mut self, v: Value) {
        let mut b = serde_json::to_vec(&v).unwrap();
        b.push(0);
        self.out.write_all(&b).await.unwrap();
    }
}

fn start() -> (Arc<Mux>, FakeBrowser) {
    let (to_browser_rx, to_browser_tx) = std::io::pipe().unwrap();
    let (from_browser_rx, from_browser_tx) = std::io::pipe().unwrap();
    let mux = Mux::start(to_browser_tx.into(), from_browser_rx.into()).unwrap();
    let fake = FakeBrowser {
        commands: tokio::io::BufReader::new(
            tokio::net::unix::pipe::Receiver::from_owned_fd(to_browser_rx.into()).unwrap(),
        ),
        out: tokio::net::unix::pipe::Sender::from_owned_fd(from_browser_tx.into()).unwrap(),
    };
    (mux, fake)
}

/// The next message for `c`, within a second.
async fn answer(c: &mut Conn) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(1), c.recv())
        .await
        .expect("an answer")
        .expect("open");
    serde_json::from_str(&m).unwrap()
}

#[tokio::test]
async fn a_client_is_never_given_a_session_it_did_not_attach() {
    let (mux, mut browser) = start();
    // Client A connects: its browser session is "A".
    let m2 = mux.clone();
    let a = tokio::spawn(async move { m2.connect().await });
    let cmd = browser.next().await;
    assert_eq!(cmd["method"], "Target.attachToBrowserTarget");
    browser
        .say(json!({"id": cmd["id"], "result": {"sessionId": "A"}}))
        .await;
    let mut a = a.await.unwrap().unwrap();
    // An attach that names no target is refused: its event could not be routed.
    assert!(matches!(
        a.send(r#"{"id":1,"method":"Target.attachToTarget","params":{}}"#),
        Err(SendError::Malformed)
    ));
    // A leaves an attach to the browser target unanswered ...
    a.send(r#"{"id":2,"method":"Target.attachToBrowserTarget","params":{}}"#)
        .unwrap();
    let pending = browser.next().await;
    assert!(pending.get("sessionId").is_none(), "{pending}");
    // ... while the daemon connects client B: the browser announces B's session first.
    let m2 = mux.clone();
    let b = tokio::spawn(async move { m2.connect().await });
    let cmd = browser.next().await;
    assert_eq!(cmd["method"], "Target.attachToBrowserTarget");
    browser
        .say(json!({"method": "Target.attachedToTarget", "params": {"sessionId": "B",
            "targetInfo": {"targetId": "browser-1", "type": "browser"}, "waitingForDebugger": false}}))
        .await;
    browser
        .say(json!({"id": cmd["id"], "result": {"sessionId": "B"}}))
        .await;
    let _b = b.await.unwrap().unwrap();
    // A may not use B's session: it is answered "not found", and nothing reaches the browser.
    a.send(r#"{"id":3,"sessionId":"B","method":"Target.setDiscoverTargets","params":{"discover":false}}"#)
        .unwrap();
    let got = answer(&mut a).await;
    assert_eq!(got["id"], 3, "{got}");
    assert_eq!(got["error"]["code"], -32001, "{got}");
    // A's own attach, answered, gives A its session.
    browser
        .say(json!({"id": pending["id"], "result": {"sessionId": "A2"}}))
        .await;
    let got = answer(&mut a).await;
    assert_eq!(
        (got["id"].as_u64(), &got["result"]["sessionId"]),
        (Some(2), &json!("A2"))
    );
    a.send(r#"{"id":4,"sessionId":"A2","method":"Runtime.enable"}"#)
        .unwrap();
    let cmd = browser.next().await;
    assert_eq!(
        (cmd["sessionId"].as_str(), cmd["method"].as_str()),
        (Some("A2"), Some("Runtime.enable"))
    );
}

#[tokio::test]
async fn messages_are_routed_by_their_top_level_and_no_frame_is_injected() {
    let (mux, mut browser) = start();
    let m2 = mux.clone();
    let a = tokio::spawn(async move { m2.connect().await });
    let cmd = browser.next().await;
    browser
        .say(json!({"id": cmd["id"], "result": {"sessionId": "A"}}))
        .await;
    let mut a = a.await.unwrap().unwrap();
    // A raw NUL would end the frame on the pipe and start another (for any session): refused.
    let injected = "{\"id\":1,\"method\":\"Runtime.evaluate\",\"params\":{\"expression\":\"1\u{0}{\\\"id\\\":2,\\\"method\\\":\\\"Browser.close\\\"}\"}}";
    assert!(matches!(a.send(injected), Err(SendError::Malformed)));
    // A command goes on the client's browser session under the mux's id, the rest as written.
    a.send(
        r#"{"id":5,"method":"Runtime.evaluate","params":{"expression":"x","returnByValue":true}}"#,
    )
    .unwrap();
    let cmd = browser.next().await;
    assert_eq!(cmd["sessionId"], "A");
    assert_eq!(
        cmd["params"],
        json!({"expression": "x", "returnByValue": true})
    );
    // Its answer, however many values it holds, comes back under the client's id and
    // without the browser session.
    let value = format!("[{}0]", "0,".repeat(200_000));
    let reply = format!(
        r#"{{"id":{},"result":{{"result":{{"type":"object","value":{value}}}}},"sessionId":"A"}}"#,
        cmd["id"]
    );
    let mut b = reply.into_bytes();
    b.push(0);
    browser.out.write_all(&b).await.unwrap();
    let got = answer(&mut a).await;
    assert_eq!(got["id"], 5);
    assert!(
        got.get("sessionId").is_none(),
        "the browser session is the client's own"
    );
    assert_eq!(
        got["result"]["result"]["value"].as_array().unwrap().len(),
        200_001
    );
}
