//! `/v0/vm`: start, list, inspect, ping and end sessions.

use crate::api::codes::ErrorCode;
use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Admin, ApiTenant, Call, Caller, Params, RequestBody, RequestQuery};
use super::{auth, wire, AppState};
use crate::session::{CreateSession, EndReason, LaunchOptions, ProfileRequest, Session, Timeouts};

/// The headers to read the JSON with, the JSON, and the zipped extension.
type SplitBody<'a> = (std::borrow::Cow<'a, HeaderMap>, &'a [u8], Option<Bytes>);

/// The JSON request and the zipped extension of `POST /v0/vm`: a JSON body, or Hyperbeam's
/// `multipart/form-data` with the parts `body` (the JSON) and `ex` (the zip). The JSON is held
/// to `http.max_body_bytes` either way.
fn split_body<'a>(
    state: &AppState,
    headers: &'a HeaderMap,
    body: &'a Bytes,
) -> Result<SplitBody<'a>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the request is larger than http.max_body_bytes ({})",
                state.max_body
            ),
        )
    };
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = super::multipart::boundary(ct) else {
        if body.len() > state.max_body {
            return Err(too_large());
        }
        return Ok((std::borrow::Cow::Borrowed(headers), &body[..], None));
    };
    let bad = |m: String| ApiError::bad_request(ErrorCode::InvalidRequest, m);
    let parts = super::multipart::parse(body, &boundary).map_err(|e| bad(e.to_string()))?;
    let json = parts
        .iter()
        .find(|p| p.name == "body")
        .map(|p| p.data)
        .ok_or_else(|| bad("multipart: no part `body` (the JSON request)".into()))?;
    if json.len() > state.max_body {
        return Err(too_large());
    }
    let zip = parts
        .iter()
        .find(|p| p.name == "ex")
        .filter(|p| !p.data.is_empty())
        .map(|p| body.slice_ref(p.data));
    let mut h = headers.clone();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok((std::borrow::Cow::Owned(h), json, zip))
}

/// A webhook a tenant names (`field` for errors): only public addresses are called.
fn webhook_of(
    w: &wire::WebhookRequest,
    field: &str,
    cfg: &crate::session::SessionConfig,
) -> Result<crate::session::webhook::Webhook, ApiError> {
    if crate::session::webhook::refused_literal(&w.url, cfg.browser.egress()) {
        return Err(ApiError::bad_request(ErrorCode::InvalidRequest,
            format!("{field}: the daemon calls public addresses only (browser.egress_allow opens ranges)"),
        ));
    }
    Ok(crate::session::webhook::Webhook {
        url: w.url.clone(),
        bearer: w.bearer.clone(),
    })
}

/// `auth`: the webhook that admits each user, if any.
fn parse_auth(
    a: Option<&wire::AuthRequest>,
    cfg: &crate::session::SessionConfig,
) -> Result<Option<crate::session::webhook::Webhook>, ApiError> {
    match a {
        None => Ok(None),
        Some(a) if a.kind == "webhook" => match &a.value {
            Some(w) => webhook_of(w, "auth.value.url", cfg).map(Some),
            None => Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "auth: a webhook needs value.url",
            )),
        },
        Some(_) => Ok(None),
    }
}

fn parse_profile(v: Option<&Value>) -> Result<ProfileRequest, ApiError> {
    let bad = |m: &str| ApiError::bad_request(ErrorCode::InvalidRequest, format!("profile: {m}"));
    Ok(match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => ProfileRequest::None,
        Some(Value::Bool(true)) => ProfileRequest::New,
        Some(Value::String(id)) => ProfileRequest::Load {
            id: id.clone(),
            save: true,
        },
        Some(o @ Value::Object(_)) => {
            let p: wire::ProfileObject = serde_json::from_value(o.clone()).map_err(|e| {
                let m = e.to_string();
                if m.starts_with("unknown field") {
                    ApiError::bad_request(ErrorCode::UnknownField, format!("profile: {m}"))
                } else {
                    bad("`save` must be a boolean, `load` a profile id string")
                }
            })?;
            match (p.load, p.save) {
                (None, Some(true)) => ProfileRequest::New,
                (None, _) => ProfileRequest::None,
                (Some(id), save) => ProfileRequest::Load {
                    id,
                    save: save.unwrap_or(false),
                },
            }
        }
        _ => {
            return Err(bad(
                "expected true, a profile id, or {\"save\": bool, \"load\": id}",
            ))
        }
    })
}

