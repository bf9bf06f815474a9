//! The profile data document: a small JSON document an application keeps with a profile
//! across sessions (`GET|PUT /v0/profiles/{id}/data`, `profile-vault data`).
//!
//! It lives in `tenants/<tenant>/profiles/<profile>/data.json` (`docs/FORMAT.md` §8): a
//! record that holds its own wrapped data key and the document sealed under it, bound to
//! tenant, profile, object id and version. Every write takes a fresh data key and the next
//! version, and is a conditional write on the etag read before it, so two writers never
//! silently overwrite each other. It is deleted with the profile (and by retention, which
//! deletes profiles), re-wrapped by `rekey`, and audited.

use super::*;
use crate::crypt::doc;

/// Version of the data document record.
pub const DATA_FORMAT: u32 = 1;

/// Default largest document, serialized, in bytes.
pub const DEFAULT_DATA_MAX_BYTES: usize = 64 * 1024;

/// The stored record of a data document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DataRecord {
    format: u32,
    tenant: String,
    profile: String,
    version: u64,
    object_id: String,
    updated_at: u64,
    key_id: String,
    wrapped_key: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_string"
    )]
    kms_key_arn: Option<String>,
    sealed: String,
}

impl DataRecord {
    fn aad(&self) -> Vec<u8> {
        doc::aad(&[
            &self.tenant,
            &self.profile,
            &self.object_id,
            &self.version.to_string(),
        ])
    }

    fn ctx(&self) -> WrapContext<'_> {
        // Generation 0 names no generation (they start at 1): a data key's KMS context
        // can never pass for a generation's.
        WrapContext {
            tenant: &self.tenant,
            profile: &self.profile,
            generation: 0,
            object_id: &self.object_id,
        }
    }
}

/// A profile's data document as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataDoc {
    /// Version: 0 when no document was ever written, then 1, 2, …
    pub version: u64,
    /// When it was last written, Unix seconds (`None` for version 0).
    pub updated_at: Option<u64>,
    /// The document (`null` for version 0).
    pub data: serde_json::Value,
}

/// What a write expects the document's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCondition {
    /// Write whatever the version is.
    Always,
    /// Only if the version is this one (0: no document yet).
    Version(u64),
}

