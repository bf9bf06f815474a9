//! Requests between nodes: signed with the cluster secret, never with a tenant's key or token.
//!
//! A forwarded request carries who the sending node found the caller to be (the *actor*:
//! `api-key:<tenant>#<key id>`, `admin-token:<session id>`, or `-` when only the owner can
//! check the caller, as for viewer tokens), the sender, the target node and the time, and an
//! HMAC-SHA256 over all of that and the method and path under the cluster secret. The target
//! checks the MAC in constant time, that it is the target, and that the time is within
//! [`MAX_SKEW_MS`] of its clock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Sender node id.
pub const H_NODE: &str = "x-pv-cluster-node";
/// Target node id.
pub const H_TARGET: &str = "x-pv-cluster-target";
/// Unix milliseconds at the sender.
pub const H_TIME: &str = "x-pv-cluster-time";
/// The actor the sender vouches for.
pub const H_ACTOR: &str = "x-pv-cluster-actor";
/// The MAC (lowercase hex).
pub const H_SIG: &str = "x-pv-cluster-sig";
/// Set by the receiving side only, after the MAC checked out: the actor to trust. Stripped
/// from every request that comes in from outside.
pub const H_VERIFIED: &str = "x-pv-verified-actor";

/// Largest clock difference (and replay window) accepted.
pub const MAX_SKEW_MS: u64 = 30_000;

const LABEL: &[u8] = b"profile-vault/cluster/v1/request\0";

/// What a forwarded request asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// Sending node.
    pub node: String,
    /// Receiving node.
    pub target: String,
    /// Sender's clock, Unix milliseconds.
    pub time_ms: u64,
    /// The caller as the sender found it.
    pub actor: String,
}

fn mac(secret: &str, a: &Assertion, method: &str, path_and_query: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(LABEL);
    for part in [
        a.node.as_str(),
        a.target.as_str(),
        &a.time_ms.to_string(),
        a.actor.as_str(),
        method,
        path_and_query,
    ] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part.as_bytes());
    }
    m
}

/// The MAC of a request, lowercase hex.
pub fn sign(secret: &str, a: &Assertion, method: &str, path_and_query: &str) -> String {
    super::hex(
        &mac(secret, a, method, path_and_query)
            .finalize()
            .into_bytes(),
    )
}

/// Why a forwarded request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// This node has no cluster secret.
    #[error("this node has no cluster secret and accepts no forwarded requests")]
    NoSecret,
    /// A header is missing or malformed.
    #[error("a cluster header is missing or malformed")]
    Malformed,
    /// Meant for another node.
    #[error("the request was signed for another node")]
    WrongTarget,
    /// Too old or from the future.
    #[error("the request's time is more than 30 s from this node's clock")]
    Stale,
    /// The MAC does not match.
    #[error("the request's signature does not match the cluster secret")]
    BadSignature,
}

/// Checks a forwarded request's MAC (constant time), target and time.
///
/// # Errors
/// [`Refused`].
pub fn verify(
    secret: Option<&str>,
    me: &str,
    now_ms: u64,
    a: &Assertion,
    sig_hex: &str,
    method: &str,
    path_and_query: &str,
) -> Result<(), Refused> {
    let secret = secret.ok_or(Refused::NoSecret)?;
    let sig = decode_hex(sig_hex).ok_or(Refused::Malformed)?;
    if a.target != me {
        return Err(Refused::WrongTarget);
    }
    if now_ms.abs_diff(a.time_ms) > MAX_SKEW_MS {
        return Err(Refused::Stale);
    }
    mac(secret, a, method, path_and_query)
        .verify_slice(&sig)
        .map_err(|_| Refused::BadSignature)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A value that proves two nodes hold the same secret without revealing it (published in
/// member records): HMAC-SHA256 of a fixed label, first 16 bytes, hex.
pub fn secret_check(secret: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(b"profile-vault/cluster/v1/secret-check");
    super::hex(&m.finalize().into_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a() -> Assertion {
        Assertion {
            node: "node-a".into(),
            target: "node-b".into(),
            time_ms: 1_000_000,
            actor: "api-key:t1#01020304".into(),
        }
    }

    #[test]
    fn signatures_bind_every_part() {
        let s = "a-cluster-secret-0123";
        let sig = sign(s, &a(), "GET", "/v0/vm/x");
        let ok = |a: &Assertion, m: &str, p: &str, sig: &str, secret: &str, now: u64| {
            verify(Some(secret), "node-b", now, a, sig, m, p)
        };
        assert_eq!(ok(&a(), "GET", "/v0/vm/x", &sig, s, 1_000_000), Ok(()));
        assert_eq!(ok(&a(), "GET", "/v0/vm/x", &sig, s, 1_020_000), Ok(()));
        assert_eq!(
            ok(&a(), "DELETE", "/v0/vm/x", &sig, s, 1_000_000),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            ok(&a(), "GET", "/v0/vm/y", &sig, s, 1_000_000),
            Err(Refused::BadSignature)
        );
        let mut other = a();
        other.actor = "api-key:t2#01020304".into();
        assert_eq!(
            ok(&other, "GET", "/v0/vm/x", &sig, s, 1_000_000),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            ok(
                &a(),
                "GET",
                "/v0/vm/x",
                &sig,
                "another-secret-0123",
                1_000_000
            ),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            ok(&a(), "GET", "/v0/vm/x", &sig, s, 1_031_000),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(Some(s), "node-c", 1_000_000, &a(), &sig, "GET", "/v0/vm/x"),
            Err(Refused::WrongTarget)
        );
        assert_eq!(
            verify(None, "node-b", 1_000_000, &a(), &sig, "GET", "/v0/vm/x"),
            Err(Refused::NoSecret)
        );
        assert_eq!(
            ok(&a(), "GET", "/v0/vm/x", "zz", s, 1_000_000),
            Err(Refused::Malformed)
        );
        assert_ne!(secret_check(s), secret_check("another-secret-0123"));
        assert_eq!(secret_check(s).len(), 32);
    }
}
