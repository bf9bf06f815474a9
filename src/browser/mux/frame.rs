//! A DevTools message read and rewritten at its top level only: what routes it (`id`,
//! `method`, `sessionId`, and the few parameters and results the mux looks at) is read
//! without building the rest, and `id` and `sessionId` are rewritten in the text. A message
//! of millions of small values (an array of numbers a page returned by value) costs its
//! bytes, not tens of bytes a value in a parsed tree.

use std::borrow::Cow;

use serde::Deserialize;

/// What the mux reads of a message; everything else is skipped, not built.
#[derive(Debug, Default, Deserialize)]
pub struct Head<'a> {
    /// A command's or an answer's id.
    pub id: Option<serde_json::Number>,
    /// A command's or an event's method.
    #[serde(borrow)]
    pub method: Option<Cow<'a, str>>,
    /// The session it is for or from.
    #[serde(rename = "sessionId", borrow)]
    pub session_id: Option<Cow<'a, str>>,
    /// The parameters the mux looks at.
    #[serde(borrow)]
    pub params: Option<Params<'a>>,
    /// The result the mux looks at.
    #[serde(borrow)]
    pub result: Option<Attached<'a>>,
}

/// The parameters the mux looks at.
#[derive(Debug, Default, Deserialize)]
pub struct Params<'a> {
    /// An attach's target, or a detach's session.
    #[serde(rename = "targetId", borrow)]
    pub target_id: Option<Cow<'a, str>>,
    /// The session an event names (a string; `Page.screencastFrame`'s is a number, and
    /// not a session).
    #[serde(rename = "sessionId", borrow, default)]
    pub session_id: Option<Named<'a>>,
    /// An attached target.
    #[serde(rename = "targetInfo", borrow)]
    pub target_info: Option<TargetInfo<'a>>,
}

impl Params<'_> {
    /// The session the parameters name, if they name one.
    pub fn session(&self) -> Option<&str> {
        self.session_id.as_ref().and_then(Named::session)
    }
}

/// A parameter that names a session when it is a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Named<'a> {
    /// A session id.
    Session(#[serde(borrow)] Cow<'a, str>),
    /// Anything else (a screencast frame's number).
    Other(serde::de::IgnoredAny),
}

impl Named<'_> {
    /// The session id, if it is one.
    pub fn session(&self) -> Option<&str> {
        match self {
            Named::Session(s) => Some(s),
            Named::Other(_) => None,
        }
    }
}

/// A target's identity.
#[derive(Debug, Default, Deserialize)]
pub struct TargetInfo<'a> {
    /// Its id.
    #[serde(rename = "targetId", borrow)]
    pub target_id: Option<Cow<'a, str>>,
    /// Its type (`page`, `browser`, ...).
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
}

/// An attach's answer.
#[derive(Debug, Default, Deserialize)]
pub struct Attached<'a> {
    /// The new session.
    #[serde(rename = "sessionId", borrow)]
    pub session_id: Option<Cow<'a, str>>,
}

/// Reads a message's [`Head`]; `None` if it is not a JSON object of that shape.
pub fn head(text: &str) -> Option<Head<'_>> {
    serde_json::from_str(text).ok()
}

/// What becomes of the top-level `sessionId`.
#[derive(Debug, Clone, Copy)]
pub enum Session<'a> {
    /// As it is (or absent).
    Keep,
    /// Removed.
    Remove,
    /// Set to this session id.
    Set(&'a str),
}

/// `text` with its top-level `id` set to `id` (a JSON number's text), and its `sessionId`
/// as `session` says; `None` if `text` is not a JSON object.
pub fn rewrite(text: &str, id: Option<&str>, session: Session<'_>) -> Option<String> {
    let members = members(text)?;
    let mut out = String::with_capacity(text.len() + 64);
    out.push('{');
    let mut first = true;
    let mut push = |out: &mut String, k: &str, v: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    };
    let quoted = match session {
        Session::Set(s) => Some(serde_json::to_string(s).ok()?),
        _ => None,
    };
    let (mut had_id, mut had_session) = (false, false);
    for (k, v) in members {
        match k {
            "\"id\"" => {
                had_id = true;
                push(&mut out, k, id.unwrap_or(v));
            }
            "\"sessionId\"" => {
                had_session = true;
                match (session, &quoted) {
                    (Session::Remove, _) => {}
                    (_, Some(q)) => push(&mut out, k, q),
                    _ => push(&mut out, k, v),
                }
            }
            _ => push(&mut out, k, v),
        }
    }
    if let (false, Some(id)) = (had_id, id) {
        push(&mut out, "\"id\"", id);
    }
    if let (false, Some(q)) = (had_session, &quoted) {
        push(&mut out, "\"sessionId\"", q);
    }
    out.push('}');
    Some(out)
}

