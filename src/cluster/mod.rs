//! The cluster: several daemons on one object store that answer as one service, with no
//! database besides the store they already share.
//!
//! - [`members`]: each node's member record (`cluster/nodes/<node>.json`): the address other
//!   nodes reach it at, capacity, load, and a heartbeat renewed with conditional writes. A
//!   node is dead once its record expires, and gone once it left (shutdown).
//! - [`records`]: every session's public record (`cluster/sessions/<id>.json`): tenant,
//!   owner node, the `GET /v0/vm/{id}` view and the SHA-256 of its admin token, never a token.
//!   Any node answers for any session from it, also after its owner died (`node_lost`).
//! - [`sign`]: requests between nodes are signed with the cluster secret; a node vouches for
//!   the caller it checked, and never passes tenants' keys or admin tokens on.
//! - [`forward`]: proxies a request to the session's owner (bodies streamed both ways,
//!   WebSockets spliced byte for byte after the upgrade).
//!
//! The HTTP side (which requests are forwarded, how callers are checked first, placement of
//! new sessions) is `api::cluster`.

pub mod forward;
pub mod members;
pub mod records;
pub mod sign;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::crypt::Secret;
use crate::store::{self, Store};

pub use members::Member;
pub use records::SessionRecord;

/// `[cluster]`: the section of the configuration this module owns.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// The secret nodes of one cluster sign their requests to each other with
    /// (`PV_CLUSTER_SECRET`, at least 16 characters). Required when more than one node runs
    /// on a store.
    pub secret: Option<Secret>,
    /// The address other nodes reach this one at (`PV_NODE_URL`); default `http://` + the
    /// listen address when that is not a wildcard.
    pub node_url: Option<String>,
    /// Seconds between heartbeats of this node's member record.
    pub heartbeat_secs: u64,
    /// Seconds after its last heartbeat a node counts as dead (its sessions show `node_lost`).
    pub node_ttl_secs: u64,
    /// Forward to nodes whose member record carries no MAC (`PV_CLUSTER_ACCEPT_UNSIGNED_MEMBERS`):
    /// only while rolling a cluster from a release that wrote none; off again once every node
    /// runs this one. A record with a MAC that does not match is never forwarded to.
    pub accept_unsigned_members: bool,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            secret: None,
            node_url: None,
            heartbeat_secs: 2,
            node_ttl_secs: 10,
            accept_unsigned_members: false,
        }
    }
}

impl ClusterSection {
    /// The cluster settings of a node reached at `node_url` that takes `capacity` sessions.
    pub fn settings(&self, node_url: Option<String>, capacity: usize) -> ClusterConfig {
        let heartbeat = self.heartbeat_secs.max(1);
        ClusterConfig {
            node_url,
            secret: self.secret.clone(),
            heartbeat: Duration::from_secs(heartbeat),
            node_ttl: Duration::from_secs(self.node_ttl_secs.max(heartbeat * 2)),
            capacity,
            accept_unsigned_members: self.accept_unsigned_members,
        }
    }
}

/// Errors of joining the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Other nodes run on this store and this node has no secret.
    #[error("other nodes run on this store ({0}); set cluster.secret / PV_CLUSTER_SECRET to the cluster's secret")]
    NoSecret(String),
    /// A live node holds another secret (or none).
    #[error("node {0} runs on this store with another cluster secret or none; every node of a cluster needs the same cluster.secret")]
    SecretMismatch(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Cluster settings (from `[cluster]`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The address other nodes reach this one at.
    pub node_url: Option<String>,
    /// The shared secret.
    pub secret: Option<Secret>,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// A node is dead this long after its last heartbeat.
    pub node_ttl: Duration,
    /// Sessions this node takes (`sessions.max_sessions`).
    pub capacity: usize,
    /// Forward to nodes whose member record carries no MAC ([`ClusterSection`]).
    pub accept_unsigned_members: bool,
}

/// Where a session's owner stands.
#[derive(Debug, Clone)]
pub enum Owner {
    /// This node.
    Me,
    /// Another live node.
    Alive(Member),
    /// Dead or gone since about this time (Unix milliseconds).
    Lost(u64),
}

/// This node's view of the cluster.
pub struct Cluster {
    store: Arc<dyn Store>,
    node: String,
    cfg: ClusterConfig,
    started_ms: u64,
    url: Mutex<Option<String>>,
    members: Mutex<Vec<Member>>,
    etag: tokio::sync::Mutex<Option<String>>,
    client: forward::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .field("url", &self.url.lock().expect("url lock"))
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    /// This node (`node`, from `<data_dir>/node-id`) on `store`.
    pub fn new(store: Arc<dyn Store>, node: &str, cfg: ClusterConfig) -> Arc<Self> {
        Arc::new(Cluster {
            store,
            node: node.into(),
            started_ms: now_ms(),
            url: Mutex::new(None),
            members: Mutex::new(Vec::new()),
            etag: tokio::sync::Mutex::new(None),
            client: forward::Client::new(cfg.accept_unsigned_members),
            cfg,
        })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster secret, if set.
    pub fn secret(&self) -> Option<&str> {
        self.cfg.secret.as_ref().map(Secret::expose)
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Where the owner of a session stands. A node missing from the last listing, or expired
    /// in it, is read again before it is called lost.
    pub async fn owner(&self, node: &str) -> Owner {
        if node == self.node {
            return Owner::Me;
        }
        let now = now_ms();
        let cached = self
            .members
            .lock()
            .expect("members lock")
            .iter()
            .find(|m| m.node == node)
            .cloned();
        if let Some(m) = &cached {
            if m.expires_ms > now {
                return Owner::Alive(m.clone());
            }
        }
        match self.read_member(node).await {
            Ok(Some(m)) if m.expires_ms > now => Owner::Alive(m),
            Ok(Some(m)) => Owner::Lost(m.expires_ms),
            Ok(None) => Owner::Lost(cached.map_or(now, |m| m.expires_ms.min(now))),
            // The store cannot tell: assume the owner lives (forwarding then says 503).
            Err(_) => cached.map_or(Owner::Lost(now), Owner::Alive),
        }
    }

    /// Live nodes other than this one that have room, least loaded first.
    pub fn peers_with_room(&self) -> Vec<Member> {
        let now = now_ms();
        let mut v: Vec<Member> = self
            .members
            .lock()
            .expect("members lock")
            .iter()
            .filter(|m| m.node != self.node && m.expires_ms > now && m.load < m.capacity)
            .filter(|m| m.url.is_some())
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            let ra = a.load as f64 / a.capacity.max(1) as f64;
            let rb = b.load as f64 / b.capacity.max(1) as f64;
            ra.total_cmp(&rb).then(a.node.cmp(&b.node))
        });
        v
    }

    /// The members as last read (this node included).
    pub fn members(&self) -> Vec<Member> {
        self.members.lock().expect("members lock").clone()
    }

    /// Whether another live node shares the store.
    pub fn has_peers(&self) -> bool {
        let now = now_ms();
        self.members
            .lock()
            .expect("members lock")
            .iter()
            .any(|m| m.node != self.node && m.expires_ms > now)
    }

    /// The forwarding client.
    pub fn client(&self) -> &forward::Client {
        &self.client
    }
}
