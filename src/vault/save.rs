//! Saving a generation: pack and encrypt into a spool file, upload create-only (claiming the
//! generation number), write the record, move the head by compare-and-swap, prune.

use super::*;

impl Vault {
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
        self.save_with(tenant, profile, dir, base, &Identity::default(), progress)
            .await
    }

    /// [`Vault::save`], pinning `identity` to the new generation (its sidecar).
    ///
    /// # Errors
    /// As [`Vault::save`].
    pub async fn save_with(
        &self,
        tenant: &str,
        profile: &str,
        dir: &Path,
        base: Base,
        identity: &Identity,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        let at = &ProfileAddr::new(tenant, profile)?;
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

    pub(super) async fn save_inner(
        &self,
        at: &ProfileAddr,
        dir: &Path,
        base: Base,
        identity: &Identity,
        progress: Arc<dyn Progress>,
    ) -> Result<SaveReport> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let head = self.head_at(at).await?;
        let (payloads, records) = self.generation_numbers(at).await?;
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
        let ctx = WrapContext {
            tenant,
            profile,
            generation,
            object_id: &object_id,
        };
        // Format 2 carries the profile's content key from the base generation, so its chunks
        // can be reused; otherwise (and for format 1) a fresh data key.
        // A save older than gc::MAX_SAVE (counted from before it read its base) gives up
        // before claiming its packs.
        let started = std::time::Instant::now();
        let chunked = self.opts.write_format >= 2;
        let base_gen = head.as_ref().map(|h| h.0.generation);
        let reuse = if chunked {
            self.chunked_base(at, base_gen).await?
        } else {
            None
        };
        let (dek, first_wrap) = match &reuse {
            Some(b) => (b.key.clone(), self.keys.wrap(&master, &b.key, &ctx).await?),
            None => self.keys.new_data_key(&master, &ctx).await?,
        };

        // Pack + encrypt into the spool file, off the async runtime (format 2 also uploads
        // the packs on the way).
        let slot = self.work_slot().await;
        let spool = TempFile(self.spool_file("save"));
        let (dek, sealer, stats, contents, mut header_len, chunks) = if chunked {
            let p = self
                .pack_chunked(
                    at,
                    dir,
                    &spool.0,
                    &dek,
                    reuse,
                    generation,
                    &object_id,
                    created_at,
                    progress.clone(),
                )
                .await?;
            let c = (p.packs, p.chunks, p.uploaded);
            (dek, p.sealer, p.stats, p.contents, p.header_len, Some(c))
        } else {
            let (dir, path, opts) = (dir.to_path_buf(), spool.0.clone(), self.opts.clone());
            let (tenant, profile, object_id) =
                (tenant.to_string(), profile.to_string(), object_id.clone());
            let progress = progress.clone();
            let (dek, sealer, stats, contents, header_len) = blocking(move || {
                let sealer = Sealer::new(&dek, opts.chunk_size);
                let header =
                    sealer.header_bytes(&tenant, &profile, generation, &object_id, created_at);
                let mut f = fsutil::create_private_new(&path).map_err(io_at(&path))?;
                f.write_all(&header).map_err(io_at(&path))?;
                let w = sealer.body_writer(std::io::BufWriter::with_capacity(1 << 20, f));
                let (w, stats) = archive::pack(&dir, w, &opts.pack, progress.as_ref())?;
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
            (dek, sealer, stats, contents, header_len, None)
        };
        drop(slot);
        if stats.cookie_v11_warning {
            tracing::warn!(tenant, profile, "cookie store holds v11 (keyring-encrypted) values: those cookies will be lost when restored on another machine; start Chromium with --password-store=basic");
        }

        // Upload, claiming the generation number with a create-only write.
        let mut attempts = 0;
        loop {
            let key = at.generation(generation, GenFile::Payload);
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
                    let (p, r) = self.generation_numbers(at).await?;
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
        // Format 2: from here on the packs it uses must not be collected (gc.rs). Its
        // manifest, now stored without a record, keeps collections from deleting anything
        // while it claims them.
        if let Some((packs, _, uploaded)) = &chunks {
            let claimed = if started.elapsed() > super::gc::MAX_SAVE {
                Err(Error::PacksCollected {
                    profile: profile.into(),
                })
            } else {
                self.claim_packs(at, packs).await
            };
            if let Err(e) = claimed {
                let _ = self
                    .store
                    .delete(&at.generation(generation, GenFile::Payload))
                    .await;
                self.remove_packs(at, uploaded).await;
                return Err(e);
            }
        }

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
        // The sidecar: sealed under this generation's data key, bound to its place.
        let meta = GenerationMeta {
            identity: identity.clone(),
            contents,
        };
        let body = meta::seal_meta(&dek, tenant, profile, generation, &object_id, &meta);
        drop(dek);
        match self
            .store
            .put(
                &at.generation(generation, GenFile::Meta),
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
        let key_id = wrapped.key_id.clone();
        let (packs, chunk_stats) = match chunks {
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
            object_id: object_id.clone(),
            created_at,
            key_id: key_id.clone(),
            wrapped_key: base64::engine::general_purpose::STANDARD.encode(&wrapped.blob),
            kms_key_arn: wrapped.kms_key_arn,
            object_size,
            base: head.as_ref().map(|h| h.0.generation),
            stats: stats.clone(),
            packs,
            chunks: chunk_stats.clone(),
        };
        let rec_bytes = serde_json::to_vec_pretty(&record).expect("record serializes");
        let rkey = at.generation(generation, GenFile::Record);
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
        match self.store.put(&at.head(), PutBody::Bytes(body), mode).await {
            Ok(_) => {}
            Err(store::Error::Precondition { .. } | store::Error::AlreadyExists { .. }) => {
                let now = self.head_at(at).await.ok().flatten().map(|h| h.0);
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
        let pruned = match self.prune(at, generation).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant, profile, error = %e, "retention pruning failed; it will be retried on the next save");
                Vec::new()
            }
        };
        // Packs only pruned generations used: marked now, deleted by a later collection.
        if !pruned.is_empty() {
            if let Err(e) = self.gc_packs(tenant, profile, false).await {
                tracing::warn!(tenant, profile, error = %e, "pack garbage collection after pruning failed; the sweeper retries");
            }
        }
        let bytes_stored = object_size + chunk_stats.as_ref().map_or(0, |c| c.bytes_uploaded);
        if let Some(c) = &chunk_stats {
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
            files = stats.files,
            bytes_in = stats.bytes_in,
            bytes_stored,
            "profile saved"
        );
        Ok(SaveReport {
            tenant: tenant.into(),
            profile: profile.into(),
            generation,
            object_id,
            files: stats.files,
            bytes_in: stats.bytes_in,
            bytes_stored,
            key_id,
            stats,
            pruned,
            chunks: chunk_stats,
        })
    }

    /// Keeps the newest `keep` generations and the head; removes older ones (record first).
    pub(super) async fn prune(&self, at: &ProfileAddr, head: u64) -> Result<Vec<u64>> {
        let (payloads, records) = self.generation_numbers(at).await?;
        let all = merged(&payloads, &records);
        let keep = self.opts.keep.max(1);
        let cutoff = all.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for &g in &all[..cutoff] {
            if g == head {
                continue;
            }
            self.store
                .delete(&at.generation(g, GenFile::Record))
                .await?;
            self.store
                .delete(&at.generation(g, GenFile::Payload))
                .await?;
            self.store.delete(&at.generation(g, GenFile::Meta)).await?;
            removed.push(g);
        }
        Ok(removed)
    }

    /// The object id in a payload's header (unauthenticated; only used to recognise our own
    /// earlier write after an ambiguous retry).
    pub(super) async fn payload_object_id(&self, key: &str) -> Option<String> {
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
    pub(super) async fn record_object_id(&self, key: &str) -> Option<String> {
        let bytes = self.store.get(key).await.ok()?.bytes().await.ok()?;
        serde_json::from_slice::<GenerationRecord>(&bytes)
            .ok()
            .map(|r| r.object_id)
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
