//! The cluster at the HTTP edge: any node answers for every session.
//!
//! [`edge`] runs before routing, on every request:
//! - it strips [`sign::H_VERIFIED`] from whatever came in, and for a request another node
//!   signed it checks the signature ([`sign::verify`]) and sets that header to the actor the
//!   sender vouched for; such a request is always answered here (never forwarded again);
//! - a request for a session this node does not run is looked up in the session records. The
//!   caller is checked here as far as this node can (API key and tenant, the admin token's
//!   hash; a viewer token only the owner knows), then the request goes to the owner node
//!   ([`crate::cluster::forward`]), or is answered from the record when the owner was lost
//!   (`node_lost`), or gets 503 `node_unreachable`;
//! - `POST /v0/vm` on a node at its session limit goes to the least loaded live node with
//!   room; 429 only when every node is full.

use crate::api::codes::ErrorCode;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::{auth, wire, AppState};
use crate::cluster::{self, sign, Owner, SessionRecord};

/// The session id and the rest of a `/v0/vm/{id}…` path.
fn session_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/v0/vm/")?;
    let (id, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (!id.is_empty()).then_some((id, tail))
}

fn unreachable(message: String) -> Response {
    ApiError::new(ErrorCode::NodeUnreachable, message).into_response()
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Nonces of forwarded requests seen within the replay window.
static REPLAYS: std::sync::LazyLock<sign::ReplayCache> =
    std::sync::LazyLock::new(sign::ReplayCache::default);

fn refused(e: sign::Refused) -> Response {
    tracing::warn!(error = %e, "refused a forwarded request");
    ApiError::new(
        ErrorCode::ClusterAuthFailed,
        format!("forwarded request refused: {e}"),
    )
    .into_response()
}

/// The middleware (see the module doc).
pub(super) async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    req.headers_mut().remove(sign::H_VERIFIED);
    if req.headers().contains_key(sign::H_SIG) {
        let checked = match verify(&state, &req) {
            Ok((actor, body_sha256, nonce)) => {
                // The signature covers the body's hash: read it (only now, from a holder of
                // the secret) and compare, then refuse a nonce seen before.
                let (parts, body) = req.into_parts();
                match axum::body::to_bytes(body, 64 << 20).await {
                    Ok(b) if sign::body_hash(&b) == body_sha256 => {
                        req = Request::from_parts(parts, axum::body::Body::from(b));
                        if REPLAYS.first_time(&nonce, cluster::now_ms()) {
                            Ok(actor)
                        } else {
                            Err(sign::Refused::Replayed)
                        }
                    }
                    _ => return refused(sign::Refused::BodyMismatch),
                }
            }
            Err(e) => Err(e),
        };
        return match checked {
            Ok(actor) => {
                for h in [
                    sign::H_NODE,
                    sign::H_TARGET,
                    sign::H_TIME,
                    sign::H_ACTOR,
                    sign::H_NONCE,
                    sign::H_BODY,
                    sign::H_SIG,
                ] {
                    req.headers_mut().remove(h);
                }
                match HeaderValue::from_str(&actor) {
                    Ok(v) => {
                        req.headers_mut().insert(sign::H_VERIFIED, v);
                        next.run(req).await
                    }
                    Err(_) => ApiError::unauthorized().into_response(),
                }
            }
            Err(e) => refused(e),
        };
    }
    let Some(c) = state.cluster.clone() else {
        return next.run(req).await;
    };
    if req.method() == Method::POST && req.uri().path() == "/v0/vm" {
        return place(&state, &c, req, next).await;
    }
    if is_data_path(req.uri().path()) {
        return data_with_admin_token(&state, &c, req, next).await;
    }
    let Some((id, rest)) = session_path(req.uri().path()) else {
        return next.run(req).await;
    };
    if state.manager.get(id).is_some() {
        return next.run(req).await;
    }
    let (id, rest) = (id.to_string(), rest.to_string());
    let record = match c.record(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return next.run(req).await,
        Err(e) => {
            return ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("cannot read the session's record: {e}"),
            )
            .into_response()
        }
    };
    let who = match check_caller(&state, &req, &record, &rest) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let info_route = rest.is_empty() && req.method() == Method::GET;
    match c.owner(&record.node).await {
        Owner::Me => {
            // This node ran it before a restart: the record is all that is left.
            if info_route {
                Json(record.info).into_response()
            } else {
                ApiError::expired().into_response()
            }
        }
        Owner::Lost(since) => {
            if info_route {
                Json(record.lost_view(since)).into_response()
            } else {
                ApiError::new(
                    ErrorCode::SessionExpired,
                    format!("the session has ended: its node {} was lost", record.node),
                )
                .into_response()
            }
        }
        Owner::Alive(member) => {
            if rest == "/cdp/json/version" && req.method() == Method::GET {
                return cdp_version(&state, &req, &record);
            }
            let Some(secret) = c.secret() else {
                return unreachable(format!(
                    "session {id} runs on node {}, and this node has no cluster secret to reach it",
                    record.node
                ));
            };
            let (actor, checked) = match &who {
                Who::Key(a) => (a.clone(), true),
                Who::Admin(sha256) => (admin_actor(&id, sha256), true),
                Who::Owner => ("-".to_string(), false),
            };
            to_owner(&c, secret, &member, &id, &actor, req, checked).await
        }
    }
}

