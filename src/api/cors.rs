//! Cross-origin access to a session's `base_url` (`/v0/vm/{id}/embed` and below): apps built
//! on the Hyperbeam SDK call it from their own origin — the SDK fetches `embed_url`, and its
//! calls (`addRoles`, `removeRoles`, `setPermissions`, …) are `POST <base_url>/<method>` with
//! the admin token. Every credential there is a bearer token (no cookie is ever read), so any
//! origin may call: preflights are answered here, and every answer, errors too, is readable.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `path` is under a session's `base_url`.
fn under_base_url(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("v0"), Some("vm"), Some(id), Some("embed")) if !id.is_empty()
    )
}

/// The middleware.
pub(super) async fn base_url(req: Request, next: Next) -> Response {
    if !under_base_url(req.uri().path()) {
        return next.run(req).await;
    }
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_base_urls_are_cross_origin() {
        for p in [
            "/v0/vm/abc/embed",
            "/v0/vm/abc/embed/addRoles",
            "/v0/vm/abc/embed/users/u1",
        ] {
            assert!(super::under_base_url(p), "{p}");
        }
        for p in [
            "/v0/vm",
            "/v0/vm/abc",
            "/v0/vm/abc/cdp",
            "/v0/vm//embed",
            "/v0/profiles/x/embed",
            "/v0/vm/abc/embedded",
        ] {
            assert!(!super::under_base_url(p), "{p}");
        }
    }
}
