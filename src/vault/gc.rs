//! Garbage collection of format 2 packs (`docs/FORMAT.md` §10.7): packs no kept generation
//! uses are deleted, safely with several nodes saving and collecting at once and with saves
//! that crashed half-way.
//!
//! The state is `gc.json` beside the head, changed only by conditional writes:
//! `marked` (pack → when a collection first found it unused) and `deleted` (pack → when a
//! collection committed to deleting it; kept [`TOMBSTONE_KEEP`]).
//!
//! - A collection reads `gc.json`, lists the packs, and takes every pack the generation
//!   records name as used. An unused pack is marked; a pack marked at least the grace period
//!   ago (and stored at least that long ago) that is still unused is deleted, but only after
//!   `gc.json` recording it as deleted was written on the version read. A collection that
//!   cannot read every record deletes nothing.
//! - A save, right after its manifest is stored and before its record, *claims* the packs
//!   it uses: any of them marked is unmarked with a conditional write, and if any was
//!   already committed as deleted the save removes its manifest and stops
//!   ([`Error::PacksCollected`]); it is then made again from the current head.
//! - A collection deletes nothing while a manifest without a record (younger than
//!   [`MAX_SAVE`]) is stored: a save is claiming.
//!
//! So a pack a save uses is never deleted: a collection that read `gc.json` before the
//! claim either finds it marked (then the claim's conditional write and the collection's
//! commit race on one version of `gc.json`, and the loser backs off) or only marks it; every
//! later collection sees the save's manifest or its record. No clock decides safety; the
//! grace period only spares packs of saves still uploading from being marked and unmarked.
//! Packs uploaded by a save that crashed are never used: marked, then deleted a grace
//! period later. A save that takes longer than [`MAX_SAVE`] gives up before claiming.

use std::collections::{BTreeMap, HashSet};

use super::lease::now_ms;
use super::*;

/// Format of `gc.json`.
pub const GC_FORMAT: u32 = 1;
/// How long a deletion is remembered (longer than any save may take).
pub const TOMBSTONE_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);
/// A save older than this gives up before it writes its manifest.
pub const MAX_SAVE: std::time::Duration = std::time::Duration::from_secs(6 * 3_600);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GcState {
    format: u32,
    tenant: String,
    profile: String,
    marked: BTreeMap<String, u64>,
    deleted: BTreeMap<String, u64>,
}

/// What one collection of a profile's packs found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PackGcReport {
    /// Tenant.
    pub tenant: String,
    /// Profile.
    pub profile: String,
    /// Packs stored.
    pub packs: u64,
    /// Packs a kept generation uses.
    pub used: u64,
    /// Unused packs marked now or before (deleted once marked long enough).
    pub marked: u64,
    /// Packs deleted (or that would be, on a dry run).
    pub deleted: Vec<String>,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Why nothing was deleted, when something stopped it.
    pub skipped: Option<String>,
}