/// Resolves the caller's tenant from an API key (or from the API key another node of the
/// cluster checked, see [`auth::forwarded`]).
pub(super) fn api_tenant(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(actor) = auth::forwarded(headers) {
        return auth::forwarded_tenant(actor)
            .map(str::to_string)
            .ok_or_else(ApiError::unauthorized);
    }
    let token = auth::bearer(headers).ok_or_else(ApiError::unauthorized)?;
    state
        .keys
        .tenant_of(token)
        .map(str::to_string)
        .ok_or_else(ApiError::unauthorized)
}

/// Who may act on a session: an API key of its tenant, or its own admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Actor {
    ApiKey,
    AdminToken,
}

/// Finds session `id` for a caller holding the bearer token of `headers` (else
/// `query_token`), or vouched for by another node. Unknown ids and other tenants' ids answer
/// 404 alike; a token that is neither a key nor this session's admin token, 401.
pub(super) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
    id: &str,
) -> Result<(std::sync::Arc<Session>, Actor), ApiError> {
    if let Some(actor) = auth::forwarded(headers) {
        let session = state.manager.get(id);
        if let Some(t) = auth::forwarded_tenant(actor) {
            return match session {
                Some(s) if s.tenant == t => Ok((s, Actor::ApiKey)),
                _ => Err(ApiError::not_found("session")),
            };
        }
        if let Some(claim) = actor.strip_prefix("admin-token:") {
            // The sender vouches for the hash of what the caller presented; this node
            // holds the token itself.
            return match (claim.split_once(':'), session) {
                (Some((sid, sha256)), Some(s))
                    if sid == id && s.admin_token_sha256_matches(sha256) =>
                {
                    Ok((s, Actor::AdminToken))
                }
                _ => Err(ApiError::unauthorized()),
            };
        }
        // "-": the caller's own token came along; it is checked below.
    }
    let bearer = auth::bearer(headers);
    let token = bearer.or(query_token).ok_or_else(ApiError::unauthorized)?;
    let tenant = state.keys.tenant_of(token);
    if tenant.is_some() && bearer.is_none() {
        return Err(ApiError::key_in_url());
    }
    let session = state.manager.get(id);
    match (tenant, session) {
        (Some(t), Some(s)) if s.tenant == t => Ok((s, Actor::ApiKey)),
        (Some(_), _) => Err(ApiError::not_found("session")),
        (None, Some(s)) if s.admin_token_matches(token) => Ok((s, Actor::AdminToken)),
        (None, _) => Err(ApiError::unauthorized()),
    }
}

fn vm_urls(state: &AppState, id: &str, token: &str) -> (String, String) {
    let ws_base = state
        .public_url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    (
        format!("{}/v0/vm/{id}/embed?token={token}", state.public_url),
        format!("{ws_base}/v0/vm/{id}/cdp?token={token}"),
    )
}

/// The body of `POST /v0/vm`: the request, validated, and the zipped extension (not yet
/// checked: that is blocking work, done off the runtime by the handler).
pub(super) struct VmBody {
    req: wire::VmRequest,
    extension: Option<Bytes>,
}

impl RequestBody for VmBody {
    fn read(state: &AppState, headers: &HeaderMap, raw: Bytes) -> Result<Self, ApiError> {
        let (json_headers, json, extension) = split_body(state, headers, &raw)?;
        let req = wire::body(&wire::VM_REQUEST, &json_headers, json)?;
        Ok(VmBody { req, extension })
    }
}

