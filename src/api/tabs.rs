//! `POST <base_url>/tabs.<method>` (`/v0/vm/{id}/embed/tabs.query`, …): Chrome's tabs API
//! for the app's server, with the admin token, as Hyperbeam serves it. The body is the
//! method's arguments (a JSON array), the answer Chrome's (a `Tab`, `Tab[]`, a number, or
//! `null`). The same calls reach viewers with `chrome_apis` over their socket.

use crate::api::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::Path;
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
    Path(p): Path<TabsPath>,
    Call {
        caller: Admin(s),
        body: TabsArgs(args),
    }: Call<Admin, TabsArgs>,
) -> Result<Json<Value>, ApiError> {
    let method = p
        .tabs_method
        .strip_prefix("tabs.")
        .and_then(Method::parse)
        .ok_or_else(|| ApiError::not_found("route"))?;
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
