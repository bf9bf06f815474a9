//! Failed saves' holds on their profiles.
//!
//! A session whose save failed keeps its profile directory for a retry. Until that retry
//! lands, the profile stays held as it was while the session ran: this node's lock stays
//! taken and the store's lease is renewed. So no session here or on another node loads the
//! generation before it (and then saves over it, leaving the failed session's work as a
//! non-head generation). A load of a held profile on this node retries the save first.
//!
//! A hold ends when the save lands, or after `sessions.hold_failed_saves` seconds: a save
//! that cannot land must not lock its profile for good. The retries go on after that (their
//! generation may then be kept as a non-head one, and nothing is lost).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;

/// How long a load of a held profile waits for its failed save's retry (a store that stalls
/// must not hold `POST /v0/vm` and its session slot for the whole of a save's deadlines).
pub(super) const HELD_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// One failed save's hold on its profile.
pub(super) struct Held {
    tenant: String,
    profile: String,
    /// The store's lease, when one is held.
    lease: Arc<super::lease::KeptLease>,
    /// When the hold ends at the latest ([`timer::mono_ms`]).
    until_ms: u64,
}

impl Manager {
    /// Holds `profile` for the failed save of session `id`, whose lock on this node is
    /// taken; `lease` is its lease in the store, if any. Without a hold configured, both are
    /// given back at once. `failed_ago` is how long ago the save first failed (a restart does
    /// not start the hold over).
    pub(super) fn hold(
        &self,
        tenant: &str,
        profile: &str,
        id: &str,
        lease: Option<vault::Lease>,
        failed_ago: std::time::Duration,
    ) {
        if failed_ago >= self.cfg.hold_failed || self.shutting_down.load(Ordering::SeqCst) {
            // Not held, held long enough, or stopping (the lease expires by itself, and the
            // next start holds it again).
            self.release_profile(tenant, profile, id);
            return;
        }
        let now = timer::mono_ms();
        let left = self.cfg.hold_failed.saturating_sub(failed_ago);
        tracing::warn!(session = %id, profile, lease = lease.is_some(), "the profile stays held until its failed save is retried successfully");
        self.held.lock().expect("held lock").insert(
            id.to_string(),
            Arc::new(Held {
                tenant: tenant.into(),
                profile: profile.into(),
                // Renewed at the next sweep: the session's last renewal may be a while ago.
                lease: super::lease::KeptLease::new(lease, 0),
                until_ms: now.saturating_add(left.as_millis() as u64),
            }),
        );
    }

    /// Holds the profile of a failed save found at start, which first failed `failed_ago`
    /// (its session's lease went with the previous daemon): the lease is taken again if no
    /// one else took it meanwhile.
    pub(super) async fn hold_recovered(&self, r: &Record, failed_ago: std::time::Duration) {
        let (Some(p), true) = (&r.profile_id, r.save) else {
            return;
        };
        let lease = match crate::layout::ProfileAddr::new(&r.tenant, p) {
            Ok(at) if failed_ago < self.cfg.hold_failed => {
                match self
                    .vault
                    .acquire_lease(&at, &self.node_id, &r.id, self.cfg.lease_ttl)
                    .await
                {
                    Ok(Some(l)) => Some(l),
                    Ok(None) => {
                        tracing::warn!(session = %r.id, profile = %p, "another node took the profile while this one was down; the failed save is not held");
                        self.release_profile(&r.tenant, p, &r.id);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(session = %r.id, profile = %p, error = %e, "could not take the profile's lease for its failed save; holding it on this node only");
                        None
                    }
                }
            }
            _ => None,
        };
        self.hold(&r.tenant, p, &r.id, lease, failed_ago);
    }

    /// Ends the hold of session `id`'s failed save, if any: its lease is released and its
    /// lock on this node freed.
    pub(super) async fn unhold(&self, id: &str) {
        let Some(h) = self.held.lock().expect("held lock").remove(id) else {
            return;
        };
        // Freed before anything awaits: a caller dropped on the way leaves no lock behind.
        self.release_profile(&h.tenant, &h.profile, id);
        if let Some(l) = h.lease.take().await {
            if let Err(e) = self.vault.release_lease(&l).await {
                tracing::warn!(session = %id, error = %e, "could not release the profile lease; it expires by itself");
            }
        }
    }

    /// The session whose failed save holds `profile` of `tenant` on this node.
    fn holder(&self, tenant: &str, profile: &str) -> Option<String> {
        self.held
            .lock()
            .expect("held lock")
            .iter()
            .find(|(_, h)| h.tenant == tenant && h.profile == profile)
            .map(|(id, _)| id.clone())
    }

    /// Before `profile` is loaded: when a failed save holds it on this node, that save is
    /// retried now, so the load gets its generation. Returns whether the profile is still
    /// held: the save failed again, or it has not landed within [`HELD_LOAD_WAIT`] (a retry
    /// already under way is waited for as long; the retry goes on without the load).
    pub(super) async fn settle_held(self: &Arc<Self>, tenant: &str, profile: &str) -> bool {
        let Some(id) = self.holder(tenant, profile) else {
            return false;
        };
        match tokio::time::timeout(HELD_LOAD_WAIT, self.retry_save(Some(tenant), &id)).await {
            // Saved, or refused for good (no longer held either): whether it holds it still.
            Ok(Ok(_)) => self.holder(tenant, profile).is_some(),
            // Its record is gone (saved by `profile-vault saves --retry` on this node).
            Ok(Err(_)) => {
                self.unhold(&id).await;
                false
            }
            Err(_) => {
                tracing::warn!(session = %id, profile, "a load of a held profile did not wait longer for its failed save's retry");
                true
            }
        }
    }

    /// Renews the held leases due (every third of their lifetime) and ends the holds
    /// older than `sessions.hold_failed_saves`.
    pub(super) fn keep_holds(self: &Arc<Self>, mono: u64) {
        let held: Vec<(String, Arc<Held>)> = self
            .held
            .lock()
            .expect("held lock")
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        for (id, h) in held {
            let this = self.clone();
            if !self.records.path(&id).exists() {
                // Saved meanwhile by `profile-vault saves --retry` on this node.
                tokio::spawn(async move { this.unhold(&id).await });
                continue;
            }
            if mono >= h.until_ms {
                tracing::error!(session = %id, profile = %h.profile, "the failed save was not retried successfully in sessions.hold_failed_saves; its profile is no longer held (the retries go on)");
                tokio::spawn(async move { this.unhold(&id).await });
                continue;
            }
            self.renew_when_due(&h.lease, &id, mono);
        }
    }
}