/// `POST /v0/vm`.
pub(super) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Call {
        caller: ApiTenant(tenant),
        body: VmBody { req, extension },
    }: Call<ApiTenant, VmBody>,
) -> Result<Response, ApiError> {
    // Everything the schema says is enforced by now; what follows only interprets the request.
    if let Some(zip) = extension.clone() {
        // Each check unpacks up to 64 MiB: two at a time on this node, whoever asks.
        static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _check = CHECKS
            .acquire()
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        tokio::task::spawn_blocking(move || crate::browser::extension::check(&zip))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, format!("ex: {e}")))?;
    }
    let profile = parse_profile(req.profile.as_ref())?;
    let cfg = state.manager.config();
    let mut ignored = BTreeSet::new();
    let mut warning = None;
    let mut webhook = None;
    let mut timeouts = Timeouts {
        absolute: cfg.absolute_timeout,
        inactive: cfg.inactive_timeout,
        offline: None,
    };
    if let Some(t) = &req.timeout {
        timeouts = timeouts.changed_by(&crate::session::TimeoutChange {
            absolute: t.absolute,
            inactive: t.inactive,
            offline: t.offline,
            ..Default::default()
        });
        warning = t.warning.flatten();
        if let Some(Some(w)) = &t.webhook {
            webhook = Some(webhook_of(w, "timeout.webhook.url", cfg)?);
        }
    }
    if let Some(cap) = cfg.max_session_secs {
        timeouts.absolute = Some(timeouts.absolute.map_or(cap, |a| a.min(cap)));
    }
    // The identity fields override those pinned to a loaded profile, and are pinned with it.
    let identity = crate::vault::Identity {
        user_agent: req.user_agent.clone(),
        width: req.width,
        height: req.height,
        locale: req.locale.clone(),
        timezone: req.timezone.clone(),
    };
    for (name, v) in &req.hyperbeam {
        if !v.is_null() {
            ignored.insert(name.clone());
        }
    }
    let ignored: Vec<String> = ignored.into_iter().collect();
    let actor = auth::actor(&state.keys, &headers).unwrap_or_else(|| format!("api-key:{tenant}"));
    if let Some(u) = &req.start_url {
        if crate::session::webhook::refused_literal(u, cfg.browser.egress()) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "start_url: pages reach public addresses only (browser.egress_allow opens ranges)",
            ));
        }
    }
    let launch = LaunchOptions {
        start_url: req.start_url.clone(),
        extension: extension.map(crate::browser::extension::Zip),
        ..LaunchOptions::default()
    };
    let (session, token) = state
        .manager
        .create(
            &tenant,
            CreateSession {
                profile,
                timeouts,
                launch,
                identity,
                actor,
                webhook,
                auth: parse_auth(req.auth.as_ref(), cfg)?,
                warning,
                default_roles: match &req.default_roles {
                    None => crate::live::roles::DEFAULT.iter().copied().collect(),
                    Some(names) => crate::live::roles::parse_all(names.iter().map(String::as_str))
                        .map_err(|r| {
                            ApiError::bad_request(
                                ErrorCode::InvalidRequest,
                                format!("default_roles: unknown role `{r}`"),
                            )
                        })?,
                },
                control_disable_default: req.control_disable_default.unwrap_or(false),
            },
            ignored.clone(),
        )
        .await?;
    let info = session.info();
    // embed_url carries a viewer token of its own: the admin token never reaches a viewer.
    let viewer = session
        .live
        .mint(session.default_roles.clone())
        .expect("a new session holds no viewer token");
    let (embed_url, _) = vm_urls(&state, &session.id, &viewer);
    let (_, cdp_url) = vm_urls(&state, &session.id, &token);
    let body = serde_json::json!({
        "session_id": session.id,
        "embed_url": embed_url,
        "admin_token": token,
        "cdp_url": cdp_url,
        "expires_at": info.expires_at,
        "profile": info.profile.map(|p| {
            let mut v = serde_json::json!({"id": p.id, "loaded": p.loaded, "generation": p.generation, "save": p.save});
            if let Some(d) = &session.data_at_load {
                v["data"] = d.data.clone();
                v["data_version"] = d.version.into();
            }
            v
        }),
        "ignored": ignored,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Query parameters of `GET /v0/vm`.
pub(super) const LIST_QUERY: &[wire::Param] = &[
    wire::Param {
        name: "after_id",
        schema: wire::after_id,
        description: "list sessions whose id sorts after this one",
    },
    wire::Param {
        name: "limit",
        schema: wire::limit,
        description: "page size (1-1000, default 100)",
    },
];

/// Query parameters of `DELETE /v0/vm/{id}`.
pub(super) const DELETE_QUERY: &[wire::Param] = &[wire::Param {
    name: "wait",
    schema: wire::wait,
    description: "answer only after the browser stopped and the save finished",
}];

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    after_id: Option<String>,
    limit: Option<usize>,
}

impl RequestQuery for ListQuery {
    const PARAMS: &'static [wire::Param] = LIST_QUERY;
}

/// `GET /v0/vm`: the tenant's active sessions, `after_id` pagination.
pub(super) async fn list(
    State(state): State<AppState>,
    ApiTenant(tenant): ApiTenant,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    // This node's sessions as they are now, and the other live nodes' from their records.
    let mut all: std::collections::BTreeMap<String, Value> = state
        .manager
        .list(&tenant, true)
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                serde_json::to_value(s.info()).expect("info serializes"),
            )
        })
        .collect();
    if let Some(c) = state.cluster.as_ref() {
        let records = c.records(Some(&tenant)).await.map_err(|e| {
            ApiError::new(
                ErrorCode::StorageUnavailable,
                format!("cannot list the cluster's sessions: {e}"),
            )
        })?;
        for r in records {
            if !r.active || r.node == c.node() || all.contains_key(&r.session_id) {
                continue;
            }
            if let crate::cluster::Owner::Alive(_) = c.owner(&r.node).await {
                all.insert(r.session_id.clone(), r.info);
            }
        }
    }
    let page: Vec<_> = all
        .into_iter()
        .filter(|(id, _)| q.after_id.as_ref().is_none_or(|a| id.as_str() > a.as_str()))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let items: Vec<Value> = page.into_iter().take(limit).map(|(_, v)| v).collect();
    let next = if more {
        items
            .last()
            .and_then(|i| i["session_id"].as_str().map(str::to_string))
    } else {
        None
    };
    Ok(Json(
        serde_json::json!({"sessions": items, "next_after_id": next}),
    ))
}

