//! The generation sidecar `gens/<generation:020>.meta`: what a generation is beside its files,
//! sealed under the generation's own data key (`docs/FORMAT.md` §9) — the browser identity
//! pinned to the profile (user agent, window size, locale, timezone) and the contents report.
//!
//! Written once, create-only, after the payload and before the record; older generations (and
//! older profile-vaults' saves) have none. Rekey leaves it alone: it is sealed under the data
//! key, which rekey re-wraps but never changes.

use super::*;
use crate::crypt::doc;

/// Version of the sidecar record.
pub const META_FORMAT: u32 = 1;

/// The launch settings that make a profile look like one device, pinned to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `navigator.userAgent`.
    pub user_agent: Option<String>,
    /// Window width and height.
    pub width: Option<u32>,
    /// Window height.
    pub height: Option<u32>,
    /// UI and `Accept-Language` locale (`navigator.language`).
    pub locale: Option<String>,
    /// IANA time zone (`Intl.DateTimeFormat().resolvedOptions().timeZone`).
    pub timezone: Option<String>,
}

impl Identity {
    /// `self` with every field `over` sets taken from `over`.
    pub fn overridden_by(&self, over: &Identity) -> Identity {
        Identity {
            user_agent: over.user_agent.clone().or_else(|| self.user_agent.clone()),
            width: over.width.or(self.width),
            height: over.height.or(self.height),
            locale: over.locale.clone().or_else(|| self.locale.clone()),
            timezone: over.timezone.clone().or_else(|| self.timezone.clone()),
        }
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        *self == Identity::default()
    }
}

/// What a generation's sidecar holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationMeta {
    /// The pinned browser identity.
    pub identity: Identity,
    /// What the generation holds, as counts and site names (`None`: not recorded).
    pub contents: Option<crate::profile::contents::Contents>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaRecord {
    format: u32,
    tenant: String,
    profile: String,
    generation: u64,
    object_id: String,
    sealed: String,
}

// DO NOT CHANGE: part of the at-rest format (docs/FORMAT.md §9).
const META_LABEL: &str = "generation-meta";

fn aad(tenant: &str, profile: &str, generation: u64, object_id: &str) -> Vec<u8> {
    doc::aad(&[
        META_LABEL,
        tenant,
        profile,
        object_id,
        &generation.to_string(),
    ])
}

/// Seals a sidecar for a generation (its data key, its place).
pub(super) fn seal_meta(
    dek: &DataKey,
    tenant: &str,
    profile: &str,
    generation: u64,
    object_id: &str,
    meta: &GenerationMeta,
) -> Bytes {
    let plain = serde_json::to_vec(meta).expect("meta serializes");
    let sealed = doc::seal(dek, &aad(tenant, profile, generation, object_id), &plain);
    let rec = MetaRecord {
        format: META_FORMAT,
        tenant: tenant.into(),
        profile: profile.into(),
        generation,
        object_id: object_id.into(),
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    };
    Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes"))
}

impl Vault {
    /// The sidecar of a generation (`None` when it has none: saved before sidecars, or by
    /// a save that did not record one).
    ///
    /// # Errors
    /// Not found, storage and key errors; a tampered, misplaced or newer sidecar.
    pub async fn meta(
        &self,
        at: &ProfileAddr,
        generation: Option<u64>,
    ) -> Result<Option<(u64, GenerationMeta)>> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let generation = self.resolve(at, generation).await?;
        let key = at.generation(generation, GenFile::Meta);
        let bytes = match self.store.get(&key).await {
            Ok(g) => g.bytes().await?,
            Err(store::Error::NotFound { .. }) => {
                // A generation without a sidecar, or no such generation at all.
                self.read_record(at, generation).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        check_not_newer("generation sidecar", &key, &bytes, META_FORMAT)?;
        let bad = |reason: String| Error::BadRecord {
            key: key.clone(),
            reason,
        };
        let rec: MetaRecord = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if rec.format != META_FORMAT {
            return Err(bad(format!(
                "sidecar format {} is not supported",
                rec.format
            )));
        }
        if rec.tenant != tenant || rec.profile != profile || rec.generation != generation {
            return Err(bad(
                "names another tenant, profile or generation (copied from elsewhere?)".into(),
            ));
        }
        let (record, dek) = self.open_record(at, generation).await?;
        if record.object_id != rec.object_id {
            return Err(bad("belongs to another payload of this generation".into()));
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&rec.sealed)
            .map_err(|_| bad("sealed is not base64".into()))?;
        let plain = doc::open(
            &dek,
            &aad(tenant, profile, generation, &rec.object_id),
            &sealed,
        )
        .map_err(|e| Error::Keys(keys::Error::from(e)))?;
        let meta = serde_json::from_slice(&plain)
            .map_err(|e| bad(format!("the sealed sidecar is not a valid document: {e}")))?;
        Ok(Some((generation, meta)))
    }
}
