//! A Hyperbeam app's front end for the SDK tests: its own origin (127.0.0.3), the real
//! `@hyperbeam/web` from node_modules, and every page under a strict CSP (no inline script or
//! style, no `data:` images, no workers; `connect-src` the daemon only), as strict hosts serve
//! it. `/framed` holds the same page in a sandboxed iframe (origin `null`).

use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::common::daemon::{Daemon, StoreKind};
use crate::common::viewer::Viewer;

/// The app's page: a container and its script.
const PAGE: &str = r#"<!doctype html><title>app</title>
<link rel=stylesheet href=/app.css><div id=c></div>
<script type=module src=/host.js></script>"#;

const CSS: &str = "body { margin: 0 } #c { width: 900px; height: 560px }\n\
                   iframe { width: 920px; height: 580px; border: 0 }\n";

/// `Hyperbeam(container, embed)` with the options the query asks for, and what it hears on
/// `window` for the test to read.
const HOST_JS: &str = r#"import Hyperbeam from "/npm/@hyperbeam/web/index.js";
const q = new URLSearchParams(location.search);
window.frames_ = 0;
window.warn_ = [];
window.closes_ = [];
const WS = window.WebSocket;
// The close codes the module's sockets saw.
window.WebSocket = class extends WS {
  constructor(u) { super(u); this.addEventListener("close", (e) => window.closes_.push([e.code, e.reason])); }
};
const opts = {
  frameCb: (b) => { window.frames_++; b.close(); },
  onDisconnect: (d) => { window.disconnect_ = d.type; },
  onCursor: (c) => { window.cursor_ = c; },
  onCloseWarning: (w) => { window.warn_.push(w); },
  adminToken: q.get("admin") || undefined,
};
if (q.get("userdata")) opts.webhookUserdata = JSON.parse(q.get("userdata"));
if (q.get("audio")) opts.audioTrackCb = (t) => { window.audio_ = t; };
try {
  window.hb = await Hyperbeam(document.getElementById("c"), q.get("embed"), opts);
  window.state_ = "connected";
} catch (e) {
  window.state_ = "error: " + e.name + ": " + e.message;
}
// The page's point of a point of the remote screen (the video is letterboxed).
window.toPage = (x, y) => {
  const r = document.getElementById("c").shadowRoot.querySelector("video").getBoundingClientRect();
  const s = Math.min(r.width / hb.width, r.height / hb.height);
  return { x: r.left + (r.width - hb.width * s) / 2 + x * s, y: r.top + (r.height - hb.height * s) / 2 + y * s };
};
// The loudness of the session's sound in the app's own audio graph (audioTrackCb's track).
window.listen = async () => {
  const ac = new AudioContext();
  await ac.resume();
  const an = ac.createAnalyser();
  ac.createMediaStreamSource(new MediaStream([window.audio_])).connect(an);
  const buf = new Float32Array(an.fftSize);
  window.level = () => {
    an.getFloatTimeDomainData(buf);
    let s = 0;
    for (const x of buf) s += x * x;
    return Math.sqrt(s / buf.length);
  };
  return ac.state;
};
// In a frame, the parent hears how it goes (the test reads the top page).
if (window.parent !== window) {
  setInterval(() => parent.postMessage({ state: window.state_, frames: window.frames_, origin: self.origin }, "*"), 200);
}
"#;

/// The top page of `/framed`: what the framed app says, and who said it.
const FRAMED_JS: &str = r#"addEventListener("message", (e) => { window.inner_ = e.data; window.innerFrom_ = e.origin; });
"#;

/// Serves the app on an origin of its own; `daemon` is what its CSP lets it connect to.
pub(crate) async fn app(daemon: &str) -> String {
    let npm = PathBuf::from(std::env::var("PV_TEST_NODE_DIR").expect("PV_TEST_NODE_DIR"))
        .join("node_modules");
    let csp = format!(
        "default-src 'self'; script-src-elem 'self' blob:; style-src-elem 'self' blob:; \
         connect-src http://{daemon} ws://{daemon}; img-src 'self'; frame-src 'self'"
    );
    let csp = HeaderValue::from_str(&csp).unwrap();
    let page = move |q: RawQuery| {
        let csp = csp.clone();
        async move {
            let q = q.0.unwrap_or_default();
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            // The framed copy (an opaque origin) is served without: 'self' means nothing there.
            if !q.contains("framed=1") {
                h.insert(header::CONTENT_SECURITY_POLICY, csp);
            }
            (h, PAGE).into_response()
        }
    };
    let framed = |q: RawQuery| async move {
        let q = q.0.unwrap_or_default();
        let html = format!(
            "<!doctype html><title>framed</title><link rel=stylesheet href=/app.css>\
             <iframe sandbox=\"allow-scripts\" src=\"/?{q}&amp;framed=1\"></iframe>\
             <script type=module src=/framed.js></script>"
        );
        ([(header::CONTENT_TYPE, "text/html")], html).into_response()
    };
    let router = axum::Router::new()
        .route("/", axum::routing::get(page))
        .route("/framed", axum::routing::get(framed))
        .route(
            "/app.css",
            axum::routing::get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/host.js",
            axum::routing::get(|| async { asset("text/javascript", HOST_JS) }),
        )
        .route(
            "/framed.js",
            axum::routing::get(|| async { asset("text/javascript", FRAMED_JS) }),
        )
        .route(
            "/npm/{*path}",
            axum::routing::get(move |Path(p): Path<String>| {
                let npm = npm.clone();
                async move {
                    let allowed = (p.starts_with("@hyperbeam/web/") || p.starts_with("cbor-x/"))
                        && p.ends_with(".js")
                        && !p.contains("..");
                    match std::fs::read_to_string(npm.join(&p))
                        .ok()
                        .filter(|_| allowed)
                    {
                        // Its one bare import resolved, as a bundler would (an import map is
                        // an inline script, which the CSP refuses).
                        Some(js) => asset(
                            "text/javascript",
                            js.replace("\"cbor-x/decode\"", "\"/npm/cbor-x/decode.js\""),
                        ),
                        None => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.3:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    format!("http://{addr}")
}

/// What every SDK test starts with: the test site, a daemon on the filesystem store (in the
/// returned directory) and the app on its own origin.
pub(crate) async fn start() -> (String, tempfile::TempDir, Daemon, String) {
    let site = crate::display::site().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let app = app(&d.addr).await;
    (site, dir, d, app)
}

/// A script or stylesheet, readable by the framed (null-origin) copy too.
fn asset(ty: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, ty),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// Opens the app as `name` at `path` (`/` or `/framed`) with `query`, until Hyperbeam()
/// settled (`until`).
pub(crate) async fn open(v: &mut Viewer, name: &str, url: String, until: &str) {
    v.ask(json!({"cmd": "host", "name": name, "url": url, "until": until}))
        .await;
}

/// Evaluates `expr` on the app's page `name`.
pub(crate) async fn eval(v: &mut Viewer, name: &str, expr: impl Into<String>) -> serde_json::Value {
    v.ask(json!({"cmd": "evaluate", "name": name, "expr": expr.into()}))
        .await
}

/// Waits until `cond` (an expression on the page `name`) is true; else fails with `what` and
/// the value of `show`.
pub(crate) async fn until(v: &mut Viewer, name: &str, what: &str, cond: &str, show: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if eval(v, name, cond).await == true {
            return;
        }
        if std::time::Instant::now() > deadline {
            let seen = eval(v, name, show).await;
            panic!("{what}: not so; {show} = {seen}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
