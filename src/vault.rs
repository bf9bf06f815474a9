//! The vault: profiles as encrypted, versioned generations in a [`Store`].
//!
//! Object layout (all keys under `tenants/<tenant>/profiles/<profile>/`):
//! - `gens/<generation:020>.pvo`: the encrypted payload (format v1, `docs/FORMAT.md`),
//!   written create-only, so writing it claims the generation number;
//! - `gens/<generation:020>.json`: the generation record ([`GenerationRecord`]): the wrapped
//!   data key, its master key id, and what the pack recorded. Rekey rewrites only these;
//! - `head.json`: which generation loads by default ([`Head`]), moved by compare-and-swap.
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
use crate::fsutil;
use crate::keys::{self, Keyring, WrapContext, Wrapped};
use crate::profile::archive::{self, Limits, PackOptions, PackStats, UnpackStats};
use crate::profile::format::{self, Expected, Sealer};
use crate::progress::Progress;
use crate::store::{self, PutBody, PutMode, Store};

/// Version of the head record.
pub const HEAD_FORMAT: u32 = 1;
/// Version of a generation record whose data key a local master key wraps.
pub const RECORD_FORMAT: u32 = 1;
/// Version of a generation record whose data key a KMS key wraps (adds `kms_key_arn`).
pub const RECORD_FORMAT_KMS: u32 = 2;

/// Errors of vault operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant or profile id that is not allowed.
    #[error("invalid {what} id {id:?}: use 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit")]
    InvalidId {
        /// "tenant" or "profile".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// No such profile for this tenant.
    #[error("profile {profile:?} not found for tenant {tenant:?}")]
    ProfileNotFound {
        /// Tenant.
        tenant: String,
        /// Profile.
        profile: String,
    },
    /// No such generation.
    #[error("generation {generation} of profile {profile:?} not found (see `profile-vault versions {profile}`)")]
    GenerationNotFound {
        /// Profile.
        profile: String,
        /// Generation.
        generation: u64,
    },
    /// Another save moved the head first.
    #[error("conflict: profile {profile:?} head moved to generation {head:?} during this save; this save's generation {kept} is kept (roll back to it with `profile-vault rollback {profile} --to {kept}`)")]
    Conflict {
        /// Profile.
        profile: String,
        /// The generation this save stored.
        kept: u64,
        /// The head now.
        head: Option<u64>,
    },
    /// A generation record that cannot be used.
    #[error("generation record {key} is invalid: {reason}")]
    BadRecord {
        /// Object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Packing or unpacking failed (including hostile archives).
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// The object failed its format or integrity checks.
    #[error(transparent)]
    Format(#[from] format::Error),
    /// Master key problems.
    #[error(transparent)]
    Keys(#[from] keys::Error),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Local I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the cause is tampering, corruption, a wrong key or a hostile archive.
    pub fn is_integrity(&self) -> bool {
        match self {
            Error::Format(_) | Error::BadRecord { .. } => true,
            Error::Keys(k) => k.is_integrity(),
            Error::Archive(a) => !matches!(
                a,
                archive::Error::Io { .. }
                    | archive::Error::Write(_)
                    | archive::Error::NotADirectory(_)
                    | archive::Error::TargetNotEmpty(_)
            ),
            _ => false,
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a tenant or profile id.
///
/// # Errors
/// [`Error::InvalidId`].
pub fn validate_id(what: &'static str, id: &str) -> Result<()> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId {
            what,
            id: id.into(),
        })
    }
}

/// The head record: which generation a profile loads by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// Record format version.
    pub format: u32,
    /// Tenant.
    pub tenant: String,
    /// Profile id.
    pub profile: String,
    /// Current generation.
    pub generation: u64,
    /// Its object id.
    pub object_id: String,
    /// When the head last moved, Unix seconds.
    pub updated_at: u64,
}

/// Plaintext facts about one generation, stored beside its payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationRecord {
    /// Record format version.
    pub format: u32,
    /// Tenant.
    pub tenant: String,
    /// Profile id.
    pub profile: String,
    /// Generation number.
    pub generation: u64,
    /// Object id of the payload.
    pub object_id: String,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Master key that wraps the data key.
    pub key_id: String,
    /// Wrapped data key, base64.
    pub wrapped_key: String,
    /// KMS key (ARN) that wrapped the data key; present exactly in format 2 (absent, not
    /// `null`, in format 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_string"
    )]
    pub kms_key_arn: Option<String>,
    /// Size of the payload object.
    pub object_size: u64,
    /// The generation this one was based on (loaded from), if any.
    pub base: Option<u64>,
    /// What packing recorded.
    pub stats: PackStats,
}

/// An optional member that, when present, must be a string (`null` is refused).
fn present_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

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

fn prefix(tenant: &str, profile: &str) -> String {
    format!("tenants/{tenant}/profiles/{profile}/")
}

fn payload_key(tenant: &str, profile: &str, generation: u64) -> String {
    format!("{}gens/{generation:020}.pvo", prefix(tenant, profile))
}

