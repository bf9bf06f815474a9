//! Rekey: re-wrap every generation's data key, and every data document's, under another
//! master key; payloads and documents untouched.

use super::*;

impl Vault {
    /// Re-wraps every data key of `tenant` not yet under `to` with the master key `to`.
    /// Payloads are not touched. Returns (rewrapped, already under `to`).
    ///
    /// # Errors
    /// Unknown keys, storage errors, or a record whose key cannot be unwrapped.
    pub async fn rekey(&self, tenant: &str, to: &str, dry_run: bool) -> Result<(u64, u64)> {
        let r = self.rekey_inner(tenant, to, dry_run).await;
        if !dry_run {
            self.record(crate::audit::Action::Rekey, tenant, None, None, &r)
                .await;
        }
        r
    }

    pub(super) async fn rekey_inner(
        &self,
        tenant: &str,
        to: &str,
        dry_run: bool,
    ) -> Result<(u64, u64)> {
        // For a KMS key, the key its alias names now: records still under an older key
        // behind the same alias are moved too (before that key is deleted).
        let target_arn = self.keys.current_arn(to).await?;
        let mut tally = Tally::default();
        let arn = target_arn.as_deref();
        // A document or record rewritten or pruned meanwhile (a session's write, a save's
        // pruning, a rollback) is read again, or skipped once gone.
        for profile in self.data_names(tenant).await? {
            let at = &ProfileAddr::new(tenant, &profile)?;
            let r = settled(|| self.rekey_data(at, to, arn, dry_run)).await;
            tally.add(r, "data document")?;
        }
        for profile in self.profile_names(tenant).await? {
            let at = &ProfileAddr::new(tenant, &profile)?;
            let (_, records) = self.generation_numbers(at).await?;
            for g in records {
                let r = settled(|| self.rekey_record(at, g, to, arn, dry_run)).await;
                tally.add(r, "record")?;
            }
        }
        match tally.newer {
            Some(e) => Err(e),
            None => Ok((tally.rewrapped, tally.already)),
        }
    }

    /// Rewraps generation `g`'s record under `to` (`target_arn`: its KMS key, if any):
    /// `Some(true)` rewrapped (or would be, with `dry_run`), `Some(false)` already under it,
    /// `None` gone. A record rewritten or removed between its read and its write is
    /// [`store::Error::Precondition`].
    async fn rekey_record(
        &self,
        at: &ProfileAddr,
        g: u64,
        to: &str,
        target_arn: Option<&str>,
        dry_run: bool,
    ) -> Result<Option<bool>> {
        let key = at.generation(g, GenFile::Record);
        let meta = match self.store.head(&key).await {
            // Pruned by a save since it was listed: nothing left to rewrap.
            Err(store::Error::NotFound { .. }) => return Ok(None),
            m => m?,
        };
        let mut rec = match self.read_record(at, g).await {
            Err(Error::GenerationNotFound { .. }) => return Ok(None),
            r => r?,
        };
        if rec.key_id == to && rec.kms_key_arn.as_deref() == target_arn {
            return Ok(Some(false));
        }
        // Also on a dry run: shows that every record can still be unwrapped.
        let dek = self.unwrap_record(&rec).await?;
        if dry_run {
            return Ok(Some(true));
        }
        let ctx = WrapContext {
            tenant: at.tenant(),
            profile: at.profile(),
            generation: g,
            object_id: &rec.object_id,
        };
        let w = self.keys.wrap(to, &dek, &ctx).await?;
        rec.format = if rec.format == RECORD_FORMAT_CHUNKED {
            RECORD_FORMAT_CHUNKED
        } else if w.kms_key_arn.is_some() {
            RECORD_FORMAT_KMS
        } else {
            RECORD_FORMAT
        };
        rec.key_id = w.key_id;
        rec.wrapped_key = base64::engine::general_purpose::STANDARD.encode(&w.blob);
        rec.kms_key_arn = w.kms_key_arn;
        let body = Bytes::from(serde_json::to_vec_pretty(&rec).expect("record serializes"));
        self.store
            .put(&key, PutBody::Bytes(body), PutMode::Update(meta.etag))
            .await?;
        Ok(Some(true))
    }
}

/// What a rekey did so far.
#[derive(Default)]
struct Tally {
    rewrapped: u64,
    already: u64,
    /// The first thing this build cannot read (left as it is, reported at the end).
    newer: Option<Error>,
}

impl Tally {
    /// Counts one rewrap's outcome (of a `what`); other errors end the rekey.
    fn add(&mut self, r: Result<Option<bool>>, what: &str) -> Result<()> {
        match r {
            Ok(Some(true)) => self.rewrapped += 1,
            Ok(Some(false)) => self.already += 1,
            Ok(None) => {}
            Err(e) if e.is_newer() => {
                tracing::warn!(error = %e, "rekey leaves a {what} of a newer format alone");
                self.newer.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Runs `once` again while what it rewrites was rewritten between its read and its write
/// (a precondition failure), four times at most.
async fn settled<F: std::future::Future<Output = Result<Option<bool>>>>(
    mut once: impl FnMut() -> F,
) -> Result<Option<bool>> {
    for _ in 1..4 {
        match once().await {
            Err(Error::Store(store::Error::Precondition { .. })) => {}
            r => return r,
        }
    }
    once().await
}
