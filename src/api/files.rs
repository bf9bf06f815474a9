//! Files between the person and the browser, with a viewer token and the connected user the
//! call is made for (`user` and `resume` from its `hello`): what that user may do now decides,
//! not what the token was minted with (a user demoted, or with control disabled, gets
//! nothing; a token alone gets nothing).
//! - `GET /v0/vm/{id}/embed/downloads/{name}`: a file the session's browser downloaded, for a
//!   user who may control the browser (the live view lists them as they finish), read from
//!   the session's own folder without following anything the browser could plant there
//!   ([`crate::live::downloads`]);
//! - `POST /v0/vm/{id}/embed/uploads`: the files a user with `file_upload` whose input is
//!   accepted picked on their own machine for the page's file chooser
//!   ([`crate::live::uploads`]). The body is read only once the caller is known.

use std::sync::Arc;

use crate::api::codes::ErrorCode;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::embed::authorize_viewer;
use super::error::ApiError;
use super::vm::TokenQuery;
use super::AppState;
use crate::live::{Role, User};
use crate::session::Session;

/// Query parameters of the download and upload routes besides the token.
pub(super) const FILE_QUERY: &[super::wire::Param] = &[
    super::wire::Param {
        name: "user",
        schema: bounded,
        description: "the connected viewer the call is made for (`user_id` of its hello)",
    },
    super::wire::Param {
        name: "resume",
        schema: bounded,
        description: "that viewer's secret (`resume` of its hello)",
    },
];

fn bounded() -> serde_json::Value {
    serde_json::json!({"type": "string", "maxLength": 64})
}

/// The connected user a download or upload is made for (see the module).
fn connected_user(s: &Session, q: &TokenQuery) -> Result<Arc<User>, ApiError> {
    let (Some(token), Some(user), Some(resume)) = (&q.token, &q.user, &q.resume) else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "downloads and uploads are made for a connected viewer: add its user and resume (from hello)",
        ));
    };
    s.live.connected(token, user, resume).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "no viewer with that user and resume is connected with this token",
        )
    })
}

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
    let (s, _) = authorize_viewer(&state, q.token.as_deref(), &p.id)?;
    super::embed::viewer_token_alone(&s)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    if !connected_user(&s, &q)?.may_control() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "downloads are for viewers who may control the browser",
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

/// `POST /v0/vm/{id}/embed/uploads?token=`: answers the page's open file chooser.
pub(super) async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    req: Request,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    use crate::live::uploads;
    let (s, _) = authorize_viewer(&state, q.token.as_deref(), &id)?;
    super::embed::viewer_token_alone(&s)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let user = connected_user(&s, &q)?;
    if !(user.has(Role::FileUpload) && s.live.accept_input(&user)) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "uploads are for viewers with the file_upload role whose input is accepted",
        ));
    }
    // Only now, under the route's limit.
    let body = Bytes::from_request(req, &state).await.map_err(|r| {
        ApiError::with_status(r.status(), ErrorCode::for_status(r.status()), r.body_text())
    })?;
    let files = uploads::parse(&body)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()))?;
    // Taken before anything is stored: of uploads racing for one chooser, one stores.
    let chooser = s.live.hub.take_file_chooser().ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoFileChooser,
            "no file chooser is open in the browser",
        )
    })?;
    let count = files.len();
    let stored = if files.is_empty() {
        Ok(Vec::new())
    } else {
        let owned: Vec<(String, Vec<u8>)> =
            files.into_iter().map(|(n, b)| (n, b.to_vec())).collect();
        let s2 = s.clone();
        tokio::task::spawn_blocking(move || {
            let borrowed: Vec<(String, &[u8])> = owned
                .iter()
                .map(|(n, b)| (n.clone(), b.as_slice()))
                .collect();
            s2.uploads
                .as_ref()
                .ok_or(uploads::Error::Malformed("this session takes no uploads"))?
                .store(&borrowed)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let paths = match stored {
        Ok(p) => p,
        Err(e) => {
            // The page is not left waiting: its chooser is cancelled.
            let _ = s.live.hub.answer_file_chooser(chooser, Vec::new()).await;
            return Err(ApiError::new(ErrorCode::UploadFailed, e));
        }
    };
    s.live
        .hub
        .answer_file_chooser(chooser, paths)
        .await
        .map_err(|e| ApiError::new(ErrorCode::NoFileChooser, e))?;
    s.touch();
    Ok(axum::Json(serde_json::json!({"files": count})))
}
