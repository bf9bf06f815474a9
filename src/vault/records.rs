//! The head record and generation records: their JSON, and reading and checking them (format,
//! place, the record against its payload's kind) before their data key is unwrapped.

use super::*;

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
    /// Format 3 only: every pack the generation's manifest uses (what garbage collection
    /// keeps).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_packs"
    )]
    pub packs: Option<Vec<String>>,
    /// Format 3 only: what the chunked save reused and sent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_chunks"
    )]
    pub chunks: Option<ChunkStats>,
}

fn present_packs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Vec::<String>::deserialize(d).map(Some)
}

fn present_chunks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ChunkStats>, D::Error> {
    ChunkStats::deserialize(d).map(Some)
}

/// An optional member that, when present, must be a string (`null` is refused).
pub(super) fn present_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

impl Vault {
    /// Reads the head record, with its etag.
    ///
    /// # Errors
    /// Storage errors; a malformed head.
    pub async fn head(&self, at: &ProfileAddr) -> Result<Option<(Head, String)>> {
        self.head_at(at).await
    }

    /// [`Vault::head`] of `at`.
    pub(super) async fn head_at(&self, at: &ProfileAddr) -> Result<Option<(Head, String)>> {
        let key = at.head();
        match self.store.get(&key).await {
            Ok(g) => {
                let etag = g.meta.etag.clone();
                let bytes = g.bytes().await?;
                check_not_newer("head", &key, &bytes, HEAD_FORMAT)?;
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
                if head.tenant != at.tenant() || head.profile != at.profile() {
                    return Err(Error::BadRecord {
                        key,
                        reason: "names another tenant or profile".into(),
                    });
                }
                if !(1..=crate::layout::MAX_GENERATION).contains(&head.generation) {
                    return Err(Error::BadRecord {
                        key,
                        reason: format!("generation {} is out of range", head.generation),
                    });
                }
                Ok(Some((head, etag)))
            }
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn generation_numbers(
        &self,
        at: &ProfileAddr,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let mut payloads = Vec::new();
        let mut records = Vec::new();
        let p = at.gens();
        for m in self.store.list(&p).await? {
            match GenFile::parse(&m.key[p.len()..]) {
                Some((n, GenFile::Payload)) => payloads.push(n),
                Some((n, GenFile::Record)) => records.push(n),
                _ => {}
            }
        }
        Ok((payloads, records))
    }

    /// Reads and checks a generation record, and unwraps its data key.
    pub(super) async fn open_record(
        &self,
        at: &ProfileAddr,
        generation: u64,
    ) -> Result<(GenerationRecord, DataKey)> {
        let rec = self.read_record(at, generation).await?;
        let dek = self.unwrap_record(&rec).await?;
        Ok((rec, dek))
    }

    /// Reads a generation record and checks its format and place (not its key).
    pub(super) async fn read_record(
        &self,
        at: &ProfileAddr,
        generation: u64,
    ) -> Result<GenerationRecord> {
        let key = at.generation(generation, GenFile::Record);
        let bytes = match self.store.get(&key).await {
            Ok(g) => g.bytes().await?,
            Err(store::Error::NotFound { .. }) => {
                return Err(Error::GenerationNotFound {
                    profile: at.profile().into(),
                    generation,
                })
            }
            Err(e) => return Err(e.into()),
        };
        check_not_newer("generation record", &key, &bytes, RECORD_FORMAT_CHUNKED)?;
        let rec: GenerationRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        let chunked = rec.packs.is_some() || rec.chunks.is_some();
        if chunked != (rec.format == RECORD_FORMAT_CHUNKED)
            || (chunked && (rec.packs.is_none() || rec.chunks.is_none()))
        {
            return Err(Error::BadRecord {
                key,
                reason: format!(
                    "record format {} {} packs and chunks",
                    rec.format,
                    if chunked { "must not have" } else { "needs" }
                ),
            });
        }
        if rec
            .packs
            .iter()
            .flatten()
            .any(|p| !crate::format::v2::pack::valid_id(p))
        {
            return Err(Error::BadRecord {
                key,
                reason: "names an invalid pack id".into(),
            });
        }
        match (rec.format, &rec.kms_key_arn) {
            (RECORD_FORMAT, None) | (RECORD_FORMAT_KMS, Some(_)) | (RECORD_FORMAT_CHUNKED, _) => {}
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
        if rec.tenant != at.tenant() || rec.profile != at.profile() || rec.generation != generation
        {
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
    pub(super) async fn unwrap_record(&self, rec: &GenerationRecord) -> Result<DataKey> {
        let key = ProfileAddr::new(&rec.tenant, &rec.profile)?
            .generation(rec.generation, GenFile::Record);
        let wrapped = base64::engine::general_purpose::STANDARD
            .decode(&rec.wrapped_key)
            .map_err(|_| Error::BadRecord {
                key,
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
}
