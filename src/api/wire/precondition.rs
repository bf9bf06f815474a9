//! Conditional writes: `If-Match` / `If-None-Match`, their schemas and their one parser
//! (the session store and the profile data document).

use crate::api::codes::ErrorCode;
use serde_json::{json, Value};

use crate::api::error::ApiError;

/// `If-Match` of store writes: an entry version (quoted or not).
pub fn if_match() -> Value {
    json!({"type": "string", "pattern": "^\"?[0-9]{1,19}\"?$"})
}
/// What a conditional write's headers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// `If-Match: <version>`.
    Version(u64),
    /// `If-None-Match: *`: nothing there yet.
    Absent,
}

/// Reads `If-Match` / `If-None-Match` (`None`: neither given). Both are checked whichever
/// decides: a malformed one is 400; both at once cannot hold (412).
///
/// # Errors
/// `invalid_request`, `precondition_failed`.
pub fn precondition(headers: &axum::http::HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let bad = |h: &str| {
        ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("{h} must be a version number (If-Match) or * (If-None-Match)"),
        )
    };
    let none_match = match headers.get(axum::http::header::IF_NONE_MATCH) {
        None => None,
        Some(v) => match v.to_str() {
            Ok("*") => Some(Precondition::Absent),
            _ => return Err(bad("If-None-Match")),
        },
    };
    let Some(v) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(none_match);
    };
    // Exactly what the schema says (`if_match`): 1 to 19 digits, optionally quoted. A value
    // outside it is a 400 whatever else is given.
    let raw = v.to_str().map_err(|_| bad("If-Match"))?;
    let digits = raw.strip_prefix('"').unwrap_or(raw);
    let digits = digits.strip_suffix('"').unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("If-Match"));
    }
    let version = digits.parse().map_err(|_| bad("If-Match"))?;
    if none_match.is_some() {
        // "Exactly this version" and "nothing yet" at once: at most one can hold.
        return Err(ApiError::new(
            ErrorCode::PreconditionFailed,
            "If-Match and If-None-Match: * cannot both hold",
        ));
    }
    Ok(Some(Precondition::Version(version)))
}

/// `If-None-Match` of store writes.
pub fn if_none_match() -> Value {
    json!({"type": "string", "enum": ["*"]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditions_are_read_as_the_schema_says() {
        use axum::http::{HeaderMap, HeaderValue};
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            precondition(&m).map_err(|e| e.status.as_u16())
        };
        assert_eq!(
            h(&[("if-match", "\"7\"")]),
            Ok(Some(Precondition::Version(7)))
        );
        assert_eq!(h(&[("if-none-match", "*")]), Ok(Some(Precondition::Absent)));
        // Malformed If-Match is a 400 whatever comes with it; a well-formed pair is a 412.
        for bad in ["one", "7 ", "\"\"", "12345678901234567890", "-1"] {
            assert_eq!(
                h(&[("if-match", bad), ("if-none-match", "*")]),
                Err(400),
                "{bad}"
            );
        }
        assert_eq!(h(&[("if-match", "7"), ("if-none-match", "*")]), Err(412));
        assert_eq!(h(&[("if-none-match", "\"3\"")]), Err(400));
    }
}