/// The members of a top-level JSON object: (key as written, value as written). Checks only
/// the framing; what is inside values is passed over.
fn members(text: &str) -> Option<Vec<(&str, &str)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return (skip_ws(b, i + 1) == b.len()).then_some(out);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let k_end = string_end(b, i)?;
        let key = &text[i..k_end];
        if key.contains('\\') {
            // `"i\u0064"` is `"id"` to a JSON reader: a key written so would be kept beside
            // the rewritten one, and the browser could take it instead. Refused.
            return None;
        }
        i = skip_ws(b, k_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let v_end = value_end(b, i)?;
        out.push((key, text[i..v_end].trim_end()));
        i = skip_ws(b, v_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of the string starting at `i`.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The end of the value starting at `i`: a string, an object or array (strings inside
/// skipped), or a scalar up to the next `,` or `}`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn the_top_level_is_rewritten_and_the_rest_kept_as_written() {
        let m =
            r#"{ "id" : 7, "sessionId":"S", "result": {"a":[1,{"b":"}\"],"}], "id": 9}, "x":"\\"}"#;
        let h = head(m).unwrap();
        assert_eq!(
            (h.id.unwrap().as_u64(), h.session_id.as_deref()),
            (Some(7), Some("S"))
        );
        let out = rewrite(m, Some("42"), Session::Remove).unwrap();
        assert_eq!(
            v(&out),
            json!({"id": 42, "result": {"a": [1, {"b": "}\"],"}], "id": 9}, "x": "\\"})
        );
        let out = rewrite(
            r#"{"method":"M","params":{}}"#,
            Some("3"),
            Session::Set("T\"1"),
        )
        .unwrap();
        assert_eq!(
            v(&out),
            json!({"method": "M", "params": {}, "id": 3, "sessionId": "T\"1"})
        );
        let out = rewrite(r#"{"id":1,"sessionId":"A"}"#, None, Session::Set("B")).unwrap();
        assert_eq!(v(&out), json!({"id": 1, "sessionId": "B"}));
        assert_eq!(rewrite("{}", None, Session::Keep).as_deref(), Some("{}"));
        assert!(
            rewrite(r#"{"i\u0064":5,"method":"M"}"#, Some("1"), Session::Keep).is_none(),
            "an escaped key"
        );
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            r#"{"a":"x}"#,
            r#"{"a":1}x"#,
            r#"{a:1}"#,
        ] {
            assert!(rewrite(bad, None, Session::Keep).is_none(), "{bad}");
        }
    }

    #[test]
    fn routing_fields_are_read_without_building_the_rest() {
        let big = format!(
            r#"{{"id":1,"result":{{"result":{{"value":[{}0]}}}}}}"#,
            "0,".repeat(100_000)
        );
        let h = head(&big).unwrap();
        assert_eq!(h.id.unwrap().as_u64(), Some(1));
        let h = head(r#"{"method":"Target.attachedToTarget","params":{"sessionId":"S2","targetInfo":{"targetId":"T","type":"browser","url":"x"},"waitingForDebugger":false}}"#).unwrap();
        let p = h.params.unwrap();
        let ti = p.target_info.as_ref().unwrap();
        assert_eq!(
            (p.session(), ti.target_id.as_deref(), ti.kind.as_deref()),
            (Some("S2"), Some("T"), Some("browser"))
        );
        // A screencast frame's numbered "session" is read as none.
        let h = head(r#"{"method":"Page.screencastFrame","sessionId":"S","params":{"data":"x","sessionId":3}}"#).unwrap();
        assert!(h.params.unwrap().session_id.unwrap().session().is_none());
        // Not the shape: a non-string session id, a duplicate key.
        assert!(head(r#"{"id":1,"sessionId":5}"#).is_none());
        assert!(head(r#"{"id":1,"id":2}"#).is_none());
    }
}
