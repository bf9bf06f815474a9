//! The handlers' extractors: who is calling, and what they sent, each checked before the
//! handler runs.
//!
//! - Callers ([`ApiTenant`], [`Caller`], [`Admin`]) resolve the token (or the cluster's
//!   forwarded actor) against the session in the path. Each is also a plain
//!   `FromRequestParts`, for routes without a body.
//! - [`Call`] takes a caller and a [`RequestBody`]. It answers in this order: the path
//!   (400), the caller (401, 403, 404, 410) before a byte of the body is read, then the body
//!   over the route's limit (413), then the body against its published schema (415, 400).
//! - [`Params`] reads a [`RequestQuery`] against its published parameters; put it after the
//!   caller, so that a caller who may not call learns nothing from the query's checks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::codes::ErrorCode;
use super::error::ApiError;
use super::vm::{api_tenant, authorize, Actor};
use super::{wire, AppState};
use crate::layout::ProfileAddr;
use crate::session::Session;

/// A request body: read from the raw bytes (after the caller is known) and checked against
/// the schema the OpenAPI document publishes for it.
pub(super) trait RequestBody: Sized {
    /// Reads the body, or the documented error.
    fn read(state: &AppState, headers: &HeaderMap, raw: Bytes) -> Result<Self, ApiError>;
}

/// A JSON body whose type is its published schema: an empty body reads as `{}`.
macro_rules! json_body {
    ($($ty:ty => $schema:expr),* $(,)?) => {$(
        impl $crate::api::extract::RequestBody for $ty {
            fn read(
                _: &$crate::api::AppState,
                headers: &axum::http::HeaderMap,
                raw: axum::body::Bytes,
            ) -> Result<Self, $crate::api::error::ApiError> {
                $crate::api::wire::body(&$schema, headers, &raw)
            }
        }
    )*};
}
pub(super) use json_body;

json_body! {
    wire::TimeoutChangeRequest => wire::TIMEOUT_CHANGE,
    wire::ViewerRequest => wire::VIEWER_REQUEST,
    wire::ImportRequest => wire::IMPORT_REQUEST,
}

/// A body that is any JSON value, and not nothing (`what` says so when it is empty).
pub(super) fn any_json(
    headers: &HeaderMap,
    raw: &[u8],
    what: &'static str,
) -> Result<serde_json::Value, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(ErrorCode::InvalidJson, what));
    }
    wire::body(&wire::ANY, headers, raw)
}

/// A query string: its type and the parameters the OpenAPI document publishes for it
/// (parameters not listed are ignored, as Hyperbeam's clients send their own).
pub(super) trait RequestQuery: DeserializeOwned {
    /// The published parameters.
    const PARAMS: &'static [wire::Param];
}

/// A validated query string.
pub(super) struct Params<T>(pub T);

impl<T: RequestQuery + Send> FromRequestParts<AppState> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        wire::query(T::PARAMS, parts.uri.query()).map(Params)
    }
}

/// A caller and the body they sent (see the module's order of checks).
pub(super) struct Call<C, B> {
    /// Who is calling.
    pub caller: C,
    /// What they sent.
    pub body: B,
}

impl<C, B> FromRequest<AppState> for Call<C, B>
where
    C: FromRequestParts<AppState, Rejection = ApiError> + Send,
    B: RequestBody + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let mut head = parts.clone();
        // The path first, as a `Path` extractor before the body would.
        path_params(&mut head, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // The caller before a byte of the body is read: an unknown caller cannot make the
        // daemon hold bodies (up to the route's limit each) it will refuse anyway.
        let caller = C::from_request_parts(&mut head, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // Under the route's body limit (its rejection becomes JSON in `json_errors`).
        let raw = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let body = B::read(state, &head.headers, raw).map_err(IntoResponse::into_response)?;
        Ok(Call { caller, body })
    }
}

/// The route's path parameters, decoded. A parameter that is not UTF-8 once decoded is
/// refused as axum's `Path` refuses it (400), before anything else is checked.
async fn path_params(
    parts: &mut Parts,
    state: &AppState,
) -> Result<HashMap<String, String>, ApiError> {
    match Path::<HashMap<String, String>>::from_request_parts(parts, state).await {
        Ok(Path(params)) => Ok(params),
        Err(PathRejection::MissingPathParams(_)) => Ok(HashMap::new()),
        Err(r) => Err(ApiError::with_status(
            r.status(),
            ErrorCode::for_status(r.status()),
            r.body_text().trim(),
        )),
    }
}

/// The `{id}` of the route's path (every session and profile route names it so).
pub(super) async fn path_id(parts: &mut Parts, state: &AppState) -> Result<String, ApiError> {
    path_params(parts, state)
        .await?
        .remove("id")
        .ok_or_else(|| ApiError::not_found("route"))
}

/// The address of profile `id` of `tenant`; an invalid id names no profile (404).
pub(super) fn profile_addr(tenant: &str, id: &str) -> Result<ProfileAddr, ApiError> {
    ProfileAddr::new(tenant, id).map_err(|_| ApiError::not_found("profile"))
}

/// The profile in the path, of the tenant whose API key calls (401 before 404).
pub(super) struct TenantProfile(pub ProfileAddr);

impl FromRequestParts<AppState> for TenantProfile {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = path_id(parts, state).await?;
        let ApiTenant(tenant) = ApiTenant::from_request_parts(parts, state).await?;
        profile_addr(&tenant, &id).map(TenantProfile)
    }
}

/// A tenant's API key (or the tenant a node of the cluster forwarded).
pub(super) struct ApiTenant(pub String);

impl FromRequestParts<AppState> for ApiTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        api_tenant(state, &parts.headers).map(ApiTenant)
    }
}

/// The session in the path and who acts on it: its tenant's API key or its own admin token.
/// The session may have ended.
pub(super) struct Caller {
    /// The session.
    pub session: Arc<Session>,
    /// Which token.
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let id = path_id(parts, state).await?;
        let (session, actor) = authorize(state, &parts.headers, None, &id)?;
        Ok(Caller { session, actor })
    }
}

/// A running session, called with its tenant's API key or its own admin token (an ended
/// session answers 410).
pub(super) struct Admin(pub Arc<Session>);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Caller { session, .. } = Caller::from_request_parts(parts, state).await?;
        if !session.is_active() {
            return Err(ApiError::expired());
        }
        Ok(Admin(session))
    }
}
