//! The vault: profiles as encrypted, versioned generations in a [`Store`].
//!
//! Object layout (all keys under `tenants/<tenant>/profiles/<profile>/`, built by
//! [`crate::layout::ProfileAddr`]):
//! - `gens/<generation:020>.pvo`: the encrypted payload (format v1, `docs/FORMAT.md`),
//!   written create-only, so writing it claims the generation number;
//! - `gens/<generation:020>.json`: the generation record ([`GenerationRecord`]): the wrapped
//!   data key, its master key id, and what the pack recorded. Rekey rewrites only these;
//! - `head.json`: which generation loads by default ([`Head`]), moved by compare-and-swap;
//! - `gens/<generation:020>.meta`: the generation's sidecar, sealed: pinned browser identity
//!   and contents report (`meta.rs`);
//! - `data.json`: the profile's data document, sealed (`data.rs`);
//! - format 2 only: `packs/<id>.pvp`, sealed chunks shared by the generations that use them,
//!   and `gc.json`, the marks of packs no generation uses (`chunked/`, `gc.rs`).
//!
//! Generations of format 2 (the default for new saves) keep the same meaning: the payload
//! object is the generation's manifest, whose create-only write claims the number as before;
//! a re-save uploads only the chunks its base generation does not have.
//!
//! A save packs and encrypts into a private spool file first (constant memory, and an
//! upload can be retried from it), uploads the payload, writes the record, then moves the
//! head. A failed or interrupted save leaves the previous head untouched; a save that
//! loses the head race gets [`Error::Conflict`] and its generation stays listed.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::crypt::{stream, DataKey};
use crate::format::v1::archive::{self, Limits, PackOptions, PackStats, UnpackStats};
use crate::format::{self, Expected, Sealer};
use crate::fsutil;
use crate::keys::{self, Keyring, WrapContext, Wrapped};
use crate::progress::Progress;
use crate::store::{self, PutBody, PutMode, Store};

mod chunked;
mod compat;
mod data;
mod error;
mod gc;
mod lease;
mod manage;
mod meta;
mod records;
mod rekey;
mod restore;
mod retention;
mod save;

pub use chunked::ChunkStats;
pub(crate) use compat::check_not_newer;
pub use compat::major;
pub use data::{DataCondition, DataDoc, DataError, DATA_FORMAT, DEFAULT_DATA_MAX_BYTES};
pub use error::{Class, Error};
pub use gc::PackGcReport;
pub use lease::{Lease, LeaseRecord};
pub use meta::{GenerationMeta, Identity, META_FORMAT};
use records::present_string;
pub use records::{GenerationRecord, Head};
pub use retention::Retention;

/// Version of the head record.
pub const HEAD_FORMAT: u32 = 1;
/// Version of a generation record whose data key a local master key wraps.
pub const RECORD_FORMAT: u32 = 1;
/// Version of a generation record whose data key a KMS key wraps (adds `kms_key_arn`).
pub const RECORD_FORMAT_KMS: u32 = 2;
/// Version of a generation record of a chunked (format 2) payload, local or KMS wrap
/// (adds `packs` and `chunks`).
pub const RECORD_FORMAT_CHUNKED: u32 = 3;

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::layout::{validate_id, GenFile, ProfileAddr};

/// What a save expects the head to be when it moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Base {
    /// Whatever the head is when the save starts.
    #[default]
    Current,
    /// Exactly this generation (`None`: the profile must not exist yet).
    Expect(Option<u64>),
}

/// The outcome of a save (the `--json` output of `save`).
#[derive(Debug, Clone, Serialize)]
pub struct SaveReport {
    /// Tenant.
    pub tenant: String,
    /// Profile id.
    pub profile: String,
    /// New generation.
    pub generation: u64,
    /// Its object id.
    pub object_id: String,
    /// Files archived.
    pub files: u64,
    /// Bytes of archived files.
    pub bytes_in: u64,
    /// Bytes stored (payload object).
    pub bytes_stored: u64,
    /// Master key used.
    pub key_id: String,
    /// Everything packing recorded.
    pub stats: PackStats,
    /// Generations removed by retention.
    pub pruned: Vec<u64>,
    /// Format 2: what the save reused and sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkStats>,
}

/// One generation as listed by `versions`.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationInfo {
    /// Number.
    pub generation: u64,
    /// Whether the head points at it.
    pub head: bool,
    /// Record, when present.
    pub record: Option<GenerationRecord>,
    /// Whether the payload object exists.
    pub payload: bool,
}

/// One profile as listed by `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileSummary {
    /// Profile id.
    pub profile: String,
    /// Head generation.
    pub generation: u64,
    /// When the head moved.
    pub updated_at: u64,
}

/// The outcome of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// Profile id.
    pub profile: String,
    /// Generation restored.
    pub generation: u64,
    /// Files, dirs, bytes.
    #[serde(flatten)]
    pub unpacked: UnpackStats,
    /// Chromium version that wrote it.
    pub chromium_version: Option<String>,
}

