//! Profile leases across nodes: conditional writes in the store, renewed while a session lives.

use super::*;

/// A profile lease: which node's session may save a profile now. Held in the store with
/// conditional writes, renewed while the session lives, and free once it expires (its node
/// died) or is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are tolerated: a later release may add some within format 1 (it writes a
// `format` above 1 when old readers must not take the lease over).
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
    at: ProfileAddr,
    record: LeaseRecord,
    etag: String,
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Vault {
    /// Whether a live lease of the profile exists (a session somewhere may save it).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn leased(&self, at: &ProfileAddr) -> Result<bool> {
        Ok(self.lease_holder(at).await?.is_some())
    }

    /// The holder of the profile's live lease, if any: (node, session); both empty for a
    /// lease this release cannot read.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn lease_holder(&self, at: &ProfileAddr) -> Result<Option<(String, String)>> {
        let Some((bytes, _, modified)) = self.stored_lease(at).await? else {
            return Ok(None);
        };
        // A lease this release cannot read is live for a day after it was written: nothing
        // is deleted under a session of a newer node, nor kept forever.
        Ok(match serde_json::from_slice::<LeaseRecord>(&bytes) {
            Ok(l) => (l.expires_at_ms > now_ms()).then_some((l.node, l.session)),
            Err(_) => (now_ms().saturating_sub(modified.saturating_mul(1000)) < 24 * 3600 * 1000)
                .then(Default::default),
        })
    }

    /// Takes the lease of a profile for `node`/`session` for `ttl`. Returns `Ok(None)` when a
    /// live lease of another holder exists (the profile is in use elsewhere).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn acquire_lease(
        &self,
        at: &ProfileAddr,
        node: &str,
        session: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>> {
        let key = at.lease();
        let mode = match self.stored_lease(at).await? {
            Some((bytes, etag, _)) => {
                check_not_newer("lease", &key, &bytes, 1)?;
                let current: Option<LeaseRecord> = serde_json::from_slice(&bytes).ok();
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
            None => PutMode::Create,
        };
        let record = LeaseRecord {
            node: node.into(),
            session: session.into(),
            expires_at_ms: now_ms() + ttl.as_millis() as u64,
        };
        let body = Bytes::from(serde_json::to_vec(&record).expect("lease serializes"));
        match self.store.put(&key, PutBody::Bytes(body), mode).await {
            Ok(etag) => Ok(Some(Lease {
                at: at.clone(),
                record,
                etag,
            })),
            // Our own write may have landed with its answer lost (a retry found it there).
            Err(store::Error::AlreadyExists { .. } | store::Error::Precondition { .. }) => Ok(self
                .held_by(at, node, session)
                .await?
                .filter(|(l, _)| *l == record)
                .map(|(record, etag)| Lease {
                    at: at.clone(),
                    record,
                    etag,
                })),
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
        Ok(match self.rewrite_lease(lease, &record).await? {
            Some(etag) => {
                lease.etag = etag;
                lease.record = record;
                true
            }
            None => false,
        })
    }

    /// Gives a lease up if it is still ours: it is written back expired, on the condition
    /// that it is the version this process wrote last (a delete could not be conditional,
    /// and would remove a lease another node took in between).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let record = LeaseRecord {
            expires_at_ms: 0,
            ..lease.record.clone()
        };
        self.rewrite_lease(lease, &record).await.map(drop)
    }

    /// Writes `record` over `lease` if the store still holds the version this process wrote
    /// last: its new etag, or `None` when the lease was taken over (or is gone).
    async fn rewrite_lease(&self, lease: &Lease, record: &LeaseRecord) -> Result<Option<String>> {
        let body = Bytes::from(serde_json::to_vec(record).expect("lease serializes"));
        let mut version = lease.etag.clone();
        // A second write only when the first finds a later version of our own.
        for _ in 0..2 {
            match self
                .store
                .put(
                    &lease.at.lease(),
                    PutBody::Bytes(body.clone()),
                    PutMode::Update(version),
                )
                .await
            {
                Ok(etag) => return Ok(Some(etag)),
                // A write of ours whose answer was lost (a retry of it, or an earlier call
                // that failed) landed: the version there is still ours. Nobody else writes
                // this holder's records.
                Err(store::Error::Precondition { .. }) => {
                    match self
                        .held_by(&lease.at, &record.node, &record.session)
                        .await?
                    {
                        Some((now, etag)) if &now == record => return Ok(Some(etag)),
                        Some((_, etag)) => version = etag,
                        None => return Ok(None),
                    }
                }
                Err(store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// The lease object as stored, if there is one: its bytes, version, and when it was
    /// written (Unix seconds).
    async fn stored_lease(&self, at: &ProfileAddr) -> Result<Option<(Bytes, String, u64)>> {
        match self.store.get(&at.lease()).await {
            Ok(g) => {
                let (etag, modified) = (g.meta.etag.clone(), g.meta.modified);
                Ok(Some((g.bytes().await?, etag, modified)))
            }
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The lease as stored, and its version, when `node`'s `session` holds it (live or not).
    async fn held_by(
        &self,
        at: &ProfileAddr,
        node: &str,
        session: &str,
    ) -> Result<Option<(LeaseRecord, String)>> {
        Ok(self.stored_lease(at).await?.and_then(|(bytes, etag, _)| {
            serde_json::from_slice::<LeaseRecord>(&bytes)
                .ok()
                .filter(|l| l.node == node && l.session == session)
                .map(|l| (l, etag))
        }))
    }
}
