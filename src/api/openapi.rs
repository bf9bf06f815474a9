//! The OpenAPI 3 document of the API, generated from [`super::ROUTES`] (the table the router
//! is built from) and the schemas in [`super::wire`] (the ones the handlers enforce), served
//! at `/v0/openapi.json`.

use axum::Json;
use serde_json::{json, Map, Value};

use super::codes::ErrorCode;
use super::{wire, Auth, Body, Reply, Route, ROUTES};

fn error_response(status: u16) -> Value {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|c| c.status().as_u16() == status)
        .map(|c| format!("`{}` ({})", c.name(), c.description()))
        .collect();
    let description = if codes.is_empty() {
        "An error".to_string()
    } else {
        codes.join("; ")
    };
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// One server-sent event of a watch, as OpenAPI before 3.2 describes an event stream: its
/// `schema` is each event (`event`, `data`, `id`), not the stream's text.
fn sse_event() -> Value {
    json!({
        "type": "object",
        "required": ["event", "data", "id"],
        "properties": {
            "event": {"type": "string", "enum": ["snapshot", "change"]},
            "data": {"type": "string", "description": "The event's JSON: the snapshot (the 200 schema) or the change (`x-change-event`)"},
            "id": {"type": "string", "description": "The version it brings the store to"}
        }
    })
}

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = operation(r);
    }
    let codes: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|c| json!({"code": c.name(), "status": c.status().as_u16(), "when": c.description()}))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "profile-vault",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Browser sessions with a memory (Hyperbeam-compatible /v0/vm). Every error is the `Error` JSON body; `x-error-codes` lists every code with its status.",
        },
        "x-error-codes": codes,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key, or a session's admin token on that session's routes"},
                "token": {"type": "apiKey", "in": "query", "name": "token", "description": "an API key or a session's admin token in the URL (DevTools clients)"},
                "viewer": {"type": "apiKey", "in": "query", "name": "token", "description": "a viewer token (embed_url, POST /v0/vm/{id}/viewers): the live view only"},
            },
            "schemas": {"Error": Value::clone(&wire::ERROR)},
        },
    })
}

/// One route's operation: its responses, parameters, security and body.
fn operation(r: &Route) -> Value {
    let mut op = json!({
        "summary": r.summary,
        "operationId": r.op,
        "responses": responses(r),
    });
    let params = parameters(r);
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    op["security"] = match r.auth {
        Auth::None => json!([]),
        Auth::Bearer => json!([{"bearer": []}]),
        Auth::BearerOrToken => json!([{"bearer": []}, {"token": []}]),
        Auth::ViewerToken => json!([{"viewer": []}]),
    };
    if let Some(body) = request_body(r) {
        op["requestBody"] = body;
    }
    op
}

/// The success answer of a route, with its links to the operations it leads to.
fn success(r: &Route) -> Value {
    let mut ok = match r.reply {
        Reply::Json(schema) => {
            json!({"description": "OK", "content": {"application/json": {"schema": Value::clone(schema)}}})
        }
        Reply::JsonOrEvents(schema) => json!({
            "description": "OK: JSON, or with watch=true a text/event-stream of `snapshot` events (this schema) and `change` events (`x-change-event`), each with its version as the event id",
            "content": {"application/json": {"schema": Value::clone(schema)}, "text/event-stream": {"schema": sse_event()}},
            "x-change-event": Value::clone(&wire::STORE_CHANGE)}),
        Reply::PageOrModule => json!({
            "description": "The page (text/html) to a navigation (Sec-Fetch-Dest: document or iframe); the live view's ES module (text/javascript) to a script's fetch (Sec-Fetch-Dest: empty, or no such header and `no_cbor`), as the @hyperbeam/web SDK imports it. `Access-Control-Allow-Origin: *` on every answer, errors too; `Vary: Sec-Fetch-Dest`",
            "content": {"text/html": {"schema": {"type": "string"}}, "text/javascript": {"schema": {"type": "string"}}}}),
        Reply::Text => {
            json!({"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        Reply::File => {
            json!({"description": "The file", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}})
        }
        Reply::Upgrade => json!({"description": "Switching protocols: the WebSocket"}),
    };
    if !r.links.is_empty() {
        let mut links = Map::new();
        for l in r.links {
            let params: Map<String, Value> = l
                .params
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect();
            links.insert(
                l.op.to_string(),
                json!({"operationId": l.op, "parameters": params}),
            );
        }
        ok["links"] = Value::Object(links);
    }
    ok
}

/// Every answer of a route: its success, and each error status it may give (a body may be
/// malformed, too large or of another type; a query or an id may be malformed).
fn responses(r: &Route) -> Map<String, Value> {
    let mut responses = Map::new();
    let ok_status = match r.reply {
        Reply::Upgrade => "101",
        _ => "200",
    };
    responses.insert(ok_status.into(), success(r));
    if r.path == "/readyz" {
        responses.insert(
            "503".into(),
            json!({"description": "Not ready", "content": {"application/json": {"schema": Value::clone(&wire::READY)}}}),
        );
    }
    let mut errors: Vec<u16> = r.errors.to_vec();
    if !matches!(r.body, Body::None) {
        errors.extend([400, 413, 415]);
    }
    if !r.query.is_empty() || r.path.contains("{id}") {
        errors.push(400);
    }
    errors.sort_unstable();
    errors.dedup();
    for s in errors {
        responses.insert(s.to_string(), error_response(s));
    }
    responses
}

/// A route's path parameters, then its headers, then its query parameters.
fn parameters(r: &Route) -> Vec<Value> {
    let mut params = Vec::new();
    for name in r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
    {
        let schema = if name == "tabs_method" {
            json!({"type": "string", "enum": super::tabs::method_names()})
        } else if name == "name" {
            // A file name of the browser's downloads folder.
            json!({"type": "string", "minLength": 1, "maxLength": 255})
        } else {
            json!({"type": "string", "minLength": 1, "maxLength": 128, "pattern": wire::ID})
        };
        params.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
    }
    for h in r.headers {
        params.push(json!({"name": h.name, "in": "header", "required": false, "description": h.description, "schema": (h.schema)()}));
    }
    for q in r.query {
        params.push(json!({"name": q.name, "in": "query", "required": false, "description": q.description, "schema": (q.schema)()}));
    }
    params
}

/// A route's request body, if it takes one.
fn request_body(r: &Route) -> Option<Value> {
    Some(match r.body {
        Body::None => return None,
        Body::Json(schema) => {
            // Objects may be left out (every field is optional); tuples may not.
            let required = schema["type"] == "array" || r.method == super::Method::Put;
            json!({"required": required, "content": {"application/json": {"schema": Value::clone(schema)}}})
        }
        Body::JsonOrExtension(schema) => json!({"required": false, "content": {
            "application/json": {"schema": Value::clone(schema)},
            "multipart/form-data": {"schema": {"type": "object", "required": ["body"], "properties": {
                "body": {"type": "string", "description": "the JSON request (the application/json schema)"},
                "ex": {"type": "string", "format": "binary", "description": "a zipped Chrome extension (Manifest V3; manifest.json at the top or in one folder), loaded into the session's browser"},
            }}},
        }}),
        Body::Html(schema) => {
            json!({"required": true, "content": {"text/html": {"schema": Value::clone(schema)}}})
        }
        Body::Files => {
            json!({"required": false, "description": "for each file: the name's length (u32 big-endian), the name (UTF-8), the size (u64 big-endian), the bytes; no file cancels the chooser",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}})
        }
    })
}

/// `GET /v0/openapi.json`.
pub(super) async fn serve() -> Json<Value> {
    Json(document())
}
