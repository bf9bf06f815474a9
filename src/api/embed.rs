//! The live view over HTTP: the embed page and its WebSocket (viewer tokens only), and
//! Hyperbeam's session endpoints at the session's `base_url` (`embed_url` without its query:
//! `/v0/vm/{id}/embed`) — `addRoles`, `removeRoles`, `setPermissions`, `users/{user_id}`,
//! `bookmarks` — plus minting viewer URLs and listing connected users (admin token or API key).

use crate::api::codes::ErrorCode;
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{json_body, Admin, Call, RequestBody};
use super::vm::TokenQuery;
use super::{wire, AppState};
use crate::live::{roles, Role};
use crate::session::Session;

const PAGE: &str = include_str!("../live/embed.html");
/// The live view as an ES module for the @hyperbeam/web SDK (`Hyperbeam(container, embed_url)`).
const MODULE: &str = include_str!("../live/sdk.js");

/// The session and roles of a viewer token. The admin token and API keys are refused here:
/// they open the API and CDP, not the live view.
pub(super) fn authorize_viewer(
    state: &AppState,
    token: Option<&str>,
    id: &str,
) -> Result<(Arc<Session>, BTreeSet<Role>), ApiError> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    let session = state.manager.get(id);
    if let Some(s) = &session {
        if let Some(roles) = s.live.token_roles(token) {
            return Ok((s.clone(), roles));
        }
        if s.admin_token_matches(token) || state.keys.tenant_of(token) == Some(s.tenant.as_str()) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the live view takes a viewer token (embed_url), not the admin token or an API key",
            ));
        }
    }
    Err(ApiError::unauthorized())
}

/// Query parameters of `GET /v0/vm/{id}/embed` besides the token.
pub(super) const PAGE_QUERY: &[wire::Param] = &[wire::Param {
    name: "no_cbor",
    schema: no_cbor,
    description: "set by the @hyperbeam/web SDK: a request without `Sec-Fetch-Dest` that carries it is the SDK's fetch of the client module",
}];

fn no_cbor() -> Value {
    json!({"type": "string", "maxLength": 16})
}

/// What a `GET` of `embed_url` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wants {
    /// A person's navigation (or a frame): the page.
    Page,
    /// The @hyperbeam/web SDK's `fetch`, which imports the body as an ES module.
    Module,
}

impl Wants {
    /// `Sec-Fetch-Dest: empty` is a script's fetch; without the header (older browsers,
    /// WebViews), the SDK's `no_cbor` parameter says it.
    fn of(headers: &HeaderMap, no_cbor: bool) -> Wants {
        match headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) {
            Some("empty") => Wants::Module,
            Some(_) => Wants::Page,
            None if no_cbor => Wants::Module,
            None => Wants::Page,
        }
    }
}

/// `GET /v0/vm/{id}/embed?token=`: the page to a person, the client module to the SDK. Every
/// answer, errors too, may be read by any origin (the SDK runs on the app's; the token in the
/// URL is the credential, no cookie is ever read), and varies with what was asked for.
pub(super) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let wants = Wants::of(&headers, q.no_cbor.is_some());
    let mut resp = match page_for(&state, &id, q.token.as_deref(), wants) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // Readable by any origin, errors too: `cors::base_url`.
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Sec-Fetch-Dest"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The query of `GET /v0/vm/{id}/embed`.
#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    token: Option<String>,
    no_cbor: Option<String>,
}

fn page_for(
    state: &AppState,
    id: &str,
    token: Option<&str>,
    wants: Wants,
) -> Result<Response, ApiError> {
    let (s, _) = authorize_viewer(state, token, id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    if wants == Wants::Module {
        let mut resp = (StatusCode::OK, MODULE).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        return Ok(resp);
    }
    let nonce = crate::live::new_token();
    let html = PAGE
        .replace("{{NONCE}}", &nonce)
        .replace("{{SESSION_ID}}", &s.id);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src blob: data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {}",
        state.frame_ancestors
    );
    let mut resp = (StatusCode::OK, axum::response::Html(html)).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(resp)
}

/// Whether a socket's `Origin` may connect: any, with `"*"` in `live.origins` (the
/// default: the viewer token in the URL is the credential, and apps built on the Hyperbeam SDK
/// run on their own origins); else the daemon's own origin (its embed page, framed anywhere)
/// and the listed ones. A request without `Origin` is not a browser's page.
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let header = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    origin_in(
        &state.public_url,
        header(header::HOST),
        &state.viewer_origins,
        header(header::ORIGIN),
    )
}