fn record_key(tenant: &str, profile: &str, generation: u64) -> String {
    format!("{}gens/{generation:020}.json", prefix(tenant, profile))
}

/// Every generation number that has a payload or a record, sorted, once each.
fn merged(payloads: &[u64], records: &[u64]) -> Vec<u64> {
    let mut all: Vec<u64> = payloads.iter().chain(records).copied().collect();
    all.sort_unstable();
    all.dedup();
    all
}

fn alias_key(tenant: &str, alias: &str) -> String {
    format!("tenants/{tenant}/aliases/{alias}")
}

fn head_key(tenant: &str, profile: &str) -> String {
    format!("{}head.json", prefix(tenant, profile))
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

    fn spool_file(&self, what: &str) -> PathBuf {
        self.opts
            .spool_dir
            .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()))
    }

    /// Reads the head record, with its etag.
    ///
    /// # Errors
    /// Storage errors; a malformed head.
    pub async fn head(&self, tenant: &str, profile: &str) -> Result<Option<(Head, String)>> {
        validate_id("tenant", tenant)?;
        validate_id("profile", profile)?;
        let key = head_key(tenant, profile);
        match self.store.get(&key).await {
            Ok(g) => {
                let etag = g.meta.etag.clone();
                let bytes = g.bytes().await?;
                let head: Head = serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                if head.format != HEAD_FORMAT {
                    return Err(Error::BadRecord {
                        key,
                        reason: format!("head format {} is not supported", head.format),
                    });
                }
                if head.tenant != tenant || head.profile != profile {
                    return Err(Error::BadRecord {
                        key,
                        reason: "names another tenant or profile".into(),
                    });
                }
                Ok(Some((head, etag)))
            }
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn generation_numbers(
        &self,
        tenant: &str,
        profile: &str,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let mut payloads = Vec::new();
        let mut records = Vec::new();
        let p = format!("{}gens/", prefix(tenant, profile));
        for m in self.store.list(&p).await? {
            let name = &m.key[p.len()..];
            if let Some(n) = name
                .strip_suffix(".pvo")
                .and_then(|n| n.parse::<u64>().ok())
            {
                payloads.push(n);
            } else if let Some(n) = name
                .strip_suffix(".json")
                .and_then(|n| n.parse::<u64>().ok())
            {
                records.push(n);
            }
        }
        Ok((payloads, records))
    }

    /// Packs `dir`, encrypts it and stores it as a new generation, then moves the head.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another save moved the head (this generation is kept);
    /// packing, key, and storage errors (the head is untouched).
    pub async fn save(
        &self,
        tenant: &str,
        profile: &str,
        dir: &Path,
        base: Base,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        let r = self.save_inner(tenant, profile, dir, base, progress).await;
        let generation = match &r {
            Ok(rep) => Some(rep.generation),
            Err(Error::Conflict { kept, .. }) => Some(*kept),
            Err(_) => None,
        };
        self.record(
            crate::audit::Action::Save,
            tenant,
            Some(profile),
            generation,
            &r,
        )
        .await;
        r
    }

    async fn save_inner(
        &self,
        tenant: &str,
        profile: &str,
        dir: &Path,
        base: Base,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        validate_id("tenant", tenant)?;
        validate_id("profile", profile)?;
        let head = self.head(tenant, profile).await?;
        let (payloads, records) = self.generation_numbers(tenant, profile).await?;
        let mut generation = merged(&payloads, &records)
            .last()
            .copied()
            .max(head.as_ref().map(|h| h.0.generation))
            .unwrap_or(0)
            + 1;
        let object_id = uuid::Uuid::new_v4().to_string();
        let created_at = now();
        let first_generation = generation;
        let master = self.keys.active_for(tenant).to_string();
        let (dek, first_wrap) = self
            .keys
            .new_data_key(
                &master,
                &WrapContext {
                    tenant,
                    profile,
                    generation,
                    object_id: &object_id,
                },
            )
            .await?;

        // Pack + encrypt into the spool file, off the async runtime.
        let slot = self.work_slot().await;
        let spool = TempFile(self.spool_file("save"));
        let (dek, sealer, stats, mut header_len) = {
            let (dir, path, opts) = (dir.to_path_buf(), spool.0.clone(), self.opts.clone());
            let (tenant, profile, object_id) =
                (tenant.to_string(), profile.to_string(), object_id.clone());
            let progress = progress.clone();
            blocking(move || {
                let sealer = Sealer::new(&dek, opts.chunk_size);
                let header =
                    sealer.header_bytes(&tenant, &profile, generation, &object_id, created_at);
                let mut f = fsutil::create_private_new(&path).map_err(io_at(&path))?;
                f.write_all(&header).map_err(io_at(&path))?;
                let w = sealer.body_writer(std::io::BufWriter::with_capacity(1 << 20, f));
                let (w, stats) = archive::pack(&dir, w, &opts.pack, progress.as_ref())?;
                let (buf, _) = w.finish().map_err(io_at(&path))?;
                let f = buf.into_inner().map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e.into_error(),
                })?;
                f.sync_all().map_err(io_at(&path))?;
                Ok((dek, sealer, stats, header.len()))
            })
            .await?
        };
        drop(slot);
        if stats.cookie_v11_warning {
            tracing::warn!(tenant, profile, "cookie store holds v11 (keyring-encrypted) values: those cookies will be lost when restored on another machine; start Chromium with --password-store=basic");
        }

        // Upload, claiming the generation number with a create-only write.
        let mut attempts = 0;
        loop {
            let key = payload_key(tenant, profile, generation);
            progress.start("uploading", 0);
            match self
                .store
                .put(&key, PutBody::File(spool.0.clone()), PutMode::Create)
                .await
            {
                Ok(_) => break,
                // A retried create may find its own first attempt, which landed before its
                // answer was lost.
                Err(store::Error::AlreadyExists { .. })
                    if self.payload_object_id(&key).await.as_deref()
                        == Some(object_id.as_str()) =>
                {
                    break
                }
                Err(store::Error::AlreadyExists { .. }) if attempts < 64 => {
                    attempts += 1;
                    let (p, r) = self.generation_numbers(tenant, profile).await?;
                    generation = merged(&p, &r)
                        .last()
                        .map_or(generation, |&m| m.max(generation))
                        + 1;
                    tracing::info!(
                        tenant,
                        profile,
                        generation,
                        "generation number taken by a concurrent save; retrying with the next"
                    );
                    let header =
                        sealer.header_bytes(tenant, profile, generation, &object_id, created_at);
                    let path = spool.0.clone();
                    let old_len = std::mem::replace(&mut header_len, header.len());
                    blocking(move || rewrite_header(&path, old_len, &header)).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        progress.finish();
        let object_size = std::fs::metadata(&spool.0).map_err(io_at(&spool.0))?.len();
        drop(spool);

        // A KMS wrap binds the generation: re-wrap when a concurrent save took the first number.
        let wrapped = if generation == first_generation {
            first_wrap
        } else {
            let ctx = WrapContext {
                tenant,
                profile,
                generation,
                object_id: &object_id,
            };
            self.keys
                .wrap(&master, &dek, &ctx)
                .await
                .inspect_err(|e| {
                    tracing::warn!(tenant, profile, generation, error = %e, "re-wrapping the data key for the new generation number failed; the uploaded payload has no record and goes with retention");
                })?
        };
        drop(dek);
        let key_id = wrapped.key_id.clone();
        let record = GenerationRecord {
            format: if wrapped.kms_key_arn.is_some() {
                RECORD_FORMAT_KMS
            } else {
                RECORD_FORMAT
            },
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: object_id.clone(),
            created_at,
            key_id: key_id.clone(),
            wrapped_key: base64::engine::general_purpose::STANDARD.encode(&wrapped.blob),
            kms_key_arn: wrapped.kms_key_arn,
            object_size,
            base: head.as_ref().map(|h| h.0.generation),
            stats: stats.clone(),
        };
        let rec_bytes = serde_json::to_vec_pretty(&record).expect("record serializes");
        let rkey = record_key(tenant, profile, generation);
        match self
            .store
            .put(&rkey, PutBody::Bytes(rec_bytes.into()), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(store::Error::AlreadyExists { .. })
                if self.record_object_id(&rkey).await.as_deref() == Some(object_id.as_str()) => {}
            Err(e) => return Err(e.into()),
        }

        // Move the head.
        let current = head.as_ref().map(|h| h.0.generation);
        if let Base::Expect(expected) = base {
            if expected != current {
                return Err(Error::Conflict {
                    profile: profile.into(),
                    kept: generation,
                    head: current,
                });
            }
        }
        let new_head = Head {
            format: HEAD_FORMAT,
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: object_id.clone(),
            updated_at: now(),
        };
        let mode = match &head {
            None => PutMode::Create,
            Some((_, etag)) => PutMode::Update(etag.clone()),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&new_head).expect("head serializes"));
        match self
            .store
            .put(&head_key(tenant, profile), PutBody::Bytes(body), mode)
            .await
        {
            Ok(_) => {}
            Err(store::Error::Precondition { .. } | store::Error::AlreadyExists { .. }) => {
                let now = self.head(tenant, profile).await.ok().flatten().map(|h| h.0);
                // Our own earlier attempt may have moved the head before its answer was lost.
                if now.as_ref().is_some_and(|h| h.object_id == object_id) {
                    tracing::info!(
                        tenant,
                        profile,
                        generation,
                        "head already moved by a retried write"
                    );
                } else {
                    return Err(Error::Conflict {
                        profile: profile.into(),
                        kept: generation,
                        head: now.map(|h| h.generation),
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        let pruned = match self.prune(tenant, profile, generation).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant, profile, error = %e, "retention pruning failed; it will be retried on the next save");
                Vec::new()
            }
        };
        tracing::info!(
            tenant,
            profile,
            generation,
            files = stats.files,
            bytes_in = stats.bytes_in,
            bytes_stored = object_size,
            "profile saved"
        );
        Ok(SaveReport {
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id,
            files: stats.files,
            bytes_in: stats.bytes_in,
            bytes_stored: object_size,
            key_id,
            stats,
            pruned,
        })
    }

    /// Keeps the newest `keep` generations and the head; removes older ones (record first).
    async fn prune(&self, tenant: &str, profile: &str, head: u64) -> Result<Vec<u64>> {
        let (payloads, records) = self.generation_numbers(tenant, profile).await?;
        let all = merged(&payloads, &records);
        let keep = self.opts.keep.max(1);
        let cutoff = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for &g in &all[..cutoff] {
            if g == head {
                continue;
            }
            self.store.delete(&record_key(tenant, profile, g)).await?;
            self.store.delete(&payload_key(tenant, profile, g)).await?;
            removed.push(g);
        }
        Ok(removed)
    }

    /// The object id in a payload's header (unauthenticated; only used to recognise our own
    /// earlier write after an ambiguous retry).
    async fn payload_object_id(&self, key: &str) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let got = self.store.get(key).await.ok()?;
        let mut buf = Vec::new();
        got.body
            .take((format::PREFIX_LEN + format::MAX_HEADER_LEN as usize) as u64)
            .read_to_end(&mut buf)
            .await
            .ok()?;
        let len = u32::from_be_bytes(buf.get(12..16)?.try_into().ok()?) as usize;
        let json = buf.get(format::PREFIX_LEN..format::PREFIX_LEN + len)?;
        let h: format::Header = serde_json::from_slice(json).ok()?;
        Some(h.object_id)
    }

    /// The object id a generation record names.
    async fn record_object_id(&self, key: &str) -> Option<String> {
        let bytes = self.store.get(key).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice::<GenerationRecord>(&bytes)
            .ok()
            .map(|r| r.object_id)
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
        if let Some((h, _)) = self.head(tenant, id).await? {
            return Ok(Some((id.to_string(), Some(h.generation))));
        }
        let key = alias_key(tenant, id);
        let profile = match self.store.get(&key).await {
            Ok(g) => String::from_utf8_lossy(&g.bytes().await?)
                .trim()
                .to_string(),
            Err(store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        validate_id("profile", &profile)?;
        Ok(self
            .head(tenant, &profile)
            .await?
            .map(|(h, _)| (profile, Some(h.generation))))
    }

    /// Records that session `alias` continued `profile`, so loading by `alias` finds it.
    ///
    /// # Errors
    /// Invalid ids and storage errors.
    pub async fn write_alias(&self, tenant: &str, alias: &str, profile: &str) -> Result<()> {
        validate_id("tenant", tenant)?;
        validate_id("profile", alias)?;
        validate_id("profile", profile)?;
        self.store
            .put(
                &alias_key(tenant, alias),
                PutBody::Bytes(Bytes::from(profile.to_string())),
                PutMode::Overwrite,
            )
            .await?;
        Ok(())
    }

    /// Reads and checks a generation record, and unwraps its data key.
    async fn open_record(
        &self,
        tenant: &str,
        profile: &str,
        generation: u64,
    ) -> Result<(GenerationRecord, DataKey)> {
        let rec = self.read_record(tenant, profile, generation).await?;
        let dek = self.unwrap_record(&rec).await?;
        Ok((rec, dek))
    }

    /// Reads a generation record and checks its format and place (not its key).
    async fn read_record(
        &self,
        tenant: &str,
        profile: &str,
        generation: u64,
    ) -> Result<GenerationRecord> {
        let key = record_key(tenant, profile, generation);
        let bytes = match self.store.get(&key).await {
            Ok(g) => g.bytes().await?,
            Err(store::Error::NotFound { .. }) => {
                return Err(Error::GenerationNotFound {
                    profile: profile.into(),
                    generation,
                })
            }
            Err(e) => return Err(e.into()),
        };
        let rec: GenerationRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        match (rec.format, &rec.kms_key_arn) {
            (RECORD_FORMAT, None) | (RECORD_FORMAT_KMS, Some(_)) => {}
            (RECORD_FORMAT | RECORD_FORMAT_KMS, _) => {
                return Err(Error::BadRecord {
                    key,
                    reason: format!(
                        "record format {} {} kms_key_arn",
                        rec.format,
                        if rec.kms_key_arn.is_some() {
                            "must not have"
                        } else {
                            "needs"
                        }
                    ),
                })
            }
            (f, _) => {
                return Err(Error::BadRecord {
                    key,
                    reason: format!("record format {f} is not supported"),
                })
            }
        }
        if rec.tenant != tenant || rec.profile != profile || rec.generation != generation {
            return Err(Error::BadRecord {
                key,
                reason: format!(
                    "names tenant {:?} profile {:?} generation {} (copied from elsewhere?)",
                    rec.tenant, rec.profile, rec.generation
                ),
            });
        }
        Ok(rec)
    }

    /// Unwraps the data key of a record read by [`Vault::read_record`].
    async fn unwrap_record(&self, rec: &GenerationRecord) -> Result<DataKey> {
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&rec.wrapped_key)
            .map_err(|_| Error::BadRecord {
                key: record_key(&rec.tenant, &rec.profile, rec.generation),
                reason: "wrapped_key is not base64".into(),
            })?;
        let ctx = WrapContext {
            tenant: &rec.tenant,
            profile: &rec.profile,
            generation: rec.generation,
            object_id: &rec.object_id,
        };
        let w = Wrapped {
            key_id: rec.key_id.clone(),
            blob: wrapped,
            kms_key_arn: rec.kms_key_arn.clone(),
        };
        Ok(self.keys.unwrap(&w, &ctx).await?)
    }

    async fn resolve(&self, tenant: &str, profile: &str, generation: Option<u64>) -> Result<u64> {
        validate_id("tenant", tenant)?;
        validate_id("profile", profile)?;
        match generation {
            Some(g) => Ok(g),
            None => match self.head(tenant, profile).await? {
                Some((h, _)) => Ok(h.generation),
                None => Err(Error::ProfileNotFound {
                    tenant: tenant.into(),
                    profile: profile.into(),
                }),
            },
        }
    }

    /// Makes a generation's payload available as a local file and authenticates all of it.
    ///
    /// On a local store the stored file itself is read; otherwise the (encrypted) object is
    /// downloaded into a private temporary file first. Then every chunk is verified, before
    /// anything is extracted; extraction reads the plaintext through [`stream::RandomAccess`],
    /// which authenticates each chunk again. No plaintext copy is ever written.
    async fn fetch(
        &self,
        tenant: &str,
        profile: &str,
        generation: u64,
        progress: Arc<dyn Progress>,
    ) -> Result<(GenerationRecord, stream::RandomAccess, Option<TempFile>)> {
        let (rec, dek) = self.open_record(tenant, profile, generation).await?;
        let key = payload_key(tenant, profile, generation);
        let not_found = || Error::GenerationNotFound {
            profile: profile.into(),
            generation,
        };
        let (file, temp) = match self.store.local_path(&key) {
            Some(path) => match std::fs::File::open(&path) {
                Ok(f) => (f, None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) => return Err(Error::Io { path, source: e }),
            },
            None => {
                let got = match self.store.get(&key).await {
                    Ok(g) => g,
                    Err(store::Error::NotFound { .. }) => return Err(not_found()),
                    Err(e) => return Err(e.into()),
                };
                let temp = TempFile(self.spool_file("download"));
                progress.start("downloading", got.meta.size);
                // A body cut mid-way is retried from the start a few times.
                let mut got = Some(got);
                let mut attempt = 0u32;
                loop {
                    let g = match got.take() {
                        Some(g) => g,
                        None => self.store.get(&key).await?,
                    };
                    let _ = std::fs::remove_file(&temp.0);
                    match download(g, &temp.0, progress.as_ref()).await {
                        Ok(()) => break,
                        Err(Error::Store(e)) if e.is_transient() && attempt < 4 => {
                            attempt += 1;
                            tracing::info!(key, attempt, error = %e, "download interrupted; starting it again");
                            tokio::time::sleep(std::time::Duration::from_millis(
                                200 * u64::from(attempt),
                            ))
                            .await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                progress.finish();
                let f = std::fs::File::open(&temp.0).map_err(io_at(&temp.0))?;
                (f, Some(temp))
            }
        };
        let (tenant_s, profile_s, object_id) = (
            tenant.to_string(),
            profile.to_string(),
            rec.object_id.clone(),
        );
        progress.start("verifying", 0);
        let reader = blocking(move || {
            let expected = Expected {
                tenant: &tenant_s,
                profile: &profile_s,
                generation: Some(generation),
                object_id: Some(&object_id),
            };
            let (_, reader) = format::verify_file(Arc::new(file), &dek, &expected)?;
            Ok(reader)
        })
        .await?;
        progress.finish();
        Ok((rec, reader, temp))
    }

    /// Restores a generation (the head when `None`) into `target`, which must be new or empty.
    ///
    /// # Errors
    /// Not found, integrity, hostile-archive, key and storage errors; on any error nothing is
    /// left at `target` or beside it.
    pub async fn restore(
        &self,
        tenant: &str,
        profile: &str,
        generation: Option<u64>,
        target: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let r = self
            .restore_inner(tenant, profile, generation, target, progress)
            .await;
        if r.is_ok() {
            self.touch_last_used(tenant, profile).await;
        }
        let g = r.as_ref().ok().map(|rep| rep.generation).or(generation);
        if !matches!(r, Err(Error::InvalidId { .. })) {
            self.record(crate::audit::Action::Load, tenant, Some(profile), g, &r)
                .await;
        }
        r
    }

    async fn restore_inner(
        &self,
        tenant: &str,
        profile: &str,
        generation: Option<u64>,
        target: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let generation = self.resolve(tenant, profile, generation).await?;
        archive::check_target(target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::create_private_dir(parent).map_err(io_at(parent))?;
        }
        let (rec, reader, temp) = self
            .fetch(tenant, profile, generation, progress.clone())
            .await?;
        let (target_p, limits) = (target.to_path_buf(), self.opts.limits.clone());
        let _slot = self.work_slot().await;
        let unpacked = blocking(move || {
            Ok(archive::unpack_from(
                &|| Ok(reader.clone()),
                &target_p,
                &limits,
                progress.as_ref(),
            )?)
        })
        .await?;
        drop(temp);
        tracing::info!(
            tenant,
            profile,
            generation,
            files = unpacked.files,
            bytes = unpacked.bytes,
            "profile restored"
        );
        Ok(RestoreReport {
            profile: profile.into(),
            generation,
            unpacked,
            chromium_version: rec.stats.chromium_version,
        })
    }

    /// Fully verifies a generation (the head when `None`): record, key, every chunk, and
    /// every archive entry (names, limits, sizes and CRCs), writing nothing.
    ///
    /// # Errors
    /// The first problem found.
    pub async fn verify(
        &self,
        tenant: &str,
        profile: &str,
        generation: Option<u64>,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let generation = self.resolve(tenant, profile, generation).await?;
        let (rec, reader, temp) = self.fetch(tenant, profile, generation, progress).await?;
        let limits = self.opts.limits.clone();
        let unpacked =
            blocking(move || Ok(archive::check_from(&|| Ok(reader.clone()), &limits)?)).await?;
        drop(temp);
        Ok(RestoreReport {
            profile: profile.into(),
            generation,
            unpacked,
            chromium_version: rec.stats.chromium_version,
        })
    }

    /// Every generation of a profile, oldest first.
    ///
    /// # Errors
    /// Storage errors; [`Error::ProfileNotFound`] when nothing exists.
    pub async fn versions(&self, tenant: &str, profile: &str) -> Result<Vec<GenerationInfo>> {
        let head = self.head(tenant, profile).await?.map(|h| h.0.generation);
        let (payloads, records) = self.generation_numbers(tenant, profile).await?;
        let all = merged(&payloads, &records);
        if all.is_empty() && head.is_none() {
            return Err(Error::ProfileNotFound {
                tenant: tenant.into(),
                profile: profile.into(),
            });
        }
        let mut out = Vec::with_capacity(all.len());
        for g in all {
            let record = if records.contains(&g) {
                let key = record_key(tenant, profile, g);
                match self.store.get(&key).await {
                    Ok(r) => serde_json::from_slice(&r.bytes().await?).ok(),
                    Err(store::Error::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                None
            };
            out.push(GenerationInfo {
                generation: g,
                head: Some(g) == head,
                record,
                payload: payloads.contains(&g),
            });
        }
        Ok(out)
    }

    /// Profiles of a tenant that have a head.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, tenant: &str) -> Result<Vec<ProfileSummary>> {
        validate_id("tenant", tenant)?;
        let p = format!("tenants/{tenant}/profiles/");
        let mut out = Vec::new();
        for m in self.store.list(&p).await? {
            let rest = &m.key[p.len()..];
            if let Some(profile) = rest.strip_suffix("/head.json") {
                if let Ok(Some((h, _))) = self.head(tenant, profile).await {
                    out.push(ProfileSummary {
                        profile: profile.into(),
                        generation: h.generation,
                        updated_at: h.updated_at,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Tenants that have any object.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for m in self.store.list("tenants/").await? {
            if let Some(t) = m.key["tenants/".len()..].split('/').next() {
                if out.last().map(String::as_str) != Some(t) {
                    out.push(t.to_string());
                }
            }
        }
        out.dedup();
        Ok(out)
    }

    /// Moves the head to an earlier (or any existing) generation after verifying its record and key.
    ///
    /// # Errors
    /// Not found, key, storage errors; [`Error::Conflict`] when the head moved meanwhile.
    pub async fn rollback(&self, tenant: &str, profile: &str, to: u64) -> Result<Head> {
        let r = self.rollback_inner(tenant, profile, to).await;
        if !matches!(r, Err(Error::InvalidId { .. })) {
            self.record(
                crate::audit::Action::Rollback,
                tenant,
                Some(profile),
                Some(to),
                &r,
            )
            .await;
        }
        r
    }

    async fn rollback_inner(&self, tenant: &str, profile: &str, to: u64) -> Result<Head> {
        let Some((head, etag)) = self.head(tenant, profile).await? else {
            return Err(Error::ProfileNotFound {
                tenant: tenant.into(),
                profile: profile.into(),
            });
        };
        let (rec, _) = self.open_record(tenant, profile, to).await?;
        self.store
            .head(&payload_key(tenant, profile, to))
            .await
            .map_err(|e| match e {
                store::Error::NotFound { .. } => Error::GenerationNotFound {
                    profile: profile.into(),
                    generation: to,
                },
                e => e.into(),
            })?;
        let new_head = Head {
            generation: to,
            object_id: rec.object_id,
            updated_at: now(),
            ..head
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&new_head).expect("head serializes"));
        match self
            .store
            .put(
                &head_key(tenant, profile),
                PutBody::Bytes(body),
                PutMode::Update(etag),
            )
            .await
        {
            Ok(_) => Ok(new_head),
            Err(store::Error::Precondition { .. }) => Err(Error::Conflict {
                profile: profile.into(),
                kept: to,
                head: None,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object of a profile (head first, so nothing loads it meanwhile).
    ///
    /// # Errors
    /// Not found, storage errors.
    pub async fn delete(&self, tenant: &str, profile: &str) -> Result<usize> {
        validate_id("tenant", tenant)?;
        validate_id("profile", profile)?;
        let r = self.delete_inner(tenant, profile).await;
        self.record(
            crate::audit::Action::Delete,
            tenant,
            Some(profile),
            None,
            &r,
        )
        .await;
        r
    }

    async fn delete_inner(&self, tenant: &str, profile: &str) -> Result<usize> {
        let objects = self.store.list(&prefix(tenant, profile)).await?;
        if objects.is_empty() {
            return Err(Error::ProfileNotFound {
                tenant: tenant.into(),
                profile: profile.into(),
            });
        }
        self.store.delete(&head_key(tenant, profile)).await?;
        for m in &objects {
            self.store.delete(&m.key).await?;
        }
        tracing::info!(tenant, profile, objects = objects.len(), "profile deleted");
        Ok(objects.len())
    }

    /// Re-wraps every data key of `tenant` not yet under `to` with the master key `to`.
    /// Payloads are not touched. Returns (rewrapped, already under `to`).
    ///
    /// # Errors
    /// Unknown keys, storage errors, or a record whose key cannot be unwrapped.
    pub async fn rekey(&self, tenant: &str, to: &str, dry_run: bool) -> Result<(u64, u64)> {
        let r = self.rekey_inner(tenant, to, dry_run).await;
        if !dry_run {
            self.record(crate::audit::Action::Rekey, tenant, None, None, &r)
                .await;
        }
        r
    }

    async fn rekey_inner(&self, tenant: &str, to: &str, dry_run: bool) -> Result<(u64, u64)> {
        // For a KMS key, the key its alias names now: records still under an older key
        // behind the same alias are moved too (before that key is deleted).
        let target_arn = self.keys.current_arn(to).await?;
        let (mut rewrapped, mut already) = (0, 0);
        for p in self.list(tenant).await? {
            let (_, records) = self.generation_numbers(tenant, &p.profile).await?;
            for g in records {
                let key = record_key(tenant, &p.profile, g);
                let meta = self.store.head(&key).await?;
                let mut rec = self.read_record(tenant, &p.profile, g).await?;
                if rec.key_id == to && rec.kms_key_arn == target_arn {
                    already += 1;
                    continue;
                }
                // Also on a dry run: shows that every record can still be unwrapped.
                let dek = self.unwrap_record(&rec).await?;
                if !dry_run {
                    let ctx = WrapContext {
                        tenant,
                        profile: &p.profile,
                        generation: g,
                        object_id: &rec.object_id,
                    };
                    let w = self.keys.wrap(to, &dek, &ctx).await?;
                    rec.format = if w.kms_key_arn.is_some() {
                        RECORD_FORMAT_KMS
                    } else {
                        RECORD_FORMAT
                    };
                    rec.key_id = w.key_id;
                    rec.wrapped_key = base64::engine::general_purpose::STANDARD.encode(&w.blob);
                    rec.kms_key_arn = w.kms_key_arn;
                    let body =
                        Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes"));
                    self.store
                        .put(&key, PutBody::Bytes(body), PutMode::Update(meta.etag))
                        .await?;
                }
                rewrapped += 1;
            }
        }
        Ok((rewrapped, already))
    }
}

/// Replaces the header of a spool file (same body) after a generation number changed.
fn rewrite_header(path: &Path, old_len: usize, header: &[u8]) -> Result<()> {
    let tmp = path.with_extension("rehead");
    let res = (|| {
        let mut src = std::fs::File::open(path)?;
        src.seek(std::io::SeekFrom::Start(old_len as u64))?;
        let mut dst = fsutil::create_private_new(&tmp)?;
        dst.write_all(header)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io_at(path))
}

/// Streams an object into a new private file.
async fn download(got: store::GetResult, path: &Path, progress: &dyn Progress) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = got.meta.key.clone();
    let mut body = got.body;
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io_at(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).await.map_err(|e| {
            Error::Store(store::Error::Unavailable {
                op: "get",
                key: key.clone(),
                message: e.to_string(),
            })
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await.map_err(io_at(path))?;
        progress.advance(n as u64);
    }
    out.flush().await.map_err(io_at(path))?;
    Ok(())
}

/// A profile lease: which node's session may save a profile now. Held in the store with
/// conditional writes, renewed while the session lives, and free once it expires (its node
/// died) or is released.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    /// Node id of the holder (`<data_dir>/node-id`).
    pub node: String,
    /// Session id of the holder.
    pub session: String,
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: u64,
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Lease {
    tenant: String,
    profile: String,
    record: LeaseRecord,
    etag: String,
}

fn lease_key(tenant: &str, profile: &str) -> String {
    format!("{}lease.json", prefix(tenant, profile))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Vault {
    /// Takes the lease of a profile for `node`/`session` for `ttl`. Returns `Ok(None)` when a
    /// live lease of another holder exists (the profile is in use elsewhere).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn acquire_lease(
        &self,
        tenant: &str,
        profile: &str,
        node: &str,
        session: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>> {
        validate_id("tenant", tenant)?;
        validate_id("profile", profile)?;
        let key = lease_key(tenant, profile);
        let mode = match self.store.get(&key).await {
            Ok(g) => {
                let etag = g.meta.etag.clone();
                let current: Option<LeaseRecord> = serde_json::from_slice(&g.bytes().await?).ok();
                match current {
                    Some(c)
                        if c.expires_at_ms > now_ms()
                            && !(c.node == node && c.session == session) =>
                    {
                        return Ok(None)
                    }
                    _ => PutMode::Update(etag),
                }
            }
            Err(store::Error::NotFound { .. }) => PutMode::Create,
            Err(e) => return Err(e.into()),
        };
        let record = LeaseRecord {
            node: node.into(),
            session: session.into(),
            expires_at_ms: now_ms() + ttl.as_millis() as u64,
        };
        let body = Bytes::from(serde_json::to_vec(&record).expect("lease serializes"));
        match self.store.put(&key, PutBody::Bytes(body), mode).await {
            Ok(etag) => Ok(Some(Lease {
                tenant: tenant.into(),
                profile: profile.into(),
                record,
                etag,
            })),
            Err(store::Error::AlreadyExists { .. } | store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Extends a held lease. Returns `false` when it was lost (taken over after expiring).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn renew_lease(&self, lease: &mut Lease, ttl: std::time::Duration) -> Result<bool> {
        let mut record = lease.record.clone();
        record.expires_at_ms = now_ms() + ttl.as_millis() as u64;
        let body = Bytes::from(serde_json::to_vec(&record).expect("lease serializes"));
        match self
            .store
            .put(
                &lease_key(&lease.tenant, &lease.profile),
                PutBody::Bytes(body),
                PutMode::Update(lease.etag.clone()),
            )
            .await
        {
            Ok(etag) => {
                lease.etag = etag;
                lease.record = record;
                Ok(true)
            }
            Err(store::Error::Precondition { .. } | store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives a lease up (if it is still ours).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let key = lease_key(&lease.tenant, &lease.profile);
        if let Ok(g) = self.store.get(&key).await {
            let current: Option<LeaseRecord> = serde_json::from_slice(&g.bytes().await?).ok();
            if current
                .is_some_and(|c| c.node == lease.record.node && c.session == lease.record.session)
            {
                self.store.delete(&key).await?;
            }
        }
        Ok(())
    }
}

fn last_used_key(tenant: &str, profile: &str) -> String {
    format!("{}last_used", prefix(tenant, profile))
}

impl Vault {
    /// Records that a profile was just used (loaded), for retention.
    async fn touch_last_used(&self, tenant: &str, profile: &str) {
        let body = Bytes::from(now_ms().to_string());
        if let Err(e) = self
            .store
            .put(
                &last_used_key(tenant, profile),
                PutBody::Bytes(body),
                PutMode::Overwrite,
            )
            .await
        {
            tracing::warn!(tenant, profile, error = %e, "could not record the profile's last use");
        }
    }

    /// When a profile was last loaded or saved, Unix milliseconds.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn last_used_ms(&self, tenant: &str, profile: &str) -> Result<Option<u64>> {
        let saved = self
            .head(tenant, profile)
            .await?
            .map(|(h, _)| h.updated_at * 1000);
        let loaded = match self.store.get(&last_used_key(tenant, profile)).await {
            Ok(g) => String::from_utf8_lossy(&g.bytes().await?)
                .trim()
                .parse::<u64>()
                .ok(),
            Err(store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(saved.max(loaded))
    }

    /// Retention: deletes the tenant's profiles not loaded or saved for `max_idle`.
    /// Returns the profiles deleted (or that would be, with `dry_run`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn gc(
        &self,
        tenant: &str,
        max_idle: std::time::Duration,
        dry_run: bool,
        in_use: &[String],
    ) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(max_idle.as_millis() as u64);
        let mut out = Vec::new();
        for p in self.list(tenant).await? {
            if in_use.contains(&p.profile) {
                continue;
            }
            let Some(last) = self.last_used_ms(tenant, &p.profile).await? else {
                continue;
            };
            if last < cutoff {
                if !dry_run {
                    self.delete(tenant, &p.profile).await?;
                }
                out.push(p.profile);
            }
        }
        Ok(out)
    }
}
