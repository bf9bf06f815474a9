//! Bearer authentication: API keys (each belongs to a tenant) and per-session admin tokens.
//! Every comparison is constant-time (SHA-256 digests compared with `subtle`), and every
//! key is compared, so timing does not tell which key nearly matched.

use std::path::Path;

use sha2::Digest;
use subtle::ConstantTimeEq;

/// The API keys the daemon accepts.
pub struct ApiKeys {
    keys: Vec<([u8; 32], String)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

/// Errors of loading API keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed entry.
    #[error("API keys: entries must be tenant:key with a valid tenant id and a key of at least 16 characters")]
    Malformed,
    /// Key file problem.
    #[error(transparent)]
    File(#[from] crate::keys::Error),
    /// Writing a generated key failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl ApiKeys {
    /// Parses `tenant:key,tenant2:key2` (commas or newlines).
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut keys = Vec::new();
        for item in text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.starts_with('#'))
        {
            let (tenant, key) = item.split_once(':').ok_or(Error::Malformed)?;
            crate::vault::validate_id("tenant", tenant).map_err(|_| Error::Malformed)?;
            if key.len() < 16 {
                return Err(Error::Malformed);
            }
            keys.push((
                sha2::Sha256::digest(key.as_bytes()).into(),
                tenant.to_string(),
            ));
        }
        Ok(ApiKeys { keys })
    }

    /// Reads a key file (refused when group/other can read it).
    ///
    /// # Errors
    /// Insecure or malformed file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        Self::parse(&crate::keys::read_secret_file(path)?)
    }

    /// Generates `default:<random>` into `path` (0600) and returns the keys.
    ///
    /// # Errors
    /// Write failure.
    pub fn generate(path: &Path, tenant: &str) -> Result<Self, Error> {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        let key = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
        let line = zeroize::Zeroizing::new(format!("{tenant}:{key}\n"));
        crate::fsutil::write_private_new(path, line.as_bytes()).map_err(|e| Error::Write {
            path: path.into(),
            source: e,
        })?;
        Self::parse(&line)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The audit id of a presented key: `api-key:<tenant>#<first 4 bytes of its SHA-256>`.
    pub fn actor_of(&self, presented: &str) -> Option<String> {
        let tenant = self.tenant_of(presented)?;
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        Some(format!(
            "api-key:{tenant}#{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        ))
    }

    /// The tenant of a presented key, comparing against every key in constant time.
    pub fn tenant_of(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (k, tenant) in &self.keys {
            if bool::from(k.ct_eq(&digest)) {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

/// The actor another node of the cluster checked and vouched for (`api-key:<tenant>#<id>`,
/// `admin-token:<session>:<sha256 of the token presented>`, or `-` for a caller only this
/// node can check). Only the
/// cluster middleware sets this header, after checking the request's signature; it strips
/// it from every request that comes in from outside.
pub fn forwarded(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(crate::cluster::sign::H_VERIFIED)?.to_str().ok()
}

/// The tenant of a forwarded `api-key:<tenant>#<id>` actor.
pub fn forwarded_tenant(actor: &str) -> Option<&str> {
    let rest = actor.strip_prefix("api-key:")?;
    let tenant = rest.split('#').next()?;
    crate::vault::validate_id("tenant", tenant).ok()?;
    Some(tenant)
}

/// The audit id of the caller's API key (or of the key another node checked).
pub fn actor(keys: &ApiKeys, headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(a) = forwarded(headers) {
        return forwarded_tenant(a).map(|_| a.to_string());
    }
    keys.actor_of(bearer(headers)?)
}

/// The bearer token of a request (header `Authorization: Bearer X`).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_tenants() {
        let k = ApiKeys::parse("t1:aaaaaaaaaaaaaaaaaaaa, t2:bbbbbbbbbbbbbbbbbbbb").unwrap();
        assert_eq!(k.tenant_of("aaaaaaaaaaaaaaaaaaaa"), Some("t1"));
        assert_eq!(k.tenant_of("bbbbbbbbbbbbbbbbbbbb"), Some("t2"));
        assert_eq!(k.tenant_of("aaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(k.tenant_of(""), None);
        assert!(ApiKeys::parse("t1:short").is_err());
        assert!(ApiKeys::parse("../x:aaaaaaaaaaaaaaaaaaaa").is_err());
        assert!(format!("{k:?}").contains("count: 2") && !format!("{k:?}").contains("aaaa"));
    }
}
