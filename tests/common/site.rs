//! Test sites the browsers open: one that writes a cookie, localStorage and IndexedDB (and
//! reads them back), and services that count who reaches them.

use std::time::Duration;

use serde_json::Value;

/// Where test sites listen: a loopback address of its own, which the test daemons open to
/// their browsers (`PV_EGRESS_ALLOW`); the rest of loopback (the daemons themselves, every
/// other service on 127.0.0.1) stays out of the browsers' reach.
pub const SITE_HOST: &str = "127.0.0.2:0";
/// The egress range the test daemons allow.
pub const SITE_ALLOW: &str = "127.0.0.2/32";

/// The test site: `/set?v=X` writes a persistent cookie, localStorage and an IndexedDB record;
/// any other path is a plain page (history).
pub async fn test_site() -> String {
    use axum::extract::Query;
    use axum::response::Html;
    #[derive(serde::Deserialize)]
    struct V {
        v: Option<String>,
    }
    let app = axum::Router::new()
        .route(
            "/set",
            axum::routing::get(|Query(q): Query<V>| async move {
                let v = q.v.unwrap_or_default();
                Html(format!(
                    r#"<!doctype html><title>set</title><script>
document.cookie = "pv_cookie={v}; Max-Age=31536000; path=/";
localStorage.setItem("pv_ls", "{v}");
const req = indexedDB.open("pvdb", 1);
req.onupgradeneeded = () => req.result.createObjectStore("kv");
req.onsuccess = () => {{
  const tx = req.result.transaction("kv", "readwrite");
  tx.objectStore("kv").put("{v}", "pv_idb");
  tx.oncomplete = () => {{ window.__done = true; }};
}};
</script>"#
                ))
            }),
        )
        .route(
            // An HttpOnly session cookie, set by the server.
            "/login",
            axum::routing::get(|Query(q): Query<V>| async move {
                (
                    [(
                        axum::http::header::SET_COOKIE,
                        format!("pv_session={}; HttpOnly; Path=/", q.v.unwrap_or_default()),
                    )],
                    Html("<!doctype html><title>login</title><script>window.__done = true;</script>"),
                )
            }),
        )
        .route(
            // The cookies the server received (HttpOnly ones included), as the page text.
            "/echo",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                let c = headers
                    .get(axum::http::header::COOKIE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                Html(format!(
                    "<!doctype html><title>echo</title><pre id=c>{c}</pre><script>window.__done = true;</script>"
                ))
            }),
        )
        .route(
            "/get",
            axum::routing::get(|| async {
                Html("<!doctype html><title>get</title><script>window.__done = true;</script>")
            }),
        )
        .fallback(|| async {
            Html("<!doctype html><title>page</title><script>window.__done = true;</script>")
        });
    let listener = tokio::net::TcpListener::bind(SITE_HOST).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The JSON that [`READ_STATE`] returned (as a string) from the page.
pub fn state(v: &Value) -> Value {
    serde_json::from_str(v.as_str().expect("READ_STATE returns a string")).unwrap()
}

/// Waits for what a page just wrote to localStorage to reach the browser's storage: the
/// page's storage calls go to Chromium's storage service on a pipe of their own (an
/// evaluation's answer does not follow them), so a browser closed at once may flush its
/// storage before it has read them. A person ends a session later than a test does.
pub async fn let_storage_land() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Reads what a page can see of the stored state: (cookie, localStorage, IndexedDB).
pub const READ_STATE: &str = r#"(async () => {
  const idb = await new Promise((resolve) => {
    const req = indexedDB.open("pvdb", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("kv");
    req.onsuccess = () => {
      const tx = req.result.transaction("kv", "readonly");
      const g = tx.objectStore("kv").get("pv_idb");
      g.onsuccess = () => resolve(g.result ?? null);
      g.onerror = () => resolve(null);
    };
    req.onerror = () => resolve(null);
  });
  return JSON.stringify({cookie: document.cookie, ls: localStorage.getItem("pv_ls"), idb});
})()"#;

/// An HTTP service on `bind` that answers every request with `body` and counts them (what a
/// browser or the daemon must never reach: an internal service, a metadata endpoint).
pub async fn counting_server(
    bind: &str,
    body: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            body
        }
    });
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// The host of a test site's URL (`http://127.0.0.2:PORT` -> `127.0.0.2`).
pub fn site_host(site: &str) -> String {
    site.trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string()
}
