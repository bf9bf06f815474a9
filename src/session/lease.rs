//! A profile lease this node keeps renewed: a session's until its save is done, and a failed
//! save's while it holds its profile ([`super::held`]). One renewal for both, due every third
//! of `sessions.lease_ttl` and run by the sweep in a task of its own (a slow store holds no
//! sweep up).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

/// A lease, if one is held, and when it was last renewed ([`timer::mono_ms`]).
pub(super) struct KeptLease {
    lease: tokio::sync::Mutex<Option<vault::Lease>>,
    renewed_ms: AtomicU64,
}

impl KeptLease {
    /// Keeps `lease`, last renewed at `renewed_ms` (0: renewed at the next sweep).
    pub(super) fn new(lease: Option<vault::Lease>, renewed_ms: u64) -> Arc<Self> {
        Arc::new(KeptLease {
            lease: tokio::sync::Mutex::new(lease),
            renewed_ms: AtomicU64::new(renewed_ms),
        })
    }

    /// Stops keeping the lease; it, if still held.
    pub(super) async fn take(&self) -> Option<vault::Lease> {
        self.lease.lock().await.take()
    }
}

impl Manager {
    /// Renews `kept` (session `id`'s) when it is due at `mono`. A lease lost to another node
    /// is let go.
    pub(super) fn renew_when_due(self: &Arc<Self>, kept: &Arc<KeptLease>, id: &str, mono: u64) {
        let every = (self.cfg.lease_ttl.as_millis() as u64 / 3).max(1);
        if mono.saturating_sub(kept.renewed_ms.load(Ordering::Relaxed)) < every {
            return;
        }
        kept.renewed_ms.store(mono, Ordering::Relaxed);
        let (this, kept, id) = (self.clone(), kept.clone(), id.to_string());
        tokio::spawn(async move {
            let mut g = kept.lease.lock().await;
            if let Some(l) = g.as_mut() {
                match this.vault.renew_lease(l, this.cfg.lease_ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::error!(session = %id, "profile lease lost to another node; its save will be kept as a non-head generation if the profile moved");
                        *g = None;
                    }
                    Err(e) => {
                        tracing::warn!(session = %id, error = %e, "could not renew the profile lease; retrying")
                    }
                }
            }
        });
    }
}
