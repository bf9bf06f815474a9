//! The session table on disk (`<data_dir>/sessions/<id>.json`), authenticated.
//!
//! What a browser, a tenant or anything else that can drop a file here writes is never
//! trusted: every record carries an HMAC-SHA256 under the node's record key
//! (`<data_dir>/sessions.key`, 0600, created on first start; no browser can see the data
//! directory). A record is accepted only if its MAC checks out, its id is its file name, and
//! its `dir` is exactly `<data_dir>/browsers/<id>` and not a symlink. Anything else is
//! logged, counted (`pv_session_records_rejected_total`) and left alone: it never stops the
//! daemon, and nothing it names is ever saved or deleted.
//!
//! Records written before the key existed (an upgrade from a release without it) are
//! accepted once, by the start that creates the key.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Record;
use crate::fsutil;

/// Records rejected since start (forged, tampered, misplaced).
pub static REJECTED: AtomicU64 = AtomicU64::new(0);

#[derive(Serialize, Deserialize)]
struct Signed {
    #[serde(flatten)]
    record: Record,
    /// Hex HMAC-SHA256 of the record's compact JSON.
    #[serde(default)]
    mac: Option<String>,
}

/// The authenticated session table of one node.
pub(super) struct Records {
    dir: PathBuf,
    browsers: PathBuf,
    key: zeroize::Zeroizing<Vec<u8>>,
    /// The key was created by this start: unsigned records of the previous release pass.
    legacy_ok: bool,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Opens the table under `data_dir`, creating the record key if there is none.
    ///
    /// # Errors
    /// The key cannot be read or created.
    pub(super) fn open(data_dir: &Path) -> std::io::Result<Records> {
        let path = data_dir.join("sessions.key");
        let (key, legacy_ok) = match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => (k, false),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} is not a 32-byte key",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                fsutil::write_private_new(&path, &k)?;
                (k, true)
            }
            Err(e) => return Err(e),
        };
        Ok(Records {
            dir: data_dir.join("sessions"),
            browsers: data_dir.join("browsers"),
            key: zeroize::Zeroizing::new(key),
            legacy_ok,
        })
    }

    /// Where session `id`'s record lives.
    pub(super) fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The only directory a record of session `id` may name.
    pub(super) fn browser_dir(&self, id: &str) -> PathBuf {
        self.browsers.join(id)
    }

    fn mac(&self, r: &Record) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        m.update(&serde_json::to_vec(r).expect("record serializes"));
        crate::crypt::hex(&m.finalize().into_bytes())
    }

    /// Writes `r` (atomically, owner-only), signed.
    ///
    /// # Errors
    /// I/O.
    pub(super) fn write(&self, r: &Record) -> std::io::Result<()> {
        let signed = Signed {
            mac: Some(self.mac(r)),
            record: r.clone(),
        };
        let body = serde_json::to_vec_pretty(&signed).expect("record serializes");
        fsutil::write_private_atomic(&self.path(&r.id), &body)
    }

    /// Every record that checks out; the others are logged, counted and left alone.
    pub(super) fn read_all(&self) -> Vec<Record> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if stem.starts_with('.') {
                continue; // a temporary file of an atomic write
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            if let Err(e) = crate::vault::check_not_newer(
                "session record",
                &path.display().to_string(),
                &bytes,
                1,
            ) {
                tracing::warn!(error = %e, "session record left alone");
                continue;
            }
            match self.verify(stem, &bytes) {
                Ok(r) => out.push(r),
                Err(why) => {
                    REJECTED.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), why, "session record rejected and left alone");
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn verify(&self, stem: &str, bytes: &[u8]) -> Result<Record, &'static str> {
        let s: Signed = serde_json::from_slice(bytes).map_err(|_| "not a session record")?;
        match &s.mac {
            Some(mac) => {
                if !bool::from(mac.as_bytes().ct_eq(self.mac(&s.record).as_bytes())) {
                    return Err("its MAC does not check out (not written by this node)");
                }
            }
            None if self.legacy_ok => {}
            None => return Err("unsigned"),
        }
        let r = s.record;
        if r.id != stem {
            return Err("its id is not its file name");
        }
        if r.dir != self.browser_dir(&r.id) {
            return Err("its directory is not its session's browser directory");
        }
        if std::fs::symlink_metadata(&r.dir).is_ok_and(|m| m.file_type().is_symlink())
            || std::fs::symlink_metadata(&self.browsers).is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err("its directory is a symlink");
        }
        Ok(r)
    }
}