/// Errors of the data document beyond the vault's own.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The document is larger than allowed.
    #[error("the data document is {size} bytes; at most {max} are allowed (sessions.profile_data_max_bytes)")]
    TooLarge {
        /// Its size, serialized.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The version is not the one the write expected.
    #[error("the data document is at version {current}, not {expected}")]
    Precondition {
        /// The version now.
        current: u64,
        /// The version the write expected.
        expected: u64,
    },
    /// Anything else.
    #[error(transparent)]
    Vault(#[from] Error),
}

impl Vault {
    pub(super) async fn read_data_record(
        &self,
        at: &ProfileAddr,
    ) -> Result<Option<(DataRecord, String)>> {
        let key = at.data();
        let g = match self.store.get(&key).await {
            Ok(g) => g,
            Err(store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let etag = g.meta.etag.clone();
        let bytes = g.bytes().await?;
        check_not_newer("data document", &key, &bytes, DATA_FORMAT)?;
        let rec: DataRecord = serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::BadRecord {
            key: key.clone(),
            reason,
        };
        if rec.format != DATA_FORMAT {
            return Err(bad(format!("data format {} is not supported", rec.format)));
        }
        if rec.tenant != at.tenant() || rec.profile != at.profile() {
            return Err(bad(format!(
                "names tenant {:?} profile {:?} (copied from elsewhere?)",
                rec.tenant, rec.profile
            )));
        }
        if rec.version == 0 {
            return Err(bad("version 0 is never written".into()));
        }
        Ok(Some((rec, etag)))
    }

    async fn unwrap_data(&self, rec: &DataRecord) -> Result<DataKey> {
        let key = ProfileAddr::new(&rec.tenant, &rec.profile)?.data();
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&rec.wrapped_key)
            .map_err(|_| Error::BadRecord {
                key,
                reason: "wrapped_key is not base64".into(),
            })?;
        let w = Wrapped {
            key_id: rec.key_id.clone(),
            blob,
            kms_key_arn: rec.kms_key_arn.clone(),
        };
        Ok(self.keys.unwrap(&w, &rec.ctx()).await?)
    }

    async fn open_data(&self, rec: &DataRecord) -> Result<DataDoc> {
        let key = ProfileAddr::new(&rec.tenant, &rec.profile)?.data();
        let dek = self.unwrap_data(rec).await?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&rec.sealed)
            .map_err(|_| Error::BadRecord {
                key: key.clone(),
                reason: "sealed is not base64".into(),
            })?;
        let plain =
            doc::open(&dek, &rec.aad(), &sealed).map_err(|e| Error::Keys(keys::Error::from(e)))?;
        let data = serde_json::from_slice(&plain).map_err(|e| Error::BadRecord {
            key,
            reason: format!("the document inside is not JSON: {e}"),
        })?;
        Ok(DataDoc {
            version: rec.version,
            updated_at: Some(rec.updated_at),
            data,
        })
    }

    /// Whether anything of the profile is stored (a head, or a data document written
    /// before the first save).
    ///
    /// # Errors
    /// Invalid ids, storage errors.
    pub async fn profile_exists(&self, at: &ProfileAddr) -> Result<bool> {
        if self.head_at(at).await?.is_some() {
            return Ok(true);
        }
        match self.store.head(&at.data()).await {
            Ok(_) => Ok(true),
            Err(store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the profile's data document (version 0 and `null` when none was written).
    ///
    /// # Errors
    /// Invalid ids, storage and key errors, a tampered or misplaced document.
    pub async fn data(&self, at: &ProfileAddr) -> Result<DataDoc> {
        match self.read_data_record(at).await? {
            None => Ok(DataDoc {
                version: 0,
                updated_at: None,
                data: serde_json::Value::Null,
            }),
            Some((rec, _)) => self.open_data(&rec).await,
        }
    }

    /// Writes the profile's data document if `cond` holds; returns its new version.
    /// Whether the profile may be written (it exists, or a session will save it) is the
    /// caller's to check.
    ///
    /// # Errors
    /// [`DataError::TooLarge`], [`DataError::Precondition`] (also when another writer won a
    /// race), and the vault's errors.
    pub async fn set_data(
        &self,
        at: &ProfileAddr,
        data: &serde_json::Value,
        cond: DataCondition,
    ) -> Result<u64, DataError> {
        let r = self.set_data_inner(at, data, cond).await;
        let logged: Result<(), String> = r.as_ref().map(|_| ()).map_err(ToString::to_string);
        self.audit
            .record(
                crate::audit::Action::DataWrite,
                at.tenant(),
                Some(at.profile()),
                // Not a generation: the audit event names the profile only.
                None,
                &self.actor,
                logged.err(),
            )
            .await;
        r
    }

    async fn set_data_inner(
        &self,
        at: &ProfileAddr,
        data: &serde_json::Value,
        cond: DataCondition,
    ) -> Result<u64, DataError> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let plain = serde_json::to_vec(data).expect("a JSON value serializes");
        let max = self.opts.data_max_bytes;
        if plain.len() > max {
            return Err(DataError::TooLarge {
                size: plain.len(),
                max,
            });
        }
        let current = self.read_data_record(at).await?;
        let now_version = current.as_ref().map_or(0, |(r, _)| r.version);
        if let DataCondition::Version(expected) = cond {
            if expected != now_version {
                return Err(DataError::Precondition {
                    current: now_version,
                    expected,
                });
            }
        }
        let mut rec = DataRecord {
            format: DATA_FORMAT,
            tenant: tenant.into(),
            profile: profile.into(),
            version: now_version + 1,
            object_id: uuid::Uuid::new_v4().to_string(),
            updated_at: now(),
            key_id: String::new(),
            wrapped_key: String::new(),
            kms_key_arn: None,
            sealed: String::new(),
        };
        let key_id = self.keys.active_for(tenant).to_string();
        let (dek, w) = self
            .keys
            .new_data_key(&key_id, &rec.ctx())
            .await
            .map_err(Error::from)?;
        rec.key_id = w.key_id;
        rec.wrapped_key = base64::engine::general_purpose::STANDARD.encode(&w.blob);
        rec.kms_key_arn = w.kms_key_arn;
        rec.sealed =
            base64::engine::general_purpose::STANDARD.encode(doc::seal(&dek, &rec.aad(), &plain));
        let body = Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes"));
        let mode = match current {
            None => PutMode::Create,
            Some((_, etag)) => PutMode::Update(etag),
        };
        match self.store.put(&at.data(), PutBody::Bytes(body), mode).await {
            Ok(_) => {
                tracing::info!(
                    tenant,
                    profile,
                    version = rec.version,
                    "profile data document written"
                );
                Ok(rec.version)
            }
            Err(e) => {
                // Our own write may have landed, its answer lost (a retry then finds its own
                // version there, or the retries ran out): it is ours if it names our object.
                let landed = self.read_data_record(at).await;
                if let Ok(Some((r, _))) = &landed {
                    if r.object_id == rec.object_id {
                        tracing::info!(
                            tenant,
                            profile,
                            version = rec.version,
                            "profile data document written (its answer was lost)"
                        );
                        return Ok(rec.version);
                    }
                }
                match e {
                    // Another writer won: report the version it wrote.
                    store::Error::AlreadyExists { .. } | store::Error::Precondition { .. } => {
                        Err(DataError::Precondition {
                            current: landed?.map_or(0, |(r, _)| r.version),
                            expected: now_version,
                        })
                    }
                    e => Err(Error::from(e).into()),
                }
            }
        }
    }

    /// Rekey of a profile's data document; returns whether it was re-wrapped (false: it
    /// was under `to` already, or there is none).
    pub(super) async fn rekey_data(
        &self,
        at: &ProfileAddr,
        to: &str,
        target_arn: Option<&str>,
        dry_run: bool,
    ) -> Result<Option<bool>> {
        let Some((mut rec, etag)) = self.read_data_record(at).await? else {
            return Ok(None);
        };
        if rec.key_id == to && rec.kms_key_arn.as_deref() == target_arn {
            return Ok(Some(false));
        }
        let dek = self.unwrap_data(&rec).await?;
        if !dry_run {
            let w = self.keys.wrap(to, &dek, &rec.ctx()).await?;
            rec.key_id = w.key_id;
            rec.wrapped_key = base64::engine::general_purpose::STANDARD.encode(&w.blob);
            rec.kms_key_arn = w.kms_key_arn;
            let body = Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes"));
            self.store
                .put(&at.data(), PutBody::Bytes(body), PutMode::Update(etag))
                .await?;
        }
        Ok(Some(true))
    }

    /// Profiles of `tenant` that have a data document (also those not saved yet).
    pub(super) async fn data_names(&self, tenant: &str) -> Result<Vec<String>> {
        self.profiles_with(tenant, "data.json").await
    }
}
