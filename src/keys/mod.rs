//! Master keys (key-encryption keys): where they come from, their ids, and the keyring
//! that wraps and unwraps data keys with them.
//!
//! Two sources, one id space:
//! - local keys ([`local`]): key files `<keys_dir>/<id>.key` (base64 of 32 bytes, refused
//!   when group/other can read them), `PV_MASTER_KEYS` (`id:base64,id2:base64`), and, on the
//!   embedded default only, a dev key generated into the keys dir with a warning;
//! - KMS keys ([`kms`]): `[keys.kms] <id> = "<KMS key id, ARN or alias>"` /
//!   `PV_KMS_KEYS` (`id=alias/x,id2=arn:...`).
//!
//! The active key (used for new saves) is `keys.active` / `PV_ACTIVE_KEY`, else the id in
//! `<keys_dir>/ACTIVE`, else the only key there is; `[keys.tenants] <tenant> = "<id>"` /
//! `PV_TENANT_KEYS` gives tenants their own. A local wrap is record format 1, a KMS wrap
//! record format 2 (see `docs/FORMAT.md`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::crypt::{self, envelope, DataKey, KEY_LEN};

#[cfg(feature = "kms")]
pub mod kms;
pub mod local;
mod probe;

pub use local::{generate_key_file, read_secret_file, MasterKey};

/// Why a KMS call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsFailure {
    /// KMS could not be reached or is overloaded (retry later).
    Unavailable,
    /// KMS refused the ciphertext: the wrapped key, its context (tenant, profile,
    /// generation, object) or its key were changed.
    Rejected,
    /// KMS refused the request: access denied, key disabled or missing, bad configuration.
    Refused,
}

impl std::fmt::Display for KmsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KmsFailure::Unavailable => "unavailable",
            KmsFailure::Rejected => {
                "ciphertext rejected: wrapped key, its context or its key was changed"
            }
            KmsFailure::Refused => "refused",
        })
    }
}

/// Errors about master keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key with this id is loaded.
    #[error("unknown master key '{0}': add its key file to the keys directory, PV_MASTER_KEYS, or [keys.kms] / PV_KMS_KEYS")]
    UnknownKey(String),
    /// No key at all, and no dev key allowed.
    #[error("no master key configured: run `profile-vault keygen`, set PV_MASTER_KEYS, or configure a KMS key ([keys.kms] / PV_KMS_KEYS)")]
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
    /// A record's wrap does not fit the key it names (a local key with a KMS wrap, or back).
    #[error("master key '{key}' is a {held} key, but the record was wrapped by a {wrapped} key")]
    SourceMismatch {
        /// Key id.
        key: String,
        /// What the keyring holds under that id.
        held: &'static str,
        /// What the record says.
        wrapped: &'static str,
    },
    /// KMS configuration problems (no region, built without KMS support).
    #[error("KMS: {0}")]
    KmsConfig(String),
    /// A KMS call failed.
    #[error("KMS {op} with master key '{key}' failed ({kind}): {message}")]
    Kms {
        /// Key id in the keyring.
        key: String,
        /// The KMS operation.
        op: &'static str,
        /// Why.
        kind: KmsFailure,
        /// What the SDK said (never key material).
        message: String,
    },
}

impl Error {
    /// Whether retrying later may succeed (KMS unreachable or throttling).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Kms {
                kind: KmsFailure::Unavailable,
                ..
            }
        )
    }

    /// Whether the cause is a changed or misplaced wrapped key (or a wrong key).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Error::Crypt(_)
                | Error::SourceMismatch { .. }
                | Error::Kms {
                    kind: KmsFailure::Rejected,
                    ..
                }
        )
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

/// What a wrapped data key is bound to. Changing any field makes unwrapping fail (a local
/// wrap binds tenant, profile and object id; a KMS wrap all four).
#[derive(Debug, Clone, Copy)]
pub struct WrapContext<'a> {
    /// Tenant that owns the profile.
    pub tenant: &'a str,
    /// Profile id.
    pub profile: &'a str,
    /// Generation number.
    pub generation: u64,
    /// Object id (uuid) of the generation payload.
    pub object_id: &'a str,
}

