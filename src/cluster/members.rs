//! Member records: `cluster/nodes/<node>.json`, one per node, renewed every heartbeat with a
//! conditional write on the etag this node wrote last, deleted when the node leaves.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{now_ms, sign, Cluster, Error};
use crate::store::{self, PutBody, PutMode};

/// One node as the cluster sees it. Unknown fields are tolerated (a later release may add
/// some within format 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Record format (1).
    pub format: u32,
    /// Node id.
    pub node: String,
    /// The address other nodes reach it at (none: it cannot be forwarded to).
    pub url: Option<String>,
    /// Most sessions it takes.
    pub capacity: usize,
    /// Sessions it runs.
    pub load: usize,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
    /// Its last heartbeat, Unix milliseconds.
    pub heartbeat_ms: u64,
    /// When it counts as dead without another heartbeat, Unix milliseconds.
    pub expires_ms: u64,
    /// [`sign::secret_check`] of its cluster secret (none: it has no secret).
    pub secret_check: Option<String>,
    /// [`sign::member_mac`] of its node id and address under the cluster secret (none: it
    /// has no secret, or an earlier release wrote it): other nodes forward to `url` only
    /// when it matches, so a record whose address was changed in the store sends nothing
    /// elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// profile-vault version.
    pub version: String,
}

fn key(node: &str) -> String {
    crate::layout::cluster_node(node)
}

fn parse(bytes: &[u8]) -> Option<Member> {
    let m: Member = serde_json::from_slice(bytes).ok()?;
    (m.format == 1).then_some(m)
}

impl Cluster {
    pub(super) async fn read_member(&self, node: &str) -> store::Result<Option<Member>> {
        match self.store.get(&key(node)).await {
            Ok(g) => Ok(parse(&g.bytes().await?)),
            Err(store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads every member record (unreadable ones are skipped) into the cache.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn refresh(&self) -> store::Result<Vec<Member>> {
        let mut out = Vec::new();
        for meta in self.store.list(crate::layout::CLUSTER_NODES).await? {
            match self.store.get(&meta.key).await {
                Ok(g) => {
                    if let Some(m) = parse(&g.bytes().await?) {
                        out.push(m);
                    }
                }
                Err(store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        *self.members.lock().expect("members lock") = out.clone();
        Ok(out)
    }

    fn own_record(&self, load: usize) -> Member {
        let now = now_ms();
        let url = self.url.lock().expect("url lock").clone();
        Member {
            format: 1,
            node: self.node.clone(),
            mac: self
                .secret()
                .map(|s| sign::member_mac(s, &self.node, url.as_deref())),
            url,
            capacity: self.cfg.capacity,
            load,
            started_ms: self.started_ms,
            heartbeat_ms: now,
            expires_ms: now + self.cfg.node_ttl.as_millis() as u64,
            secret_check: self.secret().map(sign::secret_check),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Joins: refuses when live nodes hold another secret (or this node has none and others
    /// run), then writes this node's record. `url` is the address other nodes reach it at.
    ///
    /// # Errors
    /// [`Error::NoSecret`], [`Error::SecretMismatch`], storage errors.
    pub async fn join(&self, url: Option<String>, load: usize) -> Result<(), Error> {
        *self.url.lock().expect("url lock") = url;
        let now = now_ms();
        let others: Vec<Member> = self
            .refresh()
            .await?
            .into_iter()
            .filter(|m| m.node != self.node && m.expires_ms > now)
            .collect();
        if !others.is_empty() {
            let Some(secret) = self.secret() else {
                let names: Vec<&str> = others.iter().map(|m| m.node.as_str()).collect();
                return Err(Error::NoSecret(names.join(", ")));
            };
            let mine = sign::secret_check(secret);
            if let Some(m) = others
                .iter()
                .find(|m| m.secret_check.as_deref() != Some(mine.as_str()))
            {
                return Err(Error::SecretMismatch(m.node.clone()));
            }
        }
        self.write_own(load).await?;
        self.refresh().await?;
        tracing::info!(node = %self.node, peers = others.len(), "joined the cluster");
        Ok(())
    }

    /// Writes this node's record: an update of the version it wrote last, else a create, else
    /// (a record of this node left by its previous run) an update of what is there.
    async fn write_own(&self, load: usize) -> store::Result<()> {
        let body =
            Bytes::from(serde_json::to_vec(&self.own_record(load)).expect("member serializes"));
        let mut etag = self.etag.lock().await;
        let mode = match etag.clone() {
            Some(e) => PutMode::Update(e),
            None => PutMode::Create,
        };
        let put = self
            .store
            .put(&key(&self.node), PutBody::Bytes(body.clone()), mode)
            .await;
        let written = match put {
            Ok(e) => e,
            Err(store::Error::AlreadyExists { .. } | store::Error::Precondition { .. }) => {
                if etag.is_some() {
                    tracing::warn!(node = %self.node, "this node's member record was changed by someone else (two daemons with one node id?); taking it back");
                }
                let mode = match self.store.head(&key(&self.node)).await {
                    Ok(m) => PutMode::Update(m.etag),
                    Err(store::Error::NotFound { .. }) => PutMode::Create,
                    Err(e) => return Err(e),
                };
                self.store
                    .put(&key(&self.node), PutBody::Bytes(body), mode)
                    .await?
            }
            Err(store::Error::NotFound { .. }) => {
                self.store
                    .put(&key(&self.node), PutBody::Bytes(body), PutMode::Create)
                    .await?
            }
            Err(e) => return Err(e),
        };
        *etag = Some(written);
        Ok(())
    }

    /// One heartbeat: renews this node's record and re-reads the others.
    pub async fn heartbeat(&self, load: usize) {
        if let Err(e) = self.write_own(load).await {
            tracing::warn!(node = %self.node, error = %e, "cluster heartbeat not written; retrying");
        }
        match self.refresh().await {
            Ok(_) => {
                if self.secret().is_none() && self.has_peers() {
                    tracing::error!(node = %self.node, "other nodes run on this store but this node has no cluster secret: sessions of other nodes cannot be reached from here");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster's member records"),
        }
    }

    /// Runs heartbeats until `stop` fires; `load` counts this node's sessions, `running`
    /// tells whether this node runs a session (records are swept every 30 heartbeats, see
    /// [`Cluster::sweep_records`]).
    pub async fn run_heartbeat(
        self: Arc<Self>,
        load: impl Fn() -> usize + Send + 'static,
        running: impl Fn(&str) -> bool + Send + Sync + 'static,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat.max(Duration::from_millis(200)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.heartbeat(load()).await;
                    if n % 30 == 1 {
                        self.sweep_records(&running).await;
                    }
                    n += 1;
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    }

    /// Leaves: deletes this node's record (if it is still this node's).
    pub async fn leave(&self) {
        let etag = self.etag.lock().await.take();
        if etag.is_none() {
            return;
        }
        match self.store.head(&key(&self.node)).await {
            Ok(m) if Some(&m.etag) == etag.as_ref() => {
                if let Err(e) = self.store.delete(&key(&self.node)).await {
                    tracing::warn!(error = %e, "could not remove this node's member record; it expires by itself");
                }
            }
            _ => {}
        }
        tracing::info!(node = %self.node, "left the cluster");
    }
}