/// Sends a request to the node running session `id`, vouching for `actor` (the caller's
/// credentials are removed when this node `checked` them).
async fn to_owner(
    c: &cluster::Cluster,
    secret: &str,
    member: &cluster::Member,
    id: &str,
    actor: &str,
    mut req: Request,
    checked: bool,
) -> Response {
    if checked {
        req.headers_mut().remove(axum::http::header::AUTHORIZATION);
    }
    match c
        .client()
        .forward(c.node(), secret, member, actor, req, checked)
        .await
    {
        Ok(resp) => resp,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "cannot forward to the session's node");
            unreachable(format!(
                "the node running session {id} cannot be reached: {e}"
            ))
        }
    }
}

/// `/v0/profiles/{id}/data`.
fn is_data_path(path: &str) -> bool {
    path.strip_prefix("/v0/profiles/")
        .and_then(|r| r.strip_suffix("/data"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

/// The profile data document with the admin token of a session running on another node:
/// the token's hash is looked up in the admin-token index, checked against the session's
/// record, and the request goes to the owner, which applies its own rules (its profile
/// only, writes only if it saves). Anything else is answered here.
async fn data_with_admin_token(
    state: &AppState,
    c: &std::sync::Arc<cluster::Cluster>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = auth::bearer(req.headers()).map(str::to_string) else {
        return next.run(req).await;
    };
    if state.keys.tenant_of(&token).is_some() || state.manager.by_admin_token(&token).is_some() {
        return next.run(req).await;
    }
    let sid = match c.admin_index(&cluster::records::token_sha256(&token)).await {
        Ok(Some(sid)) => sid,
        Ok(None) => return next.run(req).await,
        Err(e) => {
            return ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("cannot read the cluster's admin-token index: {e}"),
            )
            .into_response()
        }
    };
    let record = match c.record(&sid).await {
        Ok(Some(r)) if r.active && r.admin_token_matches(&token) => r,
        _ => return next.run(req).await,
    };
    let (Owner::Alive(member), Some(secret)) = (c.owner(&record.node).await, c.secret()) else {
        return next.run(req).await;
    };
    let actor = admin_actor(&sid, &cluster::records::token_sha256(&token));
    to_owner(c, secret, &member, &sid, &actor, req, true).await
}

/// The actor a signed request vouches for, the body hash and nonce it was signed with, if its
/// signature checks out.
fn verify(state: &AppState, req: &Request) -> Result<(String, String, String), sign::Refused> {
    let c = state.cluster.as_ref().ok_or(sign::Refused::NoSecret)?;
    let get = |n| header(req, n).ok_or(sign::Refused::Malformed);
    let a = sign::Assertion {
        node: get(sign::H_NODE)?.to_string(),
        target: get(sign::H_TARGET)?.to_string(),
        time_ms: get(sign::H_TIME)?
            .parse()
            .map_err(|_| sign::Refused::Malformed)?,
        actor: get(sign::H_ACTOR)?.to_string(),
        nonce: get(sign::H_NONCE)?.to_string(),
        body_sha256: get(sign::H_BODY)?.to_string(),
    };
    let pq = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    sign::verify(
        c.secret(),
        c.node(),
        cluster::now_ms(),
        &a,
        get(sign::H_SIG)?,
        req.method().as_str(),
        &pq,
    )?;
    Ok((a.actor, a.body_sha256, a.nonce))
}

/// Who the caller of a forwarded session route is, as far as this node can tell.
enum Who {
    /// An API key of the session's tenant (its audit id).
    Key(String),
    /// The session's admin token, as this node found it in the session's record (the
    /// SHA-256 of what the caller presented).
    Admin(String),
    /// A token only the owner can check (a viewer token): passed on as it came.
    Owner,
}

/// The actor of a request made with an admin token: `admin-token:<session>:<sha256 of the
/// token presented>`. This node checked the token against the session's record, which is
/// read from the store; the owner checks the hash against the token it holds, so a record
/// given another hash by whoever can write the store opens nothing.
fn admin_actor(session: &str, token_sha256: &str) -> String {
    format!("admin-token:{session}:{token_sha256}")
}

fn check_caller(
    state: &AppState,
    req: &Request,
    record: &SessionRecord,
    rest: &str,
) -> Result<Who, ApiError> {
    let query_token = wire::query_value(req.uri().query(), "token");
    let bearer = auth::bearer(req.headers()).map(str::to_string);
    let in_url = bearer.is_none();
    let token = bearer.or(query_token).ok_or_else(ApiError::unauthorized)?;
    let tenant = state.keys.tenant_of(&token);
    if tenant.is_some() && in_url {
        return Err(ApiError::key_in_url());
    }
    let is_key = tenant == Some(record.tenant.as_str());
    let is_admin = tenant.is_none() && record.admin_token_matches(&token);
    if rest == "/embed" || rest == "/embed/socket" {
        if is_key || is_admin {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the live view takes a viewer token (embed_url), not the admin token or an API key",
            ));
        }
        if tenant.is_some() {
            return Err(ApiError::unauthorized());
        }
        return Ok(Who::Owner);
    }
    if tenant.is_some() && !is_key {
        return Err(ApiError::not_found("session"));
    }
    if is_key {
        let actor = state
            .keys
            .actor_of(&token)
            .unwrap_or_else(|| format!("api-key:{}", record.tenant));
        return Ok(Who::Key(actor));
    }
    if is_admin {
        return Ok(Who::Admin(cluster::records::token_sha256(&token)));
    }
    if rest == "/store" || rest.starts_with("/store/") || is_viewer_file_route(rest) {
        // Viewers may use the session's store, and download and upload files, with their
        // own token (and, for files, the user they are connected as): only the owner knows
        // them.
        return Ok(Who::Owner);
    }
    Err(ApiError::unauthorized())
}