fn origin_in(own: &str, host: Option<&str>, allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    origin == own.trim_end_matches('/')
        || host.is_some_and(|h| {
            [format!("http://{h}"), format!("https://{h}")]
                .iter()
                .any(|o| o == origin)
        })
        || allowed
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/') == origin)
}

/// `GET /v0/vm/{id}/embed/socket?token=`: the viewer's WebSocket.
pub(super) async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&state, &headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this Origin may not open the live view (live.origins)",
        ));
    }
    let (s, roles) = authorize_viewer(&state, q.token.as_deref(), &id)?;
    if !s.is_active() {
        return Err(ApiError::expired());
    }
    let ws = ws.map_err(super::cdp::upgrade_error)?;
    let max = s.live.config().max_message;
    let viewers_max = state.manager.config().max_viewers_per_tenant;
    let caller = super::viewer::Caller {
        token: q.token.clone().unwrap_or_default(),
        resume: q.resume.clone().filter(|r| r.len() <= 64),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect(),
        tenant_full: (viewers_max > 0 && state.manager.tenant_clients(&s.tenant).1 >= viewers_max)
            .then_some(viewers_max),
    };
    let policy = state.manager.config().browser.egress().clone();
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| super::viewer::run(s, roles, caller, policy, socket)))
}

/// A viewer token alone does not reach a session whose users an auth webhook admits: only
/// its live view's socket does, after the webhook said yes (the store and the files are
/// then reached through the socket, or with the admin token).
pub(super) fn viewer_token_alone(s: &Session) -> Result<(), ApiError> {
    match s.auth {
        Some(_) => Err(ApiError::new(ErrorCode::Forbidden,
            "this session admits its viewers through its auth webhook: a viewer token alone opens only the live view's socket",
        )),
        None => Ok(()),
    }
}

fn changed(s: &Session, n: usize) -> Json<Value> {
    Json(json!({"changed": n, "users": s.live.users()}))
}

fn role_set(v: &Value) -> BTreeSet<Role> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().and_then(Role::parse))
        .collect()
}

fn change_roles(s: &Session, v: &Value, add: bool) -> Json<Value> {
    let ids: Vec<String> = v[0]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    let n = s
        .live
        .change_roles(&ids, &role_set(&v[1]), v[2].as_bool().unwrap_or(false), add);
    changed(s, n)
}

/// `addRoles` / `removeRoles`: `[[user ids], [roles], exclusive]`.
#[derive(Debug, Deserialize)]
pub(super) struct RolesChange(Value);
/// `setPermissions`: `[user id, {priority, idle_timeout, control_disabled}]`.
#[derive(Debug, Deserialize)]
pub(super) struct Permissions(Value);
json_body! {
    RolesChange => wire::ROLES_CHANGE,
    Permissions => wire::PERMISSIONS,
}

/// `POST <base_url>/addRoles`.
pub(super) async fn add_roles(
    Call {
        caller: Admin(s),
        body: RolesChange(v),
    }: Call<Admin, RolesChange>,
) -> Json<Value> {
    change_roles(&s, &v, true)
}

/// `POST <base_url>/removeRoles`.
pub(super) async fn remove_roles(
    Call {
        caller: Admin(s),
        body: RolesChange(v),
    }: Call<Admin, RolesChange>,
) -> Json<Value> {
    change_roles(&s, &v, false)
}

/// `POST <base_url>/setPermissions`.
pub(super) async fn set_permissions(
    Call {
        caller: Admin(s),
        body: Permissions(v),
    }: Call<Admin, Permissions>,
) -> Json<Value> {
    // Like addRoles, a user who is not (or no longer) connected changes nothing.
    let found = s
        .live
        .set_permissions_json(v[0].as_str().unwrap_or_default(), &v[1]);
    changed(&s, usize::from(found))
}

/// `POST <base_url>/timeout`: new timeouts for the running session (Hyperbeam's), every
/// counter started again unless `reset` is false.
pub(super) async fn timeout(
    State(state): State<AppState>,
    Call {
        caller: Admin(s),
        body: req,
    }: Call<Admin, wire::TimeoutChangeRequest>,
) -> Json<Value> {
    // Absent: unchanged; null: none.
    let change = crate::session::TimeoutChange {
        absolute: req.absolute,
        inactive: req.inactive,
        offline: req.offline,
        warning: req.warning,
        reset: req.reset.unwrap_or(true),
    };
    s.change_timeouts(change, state.manager.config().max_session_secs);
    let t = s.timeouts();
    Json(json!({
        "expires_at": s.info().expires_at,
        "absolute": t.absolute,
        "inactive": t.inactive,
        "offline": t.offline,
        "warning": s.warning_secs(),
    }))
}

