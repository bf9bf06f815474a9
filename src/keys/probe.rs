//! Whether the keys can be used: the probes behind `/readyz`, `serve`'s start and
//! `keys --check` (KMS keys answer `DescribeKey`: they exist, are enabled and symmetric).

use super::{Entry, Error, Keyring};

impl Keyring {
    /// Readiness: [`Keyring::probe`] within 5 s. A success is reused for 60 s and a failure
    /// for 5 s, and callers wait for the probe under way: `/readyz` is open to anyone, and a
    /// flood of it costs at most one KMS call every few seconds, never one each.
    pub async fn ready(&self) -> bool {
        const FRESH_OK: std::time::Duration = std::time::Duration::from_secs(60);
        const FRESH_FAILED: std::time::Duration = std::time::Duration::from_secs(5);
        let mut last = self.probed.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < if ok { FRESH_OK } else { FRESH_FAILED } {
                return ok;
            }
        }
        let ok = matches!(
            tokio::time::timeout(std::time::Duration::from_secs(5), self.probe()).await,
            Ok(Ok(()))
        );
        *last = Some((std::time::Instant::now(), ok));
        ok
    }

    /// Checks that the keys new saves use can be used: KMS keys exist, are enabled and are
    /// symmetric encryption keys (`DescribeKey`). Local keys always can.
    ///
    /// # Errors
    /// The first failing key's error.
    pub async fn probe(&self) -> Result<(), Error> {
        let mut ids: Vec<&str> = vec![self.active.as_str()];
        ids.extend(self.tenants.values().map(String::as_str));
        ids.sort_unstable();
        ids.dedup();
        self.probe_ids(ids).await
    }

    /// [`Keyring::probe`] for every loaded key, in use or not (`keys --check`).
    ///
    /// # Errors
    /// The first failing key's error.
    pub async fn probe_all(&self) -> Result<(), Error> {
        self.probe_ids(self.ids().collect()).await
    }

    async fn probe_ids(&self, ids: Vec<&str>) -> Result<(), Error> {
        for id in ids {
            match self.entry(id)? {
                Entry::Local(_) => {}
                #[cfg(feature = "kms")]
                Entry::Kms(k) => {
                    k.describe().await?;
                }
            }
        }
        Ok(())
    }
}
