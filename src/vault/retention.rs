//! When profiles were last used, and garbage collection of idle ones (retention).

use super::lease::now_ms;
use super::*;

fn last_used_key(tenant: &str, profile: &str) -> String {
    format!("{}last_used", prefix(tenant, profile))
}

impl Vault {
    /// Records that a profile was just used (loaded), for retention.
    pub(super) async fn touch_last_used(&self, tenant: &str, profile: &str) {
        let body = Bytes::from(now_ms().to_string());
        if let Err(e) = self
            .store
            .put(
                &last_used_key(tenant, profile),
                PutBody::Bytes(body),
                PutMode::Overwrite,
            )
            .await
        {
            tracing::warn!(tenant, profile, error = %e, "could not record the profile's last use");
        }
    }

    /// When a profile was last loaded or saved, Unix milliseconds.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn last_used_ms(&self, tenant: &str, profile: &str) -> Result<Option<u64>> {
        let saved = self
            .head(tenant, profile)
            .await?
            .map(|(h, _)| h.updated_at * 1000);
        let loaded = match self.store.get(&last_used_key(tenant, profile)).await {
            Ok(g) => String::from_utf8_lossy(&g.bytes().await?)
                .trim()
                .parse::<u64>()
                .ok(),
            Err(store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(saved.max(loaded))
    }

    /// Retention: deletes the tenant's profiles not loaded or saved for `max_idle`.
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
            let Some(last) = self.last_used_ms(tenant, &p.profile).await? else {
                continue;
            };
            if last < cutoff {
                if self.has_newer_parts(tenant, &p.profile).await? {
                    tracing::warn!(tenant, profile = %p.profile, "idle profile kept: a newer profile-vault wrote some of it");
                    continue;
                }
                if !dry_run {
                    self.delete(tenant, &p.profile).await?;
                }
                out.push(p.profile);
            }
        }
        Ok(out)
    }
}
