//! Webhooks a tenant names in `POST /v0/vm`. Timeout webhooks (`timeout.webhook {url,
//! bearer}`): a POST with `{session_id, type, ...}` when a timeout is `timeout.warning` seconds
//! away (`type: "timeout_warning"`) and when the session has ended (`type: "ended"`), best
//! effort (one attempt, 10 s timeout). The auth webhook (`auth {type: "webhook", value}`): a
//! POST per connecting user whose answer admits it or not (`crate::api` asks). The bearer
//! token never reaches logs.
//!
//! The daemon never calls an internal address for a tenant: a literal non-public host is
//! refused at `POST /v0/vm` ([`refused_literal`]), and a name is resolved by a resolver that
//! checks every address against the egress policy at connect time (no DNS rebinding); a
//! refusal is logged and counted (`pv_webhooks_refused_total`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::browser::egress::Policy;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};

/// Where to send a session's events.
#[derive(Clone)]
pub struct Webhook {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Sent as `Authorization: Bearer <bearer>`.
    pub bearer: Option<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>, Full<Bytes>>;

/// Webhooks refused since start (an internal destination).
pub static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Resolves a webhook's host and lets the connection through only if every address is
/// allowed by the egress policy.
#[derive(Clone)]
struct PolicyResolver(Arc<Policy>);

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.is_empty() || addrs.iter().any(|a| !policy.allows(a.ip())) {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the webhook's host resolves to an address that is not public",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

fn client(policy: &Arc<Policy>) -> Option<HttpsClient> {
    let mut http = HttpConnector::new_with_resolver(PolicyResolver(policy.clone()));
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .ok()?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Some(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// Whether the URL's host is a literal address (or `localhost`) the policy refuses.
pub fn refused_literal(url: &str, policy: &Policy) -> bool {
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_string))
        .is_some_and(|h| policy.refuses_literal(&h))
}

/// Checks a webhook URL given by a client.
pub fn valid_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_control)
        && url.parse::<hyper::Uri>().is_ok()
}

/// POSTs `body` to the hook; returns the status or an error text (never containing the token).
pub async fn send(
    hook: &Webhook,
    body: &serde_json::Value,
    policy: &Arc<Policy>,
) -> Result<u16, String> {
    post(hook, body, &[], policy)
        .await
        .map(|(status, _)| status)
}

/// Largest answer read from a webhook, bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// POSTs `body` with `headers` to the hook within 10 s; returns the status and the answer's
/// first [`MAX_ANSWER`] bytes, or an error text (never containing the token).
pub async fn post(
    hook: &Webhook,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
    policy: &Arc<Policy>,
) -> Result<(u16, Bytes), String> {
    use http_body_util::BodyExt;
    if refused_literal(&hook.url, policy) {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return Err("refused: the webhook's host is not a public address".into());
    }
    let client = client(policy).ok_or("no TLS roots available for webhooks")?;
    let mut req = hyper::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", "profile-vault");
    if let Some(b) = &hook.bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad webhook request: {e}"))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("webhook delivery failed: {e}"))?;
        let status = resp.status().as_u16();
        let mut answer = Vec::new();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("webhook answer: {e}"))?;
            if let Some(d) = frame.data_ref() {
                answer.extend_from_slice(d);
                if answer.len() > MAX_ANSWER {
                    return Err("the webhook's answer is too large".to_string());
                }
            }
        }
        Ok((status, Bytes::from(answer)))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "webhook timed out".to_string())?
}
