//! Playwright `storageState` documents in and out of profiles: the document types and their
//! validation (this file), and the short-lived, offline Chromium that writes a state into a
//! fresh profile or reads it out of a restored one (`browser.rs`).
//!
//! The format is Playwright's (`browserContext.storageState()`): `{"cookies": [...],
//! "origins": [{"origin", "localStorage": [{"name", "value"}]}]}`. Import also takes the
//! `indexedDB` member Playwright writes with `storageState({indexedDB: true})`, for records
//! whose keys and values are plain JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod browser;
pub mod psl;
mod run;

pub use run::{new_id, work_dir, Error, Runner};

/// Most cookies one document may carry (Chromium keeps about 3,300 per profile).
pub const MAX_COOKIES: usize = 3000;
/// Largest document `POST /v0/profiles` takes, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;
/// Most origins one document may carry.
pub const MAX_ORIGINS: usize = 500;

/// A Playwright storage state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageState {
    /// Cookies, HttpOnly and session cookies included.
    pub cookies: Vec<Cookie>,
    /// Per-origin storage.
    pub origins: Vec<Origin>,
}

/// One cookie, as Playwright writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cookie {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// `example.com` (host-only) or `.example.com` (domain cookie).
    pub domain: String,
    /// Path.
    pub path: String,
    /// Unix seconds; -1 for a session cookie.
    #[serde(default = "session_expiry")]
    pub expires: f64,
    /// HttpOnly.
    #[serde(default)]
    pub http_only: bool,
    /// Secure.
    #[serde(default)]
    pub secure: bool,
    /// `Strict`, `Lax` or `None`.
    #[serde(default = "lax")]
    pub same_site: SameSite,
    /// CHIPS partition key (top-level site), when partitioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
}

fn session_expiry() -> f64 {
    -1.0
}

fn lax() -> SameSite {
    SameSite::Lax
}

/// A cookie's SameSite attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    /// Strict.
    Strict,
    /// Lax.
    Lax,
    /// None.
    None,
}

/// One origin's storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Origin {
    /// `https://example.com` (scheme, host and port only).
    pub origin: String,
    /// localStorage items.
    #[serde(default)]
    pub local_storage: Vec<Item>,
    /// IndexedDB databases (import only).
    #[serde(default, rename = "indexedDB", skip_serializing_if = "Option::is_none")]
    pub indexed_db: Option<Vec<Value>>,
}

/// One localStorage item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Key.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Why a document was refused (the message names the member).
#[derive(Debug, thiserror::Error)]
#[error("storage_state {0}")]
pub struct Invalid(pub String);

fn no_control(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// A host name of DNS labels, an IPv4 address, or a bracketed IPv6 address. A host whose
/// last label is a number is an IPv4 address to a browser (the URL standard's "ends in a
/// number"): it must then be one, as four decimal parts (`a.b.9` is no URL at all).
fn valid_host(h: &str) -> bool {
    if let Some(v6) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let last = h.rsplit('.').next().unwrap_or_default();
    let numeric = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || last
                .strip_prefix("0x")
                .or_else(|| last.strip_prefix("0X"))
                .is_some_and(|x| x.bytes().all(|b| b.is_ascii_hexdigit())));
    if numeric {
        return h.parse::<std::net::Ipv4Addr>().is_ok();
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(r) => match r.split_once(']') {
            Some((v6, "")) => (format!("[{v6}]"), None),
            Some((v6, tail)) => match tail.strip_prefix(':') {
                Some(p) => (format!("[{v6}]"), Some(p)),
                None => return false,
            },
            None => return false,
        },
        None => match rest.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        },
    };
    (scheme == "http" || scheme == "https")
        && valid_host(&host)
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn valid_domain(d: &str) -> bool {
    let host = d.strip_prefix('.').unwrap_or(d);
    // Underscores appear in real cookie domains (hosts of internal services).
    valid_host(&host.replace('_', "a"))
}