impl<'a> WrapContext<'a> {
    fn envelope(&self) -> envelope::WrapContext<'a> {
        envelope::WrapContext {
            tenant: self.tenant,
            profile: self.profile,
            object_id: self.object_id,
        }
    }
}

/// A wrapped data key and what unwraps it.
#[derive(Debug, Clone)]
pub struct Wrapped {
    /// Keyring id of the master key.
    pub key_id: String,
    /// The wrapped key (local: 60 bytes; KMS: its ciphertext blob).
    pub blob: Vec<u8>,
    /// For a KMS wrap, the ARN of the KMS key that wrapped it.
    pub kms_key_arn: Option<String>,
}

/// What a keyring entry is.
#[derive(Debug)]
enum Entry {
    Local(MasterKey),
    #[cfg(feature = "kms")]
    Kms(kms::KmsKey),
}

impl Entry {
    fn source(&self) -> &'static str {
        match self {
            Entry::Local(_) => "local",
            #[cfg(feature = "kms")]
            Entry::Kms(_) => "kms",
        }
    }
}

/// One key as `profile-vault keys` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Keyring id.
    pub id: String,
    /// `local` or `kms`.
    pub source: &'static str,
    /// For KMS keys, the KMS key as configured.
    pub kms_key: Option<String>,
    /// Whether new saves use it by default.
    pub active: bool,
    /// Tenants whose saves use it.
    pub tenants: Vec<String>,
}

/// All loaded master keys and which one new saves use.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<String, Entry>,
    active: String,
    tenants: BTreeMap<String, String>,
    /// When [`Keyring::probe`] last ran and whether it succeeded ([`Keyring::ready`]).
    probed: tokio::sync::Mutex<Option<(std::time::Instant, bool)>>,
}

/// Where to load keys from.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// Directory of `<id>.key` files.
    pub dir: PathBuf,
    /// `id:base64,...` list (from `PV_MASTER_KEYS`).
    pub inline: Option<String>,
    /// KMS keys: keyring id -> KMS key id, ARN or alias.
    pub kms: BTreeMap<String, String>,
    /// KMS endpoint override (else the AWS chain's).
    pub kms_endpoint: Option<String>,
    /// Master key per tenant (keyring ids); others use `active`.
    pub tenants: BTreeMap<String, String>,
    /// Explicit active key id.
    pub active: Option<String>,
    /// Generate a dev key when none exists (embedded default only).
    pub allow_dev_key: bool,
}

