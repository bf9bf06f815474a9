//! The request bodies that are read into types: each is declared once, by [`request!`],
//! which makes the serde type and its published JSON Schema from the same field list — a
//! field's Rust type, its wire name and its schema sit on one line, so neither can gain a
//! field the other lacks.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    id_schema, nullable, object, role_list, str_max, timeout_secs, HTTP_URL, ID, MAX_TIMEOUT,
    START_URL, TIMEZONE, VM_IGNORED_FIELDS,
};

/// Declares a request type and its schema: `field: Type = schema` (optionally
/// `as "wire_name"`), `required [..]`, and, for `POST /v0/vm`, a flattened map of extra
/// fields with the schema of each. Types say `#[serde(deny_unknown_fields)]` themselves
/// (serde cannot have it with a flattened map; the schema refuses unknown fields anyway).
macro_rules! request {
    (
        $(#[$m:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fm:meta])*
                $field:ident $(as $wire:literal)? : $ty:ty = $schema:expr,
            )*
        }
        $(required [$($req:literal),*])?
        $(extra $extra:ident: $extra_props:expr)?
    ) => {
        #[derive(Debug, Default, Deserialize)]
        $(#[$m])*
        $vis struct $name {
            $(
                $(#[$fm])*
                $(#[serde(rename = $wire)])?
                pub(crate) $field: $ty,
            )*
            $(
                /// Fields accepted beside the declared ones (the schema lists them).
                #[serde(flatten)]
                pub(crate) $extra: std::collections::BTreeMap<String, Value>,
            )?
        }

        impl $name {
            /// The published JSON Schema of this body.
            pub(crate) fn schema() -> Value {
                let mut props = Map::new();
                $(
                    let wire: &str = request!(@name $field $($wire)?);
                    props.insert(wire.into(), $schema);
                )*
                $(
                    for (k, v) in $extra_props {
                        props.insert(k, v);
                    }
                )?
                object(Value::Object(props), &[$($($req),*)?])
            }
        }
    };
    (@name $field:ident $wire:literal) => { $wire };
    (@name $field:ident) => { stringify!($field) };
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Ok(Some(Option::<u64>::deserialize(d)?))
}

request! {
    /// The accepted body of `POST /v0/vm`: our fields plus Hyperbeam's documented ones
    /// ([`VM_IGNORED_FIELDS`], accepted and reported as `ignored`); no others.
    pub(crate) struct VmRequest {
        profile: Option<Value> = json!({
            "description": "true (fresh, saved), a profile id (restore and save back), or {\"save\": bool, \"load\": id}",
            "oneOf": [
                {"type": "boolean"},
                id_schema("a profile id: restore it, save back under its first id"),
                nullable(ProfileObject::schema()),
            ]}),
        timeout: Option<TimeoutRequest> = nullable(TimeoutRequest::schema()),
        start_url: Option<String> = json!({"type": "string", "maxLength": 8192, "pattern": START_URL, "nullable": true, "description": "an http(s) URL or about:blank"}),
        width: Option<u32> = json!({"type": "integer", "minimum": 100, "maximum": crate::display::screen::LARGEST.0, "nullable": true}),
        height: Option<u32> = json!({"type": "integer", "minimum": 100, "maximum": crate::display::screen::LARGEST.1, "nullable": true}),
        user_agent: Option<String> = nullable(str_max(512)),
        locale: Option<String> = nullable(str_max(64)),
        timezone: Option<String> = json!({"type": "string", "maxLength": 64, "pattern": TIMEZONE, "nullable": true,
            "description": "IANA time zone, e.g. America/New_York (pinned to a saved profile)"}),
        default_roles: Option<Vec<String>> = json!({"type": "array", "nullable": true, "maxItems": 16,
            "items": {"type": "string", "enum": role_names()},
            "description": "roles of the users embed_url admits (default: chrome_apis, resize, control)"}),
        control_disable_default: Option<bool> = json!({"type": "boolean", "nullable": true, "description": "viewers start with control disabled"}),
        auth: Option<AuthRequest> = nullable(AuthRequest::schema()),
    }
    extra hyperbeam: VM_IGNORED_FIELDS.iter().map(|f| {
        ((*f).to_string(), json!({"description": "accepted for Hyperbeam compatibility, not honoured; listed under `ignored`"}))
    })
}

fn role_names() -> Vec<&'static str> {
    crate::live::roles::ALL.iter().map(|r| r.1).collect()
}

request! {
    /// `profile` as an object: `{"save": bool, "load": id}` (read from the JSON value, as
    /// `profile` also takes `true` or an id).
    #[serde(deny_unknown_fields)]
    pub(crate) struct ProfileObject {
        save: Option<bool> = json!({"type": "boolean", "nullable": true}),
        load: Option<String> = nullable(id_schema("the profile to restore")),
    }
}

request! {
    /// `timeout` of `POST /v0/vm`.
    #[serde(deny_unknown_fields)]
    pub(crate) struct TimeoutRequest {
        #[serde(default, deserialize_with = "present")]
        absolute: Option<Option<u64>> = timeout_secs("seconds from the start (null: none)"),
        #[serde(default, deserialize_with = "present")]
        inactive: Option<Option<u64>> = timeout_secs("seconds without activity (null: none)"),
        #[serde(default, deserialize_with = "present")]
        offline: Option<Option<u64>> = timeout_secs("seconds without a connected client (null: none)"),
        #[serde(default, deserialize_with = "present")]
        warning: Option<Option<u64>> = timeout_secs("seconds before a timeout at which the webhook and the viewers (close_warning) are warned (default 60)"),
        webhook: Option<Option<WebhookRequest>> = nullable(WebhookRequest::schema()),
    }
}

request! {
    /// A webhook: where to POST, and the bearer token to send.
    #[serde(deny_unknown_fields)]
    pub(crate) struct WebhookRequest {
        url: String = json!({"type": "string", "maxLength": 2048, "pattern": HTTP_URL, "description": "an http(s) URL"}),
        bearer: Option<String> = nullable(str_max(4096)),
    }
    required ["url"]
}

request! {
    /// Hyperbeam's `auth`: `{"type": "token"}` or `{"type": "webhook", "value": {url, bearer}}`.
    #[serde(deny_unknown_fields)]
    pub(crate) struct AuthRequest {
        kind as "type": String = json!({"type": "string", "enum": ["token", "webhook"],
            "description": "token (the default: the embed URL's token admits) or webhook (the token admits, then the webhook decides for each user)"}),
        value: Option<WebhookRequest> = nullable(auth_webhook_schema()),
    }
    required ["type"]
}

/// The auth webhook: a [`WebhookRequest`] whose URL is described for what it is asked.
fn auth_webhook_schema() -> Value {
    let mut s = WebhookRequest::schema();
    s["properties"]["url"]["description"] = json!("an http(s) URL: POSTed {user_id, userdata} with Authorization: Bearer <bearer>; {\"authorized\": true} admits");
    s
}

request! {
    /// `POST /v0/profiles`: a new profile from a Playwright storage state.
    #[serde(deny_unknown_fields)]
    pub(crate) struct ImportRequest {
        id: Option<String> = json!({"type": "string", "pattern": ID, "description": "the new profile's id (default: a new uuid)"}),
        storage_state: Value = super::storage_state_schema(),
    }
    required ["storage_state"]
}

request! {
    /// `POST <base_url>/timeout`: new timeouts for a running session.
    #[serde(deny_unknown_fields)]
    pub(crate) struct TimeoutChangeRequest {
        #[serde(default, deserialize_with = "present")]
        absolute: Option<Option<u64>> = timeout_secs("seconds from now (with reset) or from the start (null: none; sessions.max_session_secs still caps it)"),
        #[serde(default, deserialize_with = "present")]
        inactive: Option<Option<u64>> = timeout_secs("seconds without activity (null: none)"),
        #[serde(default, deserialize_with = "present")]
        offline: Option<Option<u64>> = timeout_secs("seconds without a connected client (null: none)"),
        warning: Option<u64> = json!({"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT, "description": "seconds before a timeout at which the webhook and the viewers are warned"}),
        reset: Option<bool> = json!({"type": "boolean", "description": "every counter starts again now (default true)"}),
    }
}

request! {
    /// `POST /v0/vm/{id}/viewers`.
    #[serde(deny_unknown_fields)]
    pub(crate) struct ViewerRequest {
        roles: Option<Vec<String>> = {
            let mut roles = role_list();
            roles["nullable"] = json!(true);
            roles["description"] =
                json!("roles of the users this URL admits (default: the session's default_roles)");
            roles
        },
    }
}
