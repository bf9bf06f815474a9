//! `/v0/profiles/{id}/data`: the profile data document — small application state that lives,
//! encrypted, with a profile across sessions. Open to the tenant's API key, and to the admin
//! token of a running session of that profile (reading; writing only if it saves it), so a
//! session can set the document before it ends. Viewer tokens never reach it.

use crate::api::codes::ErrorCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::extract::{any_json, path_id, Call, RequestBody};
use super::vm::api_tenant;
use super::{auth, wire, AppState};
use crate::layout::ProfileAddr;
use crate::session::Session;
use crate::vault::{DataCondition, DataError};

/// Headers of a conditional write.
pub(super) const WRITE_HEADERS: &[wire::Param] = &[
    wire::Param {
        name: "If-Match",
        schema: wire::if_match,
        description: "write only if the document is at this version (0: none written yet)",
    },
    wire::Param {
        name: "If-None-Match",
        schema: wire::if_none_match,
        description: "`*`: write only if no document was written yet",
    },
];

/// Who is asking: the tenant, the audit actor, and the session whose admin token it is.
pub(super) struct Caller {
    tenant: String,
    actor: String,
    session: Option<Arc<Session>>,
}

fn caller(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Caller, ApiError> {
    if crate::vault::validate_id("profile", id).is_err() {
        // Still refuse a missing or wrong token first: 401 says nothing about ids.
        api_tenant(state, headers).or_else(|e| {
            admin_session(state, headers)
                .map(|_| String::new())
                .ok_or(e)
        })?;
        return Err(ApiError::not_found("profile"));
    }
    if let Ok(tenant) = api_tenant(state, headers) {
        let actor = auth::bearer(headers)
            .and_then(|k| state.keys.actor_of(k))
            .unwrap_or_else(|| format!("api-key:{tenant}"));
        return Ok(Caller {
            tenant,
            actor,
            session: None,
        });
    }
    let s = admin_session(state, headers).ok_or_else(ApiError::unauthorized)?;
    // An admin token reaches only its own session's profile, while the session runs.
    if s.profile_id.as_deref() != Some(id) || !s.is_active() {
        return Err(ApiError::not_found("profile"));
    }
    Ok(Caller {
        tenant: s.tenant.clone(),
        actor: format!("admin-token:{}", s.id),
        session: Some(s),
    })
}

/// The running session whose admin token the caller holds (or, forwarded by another node of
/// the cluster, the hash of whose admin token the caller presented: checked here against
/// the token this node holds).
fn admin_session(state: &AppState, headers: &HeaderMap) -> Option<Arc<Session>> {
    if let Some(actor) = auth::forwarded(headers) {
        let (sid, sha256) = actor.strip_prefix("admin-token:")?.split_once(':')?;
        return state
            .manager
            .get(sid)
            .filter(|s| s.is_active() && s.admin_token_sha256_matches(sha256));
    }
    auth::bearer(headers).and_then(|t| state.manager.by_admin_token(t))
}

/// Whether the profile may hold a document: it is stored, or a running session of the
/// tenant will save it (a new profile is named by its first session before it is saved).
async fn exists(state: &AppState, at: &ProfileAddr) -> Result<bool, ApiError> {
    let pending = state
        .manager
        .list(at.tenant(), true)
        .iter()
        .any(|s| s.save && s.profile_id.as_deref() == Some(at.profile()));
    Ok(pending || state.manager.vault().profile_exists(at).await?)
}

fn etag(version: u64) -> (axum::http::HeaderName, HeaderValue) {
    (
        axum::http::header::ETAG,
        HeaderValue::from_str(&format!("\"{version}\"")).expect("digits"),
    )
}

fn condition(headers: &HeaderMap) -> Result<DataCondition, ApiError> {
    Ok(match wire::precondition(headers)? {
        None => DataCondition::Always,
        Some(wire::Precondition::Version(v)) => DataCondition::Version(v),
        // Version 0 is "no document written yet".
        Some(wire::Precondition::Absent) => DataCondition::Version(0),
    })
}

/// A caller who may read the profile's document: the profile exists (or a running session
/// will save it), or the caller holds its running session's admin token.
pub(super) struct Reader {
    at: ProfileAddr,
    caller: Caller,
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = path_id(parts, state).await?;
        let c = caller(state, &parts.headers, &id)?;
        let at = super::extract::profile_addr(&c.tenant, &id)?;
        if c.session.is_none() && !exists(state, &at).await? {
            return Err(ApiError::not_found("profile"));
        }
        Ok(Reader { at, caller: c })
    }
}

/// A caller who may write the profile's document: a reader, and if it holds a session's
/// admin token, the session saves the profile.
pub(super) struct Writer(Reader);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let r = Reader::from_request_parts(parts, state).await?;
        if r.caller.session.as_ref().is_some_and(|s| !s.save) {
            return Err(ApiError::new(ErrorCode::Forbidden,
                "this session does not save its profile, so its admin token may not write the profile's data",
            ));
        }
        Ok(Writer(r))
    }
}

/// The body of `PUT /v0/profiles/{id}/data`: the document, any JSON.
pub(super) struct Document(serde_json::Value);

impl RequestBody for Document {
    fn read(_: &AppState, headers: &HeaderMap, raw: Bytes) -> Result<Self, ApiError> {
        any_json(headers, &raw, "the body is the document: any JSON").map(Document)
    }
}

/// `GET /v0/profiles/{id}/data`.
pub(super) async fn get(
    State(state): State<AppState>,
    Reader { at, .. }: Reader,
) -> Result<Response, ApiError> {
    let d = state.manager.vault().data(&at).await?;
    Ok((
        [etag(d.version)],
        Json(json!({"id": at.profile(), "version": d.version, "updated_at": d.updated_at, "data": d.data})),
    )
        .into_response())
}

/// `PUT /v0/profiles/{id}/data` (body: the document, any JSON).
pub(super) async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Call {
        caller: Writer(Reader { at, caller: c }),
        body: Document(data),
    }: Call<Writer, Document>,
) -> Result<Response, ApiError> {
    let cond = condition(&headers)?;
    let vault = state.manager.vault().with_actor(&c.actor);
    match vault.set_data(&at, &data, cond).await {
        Ok(version) => Ok((
            [etag(version)],
            Json(json!({"id": at.profile(), "version": version})),
        )
            .into_response()),
        Err(e @ DataError::TooLarge { .. }) => {
            Err(ApiError::new(ErrorCode::DataTooLarge, e.to_string()))
        }
        Err(e @ DataError::Precondition { .. }) => {
            Err(ApiError::new(ErrorCode::PreconditionFailed, e.to_string()))
        }
        Err(DataError::Vault(v)) => Err(v.into()),
    }
}