/// Key files skipped at load because they could not be used (see [`Keyring::load`]).
pub static SKIPPED_KEY_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Keyring {
    /// Loads every key from the sources (KMS keys are not contacted: see [`Keyring::probe`]).
    ///
    /// # Errors
    /// Insecure or malformed key files, no keys, an id defined twice, KMS keys in a build
    /// without KMS support, or an active/tenant key that is not loaded.
    pub async fn load(src: &KeySources) -> Result<Self, Error> {
        let mut keys = BTreeMap::new();
        // A key file that cannot be used is skipped (logged, counted) unless it is a key the
        // configuration names, or no usable key is left: a file dropped into the keys
        // directory must not stop the daemon.
        let named: Vec<String> = src
            .active
            .iter()
            .cloned()
            .chain(
                std::fs::read_to_string(src.dir.join("ACTIVE"))
                    .ok()
                    .map(|s| s.trim().to_string()),
            )
            .chain(src.tenants.values().cloned())
            .collect();
        let mut first_bad = None;
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
                match read_secret_file(&path).and_then(|text| MasterKey::parse(&id, &text)) {
                    Ok(k) => {
                        keys.insert(id.clone(), Entry::Local(k));
                    }
                    Err(e) if named.contains(&id) => return Err(e),
                    Err(e) => {
                        SKIPPED_KEY_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(path = %path.display(), error = %e, "key file skipped: not usable, and no configured key");
                        first_bad.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(inline) = &src.inline {
            for item in inline.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (id, b64) = item.split_once(':').ok_or_else(|| Error::Invalid {
                    id: "PV_MASTER_KEYS".into(),
                    reason: "expected id:base64 entries".into(),
                })?;
                keys.insert(id.to_string(), Entry::Local(MasterKey::parse(id, b64)?));
            }
        }
        if !src.kms.is_empty() {
            Self::load_kms(src, &mut keys).await?;
        }
        if keys.is_empty() {
            if let Some(e) = first_bad {
                return Err(e);
            }
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
            keys.insert(id, Entry::Local(key));
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
        for key in src.tenants.values() {
            if !keys.contains_key(key) {
                return Err(Error::UnknownKey(key.clone()));
            }
        }
        Ok(Keyring {
            keys,
            active,
            tenants: src.tenants.clone(),
            probed: Default::default(),
        })
    }

    #[cfg(feature = "kms")]
    async fn load_kms(src: &KeySources, keys: &mut BTreeMap<String, Entry>) -> Result<(), Error> {
        let client = kms::client(src.kms_endpoint.as_deref()).await?;
        for (id, key) in &src.kms {
            validate_id(id)?;
            if key.trim().is_empty() {
                return Err(Error::Invalid {
                    id: id.clone(),
                    reason: "empty KMS key id".into(),
                });
            }
            if keys.contains_key(id) {
                return Err(Error::Invalid {
                    id: id.clone(),
                    reason: "defined both as a local key and as a KMS key".into(),
                });
            }
            keys.insert(
                id.clone(),
                Entry::Kms(kms::KmsKey::new(id, key.trim(), client.clone())),
            );
        }
        Ok(())
    }

    #[cfg(not(feature = "kms"))]
    async fn load_kms(_: &KeySources, _: &mut BTreeMap<String, Entry>) -> Result<(), Error> {
        Err(Error::KmsConfig(
            "KMS keys are configured but this build has no KMS support (feature `kms`)".into(),
        ))
    }

    /// A keyring holding exactly these local keys (tests and benchmarks).
    ///
    /// # Errors
    /// Bad ids, or `active` not among them.
    pub fn from_keys(keys: Vec<(String, [u8; KEY_LEN])>, active: &str) -> Result<Self, Error> {
        let mut map = BTreeMap::new();
        for (id, bytes) in keys {
            map.insert(id.clone(), Entry::Local(MasterKey::new(&id, bytes)?));
        }
        if !map.contains_key(active) {
            return Err(Error::UnknownKey(active.into()));
        }
        Ok(Keyring {
            keys: map,
            active: active.into(),
            tenants: BTreeMap::new(),
            probed: Default::default(),
        })
    }

    /// Adds a KMS key (tests and embedding; the daemon and CLI load them from config).
    ///
    /// # Errors
    /// A bad id or one already loaded.
    #[cfg(feature = "kms")]
    pub fn with_kms_key(mut self, key: kms::KmsKey) -> Result<Self, Error> {
        validate_id(key.id())?;
        if self.keys.contains_key(key.id()) {
            return Err(Error::Invalid {
                id: key.id().into(),
                reason: "already loaded".into(),
            });
        }
        self.keys.insert(key.id().to_string(), Entry::Kms(key));
        Ok(self)
    }

    /// Makes `tenant`'s new saves use the loaded key `id`.
    ///
    /// # Errors
    /// [`Error::UnknownKey`].
    pub fn with_tenant_key(mut self, tenant: &str, id: &str) -> Result<Self, Error> {
        self.entry(id)?;
        self.tenants.insert(tenant.into(), id.into());
        Ok(self)
    }

    /// The id new saves wrap their data keys with by default.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// The id new saves of `tenant` wrap their data keys with.
    pub fn active_for(&self, tenant: &str) -> &str {
        self.tenants
            .get(tenant)
            .map_or(&self.active, String::as_str)
    }

    /// Ids of all loaded keys.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Whether a key id is loaded.
    pub fn contains(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    /// Every key with its source, for listings.
    pub fn infos(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|(id, e)| KeyInfo {
                id: id.clone(),
                source: e.source(),
                kms_key: match e {
                    Entry::Local(_) => None,
                    #[cfg(feature = "kms")]
                    Entry::Kms(k) => Some(k.kms_key().to_string()),
                },
                active: *id == self.active,
                tenants: self
                    .tenants
                    .iter()
                    .filter(|(_, k)| *k == id)
                    .map(|(t, _)| t.clone())
                    .collect(),
            })
            .collect()
    }

    fn entry(&self, id: &str) -> Result<&Entry, Error> {
        self.keys
            .get(id)
            .ok_or_else(|| Error::UnknownKey(id.into()))
    }

    /// A new data key for a save, wrapped by `key_id` for `ctx` (KMS: `GenerateDataKey`).
    ///
    /// # Errors
    /// [`Error::UnknownKey`], [`Error::Kms`].
    pub async fn new_data_key(
        &self,
        key_id: &str,
        ctx: &WrapContext<'_>,
    ) -> Result<(DataKey, Wrapped), Error> {
        match self.entry(key_id)? {
            Entry::Local(k) => {
                let dek = DataKey::generate();
                let blob = k.wrap(&dek, ctx);
                Ok((
                    dek,
                    Wrapped {
                        key_id: k.id().into(),
                        blob,
                        kms_key_arn: None,
                    },
                ))
            }
            #[cfg(feature = "kms")]
            Entry::Kms(k) => k.generate(ctx).await,
        }
    }

    /// Wraps an existing data key with `key_id` for `ctx` (KMS: `Encrypt`).
    ///
    /// # Errors
    /// [`Error::UnknownKey`], [`Error::Kms`].
    pub async fn wrap(
        &self,
        key_id: &str,
        dek: &DataKey,
        ctx: &WrapContext<'_>,
    ) -> Result<Wrapped, Error> {
        match self.entry(key_id)? {
            Entry::Local(k) => Ok(Wrapped {
                key_id: k.id().into(),
                blob: k.wrap(dek, ctx),
                kms_key_arn: None,
            }),
            #[cfg(feature = "kms")]
            Entry::Kms(k) => k.wrap(dek, ctx).await,
        }
    }

    /// Unwraps a data key (KMS: `Decrypt` naming the recorded key ARN).
    ///
    /// # Errors
    /// [`Error::UnknownKey`] when that key is not loaded; [`Error::SourceMismatch`];
    /// [`crypt::Error::UnwrapFailed`] or [`KmsFailure::Rejected`] when it is the wrong key or
    /// the wrap or its context was changed.
    pub async fn unwrap(&self, w: &Wrapped, ctx: &WrapContext<'_>) -> Result<DataKey, Error> {
        let entry = self.entry(&w.key_id)?;
        match (entry, w.kms_key_arn.as_deref()) {
            (Entry::Local(k), None) => k.unwrap(&w.blob, ctx),
            #[cfg(feature = "kms")]
            (Entry::Kms(k), Some(arn)) => k.unwrap(&w.blob, arn, ctx).await,
            (e, arn) => Err(Error::SourceMismatch {
                key: w.key_id.clone(),
                held: e.source(),
                wrapped: if arn.is_some() { "kms" } else { "local" },
            }),
        }
    }

    /// The KMS key ARN that `id` names now (`DescribeKey`); `None` for a local key.
    ///
    /// # Errors
    /// [`Error::UnknownKey`], [`Error::Kms`].
    pub async fn current_arn(&self, id: &str) -> Result<Option<String>, Error> {
        match self.entry(id)? {
            Entry::Local(_) => Ok(None),
            #[cfg(feature = "kms")]
            Entry::Kms(k) => Ok(Some(k.describe().await?)),
        }
    }
}

#[cfg(test)]
mod tests;
