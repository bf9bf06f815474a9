//! `POST <base_url>/tabs.<method>` (`/v0/vm/{id}/embed/tabs.query`, …): Chrome's tabs API
//! for the app's server, with the admin token, as Hyperbeam serves it. The body is the
//! method's arguments (a JSON array), the answer Chrome's (a `Tab`, `Tab[]`, a number, or
//! `null`). The same calls reach viewers with `chrome_apis` over their socket.

use crate::api::codes::ErrorCode;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::{wire, AppState};
use crate::live::chrome_tabs::{Error, Method};

/// The path: the session and `tabs.<method>`.
#[derive(Debug, Deserialize)]
pub(super) struct TabsPath {
    id: String,
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
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(p): Path<TabsPath>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let s = super::embed::admin(&state, &headers, &p.id)?;
    let method = p
        .tabs_method
        .strip_prefix("tabs.")
        .and_then(Method::parse)
        .ok_or_else(|| ApiError::not_found("route"))?;
    let args: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Array(Vec::new())
    } else {
        wire::body(&wire::TABS_ARGS, &headers, &body)?
    };
    let Value::Array(args) = args else {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "the body must be an array of arguments",
        ));
    };
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
