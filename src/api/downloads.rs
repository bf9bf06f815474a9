//! `GET /v0/vm/{id}/embed/downloads/{name}?token=`: a file the session's browser downloaded,
//! handed to a viewer who may control the browser (the live view lists them as they finish).
//! Read from the session's own folder without following anything the browser could plant
//! there ([`crate::live::downloads`]).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::embed::authorize_viewer;
use super::error::ApiError;
use super::vm::TokenQuery;
use super::AppState;
use crate::live::Role;

#[derive(Debug, Deserialize)]
pub(super) struct FilePath {
    id: String,
    name: String,
}

/// RFC 5987 `filename*` value: UTF-8, percent-encoded but for unreserved characters.
fn filename_star(name: &str) -> String {
    let mut out = String::from("UTF-8''");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) async fn download(
    State(state): State<AppState>,
    Path(p): Path<FilePath>,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let (s, roles) = authorize_viewer(&state, q.token.as_deref(), &p.id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    if !roles.contains(&Role::Control) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "downloads are for viewers with the control role",
        ));
    }
    let downloads = s
        .downloads
        .clone()
        .ok_or_else(|| ApiError::not_found("download"))?;
    let name = p.name.clone();
    let (file, size) = tokio::task::spawn_blocking(move || downloads.open(&name))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| ApiError::not_found("download"))?;
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) =
        HeaderValue::from_str(&format!("attachment; filename*={}", filename_star(&p.name)))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}