/// `…/embed/downloads/{name}` and `…/embed/uploads`: a viewer's file routes.
fn is_viewer_file_route(rest: &str) -> bool {
    rest == "/embed/uploads"
        || rest
            .strip_prefix("/embed/downloads/")
            .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// `GET /v0/vm/{id}/cdp/json/version` of a session on another node: the URL it gives goes
/// through the shared address, so it is answered here.
fn cdp_version(state: &AppState, req: &Request, record: &SessionRecord) -> Response {
    if !record.active {
        return ApiError::expired().into_response();
    }
    let token = auth::bearer(req.headers())
        .map(str::to_string)
        .or_else(|| wire::query_value(req.uri().query(), "token"))
        .unwrap_or_default();
    let ws_base = state
        .public_url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    // As on the owner: only the session's admin token is echoed, never an API key.
    let query = if state.keys.tenant_of(&token).is_none() && record.admin_token_matches(&token) {
        format!("?token={token}")
    } else {
        String::new()
    };
    Json(serde_json::json!({
        "Browser": "Chromium (profile-vault proxy)",
        "Protocol-Version": "1.3",
        "webSocketDebuggerUrl": format!("{ws_base}/v0/vm/{}/cdp{query}", record.session_id),
    }))
    .into_response()
}

/// `POST /v0/vm` on a full node: tries the live nodes with room, least loaded first.
async fn place(
    state: &AppState,
    c: &std::sync::Arc<cluster::Cluster>,
    req: Request,
    next: Next,
) -> Response {
    let full = state.manager.active_count() >= state.manager.config().max_sessions;
    let secret = c.secret().map(str::to_string);
    let actor = auth::bearer(req.headers()).and_then(|t| state.keys.actor_of(t));
    let (Some(secret), Some(actor), true) = (secret, actor, full) else {
        return next.run(req).await;
    };
    let peers = c.peers_with_room();
    if peers.is_empty() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.max_body).await else {
        return ApiError::new(
            ErrorCode::BodyTooLarge,
            "the body is larger than http.max_body_bytes",
        )
        .into_response();
    };
    let copy = |bytes: &axum::body::Bytes| {
        let mut r = Request::new(Body::from(bytes.clone()));
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = parts.uri.clone();
        *r.headers_mut() = parts.headers.clone();
        r.headers_mut().remove(axum::http::header::AUTHORIZATION);
        r
    };
    for m in peers {
        match c
            .client()
            .forward(c.node(), &secret, &m, &actor, copy(&bytes), false)
            .await
        {
            Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS => {
                tracing::debug!(node = %m.node, "placement: that node is full too");
            }
            Ok(resp) => {
                tracing::info!(node = %m.node, "session placed on another node (this one is full)");
                return resp;
            }
            Err(e) => tracing::warn!(node = %m.node, error = %e, "placement: node unreachable"),
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
