//! A fault-injecting HTTP proxy between an S3 client and the real server (127.0.0.1 only).
//! Rules pick requests (e.g. the 3rd UploadPart, the CompleteMultipartUpload, the head
//! record write, the GET) and answer them with an error status, a reset connection, a stall,
//! or a body cut in the middle; everything else is forwarded unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
}

impl Req {
    pub fn is_upload_part(&self) -> bool {
        self.method == "PUT"
            && self.target.contains("partNumber=")
            && self.target.contains("uploadId=")
    }
    pub fn is_complete(&self) -> bool {
        self.method == "POST" && self.target.contains("uploadId=")
    }
    pub fn is_put(&self, suffix: &str) -> bool {
        self.method == "PUT" && self.path().ends_with(suffix)
    }
    pub fn is_get(&self, suffix: &str) -> bool {
        self.method == "GET" && self.path().ends_with(suffix)
    }
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Answer with this status and S3 error code.
    Status(u16, &'static str),
    /// Close the connection without answering.
    Reset,
    /// Wait, then forward.
    Stall(Duration),
    /// Forward, but send only half of the response body, then close.
    CutBody,
}

pub struct Rule {
    pub name: &'static str,
    pub matches: fn(&Req) -> bool,
    /// Which matching requests (1-based) get the action; empty: all of them.
    pub on: Vec<usize>,
    pub action: Action,
    seen: usize,
    pub applied: usize,
}

impl Rule {
    pub fn new(
        name: &'static str,
        matches: fn(&Req) -> bool,
        on: &[usize],
        action: Action,
    ) -> Rule {
        Rule {
            name,
            matches,
            on: on.to_vec(),
            action,
            seen: 0,
            applied: 0,
        }
    }
}

#[derive(Clone)]
pub struct FaultProxy {
    pub addr: String,
    upstream: String,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let p = FaultProxy {
            addr,
            upstream: upstream.trim_start_matches("http://").to_string(),
            rules: Arc::default(),
        };
        let p2 = p.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                let p = p2.clone();
                tokio::spawn(async move { p.serve(sock).await });
            }
        });
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.rules.lock().unwrap() = rules;
    }

    /// How often each rule fired.
    pub fn applied(&self, name: &str) -> usize {
        self.rules
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.applied)
            .sum()
    }

    fn decide(&self, req: &Req) -> Option<Action> {
        // Every matching rule counts the request; the first one whose turn it is acts.
        let mut rules = self.rules.lock().unwrap();
        let mut action = None;
        for r in rules.iter_mut() {
            if (r.matches)(req) {
                r.seen += 1;
                if action.is_none() && (r.on.is_empty() || r.on.contains(&r.seen)) {
                    r.applied += 1;
                    action = Some(r.action);
                }
            }
        }
        action
    }

    async fn serve(&self, mut sock: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some((head, body)) = read_message(&mut sock, &mut buf, false).await else {
                return;
            };
            let text = String::from_utf8_lossy(&head).into_owned();
            let mut first = text.lines().next().unwrap_or_default().split_whitespace();
            let req = Req {
                method: first.next().unwrap_or_default().into(),
                target: first.next().unwrap_or_default().into(),
            };
            match self.decide(&req) {
                Some(Action::Status(code, s3code)) => {
                    let body = format!("<?xml version=\"1.0\"?><Error><Code>{s3code}</Code><Message>injected by the test proxy</Message></Error>");
                    let resp = format!("HTTP/1.1 {code} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Some(Action::Reset) => return,
                Some(Action::Stall(d)) => {
                    tokio::time::sleep(d).await;
                    let Some(resp) = self.forward(&req, &head, &body).await else {
                        return;
                    };
                    if sock.write_all(&resp).await.is_err() {
                        return;
                    }
                }
                Some(Action::CutBody) => {
                    let Some(resp) = self.forward(&req, &head, &body).await else {
                        return;
                    };
                    let split = resp
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(0, |p| p + 4);
                    let cut = split + (resp.len() - split) / 2;
                    let _ = sock.write_all(&resp[..cut]).await;
                    return;
                }
                None => {
                    let Some(resp) = self.forward(&req, &head, &body).await else {
                        return;
                    };
                    if sock.write_all(&resp).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn forward(&self, req: &Req, head: &[u8], body: &[u8]) -> Option<Vec<u8>> {
        let mut up = TcpStream::connect(&self.upstream).await.ok()?;
        up.write_all(head).await.ok()?;
        up.write_all(body).await.ok()?;
        let mut buf = Vec::new();
        let (h, b) = read_message(&mut up, &mut buf, req.method == "HEAD").await?;
        let mut out = h;
        out.extend_from_slice(&b);
        Some(out)
    }
}

/// Reads one HTTP/1.1 message (head with its CRLFCRLF, then the body by Content-Length or
/// chunked encoding). `no_body` for answers to HEAD.
async fn read_message(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    no_body: bool,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut tmp = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head: Vec<u8> = buf.drain(..head_end).collect();
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status_no_body = text.starts_with("http/1.1 204") || text.starts_with("http/1.1 304");
    let len = text.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = text
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    if no_body || status_no_body {
        return Some((head, Vec::new()));
    }
    if chunked {
        // Keep the raw chunked bytes; read until the terminating zero chunk.
        loop {
            if buf.windows(5).any(|w| w == b"0\r\n\r\n") {
                let end = buf.windows(5).position(|w| w == b"0\r\n\r\n").unwrap() + 5;
                return Some((head, buf.drain(..end).collect()));
            }
            let n = s.read(&mut tmp).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }
    let len = len.unwrap_or(0);
    while buf.len() < len {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some((head, buf.drain(..len).collect()))
}