impl Vault {
    async fn read_gc(&self, at: &ProfileAddr) -> Result<(GcState, Option<String>)> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let key = at.gc();
        match self.store.get(&key).await {
            Ok(g) => {
                let etag = g.meta.etag.clone();
                let bytes = g.bytes().await?;
                check_not_newer("garbage collection record", &key, &bytes, GC_FORMAT)?;
                let s: GcState = serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                if s.format != GC_FORMAT || s.tenant != tenant || s.profile != profile {
                    return Err(Error::BadRecord {
                        key,
                        reason: "format, tenant or profile do not match its place".into(),
                    });
                }
                Ok((s, Some(etag)))
            }
            Err(store::Error::NotFound { .. }) => Ok((
                GcState {
                    format: GC_FORMAT,
                    tenant: tenant.into(),
                    profile: profile.into(),
                    ..GcState::default()
                },
                None,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `gc.json` on the version read; `Ok(false)` when another writer was first.
    async fn write_gc(&self, at: &ProfileAddr, s: &GcState, etag: Option<String>) -> Result<bool> {
        let body = Bytes::from(serde_json::to_vec_pretty(s).expect("gc state serializes"));
        let mode = match etag {
            Some(e) => PutMode::Update(e),
            None => PutMode::Create,
        };
        match self.store.put(&at.gc(), PutBody::Bytes(body), mode).await {
            Ok(_) => Ok(true),
            Err(store::Error::Precondition { .. } | store::Error::AlreadyExists { .. }) => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A save claims the packs its manifest will use (see the module docs).
    ///
    /// # Errors
    /// [`Error::PacksCollected`] when one was deleted meanwhile; storage errors.
    pub(super) async fn claim_packs(&self, at: &ProfileAddr, packs: &[String]) -> Result<()> {
        let profile = at.profile();
        for _ in 0..32 {
            let (mut s, etag) = self.read_gc(at).await?;
            if etag.is_none() {
                return Ok(());
            }
            if packs.iter().any(|p| s.deleted.contains_key(p)) {
                return Err(Error::PacksCollected {
                    profile: profile.into(),
                });
            }
            let before = s.marked.len();
            for p in packs {
                s.marked.remove(p);
            }
            if s.marked.len() == before {
                return Ok(());
            }
            if self.write_gc(at, &s, etag).await? {
                return Ok(());
            }
        }
        Err(Error::Store(store::Error::Unavailable {
            op: "put",
            key: at.gc(),
            message: "gc.json kept changing while this save claimed its packs".into(),
        }))
    }

    /// Whether a save is between its manifest and its record: a payload without a record
    /// (it has claimed, or is claiming, its packs), so nothing may be deleted now. One older
    /// than MAX_SAVE was left by a crash and no longer holds collections back.
    async fn save_in_flight(
        &self,
        at: &ProfileAddr,
        payloads: &[u64],
        records: &[u64],
    ) -> Result<bool> {
        let mut in_flight = false;
        for g in payloads.iter().filter(|g| !records.contains(g)) {
            match self.store.head(&at.generation(*g, GenFile::Payload)).await {
                Ok(m)
                    if now_ms().saturating_sub(m.modified.saturating_mul(1000))
                        < MAX_SAVE.as_millis() as u64 =>
                {
                    in_flight = true;
                }
                Ok(_) | Err(store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(in_flight)
    }

    /// Collects the unused packs of one profile (see the module docs); `grace` defaults to
    /// the configured one.
    ///
    /// # Errors
    /// Storage errors; a `gc.json` of a newer format.
    pub async fn gc_packs(&self, at: &ProfileAddr, dry_run: bool) -> Result<PackGcReport> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let grace_ms = self.opts.pack_grace.as_millis() as u64;
        let mut report = PackGcReport {
            tenant: tenant.into(),
            profile: profile.into(),
            ..PackGcReport::default()
        };
        let (mut s, etag) = self.read_gc(at).await?;
        let pack_prefix = at.packs();
        let listed: Vec<store::ObjectMeta> = self.store.list(&pack_prefix).await?;
        report.packs = listed.len() as u64;
        if listed.is_empty() && s.marked.is_empty() {
            return Ok(report);
        }
        // Every pack a generation record names is used. A record this build cannot read
        // stops the collection: nothing is deleted on a guess.
        let mut used: HashSet<String> = HashSet::new();
        let (payloads, records) = self.generation_numbers(at).await?;
        let in_flight = self.save_in_flight(at, &payloads, &records).await?;
        for g in records {
            match self.read_record(at, g).await {
                Ok(r) => used.extend(r.packs.into_iter().flatten()),
                Err(Error::GenerationNotFound { .. }) => {}
                Err(e) => {
                    report.skipped = Some(format!("generation {g}: {e}"));
                    tracing::warn!(tenant, profile, generation = g, error = %e, "pack garbage collection skipped: a record cannot be read");
                    return Ok(report);
                }
            }
        }
        let now = now_ms();
        let mut changed = false;
        let mut to_delete: Vec<(String, u64)> = Vec::new();
        let mut present: HashSet<String> = HashSet::new();
        for m in &listed {
            let Some(id) = m.key[pack_prefix.len()..].strip_suffix(".pvp") else {
                continue;
            };
            if !crate::format::v2::pack::valid_id(id) {
                continue;
            }
            present.insert(id.to_string());
            if used.contains(id) {
                report.used += 1;
                changed |= s.marked.remove(id).is_some();
                continue;
            }
            report.marked += 1;
            match s.marked.get(id) {
                None => {
                    s.marked.insert(id.to_string(), now);
                    changed = true;
                }
                Some(&at)
                    if !in_flight
                        && now.saturating_sub(at) >= grace_ms
                        && now.saturating_sub(m.modified.saturating_mul(1000)) >= grace_ms =>
                {
                    to_delete.push((id.to_string(), m.size));
                }
                Some(_) => {}
            }
        }
        // Marks of packs gone, and deletions old enough to forget.
        let before = s.marked.len() + s.deleted.len();
        s.marked.retain(|p, _| present.contains(p));
        let keep = TOMBSTONE_KEEP.as_millis() as u64;
        s.deleted.retain(|_, at| now.saturating_sub(*at) < keep);
        changed |= s.marked.len() + s.deleted.len() != before;
        for (p, _) in &to_delete {
            s.marked.remove(p);
            s.deleted.insert(p.clone(), now);
        }
        if in_flight {
            report.skipped = Some("a save is between its manifest and its record".into());
        }
        report.deleted = to_delete.iter().map(|(p, _)| p.clone()).collect();
        report.deleted_bytes = to_delete.iter().map(|(_, n)| n).sum();
        if dry_run {
            return Ok(report);
        }
        if (changed || !to_delete.is_empty()) && !self.write_gc(at, &s, etag).await? {
            report.deleted.clear();
            report.deleted_bytes = 0;
            report.skipped = Some("another save or collection changed gc.json; next time".into());
            return Ok(report);
        }
        for (p, _) in &to_delete {
            self.store.delete(&at.pack(p)).await?;
        }
        if !to_delete.is_empty() {
            crate::metrics::METRICS
                .packs_deleted
                .fetch_add(to_delete.len() as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                tenant,
                profile,
                packs = to_delete.len(),
                bytes = report.deleted_bytes,
                "deleted unused packs"
            );
        }
        Ok(report)
    }

    /// [`Vault::gc_packs`] for every profile of a tenant.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn gc_all_packs(&self, tenant: &str, dry_run: bool) -> Result<Vec<PackGcReport>> {
        validate_id("tenant", tenant)?;
        let root = crate::layout::profiles_prefix(tenant);
        let mut names: Vec<String> = self
            .store
            .list(&root)
            .await?
            .iter()
            .filter_map(|m| {
                let rest = &m.key[root.len()..];
                let (p, tail) = rest.split_once('/')?;
                (tail == "head.json" || tail.starts_with("packs/")).then(|| p.to_string())
            })
            .collect();
        names.dedup();
        let mut out = Vec::new();
        for p in names {
            match self.gc_packs(&ProfileAddr::new(tenant, &p)?, dry_run).await {
                Ok(r) => out.push(r),
                Err(e) if e.is_newer() => {
                    tracing::warn!(tenant, profile = %p, error = %e, "pack garbage collection leaves a profile of a newer format alone");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
