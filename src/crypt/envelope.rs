//! Envelope keys: a per-object [`DataKey`] wrapped by a named master key.
//!
//! Wrapped form (60 bytes): `nonce (12) ‖ AES-256-GCM(kek, dek) (32) ‖ tag (16)`, with the
//! associated data binding the wrap to the master key id, tenant, profile and object id, so
//! a key record copied to another object or profile fails to unwrap. Re-wrapping (rekey)
//! never touches the payload.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

use super::{DataKey, Error, KEY_LEN};

/// Length of a wrapped data key.
pub const WRAPPED_LEN: usize = 12 + KEY_LEN + 16;

/// What a wrapped key is bound to. Changing any field makes unwrapping fail.
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    /// Tenant that owns the profile.
    pub tenant: &'a str,
    /// Profile id.
    pub profile: &'a str,
    /// Object id (uuid) of the generation payload.
    pub object_id: &'a str,
}

fn aad(key_id: &str, ctx: &WrapContext<'_>) -> Vec<u8> {
    // DO NOT CHANGE: part of at-rest format v1.
    let mut a = b"profile-vault/wrap/v1\0".to_vec();
    for part in [key_id, ctx.tenant, ctx.profile, ctx.object_id] {
        a.extend_from_slice(&(part.len() as u32).to_be_bytes());
        a.extend_from_slice(part.as_bytes());
    }
    a
}

/// Wraps `dek` under the master key bytes `kek` named `key_id`.
pub fn wrap(kek: &[u8; KEY_LEN], key_id: &str, dek: &DataKey, ctx: &WrapContext<'_>) -> Vec<u8> {
    let cipher = Aes256Gcm::new(kek.into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: dek.as_bytes(),
                aad: &aad(key_id, ctx),
            },
        )
        .expect("AES-GCM encryption of 32 bytes cannot fail");
    let mut out = Vec::with_capacity(WRAPPED_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Unwraps a data key.
///
/// # Errors
/// [`Error::BadWrappedKey`] for a blob of the wrong length, [`Error::UnwrapFailed`] when the
/// master key is wrong or the blob or its context was changed.
pub fn unwrap(
    kek: &[u8; KEY_LEN],
    key_id: &str,
    wrapped: &[u8],
    ctx: &WrapContext<'_>,
) -> Result<DataKey, Error> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(Error::BadWrappedKey {
            len: wrapped.len(),
            expected: WRAPPED_LEN,
        });
    }
    let cipher = Aes256Gcm::new(kek.into());
    let (nonce, ct) = wrapped.split_at(12);
    let mut pt = cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: &aad(key_id, ctx),
            },
        )
        .map_err(|_| Error::UnwrapFailed {
            key_id: key_id.to_string(),
        })?;
    let mut k = [0u8; KEY_LEN];
    k.copy_from_slice(&pt);
    zeroize::Zeroize::zeroize(&mut pt);
    Ok(DataKey::from_bytes(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: WrapContext<'static> = WrapContext {
        tenant: "t1",
        profile: "p1",
        object_id: "o1",
    };

    #[test]
    fn round_trip() {
        let kek = [7u8; 32];
        let dek = DataKey::generate();
        let w = wrap(&kek, "k1", &dek, &CTX);
        assert_eq!(w.len(), WRAPPED_LEN);
        let back = unwrap(&kek, "k1", &w, &CTX).unwrap();
        assert_eq!(back.as_bytes(), dek.as_bytes());
    }

    #[test]
    fn wrong_key_or_context_fails() {
        let kek = [7u8; 32];
        let dek = DataKey::generate();
        let w = wrap(&kek, "k1", &dek, &CTX);
        assert!(matches!(
            unwrap(&[8u8; 32], "k1", &w, &CTX),
            Err(Error::UnwrapFailed { .. })
        ));
        assert!(unwrap(&kek, "k2", &w, &CTX).is_err());
        let other = WrapContext {
            profile: "p2",
            ..CTX
        };
        assert!(unwrap(&kek, "k1", &w, &other).is_err());
        let other = WrapContext {
            tenant: "t2",
            ..CTX
        };
        assert!(unwrap(&kek, "k1", &w, &other).is_err());
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert!(unwrap(&kek, "k1", &bad, &CTX).is_err());
        assert!(matches!(
            unwrap(&kek, "k1", &w[..10], &CTX),
            Err(Error::BadWrappedKey { .. })
        ));
    }

    #[test]
    fn debug_redacts() {
        let dek = DataKey::from_bytes([0xAB; 32]);
        let s = format!("{dek:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab"),
            "{s}"
        );
    }
}
