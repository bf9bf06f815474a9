//! The OpenAPI 3 document of the API, generated from [`super::ROUTES`] (the same table the
//! router is built from), served at `/v0/openapi.json`.

use axum::Json;
use serde_json::{json, Map, Value};

use super::ROUTES;

/// Fields `POST /v0/vm` honours, and Hyperbeam's fields it accepts and reports as `ignored`.
pub const VM_FIELDS: &[&str] = &[
    "profile",
    "timeout",
    "start_url",
    "width",
    "height",
    "user_agent",
    "locale",
];
/// Accepted for compatibility, not honoured.
pub const VM_IGNORED_FIELDS: &[&str] = &[
    "kiosk",
    "ublock",
    "adblock",
    "draw",
    "webgl",
    "fps",
    "hide_cursor",
    "region",
    "extension",
    "tag",
    "quality",
    "dark",
    "touch_gestures",
    "search_engine",
    "hide_bar",
    "tabs",
    "webrtc",
    "timezone",
];

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method.to_lowercase(), r.path.trim_start_matches('/').replace(['/', '.'], "_").replace(['{', '}'], "")),
            "responses": {
                "200": {"description": "OK"},
                "default": {"$ref": "#/components/responses/Error"},
            },
        });
        if r.path.contains("{id}") {
            op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
        }
        if r.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        if r.method == "POST" && r.path == "/v0/vm" {
            let mut props = Map::new();
            props.insert(
                "profile".into(),
                json!({"description": "true | profile id | {\"save\": bool, \"load\": id}"}),
            );
            props.insert("timeout".into(), json!({"type": "object", "properties": {
                "absolute": {"type": "integer", "nullable": true}, "inactive": {"type": "integer", "nullable": true},
                "offline": {"type": "integer", "nullable": true}, "warning": {}, "webhook": {}}, "additionalProperties": false}));
            props.insert("start_url".into(), json!({"type": "string"}));
            props.insert(
                "width".into(),
                json!({"type": "integer", "minimum": 100, "maximum": 7680}),
            );
            props.insert(
                "height".into(),
                json!({"type": "integer", "minimum": 100, "maximum": 4320}),
            );
            props.insert("user_agent".into(), json!({"type": "string"}));
            props.insert("locale".into(), json!({"type": "string"}));
            for f in VM_IGNORED_FIELDS {
                props.insert((*f).into(), json!({"description": "accepted for Hyperbeam compatibility; listed under `ignored`"}));
            }
            op["requestBody"] = json!({"content": {"application/json": {"schema": {"type": "object", "properties": props, "additionalProperties": false}}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "profile-vault", "version": env!("CARGO_PKG_VERSION"), "description": "Browser sessions with a memory (Hyperbeam-compatible /v0/vm)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error", "message"],
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}}}}}}},
        },
    })
}

/// `GET /v0/openapi.json`.
pub(super) async fn serve() -> Json<Value> {
    Json(document())
}
