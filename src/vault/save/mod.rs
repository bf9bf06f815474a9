//! Saving a generation: the public calls (with retries after a collection and the audit
//! record), retention pruning, and recognising a save's own earlier writes. The save itself
//! is a job of named phases ([`job::SaveJob`]).

mod job;

use super::*;

impl Vault {
    /// Packs `dir`, encrypts it and stores it as a new generation, then moves the head.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another save moved the head (this generation is kept);
    /// packing, key, and storage errors (the head is untouched).
    pub async fn save(
        &self,
        at: &ProfileAddr,
        dir: &Path,
        base: Base,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        self.save_with(at, dir, base, &Identity::default(), progress)
            .await
    }

    /// [`Vault::save`], pinning `identity` to the new generation (its sidecar).
    ///
    /// # Errors
    /// As [`Vault::save`].
    pub async fn save_with(
        &self,
        at: &ProfileAddr,
        dir: &Path,
        base: Base,
        identity: &Identity,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let mut r = self
            .save_inner(at, dir, base, identity, progress.clone())
            .await;
        for _ in 0..2 {
            // A collection took packs this save reused: the next attempt starts from the
            // head as it is now, whose packs are all in use.
            if !matches!(r, Err(Error::PacksCollected { .. })) {
                break;
            }
            tracing::info!(
                tenant,
                profile,
                "packs reused by this save were collected meanwhile; saving again"
            );
            r = self
                .save_inner(at, dir, base, identity, progress.clone())
                .await;
        }
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
        at: &ProfileAddr,
        dir: &Path,
        base: Base,
        identity: &Identity,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        let (mut job, keys) = job::SaveJob::plan(self, at, progress).await?;
        if let (Base::Expect(Some(_)), None) = (base, job.head()) {
            return Err(Error::ProfileDeleted {
                profile: at.profile().into(),
            });
        }
        let packed = job.pack(dir, keys).await?;
        let stored = job.upload(packed).await?;
        job.claim_packs(&stored).await?;
        let written = job.write_record(stored, identity).await?;
        job.move_head(base).await?;
        Ok(job.finish(written).await)
    }

    /// Keeps the head's line (the head, its `base`, that one's, ...) up to `keep` generations
    /// a restore can use, and removes the others (record first). A payload without a record
    /// stored less than [`super::gc::MAX_SAVE`] ago is a save still running (its record comes
    /// last): it is left to finish, whatever its number. A generation above the head is never
    /// removed: a save that wrote its record and has yet to move the head. Nor is the head as
    /// it is read now (a rollback may have moved it back meanwhile). Nor, for [`TIP_KEEP`]
    /// after its record was made, a generation no other record names as its `base`: a save
    /// that lost a conflict (kept, as its report says: it may still be about to learn it
    /// lost), a save whose head move failed, or the last of a line rolled away from.
    pub(in crate::vault) async fn prune(&self, at: &ProfileAddr, head: u64) -> Result<Vec<u64>> {
        let p = at.gens();
        let listed = self.store.list(&p).await?;
        let (mut payloads, mut records) = (Vec::new(), Vec::new());
        let mut stored_at = std::collections::HashMap::new();
        for m in &listed {
            match GenFile::parse(&m.key[p.len()..]) {
                Some((n, GenFile::Payload)) => {
                    payloads.push(n);
                    stored_at.insert(n, m.modified);
                }
                Some((n, GenFile::Record)) => records.push(n),
                _ => {}
            }
        }
        let all = merged(&payloads, &records);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let running = |g: u64| {
            !records.contains(&g)
                && stored_at
                    .get(&g)
                    .is_some_and(|&t| now.saturating_sub(t) < super::gc::MAX_SAVE.as_secs())
        };
        // The head's line, as far as its generations a restore can use (a payload and its
        // record) go, `keep` of them: a save that failed before its record, or one still
        // running, takes no place of theirs.
        let keep = self.opts.keep.max(1);
        let based = self.bases(at, &records).await?;
        let complete = |g: u64| payloads.contains(&g) && records.contains(&g);
        let mut kept = Vec::new();
        let mut on = Some(head);
        while let Some(g) = on.filter(|g| kept.len() < keep && complete(*g) && !kept.contains(g)) {
            kept.push(g);
            on = based.get(&g).and_then(|b| b.base);
        }
        // A complete generation no save continued, made less than TIP_KEEP ago.
        let superseded: std::collections::HashSet<u64> =
            based.values().filter_map(|b| b.base).collect();
        let tip = |g: u64| {
            complete(g)
                && !superseded.contains(&g)
                && based
                    .get(&g)
                    .is_some_and(|b| now.saturating_sub(b.created_at) < TIP_KEEP.as_secs())
        };
        // The head now, too: a rollback may have moved it to an old generation.
        let current = self.head_at(at).await?.map(|(h, _)| h.generation);
        let mut removed = Vec::new();
        for &g in &all {
            if g >= head || Some(g) == current || running(g) || kept.contains(&g) || tip(g) {
                continue;
            }
            if !self.unrecord_unless_head(at, g).await? {
                continue;
            }
            self.store
                .delete(&at.generation(g, GenFile::Payload))
                .await?;
            self.store.delete(&at.generation(g, GenFile::Meta)).await?;
            removed.push(g);
        }
        Ok(removed)
    }

