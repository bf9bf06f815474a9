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
    /// those `in_use` here or leased by a session of any node.
    /// Returns the profiles deleted (or that would be, with `dry_run`).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn gc(
        &self,
        tenant: &str,
        max_idle: std::time::Duration,
        dry_run: bool,
        in_use: &[String],
    ) -> Result<Vec<String>> {
        let cutoff = now_ms().saturating_sub(max_idle.as_millis() as u64);
        let mut out = Vec::new();
        for p in self.list(tenant).await? {
            if in_use.contains(&p.profile) {
                continue;
            }
            let at = &ProfileAddr::new(tenant, &p.profile)?;
            let Some(last) = self.last_used_ms(at).await? else {
                continue;
            };
            if last < cutoff {
                // A session on another node holds it: idle in the store, not in use.
                match self.leased(at).await {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(tenant, profile = %p.profile, "idle profile kept: a session holds its lease");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(tenant, profile = %p.profile, error = %e, "idle profile kept: its lease could not be read");
                        continue;
                    }
                }
                if self.has_newer_parts(at).await? {
                    tracing::warn!(tenant, profile = %p.profile, "idle profile kept: a newer profile-vault wrote some of it");
                    continue;
                }
                if !dry_run {
                    self.delete(at).await?;
                }
                out.push(p.profile);
            }
        }
        Ok(out)
    }
}
