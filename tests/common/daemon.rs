//! A real `profile-vault serve` process, a minimal HTTP client and a CDP client (the test
//! sites are in [`super::site`], re-exported here).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use super::site::*;

pub const KEY_T1: &str = "key-tenant-one-0123456789";
pub const KEY_T2: &str = "key-tenant-two-0123456789";
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// How the daemon stores profiles.
#[derive(Clone, Debug)]
pub enum StoreKind {
    Fs,
    LocalStack(String),
}

pub struct Daemon {
    pub child: Option<Child>,
    pub addr: String,
    pub data: PathBuf,
    pub store: StoreKind,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(data: &Path, store: StoreKind, extra_env: &[(&str, &str)]) -> Daemon {
        Daemon::start_binary(
            Path::new(env!("CARGO_BIN_EXE_profile-vault")),
            data,
            store,
            extra_env,
        )
    }

    /// [`Daemon::start`] with the daemon run from the file `binary`.
    pub fn start_binary(
        binary: &Path,
        data: &Path,
        store: StoreKind,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        std::fs::create_dir_all(data).unwrap();
        let log = data.join(format!("daemon-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = Command::new(binary);
        cmd.arg("--data-dir")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"]);
        cmd.env("PV_API_KEYS", format!("t1:{KEY_T1},t2:{KEY_T2}"))
            .env(
                "PV_MASTER_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            )
            .env("PV_LOG", "info,profile_vault=trace")
            // Daemons that share a store form a cluster, which needs its secret.
            .env("PV_CLUSTER_SECRET", CLUSTER_SECRET)
            .env("PV_EGRESS_ALLOW", SITE_ALLOW)
            .env_remove("PV_STORE")
            .env_remove("PV_CONFIG");
        if let StoreKind::LocalStack(prefix) = &store {
            cmd.env("PV_STORE", format!("s3://{}/{prefix}", super::BUCKET))
                .env("AWS_ENDPOINT_URL", super::endpoint("PV_TEST_LOCALSTACK"))
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .env("PV_S3_PATH_STYLE", "true");
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log_path = log.clone();
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(&log_path).unwrap();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                use std::io::Write;
                let _ = writeln!(out, "{line}");
                if !sent {
                    if let Some(rest) = line.strip_prefix("profile-vault listening on http://") {
                        let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "daemon did not start; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Daemon {
            child: Some(child),
            addr,
            data: data.to_path_buf(),
            store,
            log,
        }
    }

    /// A daemon on the filesystem store under `dir/data` with `dir/c.toml` (`toml`) as its
    /// config file.
    pub fn with_config(dir: &Path, toml: &str) -> Daemon {
        let cfg = dir.join("c.toml");
        std::fs::write(&cfg, toml).unwrap();
        Daemon::start(
            &dir.join("data"),
            StoreKind::Fs,
            &[("PV_CONFIG", cfg.to_str().unwrap())],
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (the daemon ends and saves every session).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        child.wait().unwrap()
    }

    /// SIGKILL: a crash. Browsers are left running.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        http(&self.addr, method, path, token, body).await
    }

    /// `POST /v0/vm`, whatever it answers.
    pub async fn post_vm(&self, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", "/v0/vm", Some(token), Some(&body.to_string()))
            .await
    }

    /// Sends `POST /v0/vm` with `body` as a client that goes away `after` it sent it, without
    /// reading the answer.
    pub async fn post_vm_and_leave(&self, token: &str, body: Value, after: std::time::Duration) {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let body = body.to_string();
        let req = format!(
            "POST /v0/vm HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        tokio::time::sleep(after).await;
        drop(sock);
    }

    pub async fn create(&self, token: &str, body: Value) -> Value {
        let (status, v) = self.post_vm(token, body).await;
        assert_eq!(status, 200, "create failed: {v}\nlog:\n{}", self.log_text());
        v
    }

    /// Polls `GET /v0/profiles/{id}` until the profile is stored (within `secs`); its answer.
    pub async fn wait_saved(&self, token: &str, id: &str, secs: u64) -> Value {
        let start = std::time::Instant::now();
        loop {
            let (st, v) = self
                .call("GET", &format!("/v0/profiles/{id}"), Some(token), None)
                .await;
            if st == 200 {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "profile {id} not saved in {secs}s: {v}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn end_and_wait(&self, token: &str, id: &str) -> Value {
        let (status, v) = self
            .call(
                "DELETE",
                &format!("/v0/vm/{id}?wait=true"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, 200, "delete failed: {v}");
        v
    }

    /// Polls GET /v0/vm/{id} until `pred` holds.
    pub async fn wait_for(
        &self,
        token: &str,
        id: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = std::time::Instant::now();
        loop {
            let (_, v) = self
                .call("GET", &format!("/v0/vm/{id}"), Some(token), None)
                .await;
            if pred(&v) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "condition not reached in {secs}s: {v}\nlog:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }
}

/// Runs `tests/node/cdp-clients.mjs` (Playwright `connectOverCDP`, then Puppeteer) against
/// `cdp_url`; the process output.
pub async fn run_cdp_clients(cdp_url: &str) -> std::process::Output {
    let node_dir = PathBuf::from(super::endpoint("PV_TEST_NODE_DIR"));
    // ESM resolves packages from the script's folder: run a copy placed beside node_modules.
    let script = node_dir.join(format!("cdp-clients-{}.mjs", uuid::Uuid::new_v4().simple()));
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/cdp-clients.mjs"),
        &script,
    )
    .unwrap();
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(cdp_url)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&script);
    out
}

/// One HTTP/1.1 request with `Connection: close`; returns status and JSON (or the text as a JSON string).
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, token, body.map(str::as_bytes)).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

pub async fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let (status, text) = response_status(&out);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A raw HTTP response's status code (0 if none) and its whole text.
pub fn response_status(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A CDP client attached to the first page of a browser, through the daemon's proxy.
pub struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    pub async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut c = Cdp {
            ws,
            next_id: 1,
            session: None,
        };
        let targets = c.send("Target.getTargets", json!({})).await;
        let page = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .map(|t| t["targetId"].as_str().unwrap().to_string());
        let target = match page {
            Some(t) => t,
            None => c
                .send("Target.createTarget", json!({"url": "about:blank"}))
                .await["targetId"]
                .as_str()
                .unwrap()
                .to_string(),
        };
        let att = c
            .send(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        c.session = Some(att["sessionId"].as_str().unwrap().to_string());
        c
    }

    pub async fn send(&mut self, method: &str, params: Value) -> Value {
        let v = self.raw(method, params).await;
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    /// Sends a command and returns the browser's whole answer (`result` or `error`).
    pub async fn raw(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            if !method.starts_with("Target.") {
                msg["sessionId"] = json!(s);
            }
        }
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                msg.to_string().into(),
            ))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("CDP reply timed out")
                .expect("CDP closed")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting promises) and returns its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .send(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Navigates and waits until `window.__done` (set by the test pages) or load completes.
    pub async fn goto(&mut self, url: &str) {
        self.send("Page.navigate", json!({"url": url})).await;
        for _ in 0..150 {
            let v = self.eval("document.readyState === 'complete' && location.href.startsWith('http') && (window.__done === true)").await;
            if v == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("page {url} did not finish");
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The token in a URL's query (`embed_url`'s viewer token, `cdp_url`'s admin token).
pub fn query_token(url: &str) -> String {
    url.split_once("token=").unwrap().1.to_string()
}

/// The live-view socket of a session (its `POST /v0/vm` answer) on `d`, with its viewer token.
pub fn viewer_socket(d: &Daemon, s: &Value) -> String {
    format!(
        "ws://{}/v0/vm/{}/embed/socket?token={}",
        d.addr,
        s["session_id"].as_str().unwrap(),
        query_token(s["embed_url"].as_str().unwrap())
    )
}

/// The processes below `pid` (children, their children, …), from `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parent_of = |p: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // The command is in parentheses and may hold spaces: fields follow the last `)`.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(1)?.parse::<u32>().ok()
    };
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, parent_of(p)?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// A GET of `path` with `headers`: (status, head, body).
pub async fn http_full(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    sock.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}
