//! A validator for the subset of JSON Schema (OpenAPI 3.0 flavour) that the API's documents
//! use. The request schemas in [`super::wire`] are both published in `/v0/openapi.json` and
//! enforced by the handlers through [`validate`], so what the document says and what the
//! server accepts are one definition and cannot drift.
//!
//! Keywords: `type` (`string`, `integer`, `number`, `boolean`, `object`, `array`),
//! `nullable`, `enum`, `minimum`, `maximum`, `minLength`, `maxLength` (in characters),
//! `pattern` (anchored by the pattern itself), `properties`, `required`,
//! `additionalProperties` (boolean or schema), `items` (one schema, or a tuple with
//! `additionalItems`), `minItems`, `maxItems`, `oneOf`.
//! Anything else in a schema (`description`, `example`, `format`, ...) is annotation only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// Why a value does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An object has a property its schema does not allow.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// Any other mismatch: where, and what was expected.
    #[error("{path}: {expected}")]
    Invalid {
        /// Dotted path of the value (`timeout.absolute`; `body` for the whole document).
        path: String,
        /// What the schema asks for.
        expected: String,
    },
}

fn invalid(path: &str, expected: impl Into<String>) -> Violation {
    Violation::Invalid {
        path: if path.is_empty() {
            "body".into()
        } else {
            path.into()
        },
        expected: expected.into(),
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Compiled `pattern`s, shared by every request.
fn regex(pattern: &str) -> Arc<regex_lite::Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<regex_lite::Regex>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("regex cache");
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| {
            Arc::new(
                regex_lite::Regex::new(pattern)
                    .unwrap_or_else(|e| panic!("schema pattern {pattern:?} is invalid: {e}")),
            )
        })
        .clone()
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        // Integers are integral JSON numbers that fit 64 bits; 1.0 is a number, not an integer.
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => false,
    }
}