/// Tunables of the vault.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// Private local directory for spool and download files.
    pub spool_dir: PathBuf,
    /// Packing.
    pub pack: PackOptions,
    /// Unpacking limits.
    pub limits: Limits,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Generations kept per profile.
    pub keep: usize,
    /// Packs and unpacks running at once (each uses every core); more wait.
    pub max_parallel_jobs: usize,
    /// Largest profile data document, serialized, in bytes.
    pub data_max_bytes: usize,
    /// Record a contents report with every save (in the generation's sidecar).
    pub contents_report: bool,
    /// Payload format of new saves (1 or 2).
    pub write_format: u16,
    /// Format 2: every this many saves, every file is read again (1: always).
    pub full_read_every: u32,
    /// Format 2: read every file on the next saves, whatever their size and time say.
    pub reread: bool,
    /// Unused packs are deleted by a garbage collection this long after one marked them.
    pub pack_grace: std::time::Duration,
}

/// Encrypted, versioned profiles in a store.
#[derive(Debug, Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    keys: Arc<Keyring>,
    opts: Arc<VaultOptions>,
    /// Bounds the CPU/memory-heavy phases (pack, unpack) running at once, so many
    /// sessions ending together queue instead of all buffering at once.
    work: Arc<tokio::sync::Semaphore>,
    audit: crate::audit::Audit,
    actor: Arc<str>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// [`Error::ProfileNotFound`] of `at`.
fn not_found(at: &ProfileAddr) -> Error {
    Error::ProfileNotFound {
        tenant: at.tenant().into(),
        profile: at.profile().into(),
    }
}

/// Every generation number that has a payload or a record, sorted, once each.
fn merged(payloads: &[u64], records: &[u64]) -> Vec<u64> {
    let mut all: Vec<u64> = payloads.iter().chain(records).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            path: "<blocking task>".into(),
            source: std::io::Error::other(e),
        })?
}

/// Removes a file when dropped (spool and download files).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Vault {
    /// A vault over `store` with `keys`.
    ///
    /// # Errors
    /// The spool directory cannot be created.
    pub fn new(store: Arc<dyn Store>, keys: Arc<Keyring>, opts: VaultOptions) -> Result<Self> {
        if !(1..=2).contains(&opts.write_format) {
            return Err(Error::BadRecord {
                key: "archive.format".into(),
                reason: format!(
                    "payload format {} cannot be written; use 1 or 2",
                    opts.write_format
                ),
            });
        }
        fsutil::create_private_dir(&opts.spool_dir).map_err(io_at(&opts.spool_dir))?;
        let work = Arc::new(tokio::sync::Semaphore::new(opts.max_parallel_jobs.max(1)));
        let audit = crate::audit::Audit::new(store.clone());
        Ok(Vault {
            store,
            keys,
            opts: Arc::new(opts),
            work,
            audit,
            actor: Arc::from("library"),
        })
    }

    /// The same vault, recording `actor` in the audit trail for what it does.
    pub fn with_actor(&self, actor: &str) -> Vault {
        Vault {
            actor: Arc::from(actor),
            ..self.clone()
        }
    }

    /// The audit trail.
    pub fn audit(&self) -> &crate::audit::Audit {
        &self.audit
    }

    async fn record<T>(
        &self,
        action: crate::audit::Action,
        tenant: &str,
        profile: Option<&str>,
        generation: Option<u64>,
        r: &Result<T>,
    ) {
        let error = r.as_ref().err().map(ToString::to_string);
        self.audit
            .record(action, tenant, profile, generation, &self.actor, error)
            .await;
    }

    /// Waits for a pack/unpack slot (counted as queue depth while waiting).
    async fn work_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        let waiting = &crate::metrics::METRICS.jobs_waiting;
        waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let permit = self
            .work
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        permit
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The keyring.
    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    /// The largest profile data document, serialized, in bytes.
    pub fn data_max_bytes(&self) -> usize {
        self.opts.data_max_bytes
    }

    fn spool_file(&self, what: &str) -> PathBuf {
        self.opts
            .spool_dir
            .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()))
    }

    /// Resolves an id a client uses to load a profile: the profile's own id, or the id of
    /// any later session that continued it (recorded with [`Vault::write_alias`]).
    ///
    /// # Errors
    /// Invalid ids and storage errors; `Ok(None)` when nothing matches.
    pub async fn resolve_profile(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(String, Option<u64>)>> {
        if let Some((h, _)) = self.head(&ProfileAddr::new(tenant, id)?).await? {
            return Ok(Some((id.to_string(), Some(h.generation))));
        }
        let key = crate::layout::alias(tenant, id)?;
        let profile = match self.store.get(&key).await {
            Ok(g) => String::from_utf8_lossy(&g.bytes().await?)
                .trim()
                .to_string(),
            Err(store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(self
            .head(&ProfileAddr::new(tenant, &profile)?)
            .await?
            .map(|(h, _)| (profile, Some(h.generation))))
    }

    /// Records that session `alias` continued `profile`, so loading by `alias` finds it.
    ///
    /// # Errors
    /// Invalid ids and storage errors.
    pub async fn write_alias(&self, tenant: &str, alias: &str, profile: &str) -> Result<()> {
        let key = crate::layout::alias(tenant, alias)?;
        validate_id("profile", profile)?;
        self.store
            .put(
                &key,
                PutBody::Bytes(Bytes::from(profile.to_string())),
                PutMode::Overwrite,
            )
            .await?;
        Ok(())
    }

    pub(super) async fn resolve(&self, at: &ProfileAddr, generation: Option<u64>) -> Result<u64> {
        match generation {
            Some(g) => Ok(g),
            None => match self.head_at(at).await? {
                Some((h, _)) => Ok(h.generation),
                None => Err(not_found(at)),
            },
        }
    }
}