/// `GET /v0/vm/{id}`: state, including after the end (termination date, save state).
pub(super) async fn get_one(Caller { session: s, .. }: Caller) -> Json<Value> {
    Json(serde_json::to_value(s.info()).expect("info serializes"))
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteQuery {
    wait: Option<bool>,
}

impl RequestQuery for DeleteQuery {
    const PARAMS: &'static [wire::Param] = DELETE_QUERY;
}

/// `DELETE /v0/vm/{id}[?wait=true]`.
pub(super) async fn delete(
    State(state): State<AppState>,
    Caller { session: s, actor }: Caller,
    Params(q): Params<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let reason = if actor == Actor::AdminToken {
        EndReason::Admin
    } else {
        EndReason::Client
    };
    state.manager.end(&s, reason);
    if q.wait.unwrap_or(false) {
        s.wait_done().await;
        let info = s.info();
        return Ok(Json(
            serde_json::json!({"session_id": s.id, "save": info.save, "profile": info.profile}),
        ));
    }
    Ok(Json(serde_json::json!({"session_id": s.id})))
}

/// `POST /v0/vm/{id}/ping`: renews the inactivity timeout.
pub(super) async fn ping(Admin(s): Admin) -> Json<Value> {
    s.touch();
    Json(serde_json::json!({"session_id": s.id, "expires_at": s.info().expires_at}))
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenQuery {
    pub(super) token: Option<String>,
    /// The live view's socket: come back as the user that left with this secret. Downloads
    /// and uploads: the secret of the connected `user` the call is made for.
    #[serde(default)]
    pub(super) resume: Option<String>,
    /// Downloads and uploads: the connected user (`hello`'s `user_id`) the call is made for.
    #[serde(default)]
    pub(super) user: Option<String>,
}