/// Checks `v` against `schema`; `path` names `v` in messages (`""` for the whole body).
///
/// # Errors
/// The first [`Violation`] found.
pub fn validate(schema: &Value, v: &Value, path: &str) -> Result<(), Violation> {
    if v.is_null() && schema["nullable"] == Value::Bool(true) {
        return Ok(());
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        one_of(schema, alts, v, path)?;
    }
    if let Some(ty) = schema["type"].as_str() {
        if !type_matches(ty, v) {
            let null = if schema["nullable"] == Value::Bool(true) {
                " or null"
            } else {
                ""
            };
            return Err(invalid(path, format!("expected {ty}{null}")));
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(invalid(
                path,
                format!("expected one of {}", list.join(", ")),
            ));
        }
    }
    match v {
        Value::Number(n) => number(schema, n.as_f64(), path),
        Value::String(s) => string(schema, s, path),
        Value::Object(o) => object(schema, o, path),
        Value::Array(a) => array(schema, a, path),
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

/// `oneOf`: exactly one alternative holds.
fn one_of(schema: &Value, alts: &[Value], v: &Value, path: &str) -> Result<(), Violation> {
    let mut matched = 0;
    let mut unknown = None;
    for alt in alts {
        match validate(alt, v, path) {
            Ok(()) => matched += 1,
            Err(e @ Violation::UnknownField(_)) if unknown.is_none() => unknown = Some(e),
            Err(_) => {}
        }
    }
    if matched == 1 {
        return Ok(());
    }
    // An object that fails only for an unknown field says so.
    if let (0, Some(e)) = (matched, unknown) {
        return Err(e);
    }
    let what = schema["description"]
        .as_str()
        .unwrap_or("one of the documented forms");
    Err(invalid(path, format!("expected {what}")))
}

/// `minimum`, `maximum`.
fn number(schema: &Value, n: Option<f64>, path: &str) -> Result<(), Violation> {
    let Some(n) = n else {
        return Ok(());
    };
    if let Some(min) = schema["minimum"].as_f64() {
        if n < min {
            return Err(invalid(
                path,
                format!("must be at least {}", schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        if n > max {
            return Err(invalid(
                path,
                format!("must be at most {}", schema["maximum"]),
            ));
        }
    }
    Ok(())
}

/// `minLength`, `maxLength` (in characters), `pattern`.
fn string(schema: &Value, s: &str, path: &str) -> Result<(), Violation> {
    let len = s.chars().count() as u64;
    if let Some(min) = schema["minLength"].as_u64() {
        if len < min {
            return Err(invalid(path, format!("must be at least {min} characters")));
        }
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        if len > max {
            return Err(invalid(path, format!("must be at most {max} characters")));
        }
    }
    if let Some(p) = schema["pattern"].as_str() {
        if !regex(p).is_match(s) {
            let what = schema["description"].as_str().unwrap_or(p);
            return Err(invalid(path, format!("must match {what}")));
        }
    }
    Ok(())
}

/// `required`, `properties`, `additionalProperties`.
fn object(schema: &Value, o: &serde_json::Map<String, Value>, path: &str) -> Result<(), Violation> {
    let props = schema["properties"].as_object();
    if let Some(req) = schema["required"].as_array() {
        for k in req.iter().filter_map(Value::as_str) {
            if !o.contains_key(k) {
                return Err(invalid(&child(path, k), "is required"));
            }
        }
    }
    for (k, val) in o {
        match props.and_then(|p| p.get(k)) {
            Some(s) => validate(s, val, &child(path, k))?,
            None => match &schema["additionalProperties"] {
                Value::Bool(false) => return Err(Violation::UnknownField(child(path, k))),
                s @ Value::Object(_) => validate(s, val, &child(path, k))?,
                _ => {}
            },
        }
    }
    Ok(())
}

/// `minItems`, `maxItems`, `items` (one schema, or a tuple closed by `additionalItems`).
fn array(schema: &Value, a: &[Value], path: &str) -> Result<(), Violation> {
    if let Some(min) = schema["minItems"].as_u64() {
        if (a.len() as u64) < min {
            return Err(invalid(path, format!("must have at least {min} items")));
        }
    }
    if let Some(max) = schema["maxItems"].as_u64() {
        if a.len() as u64 > max {
            return Err(invalid(path, format!("must have at most {max} items")));
        }
    }
    match &schema["items"] {
        items @ Value::Object(_) => {
            for (i, item) in a.iter().enumerate() {
                validate(items, item, &child(path, &i.to_string()))?;
            }
        }
        // A tuple: one schema per position (`additionalItems: false` closes it).
        Value::Array(tuple) => {
            for (i, item) in a.iter().enumerate() {
                match tuple.get(i) {
                    Some(s) => validate(s, item, &child(path, &i.to_string()))?,
                    None if schema["additionalItems"] == Value::Bool(false) => {
                        return Err(invalid(
                            path,
                            format!("must have at most {} items", tuple.len()),
                        ))
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keywords_are_enforced() {
        let s = json!({"type": "object", "additionalProperties": false, "required": ["a"], "properties": {
            "a": {"type": "integer", "minimum": 1, "maximum": 3},
            "b": {"type": "string", "maxLength": 2, "pattern": "^[a-z]*$", "nullable": true},
            "c": {"type": "array", "items": {"type": "boolean"}, "maxItems": 1},
            "d": {"oneOf": [{"type": "boolean"}, {"type": "object", "additionalProperties": false, "properties": {"x": {"type": "string"}}}]},
            "e": {"type": "string", "enum": ["p", "q"]},
        }});
        assert_eq!(
            validate(
                &s,
                &json!({"a": 2, "b": null, "c": [true], "d": {"x": "y"}, "e": "q"}),
                ""
            ),
            Ok(())
        );
        for (bad, unknown) in [
            (json!({}), false),
            (json!({"a": 0}), false),
            (json!({"a": 4}), false),
            (json!({"a": 1.0}), false),
            (json!({"a": "1"}), false),
            (json!({"a": 1, "b": "abc"}), false),
            (json!({"a": 1, "b": "A"}), false),
            (json!({"a": 1, "c": [true, false]}), false),
            (json!({"a": 1, "c": ["x"]}), false),
            (json!({"a": 1, "d": 3}), false),
            (json!({"a": 1, "e": "r"}), false),
            (json!({"a": 1, "z": 1}), true),
            (json!({"a": 1, "d": {"y": 1}}), true),
        ] {
            let r = validate(&s, &bad, "");
            assert!(r.is_err(), "{bad} passed");
            assert_eq!(
                matches!(r, Err(Violation::UnknownField(_))),
                unknown,
                "{bad}: {r:?}"
            );
        }
        // Lengths count characters, not bytes.
        assert_eq!(
            validate(&json!({"type": "string", "maxLength": 2}), &json!("éé"), ""),
            Ok(())
        );
    }
}