/// Path of `DELETE <base_url>/users/{user_id}`.
#[derive(Debug, Deserialize)]
pub(super) struct UserPath {
    user_id: String,
}

/// `DELETE <base_url>/users/{user_id}`.
pub(super) async fn remove_user(
    Path(p): Path<UserPath>,
    Admin(s): Admin,
) -> Result<Json<Value>, ApiError> {
    if !s.live.kick(&p.user_id) {
        return Err(ApiError::not_found("user"));
    }
    Ok(changed(&s, 1))
}

/// `POST <base_url>/bookmarks` (a Netscape bookmark file).
pub(super) async fn bookmarks(
    Call {
        caller: Admin(s),
        body: BookmarkFile(nodes),
    }: Call<Admin, BookmarkFile>,
) -> Result<Json<Value>, ApiError> {
    use crate::session::BookmarksRefused;
    let n = nodes.len();
    match s.add_bookmarks(nodes) {
        Ok(()) => {}
        Err(BookmarksRefused::NotSaving) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this session does not save its profile, so bookmarks would be lost",
            ))
        }
        Err(BookmarksRefused::Full) => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "this session has {} bookmarks waiting for its save already",
                    crate::live::bookmarks::MAX_NODES
                ),
            ))
        }
    }
    Ok(Json(
        json!({"added": n, "merged": "when the browser stops, before the save"}),
    ))
}

/// The body of `POST <base_url>/bookmarks`: a Netscape bookmark file, sent as `text/html`.
pub(super) struct BookmarkFile(Vec<crate::live::bookmarks::Node>);

impl RequestBody for BookmarkFile {
    fn read(_: &AppState, headers: &HeaderMap, raw: Bytes) -> Result<Self, ApiError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !ct.starts_with("text/html") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the bookmark file as Content-Type: text/html",
            ));
        }
        let html = std::str::from_utf8(&raw).map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidRequest, "the bookmark file is not UTF-8")
        })?;
        wire::check(&wire::BOOKMARK_FILE, &Value::String(html.to_string()))?;
        crate::live::bookmarks::parse(html)
            .map(BookmarkFile)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, e))
    }
}

/// `POST /v0/vm/{id}/viewers`: another viewer URL.
pub(super) async fn mint(
    State(state): State<AppState>,
    Call {
        caller: Admin(s),
        body: req,
    }: Call<Admin, wire::ViewerRequest>,
) -> Result<Json<Value>, ApiError> {
    let roles = match req.roles {
        Some(names) => names.iter().filter_map(|r| Role::parse(r)).collect(),
        None => s.default_roles.clone(),
    };
    let token = s.live.mint(roles.clone()).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Conflict,
            format!(
                "this session holds {} viewer URLs already",
                crate::live::MAX_TOKENS
            ),
        )
    })?;
    Ok(Json(json!({
        "embed_url": format!("{}/v0/vm/{}/embed?token={token}", state.public_url, s.id),
        "roles": roles::names(&roles),
    })))
}

/// `GET /v0/vm/{id}/users`.
pub(super) async fn users(Admin(s): Admin) -> Json<Value> {
    // An ended session has no users (410, as for every live-view route).
    Json(json!({"users": s.live.users()}))
}

#[cfg(test)]
mod tests {
    #[test]
    fn origins_any_by_default_else_own_and_listed() {
        let any = vec!["*".to_string()];
        let listed = vec!["https://app.example/".to_string()];
        let own = "http://127.0.0.1:8080/";
        let host = Some("pv.internal:8080");
        assert!(super::origin_in(
            own,
            host,
            &any,
            Some("https://evil.example")
        ));
        assert!(super::origin_in(own, host, &any, Some("null")));
        assert!(super::origin_in(
            own,
            host,
            &listed,
            Some("https://app.example")
        ));
        assert!(super::origin_in(
            own,
            host,
            &listed,
            Some("http://127.0.0.1:8080")
        ));
        assert!(super::origin_in(
            own,
            host,
            &listed,
            Some("https://pv.internal:8080")
        ));
        assert!(super::origin_in(own, host, &listed, None));
        assert!(!super::origin_in(
            own,
            host,
            &listed,
            Some("https://evil.example")
        ));
        assert!(!super::origin_in(own, host, &[], Some("null")));
    }
}
