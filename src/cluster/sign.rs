//! Requests between nodes: signed with the cluster secret, never with a tenant's key or token.
//!
//! A forwarded request carries who the sending node found the caller to be (the *actor*:
//! `api-key:<tenant>#<key id>`, `admin-token:<session id>:<SHA-256 of the token presented>`
//! (the owner compares it with the token it holds), or `-` when only the owner can check
//! the caller, as for viewer tokens), the sender, the target node, the time, a random
//! nonce and the SHA-256 of the body, and an HMAC-SHA256 over all of that and the method and
//! path under the cluster secret. The target checks the MAC in constant time, that it is the
//! target, that the time is within [`MAX_SKEW_MS`] of its clock, that the body is the one
//! signed, and that it has not seen the nonce within that window ([`ReplayCache`]): a
//! captured request can be neither replayed nor given another body. Between nodes, use TLS
//! (`PV_NODE_URL=https://…`): the signature protects integrity, not confidentiality.

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
/// A random value, never accepted twice.
pub const H_NONCE: &str = "x-pv-cluster-nonce";
/// SHA-256 of the body (lowercase hex).
pub const H_BODY: &str = "x-pv-cluster-body-sha256";
/// Set by the receiving side only, after the MAC checked out: the actor to trust. Stripped
/// from every request that comes in from outside.
pub const H_VERIFIED: &str = "x-pv-verified-actor";

/// Largest clock difference (and replay window) accepted.
pub const MAX_SKEW_MS: u64 = 30_000;

const LABEL: &[u8] = b"profile-vault/cluster/v2/request\0";

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
    /// Random, unique per request.
    pub nonce: String,
    /// SHA-256 of the body, hex.
    pub body_sha256: String,
}

impl Assertion {
    /// A fresh nonce (16 random bytes, hex).
    pub fn new_nonce() -> String {
        let mut n = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut n);
        crate::crypt::hex(&n)
    }
}

/// SHA-256 of `body`, hex (what [`Assertion::body_sha256`] holds).
pub fn body_hash(body: &[u8]) -> String {
    use sha2::Digest;
    crate::crypt::hex(&Sha256::digest(body))
}

/// The nonces seen within the replay window.
#[derive(Debug, Default)]
pub struct ReplayCache(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl ReplayCache {
    /// Records `nonce` at `now_ms`; false if it was seen within the window.
    pub fn first_time(&self, nonce: &str, now_ms: u64) -> bool {
        let mut seen = self.0.lock().expect("replay cache");
        seen.retain(|_, at| now_ms.saturating_sub(*at) <= 2 * MAX_SKEW_MS);
        seen.insert(nonce.to_string(), now_ms).is_none()
    }
}

fn mac(secret: &str, a: &Assertion, method: &str, path_and_query: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(LABEL);
    for part in [
        a.node.as_str(),
        a.target.as_str(),
        &a.time_ms.to_string(),
        a.actor.as_str(),
        a.nonce.as_str(),
        a.body_sha256.as_str(),
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
    crate::crypt::hex(
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
    /// The body is not the one that was signed.
    #[error("the request's body is not the one that was signed")]
    BodyMismatch,
    /// The nonce was seen before (a replay).
    #[error("the request was already received (a replay)")]
    Replayed,
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

/// The MAC of a member record under the cluster secret: its node id and the address other
/// nodes send that node's requests to.
pub fn member_mac(secret: &str, node: &str, url: Option<&str>) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(b"profile-vault/member/v1\0");
    m.update(node.as_bytes());
    m.update(b"\0");
    m.update(url.unwrap_or_default().as_bytes());
    crate::crypt::hex(&m.finalize().into_bytes())
}

/// Whether requests may be forwarded to `m`: its MAC matches (compared in constant time),
/// or it has none and `accept_unsigned` says so (while rolling from an earlier release).
pub fn member_vouched(secret: &str, m: &super::Member, accept_unsigned: bool) -> bool {
    use subtle::ConstantTimeEq;
    match &m.mac {
        Some(mac) => bool::from(
            member_mac(secret, &m.node, m.url.as_deref())
                .as_bytes()
                .ct_eq(mac.as_bytes()),
        ),
        None => accept_unsigned,
    }
}

/// A value that proves two nodes hold the same secret without revealing it (published in
/// member records): HMAC-SHA256 of a fixed label, first 16 bytes, hex.
pub fn secret_check(secret: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(b"profile-vault/cluster/v1/secret-check");
    crate::crypt::hex(&m.finalize().into_bytes()[..16])
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
            nonce: "00112233445566778899aabbccddeeff".into(),
            body_sha256: body_hash(b"{}"),
        }
    }

    #[test]
    fn nonce_and_body_are_bound_and_nonces_are_used_once() {
        let s = "a-cluster-secret-0123";
        let sig = sign(s, &a(), "PUT", "/v0/vm/x/store/k");
        let mut other = a();
        other.body_sha256 = body_hash(b"another body");
        assert_eq!(
            verify(
                Some(s),
                "node-b",
                1_000_000,
                &other,
                &sig,
                "PUT",
                "/v0/vm/x/store/k"
            ),
            Err(Refused::BadSignature)
        );
        let mut other = a();
        other.nonce = Assertion::new_nonce();
        assert_eq!(
            verify(
                Some(s),
                "node-b",
                1_000_000,
                &other,
                &sig,
                "PUT",
                "/v0/vm/x/store/k"
            ),
            Err(Refused::BadSignature)
        );
        let cache = ReplayCache::default();
        assert!(cache.first_time("n1", 1_000_000));
        assert!(!cache.first_time("n1", 1_020_000));
        assert!(cache.first_time("n2", 1_020_000));
        // Past the window it is forgotten (and the time check refuses it anyway).
        assert!(cache.first_time("n1", 1_000_000 + 3 * MAX_SKEW_MS));
        assert_ne!(Assertion::new_nonce(), Assertion::new_nonce());
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
