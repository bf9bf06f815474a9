//! Master keys (key-encryption keys): where they come from, their ids, and the keyring.
//!
//! Sources, in order: key files `<keys_dir>/<id>.key` (base64 of 32 bytes, refused when
//! group/other can read them), `PV_MASTER_KEYS` (`id:base64,id2:base64`), and, on the
//! embedded default only, a dev key generated into the keys dir with a warning.
//! The active key (used for new saves) is `keys.active` in the config / `PV_ACTIVE_KEY`,
//! else the id in `<keys_dir>/ACTIVE`, else the only key there is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use zeroize::Zeroizing;

use crate::crypt::{self, envelope, DataKey, KEY_LEN};
use crate::fsutil;

/// Errors about master keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key with this id is loaded.
    #[error("unknown master key '{0}': add its key file to the keys directory or PV_MASTER_KEYS")]
    UnknownKey(String),
    /// No key at all, and no dev key allowed.
    #[error("no master key configured: run `profile-vault keygen` or set PV_MASTER_KEYS")]
    NoKeys,
    /// Several keys and none marked active.
    #[error("several master keys and none is active: set keys.active / PV_ACTIVE_KEY or run `keygen --activate`")]
    NoActiveKey,
    /// A key file other users can read.
    #[error("key file {path} is readable by group/others (mode {mode:o}); run `chmod 600 {path}`")]
    InsecureFile {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A malformed key.
    #[error("invalid master key '{id}': {reason}")]
    Invalid {
        /// Key id (or file).
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A malformed key id.
    #[error("invalid key id '{0}': use 1-64 of [A-Za-z0-9._-]")]
    BadId(String),
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Wrapping or unwrapping failed.
    #[error(transparent)]
    Crypt(#[from] crypt::Error),
}

/// A named 256-bit master key. Zeroized on drop; `Debug` shows only the id.
pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

impl MasterKey {
    /// The key id recorded with every wrapped data key.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn parse(id: &str, b64: &str) -> Result<Self, Error> {
        validate_id(id)?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| Error::Invalid {
                    id: id.into(),
                    reason: "not base64".into(),
                })?,
        );
        if raw.len() != KEY_LEN {
            return Err(Error::Invalid {
                id: id.into(),
                reason: format!("{} bytes, expected {KEY_LEN}", raw.len()),
            });
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&raw);
        Ok(MasterKey {
            id: id.into(),
            bytes,
        })
    }
}

/// Checks a key id: 1-64 characters of `[A-Za-z0-9._-]`, not starting with a dot.
///
/// # Errors
/// [`Error::BadId`].
pub fn validate_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadId(id.into()))
    }
}

/// All loaded master keys and which one new saves use.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<String, MasterKey>,
    active: String,
}

/// Where to load keys from.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// Directory of `<id>.key` files.
    pub dir: PathBuf,
    /// `id:base64,...` list (from `PV_MASTER_KEYS`).
    pub inline: Option<String>,
    /// Explicit active key id.
    pub active: Option<String>,
    /// Generate a dev key when none exists (embedded default only).
    pub allow_dev_key: bool,
}

impl Keyring {
    /// Loads every key from the sources.
    ///
    /// # Errors
    /// Insecure or malformed key files, no keys, or an active key that is not loaded.
    pub fn load(src: &KeySources) -> Result<Self, Error> {
        let mut keys = BTreeMap::new();
        if src.dir.is_dir() {
            let rd = std::fs::read_dir(&src.dir).map_err(|e| Error::Io {
                path: src.dir.clone(),
                source: e,
            })?;
            let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths {
                if path.extension().and_then(|e| e.to_str()) != Some("key") {
                    continue;
                }
                let id = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                let text = read_secret_file(&path)?;
                keys.insert(id.clone(), MasterKey::parse(&id, &text)?);
            }
        }
        if let Some(inline) = &src.inline {
            for item in inline.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (id, b64) = item.split_once(':').ok_or_else(|| Error::Invalid {
                    id: "PV_MASTER_KEYS".into(),
                    reason: "expected id:base64 entries".into(),
                })?;
                keys.insert(id.to_string(), MasterKey::parse(id, b64)?);
            }
        }
        if keys.is_empty() {
            if !src.allow_dev_key {
                return Err(Error::NoKeys);
            }
            let id = format!("dev-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            tracing::warn!(key_id = %id, dir = %src.dir.display(), "no master key configured: generated a DEV key; keep it safe or configure real keys");
            let key = generate_key_file(&src.dir, &id)?;
            std::fs::write(src.dir.join("ACTIVE"), &id).map_err(|e| Error::Io {
                path: src.dir.join("ACTIVE"),
                source: e,
            })?;
            keys.insert(id, key);
        }
        let active = match &src.active {
            Some(a) => a.clone(),
            None => match std::fs::read_to_string(src.dir.join("ACTIVE")) {
                Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
                _ if keys.len() == 1 => keys.keys().next().cloned().expect("one key"),
                _ => return Err(Error::NoActiveKey),
            },
        };
        if !keys.contains_key(&active) {
            return Err(Error::UnknownKey(active));
        }
        Ok(Keyring { keys, active })
    }

