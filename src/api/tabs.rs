//! `POST <base_url>/tabs.<method>` (`/v0/vm/{id}/embed/tabs.query`, …): Chrome's tabs API
//! for the app's server, with the admin token, as Hyperbeam serves it. The body is the
//! method's arguments (a JSON array), the answer Chrome's (a `Tab`, `Tab[]`, a number, or
//! `null`). The same calls reach viewers with `chrome_apis` over their socket.

use crate::api::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{Admin, Call, RequestBody};
use super::{wire, AppState};
use crate::live::chrome_tabs::{Error, Method};

/// The path: the session and `tabs.<method>`.
#[derive(Debug, Deserialize)]
pub(super) struct TabsPath {
    tabs_method: String,
}

/// Every `tabs.<method>` name (the path parameter's values).
pub(super) fn method_names() -> Vec<String> {
    Method::ALL
        .iter()
        .map(|m| format!("tabs.{}", m.name()))
        .collect()
}

/// `POST <base_url>/tabs.<method>`.
pub(super) async fn call(
    Call {
        caller: TabsCaller { session: s, method },
        body: TabsArgs(args),
    }: Call<TabsCaller, TabsArgs>,
) -> Result<Json<Value>, ApiError> {
    match s.live.tabs.call(method, args).await {
        Ok(v) => Ok(Json(v)),
        Err(e @ Error::BadArguments(_)) => Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            e.to_string(),
        )),
        Err(e @ Error::Refused(_)) => Err(ApiError::new(ErrorCode::TabsRefused, e.to_string())),
        Err(e @ Error::Unavailable(_)) => {
            Err(ApiError::new(ErrorCode::BrowserUnreachable, e.to_string()))
        }
    }
}

/// A running session's admin (its admin token or its tenant's API key) calling a method of
/// Chrome's tabs API that exists (an unknown one is an unknown route, 404, before the body
/// is read).
pub(super) struct TabsCaller {
    session: std::sync::Arc<crate::session::Session>,
    method: Method,
}

impl FromRequestParts<AppState> for TabsCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Admin(session) = Admin::from_request_parts(parts, state).await?;
        let Path(p) = Path::<TabsPath>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("route"))?;
        let method = p
            .tabs_method
            .strip_prefix("tabs.")
            .and_then(Method::parse)
            .ok_or_else(|| ApiError::not_found("route"))?;
        Ok(TabsCaller { session, method })
    }
}

/// The body of `tabs.<method>`: the method's arguments (an empty body: none).
pub(super) struct TabsArgs(Vec<Value>);

impl RequestBody for TabsArgs {
    fn read(_: &AppState, headers: &HeaderMap, raw: Bytes) -> Result<Self, ApiError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(TabsArgs(Vec::new()));
        }
        match wire::body(&wire::TABS_ARGS, headers, &raw)? {
            Value::Array(args) => Ok(TabsArgs(args)),
            _ => Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                "the body must be an array of arguments",
            )),
        }
    }
}
