//! Listing profiles and their generations, rollback (moving the head), and delete.

use super::*;

impl Vault {
    /// Every generation of a profile, oldest first.
    ///
    /// # Errors
    /// Storage errors; [`Error::ProfileNotFound`] when nothing exists.
    pub async fn versions(&self, at: &ProfileAddr) -> Result<Vec<GenerationInfo>> {
        let head = self.head_at(at).await?.map(|h| h.0.generation);
        let (payloads, records) = self.generation_numbers(at).await?;
        let all = merged(&payloads, &records);
        if all.is_empty() && head.is_none() {
            return Err(not_found(at));
        }
        let mut out = Vec::with_capacity(all.len());
        for g in all {
            let record = if records.contains(&g) {
                let key = at.generation(g, GenFile::Record);
                match self.store.get(&key).await {
                    Ok(r) => {
                        let bytes = r.bytes().await?;
                        check_not_newer("generation record", &key, &bytes, RECORD_FORMAT_CHUNKED)?;
                        serde_json::from_slice(&bytes).ok()
                    }
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

    /// Ids of the tenant's profiles that have a head object, whatever its format.
    ///
    /// # Errors
    /// Storage errors.
    pub(super) async fn profile_names(&self, tenant: &str) -> Result<Vec<String>> {
        self.profiles_with(tenant, "head.json").await
    }

    /// Ids of the tenant's profiles that hold an object named `file` at their top.
    pub(super) async fn profiles_with(&self, tenant: &str, file: &str) -> Result<Vec<String>> {
        validate_id("tenant", tenant)?;
        let p = crate::layout::profiles_prefix(tenant);
        let suffix = format!("/{file}");
        Ok(self
            .store
            .list(&p)
            .await?
            .iter()
            .filter_map(|m| m.key[p.len()..].strip_suffix(&suffix))
            // What no valid profile id names was not written by a vault: left alone.
            .filter(|name| validate_id("profile", name).is_ok())
            .map(str::to_string)
            .collect())
    }

    /// Whether any part of a profile — a generation record, a payload's format version, its
    /// lease — is of a newer format than this build reads (what it cannot read, it must not
    /// delete). Payloads are read only as far as their 10-byte prefix.
    ///
    /// # Errors
    /// Storage errors.
    pub(super) async fn has_newer_parts(&self, at: &ProfileAddr) -> Result<bool> {
        use tokio::io::AsyncReadExt;
        let (payloads, records) = self.generation_numbers(at).await?;
        for g in payloads {
            match self.store.get(&at.generation(g, GenFile::Payload)).await {
                Ok(mut r) => {
                    let mut prefix = [0u8; 10];
                    if r.body.read_exact(&mut prefix).await.is_ok()
                        && u16::from_be_bytes([prefix[8], prefix[9]]) > format::NEWEST
                    {
                        return Ok(true);
                    }
                }
                Err(store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let lease = at.lease();
        match self.store.get(&lease).await {
            Ok(r) => {
                if check_not_newer("lease", &lease, &r.bytes().await?, 1).is_err() {
                    return Ok(true);
                }
            }
            Err(store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match self.read_data_record(at).await {
            Err(e) if e.is_newer() => return Ok(true),
            _ => {}
        }
        for g in records {
            let key = at.generation(g, GenFile::Record);
            match self.store.get(&key).await {
                Ok(r) => {
                    let bytes = r.bytes().await?;
                    if check_not_newer("generation record", &key, &bytes, RECORD_FORMAT_CHUNKED)
                        .is_err()
                    {
                        return Ok(true);
                    }
                }
                Err(store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Profiles of a tenant that have a head.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, tenant: &str) -> Result<Vec<ProfileSummary>> {
        validate_id("tenant", tenant)?;
        let p = crate::layout::profiles_prefix(tenant);
        let mut out = Vec::new();
        for m in self.store.list(&p).await? {
            let rest = &m.key[p.len()..];
            if let Some(profile) = rest.strip_suffix("/head.json") {
                // A key under the prefix that names no valid profile is not one.
                let Ok(at) = ProfileAddr::new(tenant, profile) else {
                    continue;
                };
                match self.head(&at).await {
                    Ok(Some((h, _))) => out.push(ProfileSummary {
                        profile: profile.into(),
                        generation: h.generation,
                        updated_at: h.updated_at,
                    }),
                    Err(e) if e.is_newer() => {
                        tracing::warn!(error = %e, "profile left out of the list: a newer profile-vault wrote it");
                    }
                    _ => {}
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
        for m in self.store.list(crate::layout::TENANTS).await? {
            if let Some(t) = m.key[crate::layout::TENANTS.len()..].split('/').next() {
                if out.last().map(String::as_str) != Some(t) {
                    out.push(t.to_string());
                }
            }
        }
        out.dedup();
        Ok(out)
    }

    /// Moves the head to an earlier (or any existing) generation after verifying its record
    /// and key, and that its payload and packs are there.
    ///
    /// # Errors
    /// Not found, key, storage errors; [`Error::Conflict`] when the head moved meanwhile.
    pub async fn rollback(&self, at: &ProfileAddr, to: u64) -> Result<Head> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let r = self.rollback_inner(at, to).await;
        self.record(
            crate::audit::Action::Rollback,
            tenant,
            Some(profile),
            Some(to),
            &r,
        )
        .await;
        r
    }

    pub(super) async fn rollback_inner(&self, at: &ProfileAddr, to: u64) -> Result<Head> {
        let profile = at.profile();
        let Some((head, etag)) = self.head_at(at).await? else {
            return Err(not_found(at));
        };
        let (rec, _) = self.open_record(at, to).await?;
        if head.generation == to && head.object_id == rec.object_id {
            // Already there: the head is not rewritten (a save planned from it would take
            // the new version for another save's).
            return Ok(head);
        }
        self.store
            .head(&at.generation(to, GenFile::Payload))
            .await
            .map_err(|e| match e {
                store::Error::NotFound { .. } => Error::GenerationNotFound {
                    profile: profile.into(),
                    generation: to,
                },
                e => e.into(),
            })?;
        // Every pack a format 2 generation names is there (one lost made every load of it
        // fail, and an operator rolls back when something is already wrong).
        for pack in rec.packs.iter().flatten() {
            match self.store.head(&at.pack(pack)).await {
                Ok(_) => {}
                Err(store::Error::NotFound { .. }) => {
                    return Err(Error::PackMissing {
                        profile: profile.into(),
                        generation: to,
                        pack: pack.clone(),
                        reason: "not in the store: the head stays".into(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        let new_head = Head {
            generation: to,
            object_id: rec.object_id,
            updated_at: now(),
            ..head.clone()
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&new_head).expect("head serializes"));
        let put = match self
            .store
            .put(&at.head(), PutBody::Bytes(body), PutMode::Update(etag))
            .await
        {
            // Our own write may have landed, its answer lost (its retry then finds its own
            // version there, or the retries ran out): the head is then what we wrote.
            Err(e) => match self.head_at(at).await {
                Ok(Some((h, moved))) if h == new_head => Ok(moved),
                _ => Err(e),
            },
            r => r,
        };
        match put {
            Ok(moved) => {
                // A save's pruning may have removed the generation between the check and
                // the move: then the head goes back to where it was.
                let record = self.store.head(&at.generation(to, GenFile::Record)).await;
                let payload = self.store.head(&at.generation(to, GenFile::Payload)).await;
                if !matches!(
                    (&record, &payload),
                    (Err(store::Error::NotFound { .. }), _)
                        | (_, Err(store::Error::NotFound { .. }))
                ) {
                    return Ok(new_head);
                }
                let back = Bytes::from(serde_json::to_vec_pretty(&head).expect("head serializes"));
                if let Err(e) = self
                    .store
                    .put(&at.head(), PutBody::Bytes(back), PutMode::Update(moved))
                    .await
                {
                    tracing::error!(tenant = at.tenant(), profile, generation = to, error = %e, "a rollback's generation was pruned as the head moved to it, and the head could not be moved back");
                    return Err(e.into());
                }
                Err(Error::GenerationNotFound {
                    profile: profile.into(),
                    generation: to,
                })
            }
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
    pub async fn delete(&self, at: &ProfileAddr) -> Result<usize> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let r = self.delete_inner(at).await;
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

    /// Deletes a profile no session holds, holding it meanwhile: its lease is taken for
    /// the delete (a session starting on any node then finds it held), as `holder` of `node`.
    ///
    /// # Errors
    /// [`Error::Leased`] when a session holds it; not found, storage errors.
    pub async fn delete_unleased(
        &self,
        at: &ProfileAddr,
        node: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<usize> {
        // Not there: nothing to hold (the lease would be its only object).
        if self.store.list(at.prefix()).await?.is_empty() {
            return Err(not_found(at));
        }
        let Some(lease) = self.acquire_lease(at, node, holder, ttl).await? else {
            return Err(Error::Leased {
                profile: at.profile().into(),
            });
        };
        let r = self.delete(at).await;
        if r.is_err() {
            // What is left stays loadable at once.
            let _ = self.release_lease(&lease).await;
        }
        r
    }

    pub(super) async fn delete_inner(&self, at: &ProfileAddr) -> Result<usize> {
        let objects = self.store.list(at.prefix()).await?;
        if objects.is_empty() {
            return Err(not_found(at));
        }
        self.store.delete(&at.head()).await?;
        // Once the head is gone the profile is listed nowhere: every other object is tried
        // (a failure does not leave the rest), and the first failure is answered (a delete
        // of the same id again takes what is left).
        let mut failed = None;
        for m in &objects {
            if let Err(e) = self.store.delete(&m.key).await {
                tracing::warn!(tenant = at.tenant(), profile = at.profile(), key = %m.key, error = %e, "an object of a deleted profile could not be deleted");
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        tracing::info!(
            tenant = at.tenant(),
            profile = at.profile(),
            objects = objects.len(),
            "profile deleted"
        );
        Ok(objects.len())
    }
}
