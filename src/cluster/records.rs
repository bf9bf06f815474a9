//! Public session records: `cluster/sessions/<id>.json`, written by the owner node at every
//! change it makes (start, end, save progress) and deleted when it forgets the session. They
//! hold no secret: the admin token only as its SHA-256.

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::{now_ms, Cluster, Owner};
use crate::session::{EndReason, Event, Published, Subscriber};
use crate::store::{self, PutBody, PutMode};

fn reason(r: EndReason) -> Value {
    serde_json::to_value(r).expect("end reasons serialize")
}

/// Records of lost nodes are removed this long after the node was lost.
const LOST_KEEP_MS: u64 = 3_600_000;

/// One session as every node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Record format (1).
    pub format: u32,
    /// Session id.
    pub session_id: String,
    /// Tenant.
    pub tenant: String,
    /// The node running it.
    pub node: String,
    /// SHA-256 of its admin token, hex.
    pub admin_token_sha256: String,
    /// Whether it still runs (as its owner last wrote).
    pub active: bool,
    /// Last write, Unix milliseconds.
    pub updated_ms: u64,
    /// The view `GET /v0/vm/{id}` answers.
    pub info: Value,
}

impl SessionRecord {
    /// Whether `token` is this session's admin token (constant time).
    pub fn admin_token_matches(&self, token: &str) -> bool {
        let hex = token_sha256(token);
        bool::from(hex.as_bytes().ct_eq(self.admin_token_sha256.as_bytes()))
    }

    /// The view of a session whose node was lost at `since_ms`: ended with `node_lost`
    /// (unless it had ended before), nobody connected, the save state as it was known.
    pub fn lost_view(&self, since_ms: u64) -> Value {
        let mut v = self.info.clone();
        if self.active || v["end_reason"].is_null() {
            v["end_reason"] = reason(EndReason::NodeLost);
            v["termination_date"] = since_ms.div_ceil(1000).max(self.updated_ms / 1000).into();
        }
        v["expires_at"] = Value::Null;
        v["cdp_clients"] = 0.into();
        v["viewers"] = Value::Array(Vec::new());
        v
    }
}

/// SHA-256 of a token, lowercase hex (what records keep of admin tokens).
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    crate::crypt::hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Whether `id` can name a record (session ids are uuids).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The index key of an admin token's SHA-256 (64 hex digits), if it is one.
fn admin_key(token_sha256: &str) -> Option<String> {
    crate::layout::cluster_admin(token_sha256)
}

fn key(id: &str) -> String {
    crate::layout::cluster_session(id)
}

fn parse(bytes: &[u8]) -> Option<SessionRecord> {
    let r: SessionRecord = serde_json::from_slice(bytes).ok()?;
    (r.format == 1 && valid_id(&r.session_id)).then_some(r)
}

impl From<Published> for SessionRecord {
    fn from(p: Published) -> Self {
        SessionRecord {
            format: 1,
            session_id: p.session_id,
            tenant: p.tenant,
            node: p.node,
            admin_token_sha256: p.admin_token_sha256,
            active: p.active,
            updated_ms: p.updated_ms,
            info: p.info,
        }
    }
}

/// A cluster node publishes its sessions' changes as records and admin-token index entries.
impl Subscriber for Cluster {
    fn notify(&self, event: Event) -> futures_util::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            match event {
                Event::Changed(view) => {
                    let record = SessionRecord::from(view);
                    if let Err(e) = self.put_record(&record).await {
                        tracing::warn!(session = %record.session_id, error = %e, "could not publish the session record to the cluster");
                    }
                }
                Event::AdminTokenIssued {
                    token_sha256,
                    session_id,
                } => self.put_admin_index(&token_sha256, &session_id).await,
                Event::AdminTokenRetired { token_sha256 } => {
                    self.delete_admin_index(&token_sha256).await;
                }
                Event::Forgotten(ids) => {
                    for id in ids {
                        self.delete_record(&id).await;
                    }
                }
            }
        })
    }
}

