//! The audit trail: every profile load, save, rollback, rekey and delete, with tenant,
//! profile, generation, actor and outcome. Each event is a structured `tracing` event
//! (target `audit`) and an object `audit/<tenant>/<ms:013>-<id>.json` in the store, so
//! `profile-vault audit` reads the trail of every node. Writing an audit object never fails
//! the operation it records (a failure is logged).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::{self, PutBody, PutMode, Store};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A profile was restored (into a session or by `restore`).
    Load,
    /// A generation was saved.
    Save,
    /// The head was moved back.
    Rollback,
    /// Data keys were re-wrapped.
    Rekey,
    /// A profile was deleted.
    Delete,
    /// A profile's data document was written.
    DataWrite,
    /// A generation's storage state (its cookies) was exported.
    ExportState,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// What.
    pub action: Action,
    /// Tenant.
    pub tenant: String,
    /// Profile (absent for a tenant-wide rekey).
    pub profile: Option<String>,
    /// Generation involved.
    pub generation: Option<u64>,
    /// Who: `api-key:<tenant>#<key id>`, `admin-token:<session>`, `daemon:<why>`, `cli:<user>`.
    pub actor: String,
    /// `ok` or `error`.
    pub outcome: String,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// Writes audit events.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Arc<dyn Store>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Audit {
    /// An audit trail in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Audit { store }
    }

    /// Records an event (tracing event + stored object).
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        action: Action,
        tenant: &str,
        profile: Option<&str>,
        generation: Option<u64>,
        actor: &str,
        error: Option<String>,
    ) {
        let e = Event {
            at_ms: now_ms(),
            action,
            tenant: tenant.into(),
            profile: profile.map(str::to_string),
            generation,
            actor: actor.into(),
            outcome: if error.is_none() {
                "ok".into()
            } else {
                "error".into()
            },
            error,
        };
        tracing::info!(target: "audit", action = ?e.action, tenant = %e.tenant, profile = ?e.profile, generation = ?e.generation, actor = %e.actor, outcome = %e.outcome, error = ?e.error, "audit");
        let key = crate::layout::audit_event(
            &e.tenant,
            e.at_ms,
            &uuid::Uuid::new_v4().simple().to_string()[..12],
        );
        let body = serde_json::to_vec(&e).expect("event serializes");
        if let Err(err) = self
            .store
            .put(&key, PutBody::Bytes(body.into()), PutMode::Create)
            .await
        {
            tracing::warn!(error = %err, "could not store an audit event; it is in the log");
        }
    }

    /// The tenant's events, oldest first (optionally one profile's).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(
        &self,
        tenant: &str,
        profile: Option<&str>,
    ) -> Result<Vec<Event>, store::Error> {
        let mut out = Vec::new();
        for m in self
            .store
            .list(&crate::layout::audit_prefix(tenant))
            .await?
        {
            let bytes = self.store.get(&m.key).await?.bytes().await?;
            if let Ok(e) = serde_json::from_slice::<Event>(&bytes) {
                if profile.is_none_or(|p| e.profile.as_deref() == Some(p)) {
                    out.push(e);
                }
            }
        }
        out.sort_by_key(|e| e.at_ms);
        Ok(out)
    }
}
