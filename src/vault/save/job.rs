//! One save as a job of named phases, each a method that reads what the one before left:
//!
//! 1. [`SaveJob::plan`]: read the head, take the next generation number and an object id,
//!    and the data key (format 2: the base generation's content key, so chunks are reused);
//! 2. [`SaveJob::pack`]: pack and encrypt into a private spool file, off the async runtime
//!    (format 2 uploads its packs on the way);
//! 3. [`SaveJob::upload`]: store the payload create-only, which claims the generation
//!    number (a number a concurrent save took: the next one, with the header rewritten);
//! 4. [`SaveJob::claim_packs`]: format 2: the packs it uses are kept from collection;
//! 5. [`SaveJob::write_record`]: the sidecar and the generation record;
//! 6. [`SaveJob::move_head`]: compare-and-swap of the head;
//! 7. [`SaveJob::finish`]: prune, metrics, the report.
//!
//! Any error before the head moved leaves the head as it was.

use super::super::*;
use super::rewrite_header;
use crate::vault::chunked::Opened;

/// Writes of the head a save tries when others rewrote it naming the same generation.
const HEAD_REWRITES: usize = 4;

/// A save under way.
pub(super) struct SaveJob<'a> {
    vault: &'a Vault,
    at: &'a ProfileAddr,
    progress: Arc<dyn Progress>,
    /// The head when the save started, with its etag.
    head: Option<(Head, String)>,
    /// The generation number (changes if a concurrent save claims it first).
    generation: u64,
    first_generation: u64,
    object_id: String,
    created_at: u64,
    /// The tenant's active master key.
    master: String,
    /// Counted from before the base was read (format 2's [`super::super::gc::MAX_SAVE`]).
    started: std::time::Instant,
}

/// The data key and what it was wrapped as for the first generation number.
pub(super) struct Keys {
    dek: DataKey,
    first_wrap: Wrapped,
    /// Format 2: the base generation whose chunks are reused.
    reuse: Option<Opened>,
}

/// What [`SaveJob::pack`] made.
pub(super) struct Packed {
    dek: DataKey,
    sealer: Sealer,
    stats: PackStats,
    contents: Option<crate::profile::contents::Contents>,
    header_len: usize,
    /// Format 2: the packs used, the counters, and the packs this save uploaded.
    chunks: Option<(Vec<String>, ChunkStats, Vec<String>)>,
    spool: TempFile,
    first_wrap: Wrapped,
}

/// A payload stored under the job's generation number.
pub(super) struct Stored {
    dek: DataKey,
    stats: PackStats,
    contents: Option<crate::profile::contents::Contents>,
    chunks: Option<(Vec<String>, ChunkStats, Vec<String>)>,
    object_size: u64,
    first_wrap: Wrapped,
}

/// A generation with its record written.
pub(super) struct Written {
    key_id: String,
    stats: PackStats,
    chunk_stats: Option<ChunkStats>,
    object_size: u64,
}

impl<'a> SaveJob<'a> {
    /// Phase 1: the generation number, object id and data key.
    pub(super) async fn plan(
        vault: &'a Vault,
        at: &'a ProfileAddr,
        progress: Arc<dyn Progress>,
    ) -> Result<(SaveJob<'a>, Keys)> {
        let head = vault.head_at(at).await?;
        let (payloads, records) = vault.generation_numbers(at).await?;
        let generation = merged(&payloads, &records)
            .last()
            .copied()
            .max(head.as_ref().map(|h| h.0.generation))
            .unwrap_or(0)
            + 1;
        let job = SaveJob {
            vault,
            at,
            progress,
            head,
            generation,
            first_generation: generation,
            object_id: uuid::Uuid::new_v4().to_string(),
            created_at: now(),
            master: vault.keys.active_for(at.tenant()).to_string(),
            started: std::time::Instant::now(),
        };
        // Format 2 carries the profile's content key from the base generation, so its
        // chunks can be reused; otherwise (and for format 1) a fresh data key.
        let reuse = if vault.opts.write_format >= 2 {
            let base = job.head.as_ref().map(|h| h.0.generation);
            vault.chunked_base(at, base).await?
        } else {
            None
        };
        let ctx = job.ctx();
        let (dek, first_wrap) = match &reuse {
            Some(b) => (
                b.key.clone(),
                vault.keys.wrap(&job.master, &b.key, &ctx).await?,
            ),
            None => vault.keys.new_data_key(&job.master, &ctx).await?,
        };
        Ok((
            job,
            Keys {
                dek,
                first_wrap,
                reuse,
            },
        ))
    }