impl Cluster {
    /// Writes a record (the owner's latest view wins).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put_record(&self, r: &SessionRecord) -> store::Result<()> {
        let body = Bytes::from(serde_json::to_vec(r).expect("record serializes"));
        self.store
            .put(
                &key(&r.session_id),
                PutBody::Bytes(body),
                PutMode::Overwrite,
            )
            .await
            .map(|_| ())
    }

    /// The record of session `id`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn record(&self, id: &str) -> store::Result<Option<SessionRecord>> {
        if !valid_id(id) {
            return Ok(None);
        }
        match self.store.get(&key(id)).await {
            Ok(g) => Ok(parse(&g.bytes().await?).filter(|r| r.session_id == id)),
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every record (of one tenant, if given), read 16 at a time.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn records(&self, tenant: Option<&str>) -> store::Result<Vec<SessionRecord>> {
        let keys: Vec<String> = self
            .store
            .list(crate::layout::CLUSTER_SESSIONS)
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
        let mut reads = futures_util::stream::iter(keys)
            .map(|k| async move {
                match self.store.get(&k).await {
                    Ok(g) => g.bytes().await.map(|b| parse(&b)),
                    Err(store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16);
        let mut out = Vec::new();
        while let Some(r) = reads.next().await {
            if let Some(r) = r? {
                if tenant.is_none_or(|t| t == r.tenant) {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(out)
    }

    /// Deletes the record of session `id`.
    pub async fn delete_record(&self, id: &str) {
        if !valid_id(id) {
            return;
        }
        if let Err(e) = self.store.delete(&key(id)).await {
            if !matches!(e, store::Error::NotFound { .. }) {
                tracing::warn!(session = %id, error = %e, "could not delete the session record");
            }
        }
    }

    /// Indexes an admin token's hash (`token_sha256` hex) to its session.
    pub async fn put_admin_index(&self, token_sha256: &str, session_id: &str) {
        let Some(key) = admin_key(token_sha256) else {
            return;
        };
        let body = Bytes::from(session_id.as_bytes().to_vec());
        if let Err(e) = self
            .store
            .put(&key, PutBody::Bytes(body), PutMode::Overwrite)
            .await
        {
            tracing::warn!(session = %session_id, error = %e, "could not index the session's admin token");
        }
    }

    /// The session an admin token (by its hash) belongs to, as indexed.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn admin_index(&self, token_sha256: &str) -> store::Result<Option<String>> {
        let Some(key) = admin_key(token_sha256) else {
            return Ok(None);
        };
        match self.store.get(&key).await {
            Ok(g) => {
                let b = g.bytes().await?;
                Ok(std::str::from_utf8(&b)
                    .ok()
                    .filter(|id| valid_id(id))
                    .map(str::to_string))
            }
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an admin token's index entry (the session ended).
    pub async fn delete_admin_index(&self, token_sha256: &str) {
        let Some(key) = admin_key(token_sha256) else {
            return;
        };
        if let Err(e) = self.store.delete(&key).await {
            if !matches!(e, store::Error::NotFound { .. }) {
                tracing::warn!(error = %e, "could not delete an admin token's index entry");
            }
        }
    }

    /// Removes records of nodes lost more than an hour ago, and marks this node's own records
    /// of sessions it no longer runs (`running` says which it does) as ended.
    pub async fn sweep_records(&self, running: &(dyn Fn(&str) -> bool + Sync)) {
        let Ok(all) = self.records(None).await else {
            return;
        };
        let now = now_ms();
        for r in all {
            match self.owner(&r.node).await {
                Owner::Lost(since) if now.saturating_sub(since) > LOST_KEEP_MS => {
                    self.delete_admin_index(&r.admin_token_sha256).await;
                    self.delete_record(&r.session_id).await;
                }
                Owner::Me if r.active && !running(&r.session_id) => {
                    // Left by a previous run of this node that ended without updating it.
                    let mut r2 = r.clone();
                    r2.info = r.lost_view(r.updated_ms);
                    r2.info["end_reason"] = reason(EndReason::Recovered);
                    r2.active = false;
                    r2.updated_ms = now;
                    let _ = self.put_record(&r2).await;
                }
                _ => {}
            }
        }
    }
}