    /// What the given generations' records say of their place: the generation each
    /// continued (`base`) and when it was made. A record that cannot be read is left out
    /// (what it continued is then a tip, kept a while; it is never on the head's line).
    async fn bases(
        &self,
        at: &ProfileAddr,
        records: &[u64],
    ) -> Result<std::collections::HashMap<u64, Based>> {
        let mut out = std::collections::HashMap::new();
        for &g in records {
            let key = at.generation(g, GenFile::Record);
            let bytes = match self.store.get(&key).await {
                Ok(got) => got.bytes().await?,
                Err(store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match serde_json::from_slice::<Based>(&bytes) {
                Ok(b) => {
                    out.insert(
                        g,
                        Based {
                            base: b.base.filter(|b| *b < g),
                            ..b
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(tenant = at.tenant(), profile = at.profile(), generation = g, error = %e, "a generation record that does not parse: what it continued is kept a while");
                }
            }
        }
        Ok(out)
    }

    /// Removes generation `g`'s record (the first part of pruning it), unless the head names
    /// `g` once it is gone: a rollback may have moved the head there after the prune read it.
    /// Then the record is put back and `false` answered (the generation stays). A rollback
    /// checks that its generation's record is there after its move (and moves the head back
    /// if not), so either it sees the record gone, or the prune sees the head on `g`.
    async fn unrecord_unless_head(&self, at: &ProfileAddr, g: u64) -> Result<bool> {
        let key = at.generation(g, GenFile::Record);
        let record = match self.store.get(&key).await {
            Ok(got) => Some(got.bytes().await?),
            Err(store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        self.store.delete(&key).await?;
        let Some(record) = record else {
            return Ok(true);
        };
        if self.head_at(at).await?.map(|(h, _)| h.generation) != Some(g) {
            return Ok(true);
        }
        tracing::warn!(
            tenant = at.tenant(),
            profile = at.profile(),
            generation = g,
            "a generation being pruned became the head (a rollback): it is kept"
        );
        match self
            .store
            .put(&key, PutBody::Bytes(record), PutMode::Create)
            .await
        {
            Ok(_) | Err(store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The object id in a payload's header (unauthenticated; only used to recognise our own
    /// earlier write after an ambiguous retry).
    pub(in crate::vault) async fn payload_object_id(&self, key: &str) -> Option<String> {
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
    pub(in crate::vault) async fn record_object_id(&self, key: &str) -> Option<String> {
        let bytes = self.store.get(key).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice::<GenerationRecord>(&bytes)
            .ok()
            .map(|r| r.object_id)
    }
}

/// How long a generation no other save continued (a conflict's, a save whose head move
/// failed, the last of a line rolled away from) is kept by pruning, from its record's
/// `created_at`: 30 days to roll back to it.
pub const TIP_KEEP: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// A generation record's place, as pruning reads it.
#[derive(Deserialize)]
struct Based {
    /// The generation it continued.
    base: Option<u64>,
    /// When it was made, Unix seconds.
    created_at: u64,
}

/// Replaces the header of a spool file (same body) after a generation number changed.
pub(in crate::vault) fn rewrite_header(path: &Path, old_len: usize, header: &[u8]) -> Result<()> {
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
