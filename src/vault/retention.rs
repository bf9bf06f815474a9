//! When profiles were last used, and garbage collection of idle ones (retention).

use super::lease::now_ms;
use super::*;

impl Vault {
    /// Records that a profile was just used (loaded), for retention.
    pub(super) async fn touch_last_used(&self, at: &ProfileAddr) {
        let body = Bytes::from(now_ms().to_string());
        if let Err(e) = self
            .store
            .put(&at.last_used(), PutBody::Bytes(body), PutMode::Overwrite)
            .await
        {
            tracing::warn!(tenant = at.tenant(), profile = at.profile(), error = %e, "could not record the profile's last use");
        }
    }

    /// When a profile was last loaded or saved, Unix milliseconds.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn last_used_ms(&self, at: &ProfileAddr) -> Result<Option<u64>> {
        let saved = self.head_at(at).await?.map(|(h, _)| h.updated_at * 1000);
        let loaded = match self.store.get(&at.last_used()).await {
            Ok(g) => String::from_utf8_lossy(&g.bytes().await?)
                .trim()
                .parse::<u64>()
                .ok(),
            Err(store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(saved.max(loaded))
    }

    /// Retention: deletes the tenant's profiles not loaded or saved for `max_idle`, but for
    /// those `in_use` here or leased by a session of any node. One profile's failure does
    /// not stop the others': it is reported with the profiles deleted (or that would be,
    /// with `dry_run`). A profile another process deleted meanwhile is neither.
    ///
    /// # Errors
    /// Storage errors listing the tenant's profiles.
    pub async fn gc(
        &self,
        tenant: &str,
        max_idle: std::time::Duration,
        dry_run: bool,
        in_use: &[String],
    ) -> Result<Retention> {
        let cutoff = now_ms().saturating_sub(max_idle.as_millis() as u64);
        let mut out = Retention::default();
        for p in self.list(tenant).await? {
            if in_use.contains(&p.profile) {
                continue;
            }
            match self.gc_one(tenant, &p.profile, cutoff, dry_run).await {
                Ok(true) => out.deleted.push(p.profile),
                Ok(false) | Err(Error::ProfileNotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(tenant, profile = %p.profile, error = %e, "retention could not collect this profile");
                    out.failed.push((p.profile, e));
                }
            }
        }
        Ok(out)
    }

    /// Retention of one profile: whether it was idle since `cutoff` (Unix ms) and deleted
    /// (or would be, with `dry_run`).
    async fn gc_one(
        &self,
        tenant: &str,
        profile: &str,
        cutoff: u64,
        dry_run: bool,
    ) -> Result<bool> {
        let at = &ProfileAddr::new(tenant, profile)?;
        let Some(last) = self.last_used_ms(at).await? else {
            return Ok(false);
        };
        if last >= cutoff {
            return Ok(false);
        }
        // A session on another node holds it: idle in the store, not in use.
        match self.leased(at).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(
                    tenant,
                    profile,
                    "idle profile kept: a session holds its lease"
                );
                return Ok(false);
            }
            Err(e) => {
                tracing::warn!(tenant, profile, error = %e, "idle profile kept: its lease could not be read");
                return Ok(false);
            }
        }
        if self.has_newer_parts(at).await? {
            tracing::warn!(
                tenant,
                profile,
                "idle profile kept: a newer profile-vault wrote some of it"
            );
            return Ok(false);
        }
        if !dry_run {
            self.delete(at).await?;
        }
        Ok(true)
    }
}

/// What one retention pass over a tenant did.
#[derive(Debug, Default)]
pub struct Retention {
    /// Profiles deleted (or that would be, on a dry run).
    pub deleted: Vec<String>,
    /// Profiles that could not be looked at or deleted, and why (the others went on).
    pub failed: Vec<(String, Error)>,
}