    /// A keyring holding exactly these keys (tests and benchmarks).
    pub fn from_keys(keys: Vec<(String, [u8; KEY_LEN])>, active: &str) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        for (id, bytes) in keys {
            validate_id(&id)?;
            map.insert(
                id.clone(),
                MasterKey {
                    id,
                    bytes: Zeroizing::new(bytes),
                },
            );
        }
        if !map.contains_key(active) {
            return Err(Error::UnknownKey(active.into()));
        }
        Ok(Keyring {
            keys: map,
            active: active.into(),
        })
    }

    /// The id new saves wrap their data keys with.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Ids of all loaded keys.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether a key id is loaded.
    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Wraps a data key with the key `key_id` (the active one when `None`).
    ///
    /// # Errors
    /// [`Error::UnknownKey`].
    pub fn wrap(
        &self,
        key_id: Option<&str>,
        dek: &DataKey,
        ctx: &envelope::WrapContext<'_>,
    ) -> Result<(String, Vec<u8>), Error> {
        let id = key_id.unwrap_or(&self.active);
        let k = self
            .keys
            .get(id)
            .ok_or_else(|| Error::UnknownKey(id.into()))?;
        Ok((k.id.clone(), envelope::wrap(&k.bytes, &k.id, dek, ctx)))
    }

    /// Unwraps a data key wrapped by `key_id`.
    ///
    /// # Errors
    /// [`Error::UnknownKey`] when that key is not loaded; [`crypt::Error::UnwrapFailed`] when it is the wrong key.
    pub fn unwrap(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &envelope::WrapContext<'_>,
    ) -> Result<DataKey, Error> {
        let k = self
            .keys
            .get(key_id)
            .ok_or_else(|| Error::UnknownKey(key_id.into()))?;
        Ok(envelope::unwrap(&k.bytes, &k.id, wrapped, ctx)?)
    }
}

/// Reads a secret file, refusing one that group or others may read.
///
/// # Errors
/// [`Error::InsecureFile`], [`Error::Io`].
pub fn read_secret_file(path: &Path) -> Result<String, Error> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureFile {
            path: path.into(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })
}

/// Generates a new random key and writes it to `<dir>/<id>.key` (0600, create-only).
///
/// # Errors
/// Bad id, existing file, or I/O failure.
pub fn generate_key_file(dir: &Path, id: &str) -> Result<MasterKey, Error> {
    validate_id(id)?;
    fsutil::create_private_dir(dir).map_err(|e| Error::Io {
        path: dir.into(),
        source: e,
    })?;
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()));
    let path = dir.join(format!("{id}.key"));
    fsutil::write_private_new(&path, format!("{}\n", b64.as_str()).as_bytes()).map_err(|e| {
        Error::Io {
            path: path.clone(),
            source: e,
        }
    })?;
    Ok(MasterKey {
        id: id.into(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_key_is_generated_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let src = KeySources {
            dir: dir.path().join("keys"),
            allow_dev_key: true,
            ..Default::default()
        };
        let k1 = Keyring::load(&src).unwrap();
        assert!(k1.active_id().starts_with("dev-"));
        let file = dir
            .path()
            .join("keys")
            .join(format!("{}.key", k1.active_id()));
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k2 = Keyring::load(&src).unwrap();
        assert_eq!(k1.active_id(), k2.active_id());
        // The same key unwraps what the first wrapped.
        let ctx = envelope::WrapContext {
            tenant: "t",
            profile: "p",
            object_id: "o",
        };
        let dek = DataKey::generate();
        let (id, w) = k1.wrap(None, &dek, &ctx).unwrap();
        assert_eq!(k2.unwrap(&id, &w, &ctx).unwrap().as_bytes(), dek.as_bytes());
    }

    #[test]
    fn insecure_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        generate_key_file(dir.path(), "k1").unwrap();
        let path = dir.path().join("k1.key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let src = KeySources {
            dir: dir.path().into(),
            ..Default::default()
        };
        assert!(matches!(
            Keyring::load(&src),
            Err(Error::InsecureFile { .. })
        ));
    }

    #[test]
    fn no_keys_without_dev_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let src = KeySources {
            dir: dir.path().into(),
            ..Default::default()
        };
        assert!(matches!(Keyring::load(&src), Err(Error::NoKeys)));
    }

    #[test]
    fn debug_redacts_key_bytes() {
        let ring = Keyring::from_keys(vec![("k1".into(), [0x5a; 32])], "k1").unwrap();
        let s = format!("{ring:?}");
        assert!(
            s.contains("k1") && s.contains("redacted") && !s.contains("90"),
            "{s}"
        );
    }

    #[test]
    fn bad_ids_rejected() {
        for id in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(validate_id(id).is_err(), "{id}");
        }
        validate_id("prod-2026.1_a").unwrap();
    }
}
