//! A tenant's own Chrome extension (Hyperbeam's `extension`, a zip sent with `POST /v0/vm`):
//! checked and unpacked like any untrusted archive (bounded below; names, links and bombs
//! refused by [`crate::format::v1::archive`]), then loaded read-only into that session's browser
//! only, beside the tabs agent. Chromium runs Manifest V3 extensions only.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::format::v1::archive::Limits;

/// A tenant's zipped extension (its bytes are never printed: logs show the size).
#[derive(Clone)]
pub struct Zip(pub bytes::Bytes);

impl std::fmt::Debug for Zip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zip({} bytes)", self.0.len())
    }
}

/// Largest zip taken, bytes.
pub const MAX_ZIP_BYTES: usize = 16 << 20;
/// Where it is mounted (read-only) inside the sandbox.
pub(super) const IN_SANDBOX: &str = "/pv/extension";

fn limits() -> Limits {
    Limits {
        max_files: 5_000,
        max_file_size: 32 << 20,
        max_total_size: 64 << 20,
        max_ratio: 200,
    }
}

/// Checks a zip before a session starts: a readable archive within the limits whose
/// `manifest.json` is at the top or in its one folder. Blocking (it reads every entry).
///
/// # Errors
/// What is wrong with it, for the client.
pub fn check(zip: &[u8]) -> Result<(), String> {
    if zip.len() > MAX_ZIP_BYTES {
        return Err(format!(
            "the extension is larger than {} MiB",
            MAX_ZIP_BYTES >> 20
        ));
    }
    // Unpacked once into a private scratch directory, removed whatever happens.
    let dir = std::env::temp_dir().join(format!("pv-extension-{}", uuid::Uuid::new_v4().simple()));
    crate::fsutil::create_private_dir(&dir)
        .map_err(|e| format!("cannot check the extension: {e}"))?;
    let r = unpack(zip, &dir.join("x")).map(|_| ());
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// Unpacks `zip` into `dir` (new, owner-only); returns the directory holding
/// `manifest.json`. Blocking.
///
/// # Errors
/// A hostile or broken archive, one without a manifest, or I/O errors.
pub(super) fn unpack(zip: &[u8], dir: &Path) -> Result<PathBuf, String> {
    let open = || Ok(Cursor::new(zip));
    crate::format::v1::archive::unpack_from(&open, dir, &limits(), &crate::NoProgress)
        .map_err(|e| format!("the extension is not a usable zip: {e}"))?;
    let root = if dir.join("manifest.json").is_file() {
        dir.to_path_buf()
    } else {
        let mut entries = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        match (entries.next(), entries.next()) {
            (Some(one), None) if one.path().join("manifest.json").is_file() => one.path(),
            _ => {
                return Err(
                    "the extension has no manifest.json at its top or in its one folder".into(),
                )
            }
        }
    };
    // Its id follows from `key` when it has one: a chosen key could take the tabs agent's
    // id (and the daemon would talk to it). Without, the id follows from its path.
    let manifest = std::fs::read(root.join("manifest.json")).map_err(|e| e.to_string())?;
    let m: serde_json::Value = serde_json::from_slice(&manifest)
        .map_err(|e| format!("the extension's manifest.json is not JSON: {e}"))?;
    if m.get("key").is_some() {
        return Err(
            "the extension's manifest.json has a `key`: extensions are loaded without one".into(),
        );
    }
    Ok(root)
}
