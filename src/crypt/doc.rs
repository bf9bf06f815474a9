//! Small sealed documents (the profile data document): one AES-256-GCM message under a key
//! derived from a per-document data key, bound by its associated data to where it lives.
//!
//! `sealed = nonce (12 random bytes) ‖ AES-256-GCM(doc_key, nonce, aad, plaintext) ‖ tag (16)`
//! with `doc_key = HKDF-SHA256(salt = none, ikm = DEK, info = "profile-vault/v1/data-key")`.
//! Every write uses a fresh data key, so a random nonce never repeats under one key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{DataKey, Error, KEY_LEN};

// DO NOT CHANGE: part of the at-rest format (docs/FORMAT.md §8).
const INFO_DOC: &[u8] = b"profile-vault/v1/data-key";
const AAD_LABEL: &[u8] = b"profile-vault/data/v1\0";

/// Bytes a sealed document adds to its plaintext (nonce and tag).
pub const OVERHEAD: usize = 12 + 16;

/// The associated data: the label, then each part as `len u32 BE ‖ bytes`.
pub fn aad(parts: &[&str]) -> Vec<u8> {
    let mut a = AAD_LABEL.to_vec();
    for p in parts {
        a.extend_from_slice(&(p.len() as u32).to_be_bytes());
        a.extend_from_slice(p.as_bytes());
    }
    a
}

fn cipher(dek: &DataKey) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(None, dek.as_bytes());
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    hk.expand(INFO_DOC, k.as_mut())
        .expect("32 bytes is a valid HKDF length");
    Aes256Gcm::new(k.as_ref().into())
}

/// Seals `plaintext` under `dek`, bound to `aad`.
pub fn seal(dek: &DataKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher(dek)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of a small document cannot fail");
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens a sealed document.
///
/// # Errors
/// [`Error::DocumentTampered`] when it is too short, was modified, belongs elsewhere
/// (another `aad`) or was sealed under another key.
pub fn open(dek: &DataKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Error> {
    if sealed.len() < OVERHEAD {
        return Err(Error::DocumentTampered);
    }
    let (nonce, ct) = sealed.split_at(12);
    cipher(dek)
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| Error::DocumentTampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_change_is_refused() {
        let dek = DataKey::generate();
        let a = aad(&["t1", "p1", "obj", "3"]);
        let sealed = seal(&dek, &a, br#"{"tabs":["https://example.com"]}"#);
        assert_eq!(
            open(&dek, &a, &sealed).unwrap(),
            br#"{"tabs":["https://example.com"]}"#
        );
        // Another place, another version, another key, a flipped bit, a cut: all refused.
        assert!(open(&dek, &aad(&["t2", "p1", "obj", "3"]), &sealed).is_err());
        assert!(open(&dek, &aad(&["t1", "p1", "obj", "4"]), &sealed).is_err());
        assert!(open(&DataKey::generate(), &a, &sealed).is_err());
        for i in [0, 12, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&dek, &a, &bad).is_err(), "flip at {i}");
        }
        assert!(open(&dek, &a, &sealed[..OVERHEAD - 1]).is_err());
        // Length-prefixed parts: moving a byte between parts changes the AAD.
        assert_ne!(aad(&["ab", "c"]), aad(&["a", "bc"]));
    }
}
