//! Timeout webhooks (`timeout.webhook {url, bearer}` in `POST /v0/vm`): a POST with
//! `{session_id, type, ...}` when a timeout is `timeout.warning` seconds away
//! (`type: "timeout_warning"`) and when the session has ended (`type: "ended"`).
//! Delivery is best effort (one attempt, 10 s timeout); the bearer token never reaches logs.

use std::sync::OnceLock;
use std::time::Duration;

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

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client() -> Option<&'static HttpsClient> {
    static CLIENT: OnceLock<Option<HttpsClient>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
                .ok()?
                .https_or_http()
                .enable_http1()
                .build();
            Some(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
        })
        .as_ref()
}

/// Checks a webhook URL given by a client.
pub fn valid_url(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 2048
        && !url.chars().any(char::is_control)
        && url.parse::<hyper::Uri>().is_ok()
}

/// POSTs `body` to the hook; returns the status or an error text (never containing the token).
pub async fn send(hook: &Webhook, body: &serde_json::Value) -> Result<u16, String> {
    let client = client().ok_or("no TLS roots available for webhooks")?;
    let mut req = hyper::Request::post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", "profile-vault");
    if let Some(b) = &hook.bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("bad webhook request: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) => Ok(resp.status().as_u16()),
        Ok(Err(e)) => Err(format!("webhook delivery failed: {e}")),
        Err(_) => Err("webhook timed out".into()),
    }
}
