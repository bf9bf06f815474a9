//! Forwarding a request to the node that runs its session: the request body and the answer
//! are streamed (never buffered), a WebSocket upgrade is passed on and, once both sides
//! switched protocols, the two connections are spliced byte for byte in both directions.
//!
//! The caller's `Authorization` header (and a `token` the sender already checked) is
//! removed; the request carries the sender's signed [`sign::Assertion`] instead.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use super::{now_ms, sign, Member};

type Inner = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// The HTTP client nodes reach each other with (keep-alive pool, 2 s connect timeout).
pub struct Client {
    inner: Inner,
    /// Forward to nodes whose record carries no MAC.
    accept_unsigned: bool,
}

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node advertises no address.
    #[error("node {0} advertises no address (cluster.node_url)")]
    NoAddress(String),
    /// The node's member record does not carry this cluster's MAC.
    #[error("the record of node {0} does not carry this cluster's MAC (changed in the store, or written by an earlier release: see cluster.accept_unsigned_members); nothing is forwarded to it")]
    Unvouched(String),
    /// The request could not be built (bad node address).
    #[error("node {node} has an unusable address: {message}")]
    BadAddress {
        /// Node.
        node: String,
        /// Why.
        message: String,
    },
    /// The node did not answer.
    #[error("node {node} at {url} cannot be reached: {message}")]
    Unreachable {
        /// Node.
        node: String,
        /// Its address.
        url: String,
        /// Cause.
        message: String,
    },
}

/// The largest body a node forwards (it is read whole to be signed).
const MAX_FORWARDED_BODY: usize = 64 << 20;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

impl Default for Client {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Client {
    /// A client (TLS with the system roots when node addresses are `https://`) that
    /// forwards only to nodes whose member record carries the cluster's MAC, or also to
    /// those with none when `accept_unsigned` (while rolling from an earlier release).
    pub fn new(accept_unsigned: bool) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = builder
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
            .unwrap_or_else(|_| {
                let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg)
            });
        let https = tls.https_or_http().enable_http1().wrap_connector(http);
        let inner =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https);
        Client {
            inner,
            accept_unsigned,
        }
    }

    /// Sends `req` to `target` as node `from`, vouching for `actor`. `strip_token` removes
    /// a `token` query parameter the sender already checked.
    ///
    /// # Errors
    /// [`Error`]: the target cannot be reached or has no usable address.
    pub async fn forward(
        &self,
        from: &str,
        secret: &str,
        target: &Member,
        actor: &str,
        req: Request<Body>,
        strip_token: bool,
    ) -> Result<Response<Body>, Error> {
        if !sign::member_vouched(secret, target, self.accept_unsigned) {
            return Err(Error::Unvouched(target.node.clone()));
        }
        let url = target
            .url
            .as_deref()
            .ok_or_else(|| Error::NoAddress(target.node.clone()))?;
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(|q| {
            if strip_token {
                q.split('&')
                    .filter(|kv| !kv.starts_with("token=") && *kv != "token")
                    .collect::<Vec<_>>()
                    .join("&")
            } else {
                q.to_string()
            }
        });
        let pq = match query.filter(|q| !q.is_empty()) {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let method = req.method().clone();
        let upgrade = is_upgrade(req.headers());
        // The body is signed (its SHA-256), so it is read whole first: forwarded bodies are
        // the API's, bounded by http.max_body_bytes on the owner.
        let (parts, body) = req.into_parts();
        let bytes = if upgrade {
            bytes::Bytes::new()
        } else {
            axum::body::to_bytes(body, MAX_FORWARDED_BODY)
                .await
                .map_err(|e| Error::BadAddress {
                    node: target.node.clone(),
                    message: format!("the request body cannot be read: {e}"),
                })?
        };
        let mut req = Request::from_parts(parts, Body::empty());
        let assertion = sign::Assertion {
            node: from.into(),
            target: target.node.clone(),
            time_ms: now_ms(),
            actor: actor.into(),
            nonce: sign::Assertion::new_nonce(),
            body_sha256: sign::body_hash(&bytes),
        };
        let sig = sign::sign(secret, &assertion, method.as_str(), &pq);
        let bad = |m: String| Error::BadAddress {
            node: target.node.clone(),
            message: m,
        };
        let uri: Uri = format!("{}{pq}", url.trim_end_matches('/'))
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| bad(e.to_string()))?;
        let mut headers = clean(req.headers());
        headers.remove(header::AUTHORIZATION);
        if upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(u) = req.headers().get(header::UPGRADE) {
                headers.insert(header::UPGRADE, u.clone());
            }
        }
        for (name, value) in [
            (sign::H_NODE, assertion.node.as_str()),
            (sign::H_TARGET, assertion.target.as_str()),
            (sign::H_TIME, &assertion.time_ms.to_string()),
            (sign::H_ACTOR, assertion.actor.as_str()),
            (sign::H_NONCE, assertion.nonce.as_str()),
            (sign::H_BODY, assertion.body_sha256.as_str()),
            (sign::H_SIG, sig.as_str()),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).map_err(|e| bad(e.to_string()))?,
            );
        }
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let body = Body::from(bytes);
        let mut out = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .map_err(|e| bad(e.to_string()))?;
        *out.headers_mut() = headers;
        let mut resp = self
            .inner
            .request(out)
            .await
            .map_err(|e| Error::Unreachable {
                node: target.node.clone(),
                url: url.into(),
                message: error_chain(&e),
            })?;
        if resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream) {
                        Ok((c, u)) => {
                            let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "forwarded upgrade failed"),
                    }
                });
            }
            let (parts, _) = resp.into_parts();
            let mut r = Response::from_parts(parts, Body::empty());
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            return Ok(r);
        }
        let (mut parts, body) = resp.into_parts();
        parts.headers = clean(&parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The headers without hop-by-hop ones and without any `x-pv-` header.
fn clean(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in h {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) || name.starts_with("x-pv-") {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member record whose address was changed in the store (its MAC no longer matches),
    /// or that has no MAC, is not forwarded to: nothing connects to the address it names.
    #[tokio::test]
    async fn only_members_the_cluster_vouched_for_are_forwarded_to() {
        let secret = "a-cluster-secret-of-some-length";
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", elsewhere.local_addr().unwrap());
        let member = |mac: Option<String>| Member {
            format: 1,
            node: "node-b".into(),
            url: Some(url.clone()),
            capacity: 1,
            load: 0,
            started_ms: 0,
            heartbeat_ms: 0,
            expires_ms: u64::MAX,
            secret_check: Some(sign::secret_check(secret)),
            mac,
            version: "x".into(),
        };
        let real = sign::member_mac(secret, "node-b", Some("http://127.0.0.1:1"));
        let own = sign::member_mac(secret, "node-b", Some(&url));
        assert!(sign::member_vouched(
            secret,
            &member(Some(own.clone())),
            false
        ));
        assert!(!sign::member_vouched(
            "another-secret-entirely",
            &member(Some(own)),
            false
        ));
        assert!(sign::member_vouched(secret, &member(None), true));
        for (m, accept) in [(member(Some(real)), true), (member(None), false)] {
            let req = Request::get("/v0/vm/x").body(Body::empty()).unwrap();
            let e = Client::new(accept)
                .forward("node-a", secret, &m, "-", req, false)
                .await
                .unwrap_err();
            assert!(matches!(e, Error::Unvouched(ref n) if n == "node-b"), "{e}");
        }
        let nobody = tokio::time::timeout(Duration::from_millis(200), elsewhere.accept()).await;
        assert!(nobody.is_err(), "a request reached the changed address");
    }
}
