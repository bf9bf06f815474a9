//! Local master keys: 256-bit keys held in memory, loaded from key files
//! (`<keys_dir>/<id>.key`, base64, owner-only) or `PV_MASTER_KEYS`, and those files.
//! Wrapping is [`crate::crypt::envelope`] (record format 1: the AAD binds key id, tenant,
//! profile and object id; the payload header binds the generation).

use std::path::Path;

use base64::Engine;
use zeroize::Zeroizing;

use super::{validate_id, Error, WrapContext};
use crate::crypt::{envelope, DataKey, KEY_LEN};
use crate::fsutil;

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

    /// A key from its id and bytes.
    ///
    /// # Errors
    /// [`Error::BadId`].
    pub fn new(id: &str, bytes: [u8; KEY_LEN]) -> Result<Self, Error> {
        validate_id(id)?;
        Ok(MasterKey {
            id: id.into(),
            bytes: Zeroizing::new(bytes),
        })
    }

    /// Parses the base64 form of a key file or `PV_MASTER_KEYS` entry.
    pub(super) fn parse(id: &str, b64: &str) -> Result<Self, Error> {
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

    /// Wraps `dek` for `ctx`.
    pub(super) fn wrap(&self, dek: &DataKey, ctx: &WrapContext<'_>) -> Vec<u8> {
        envelope::wrap(&self.bytes, &self.id, dek, &ctx.envelope())
    }

    /// Unwraps a data key wrapped by [`MasterKey::wrap`] for the same context.
    pub(super) fn unwrap(&self, wrapped: &[u8], ctx: &WrapContext<'_>) -> Result<DataKey, Error> {
        Ok(envelope::unwrap(
            &self.bytes,
            &self.id,
            wrapped,
            &ctx.envelope(),
        )?)
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