    fn ctx(&self) -> WrapContext<'_> {
        WrapContext {
            tenant: self.at.tenant(),
            profile: self.at.profile(),
            generation: self.generation,
            object_id: &self.object_id,
        }
    }

    /// Phase 2: pack and encrypt `dir` into a spool file, in a work slot.
    pub(super) async fn pack(&self, dir: &Path, keys: Keys) -> Result<Packed> {
        let v = self.vault;
        let slot = v.work_slot().await;
        let spool = TempFile(v.spool_file("save"));
        let packed = if v.opts.write_format >= 2 {
            let p = v
                .pack_chunked(
                    self.at,
                    dir,
                    &spool.0,
                    &keys.dek,
                    keys.reuse,
                    self.generation,
                    &self.object_id,
                    self.created_at,
                    self.progress.clone(),
                )
                .await?;
            Packed {
                dek: keys.dek,
                sealer: p.sealer,
                stats: p.stats,
                contents: p.contents,
                header_len: p.header_len,
                chunks: Some((p.packs, p.chunks, p.uploaded)),
                spool,
                first_wrap: keys.first_wrap,
            }
        } else {
            self.pack_v1(dir, keys, spool).await?
        };
        drop(slot);
        if packed.stats.cookie_v11_warning {
            tracing::warn!(tenant = self.at.tenant(), profile = self.at.profile(), "cookie store holds v11 (keyring-encrypted) values: those cookies will be lost when restored on another machine; start Chromium with --password-store=basic");
        }
        Ok(packed)
    }

    /// Format 1: one ZIP, sealed as a STREAM, in the spool file.
    async fn pack_v1(&self, dir: &Path, keys: Keys, spool: TempFile) -> Result<Packed> {
        let v = self.vault;
        let (dir, path, opts) = (dir.to_path_buf(), spool.0.clone(), v.opts.clone());
        let (tenant, profile, object_id) = (
            self.at.tenant().to_string(),
            self.at.profile().to_string(),
            self.object_id.clone(),
        );
        let (generation, created_at, progress) =
            (self.generation, self.created_at, self.progress.clone());
        let dek = keys.dek;
        let (dek, sealer, stats, contents, header_len) = blocking(move || {
            let sealer = Sealer::new(&dek, opts.chunk_size);
            let header = sealer.header_bytes(&tenant, &profile, generation, &object_id, created_at);
            let mut f = fsutil::create_private_new(&path).map_err(io_at(&path))?;
            f.write_all(&header).map_err(io_at(&path))?;
            let w = sealer.body_writer(std::io::BufWriter::with_capacity(1 << 20, f));
            let (w, stats) = archive::pack(&dir, w, &opts.pack, &opts.limits, progress.as_ref())?;
            // Read while the directory is as it was packed (the browser has stopped).
            let contents = opts
                .contents_report
                .then(|| crate::profile::contents::read(&dir));
            let (buf, _) = w.finish().map_err(io_at(&path))?;
            let f = buf.into_inner().map_err(|e| Error::Io {
                path: path.clone(),
                source: e.into_error(),
            })?;
            f.sync_all().map_err(io_at(&path))?;
            Ok((dek, sealer, stats, contents, header.len()))
        })
        .await?;
        Ok(Packed {
            dek,
            sealer,
            stats,
            contents,
            header_len,
            chunks: None,
            spool,
            first_wrap: keys.first_wrap,
        })
    }

    /// Phase 3: the payload, stored create-only: that write claims the generation number.
    pub(super) async fn upload(&mut self, packed: Packed) -> Result<Stored> {
        let v = self.vault;
        let (tenant, profile) = (self.at.tenant(), self.at.profile());
        let spool = packed.spool;
        let mut header_len = packed.header_len;
        let mut attempts = 0;
        loop {
            let key = self.at.generation(self.generation, GenFile::Payload);
            self.progress.start("uploading", 0);
            match v
                .store
                .put(&key, PutBody::File(spool.0.clone()), PutMode::Create)
                .await
            {
                Ok(_) => break,
                // A retried create may find its own first attempt, which landed before its
                // answer was lost.
                Err(store::Error::AlreadyExists { .. })
                    if v.payload_object_id(&key).await.as_deref()
                        == Some(self.object_id.as_str()) =>
                {
                    break
                }
                Err(store::Error::AlreadyExists { .. }) if attempts < 64 => {
                    attempts += 1;
                    let (p, r) = v.generation_numbers(self.at).await?;
                    self.generation = merged(&p, &r)
                        .last()
                        .map_or(self.generation, |&m| m.max(self.generation))
                        + 1;
                    tracing::info!(
                        tenant,
                        profile,
                        generation = self.generation,
                        "generation number taken by a concurrent save; retrying with the next"
                    );
                    let header = packed.sealer.header_bytes(
                        tenant,
                        profile,
                        self.generation,
                        &self.object_id,
                        self.created_at,
                    );
                    let path = spool.0.clone();
                    let old_len = std::mem::replace(&mut header_len, header.len());
                    blocking(move || rewrite_header(&path, old_len, &header)).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.progress.finish();
        let object_size = std::fs::metadata(&spool.0).map_err(io_at(&spool.0))?.len();
        Ok(Stored {
            dek: packed.dek,
            stats: packed.stats,
            contents: packed.contents,
            chunks: packed.chunks,
            object_size,
            first_wrap: packed.first_wrap,
        })
    }

    /// Phase 4 (format 2): from here on the packs it uses must not be collected (gc.rs).
    /// Its manifest, now stored without a record, keeps collections from deleting anything
    /// while it claims them. On failure the manifest and the packs it uploaded go.
    pub(super) async fn claim_packs(&self, stored: &Stored) -> Result<()> {
        let Some((packs, _, uploaded)) = &stored.chunks else {
            return Ok(());
        };
        let v = self.vault;
        let claimed = if self.started.elapsed() > super::super::gc::MAX_SAVE {
            Err(Error::PacksCollected {
                profile: self.at.profile().into(),
            })
        } else {
            v.claim_packs(self.at, packs).await
        };
        if let Err(e) = claimed {
            let _ = v
                .store
                .delete(&self.at.generation(self.generation, GenFile::Payload))
                .await;
            v.remove_packs(self.at, uploaded).await;
            return Err(e);
        }
        Ok(())
    }

    /// Phase 5: the sidecar (sealed under the generation's data key, bound to its place)
    /// and the generation record.
    pub(super) async fn write_record(
        &self,
        stored: Stored,
        identity: &Identity,
    ) -> Result<Written> {
        let v = self.vault;
        let (tenant, profile, generation) = (self.at.tenant(), self.at.profile(), self.generation);
        // A KMS wrap binds the generation: re-wrap when a concurrent save took the first
        // number.
        let wrapped = if generation == self.first_generation {
            stored.first_wrap
        } else {
            v.keys
                .wrap(&self.master, &stored.dek, &self.ctx())
                .await
                .inspect_err(|e| {
                    tracing::warn!(tenant, profile, generation, error = %e, "re-wrapping the data key for the new generation number failed; the uploaded payload has no record and goes with retention");
                })?
        };
        let meta = GenerationMeta {
            identity: identity.clone(),
            contents: stored.contents,
        };
        let body = meta::seal_meta(
            &stored.dek,
            tenant,
            profile,
            generation,
            &self.object_id,
            &meta,
        );
        drop(stored.dek);
        match v
            .store
            .put(
                &self.at.generation(generation, GenFile::Meta),
                PutBody::Bytes(body),
                PutMode::Create,
            )
            .await
        {
            // The payload's create-only write claimed this generation: an existing sidecar
            // is this save's own earlier attempt.
            Ok(_) | Err(store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let (packs, chunk_stats) = match stored.chunks {
            Some((p, c, _)) => (Some(p), Some(c)),
            None => (None, None),
        };
        let record = GenerationRecord {
            format: if chunk_stats.is_some() {
                RECORD_FORMAT_CHUNKED
            } else if wrapped.kms_key_arn.is_some() {
                RECORD_FORMAT_KMS
            } else {
                RECORD_FORMAT
            },
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: self.object_id.clone(),
            created_at: self.created_at,
            key_id: wrapped.key_id.clone(),
            wrapped_key: base64::engine::general_purpose::STANDARD.encode(&wrapped.blob),
            kms_key_arn: wrapped.kms_key_arn,
            object_size: stored.object_size,
            base: self.head.as_ref().map(|h| h.0.generation),
            stats: stored.stats.clone(),
            packs,
            chunks: chunk_stats.clone(),
        };
        let rec_bytes = serde_json::to_vec_pretty(&record).expect("record serializes");
        let rkey = self.at.generation(generation, GenFile::Record);
        match v
            .store
            .put(&rkey, PutBody::Bytes(rec_bytes.into()), PutMode::Create)
            .await
        {
            Ok(_) => {}
            Err(store::Error::AlreadyExists { .. })
                if v.record_object_id(&rkey).await.as_deref() == Some(self.object_id.as_str()) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Written {
            key_id: wrapped.key_id,
            stats: stored.stats,
            chunk_stats,
            object_size: stored.object_size,
        })
    }

    /// The head the save planned from.
    pub(super) fn head(&self) -> Option<&Head> {
        self.head.as_ref().map(|(h, _)| h)
    }

    /// Phase 6: the head moves to the new generation if it is still the one the save read
    /// (and, with [`Base::Expect`], the one the caller expected); otherwise
    /// [`Error::Conflict`], the generation kept.
    pub(super) async fn move_head(&self, base: Base) -> Result<()> {
        let v = self.vault;
        let (tenant, profile, generation) = (self.at.tenant(), self.at.profile(), self.generation);
        let conflict = |head| Error::Conflict {
            profile: profile.into(),
            kept: generation,
            head,
        };
        let current = self.head.as_ref().map(|h| h.0.generation);
        if let Base::Expect(expected) = base {
            if expected != current {
                return Err(conflict(current));
            }
        }
        let new_head = Head {
            format: HEAD_FORMAT,
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: self.object_id.clone(),
            updated_at: now(),
        };
        let mut mode = match &self.head {
            None => PutMode::Create,
            Some((_, etag)) => PutMode::Update(etag.clone()),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&new_head).expect("head serializes"));
        // The head this save planned from, by what it names (not by its version: a rollback
        // to the generation it already names rewrites it, and one away and back again does).
        let planned = self
            .head
            .as_ref()
            .map(|(h, _)| (h.generation, h.object_id.clone()));
        for _ in 0..HEAD_REWRITES {
            match v
                .store
                .put(&self.at.head(), PutBody::Bytes(body.clone()), mode)
                .await
            {
                Ok(_) => return Ok(()),
                Err(store::Error::Precondition { .. } | store::Error::AlreadyExists { .. }) => {
                    let now = v.head_at(self.at).await?;
                    match now {
                        // Our own earlier attempt may have moved the head before its answer
                        // was lost.
                        Some((h, _)) if h.object_id == self.object_id => {
                            tracing::info!(
                                tenant,
                                profile,
                                generation,
                                "head already moved by a retried write"
                            );
                            return Ok(());
                        }
                        // Rewritten, naming what it named when the save planned: still the
                        // head this save follows.
                        Some((h, etag)) if Some((h.generation, h.object_id.clone())) == planned => {
                            mode = PutMode::Update(etag);
                        }
                        // Deleted under a session that continued it.
                        None if matches!(base, Base::Expect(Some(_))) => {
                            return Err(Error::ProfileDeleted {
                                profile: profile.into(),
                            })
                        }
                        now => return Err(conflict(now.map(|h| h.0.generation))),
                    }
                }
                // The store's retries ran out: the write may have landed all the same.
                Err(e) => {
                    return match v.head_at(self.at).await {
                        Ok(Some((h, _))) if h.object_id == self.object_id => Ok(()),
                        _ => Err(e.into()),
                    }
                }
            }
        }
        Err(conflict(current))
    }

    /// Phase 7: retention pruning (and collection of the packs only pruned generations
    /// used), metrics, the log line and the report. Nothing here fails the save.
    pub(super) async fn finish(self, w: Written) -> SaveReport {
        let v = self.vault;
        let (tenant, profile, generation) = (self.at.tenant(), self.at.profile(), self.generation);
        let pruned = match v.prune(self.at, generation).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant, profile, error = %e, "retention pruning failed; it will be retried on the next save");
                Vec::new()
            }
        };
        // Packs only pruned generations used: marked now, deleted by a later collection.
        if !pruned.is_empty() {
            if let Err(e) = v.gc_packs(self.at, false).await {
                tracing::warn!(tenant, profile, error = %e, "pack garbage collection after pruning failed; the sweeper retries");
            }
        }
        let bytes_stored = w.object_size + w.chunk_stats.as_ref().map_or(0, |c| c.bytes_uploaded);
        if let Some(c) = &w.chunk_stats {
            use std::sync::atomic::Ordering::Relaxed;
            let m = &crate::metrics::METRICS;
            m.chunks_new.fetch_add(c.chunks_new, Relaxed);
            m.chunks_reused
                .fetch_add(c.chunks.saturating_sub(c.chunks_new), Relaxed);
        }
        tracing::info!(
            tenant,
            profile,
            generation,
            files = w.stats.files,
            bytes_in = w.stats.bytes_in,
            bytes_stored,
            "profile saved"
        );
        SaveReport {
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id: self.object_id,
            files: w.stats.files,
            bytes_in: w.stats.bytes_in,
            bytes_stored,
            key_id: w.key_id,
            stats: w.stats,
            pruned,
            chunks: w.chunk_stats,
        }
    }
}