/// Parses and checks a document: its shape (unknown members are refused, naming them),
/// cookie names, domains (public suffixes refused, [`psl`]) and sizes, origins, and the
/// limits. What the browser itself refuses is caught later (see [`browser::import`]).
///
/// # Errors
/// [`Invalid`], naming what is wrong.
pub fn parse(v: &Value) -> Result<StorageState, Invalid> {
    let obj = v
        .as_object()
        .ok_or_else(|| Invalid("must be an object with `cookies` and `origins`".into()))?;
    for k in obj.keys() {
        if k != "cookies" && k != "origins" {
            return Err(Invalid(format!(
                "has unknown member `{k}` (expected `cookies`, `origins`)"
            )));
        }
    }
    let list = |name: &str| -> Result<Vec<Value>, Invalid> {
        match obj.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(Invalid(format!("`{name}` must be an array"))),
        }
    };
    let (cookies, origins) = (list("cookies")?, list("origins")?);
    if cookies.len() > MAX_COOKIES {
        return Err(Invalid(format!(
            "has {} cookies; at most {MAX_COOKIES}",
            cookies.len()
        )));
    }
    if origins.len() > MAX_ORIGINS {
        return Err(Invalid(format!(
            "has {} origins; at most {MAX_ORIGINS}",
            origins.len()
        )));
    }
    let mut out = StorageState::default();
    for (i, c) in cookies.into_iter().enumerate() {
        let c: Cookie =
            serde_json::from_value(c).map_err(|e| Invalid(format!("cookies[{i}]: {e}")))?;
        let bad = |why: &str| Invalid(format!("cookies[{i}] ({:?}): {why}", c.name));
        if c.name.len() + c.value.len() > 4096 {
            return Err(bad("name and value are over 4096 bytes"));
        }
        // The name is an RFC 6265 token, as the API's schema says.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if c.name.is_empty() || !c.name.bytes().all(token) {
            return Err(bad(
                "the name must be a token (letters, digits, !#$%&'*+-.^_`|~)",
            ));
        }
        if !no_control(&c.value) || c.value.contains(';') {
            return Err(bad("the value holds a control character or `;`"));
        }
        if !valid_domain(&c.domain) {
            return Err(bad("domain is not a host name"));
        }
        if psl::is_public_suffix(&c.domain) {
            return Err(bad(
                "domain is a public suffix: the cookie would reach every site under it",
            ));
        }
        if !c.path.starts_with('/') || !no_control(&c.path) || c.path.contains(';') {
            return Err(bad("path must start with `/`"));
        }
        if !(c.expires == -1.0 || (c.expires.is_finite() && c.expires > 0.0)) {
            return Err(bad("expires must be -1 (session) or Unix seconds"));
        }
        if c.same_site == SameSite::None && !c.secure {
            return Err(bad("SameSite=None needs secure: true"));
        }
        out.cookies.push(c);
    }
    for (i, o) in origins.into_iter().enumerate() {
        let o: Origin =
            serde_json::from_value(o).map_err(|e| Invalid(format!("origins[{i}]: {e}")))?;
        if !valid_origin(&o.origin) {
            return Err(Invalid(format!(
                "origins[{i}]: {:?} is not an origin (http(s)://host[:port], no path)",
                o.origin
            )));
        }
        if let Some(dbs) = &o.indexed_db {
            for (j, db) in dbs.iter().enumerate() {
                browser::check_indexed_db(db)
                    .map_err(|e| Invalid(format!("origins[{i}].indexedDB[{j}]: {e}")))?;
            }
        }
        out.origins.push(o);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cookie() -> Value {
        json!({"name": "sid", "value": "v", "domain": "example.com", "path": "/", "expires": -1.0,
            "httpOnly": true, "secure": false, "sameSite": "Lax"})
    }

    #[test]
    fn playwright_documents_parse_and_bad_ones_name_their_fault() {
        let ok = json!({"cookies": [cookie()], "origins": [{"origin": "https://example.com",
            "localStorage": [{"name": "k", "value": "v"}]}]});
        let s = parse(&ok).unwrap();
        assert_eq!(s.cookies[0].expires, -1.0);
        assert!(s.cookies[0].http_only);
        // Round trip: what we write is what Playwright reads.
        assert_eq!(serde_json::to_value(&s).unwrap(), ok);
        let err = |v: Value| parse(&v).unwrap_err().to_string();
        let mut c = cookie();
        c["priority"] = json!("High");
        assert!(err(json!({"cookies": [c]})).contains("unknown field `priority`"));
        assert!(err(json!({"cookies": [], "extra": 1})).contains("`extra`"));
        let mut c = cookie();
        c["domain"] = json!("exa mple.com");
        assert!(err(json!({"cookies": [c]})).contains("domain"));
        let mut c = cookie();
        c["sameSite"] = json!("None");
        assert!(err(json!({"cookies": [c]})).contains("secure"));
        let mut c = cookie();
        c["value"] = json!("x".repeat(5000));
        assert!(err(json!({"cookies": [c]})).contains("4096"));
        assert!(
            err(json!({"origins": [{"origin": "https://a.test/path", "localStorage": []}]}))
                .contains("not an origin")
        );
        assert!(
            err(json!({"origins": [{"origin": "file:///etc", "localStorage": []}]}))
                .contains("not an origin")
        );
        for bad in [
            "http://[",
            "http://a..b",
            "http://-a.b",
            "https://a.b:0",
            "https://a.b:99999",
            "http://a b",
            // Browsers read a host ending in a number as an IPv4 address: these are no URLs.
            "https://B.T.9",
            "https://a.0x1f",
            "http://1.2.3",
            "http://1.2.3.256",
        ] {
            assert!(
                err(json!({"origins": [{"origin": bad, "localStorage": []}]}))
                    .contains("not an origin"),
                "{bad}"
            );
        }
        for good in [
            "http://127.0.0.1:8080",
            "https://a-b.example.com",
            "http://[::1]:3000",
            "https://localhost",
            "https://a.b9",
            "http://10.0.0.1",
        ] {
            parse(&json!({"origins": [{"origin": good, "localStorage": []}]}))
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert!(err(json!([])).contains("object"));
        let many: Vec<Value> = (0..MAX_COOKIES + 1).map(|_| cookie()).collect();
        assert!(err(json!({"cookies": many})).contains("at most"));
    }
}
