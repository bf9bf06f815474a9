//! The daemon, wired once: [`Daemon::build`] makes the session manager on a vault, joins the
//! cluster (when asked) and holds the HTTP state; [`Daemon::run`] serves it on a listener
//! until a shutdown future resolves. `profile-vault serve` and the benches build it the same
//! way (only where their parts come from differs: the configuration, or the bench's own).

use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, auth::ApiKeys, AppState};
use crate::cluster::{Cluster, ClusterConfig};
use crate::session::{Manager, SessionConfig};
use crate::vault::Vault;

/// Why the daemon could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The session manager could not open its data directory.
    #[error(transparent)]
    Session(#[from] crate::session::Error),
    /// The cluster refused this node (another secret, or none while other nodes run).
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::cluster::Error),
}

/// What the HTTP side needs besides the sessions.
#[derive(Debug)]
pub struct Http {
    /// API keys.
    pub keys: ApiKeys,
    /// Base of `embed_url` and `cdp_url` (no trailing slash).
    pub public_url: String,
    /// Largest request body accepted (`http.max_body_bytes`).
    pub max_body: usize,
    /// Origins allowed to open the live-view socket besides the daemon's own.
    pub viewer_origins: Vec<String>,
    /// CSP `frame-ancestors` of the embed page.
    pub frame_ancestors: String,
}

/// A built daemon, not serving yet.
#[derive(Debug)]
pub struct Daemon {
    state: AppState,
}

impl Daemon {
    /// The session manager on `vault` with `sessions`, a member of the cluster `cluster`
    /// describes (when given), behind `http`.
    ///
    /// # Errors
    /// [`Error`].
    pub async fn build(
        vault: Vault,
        sessions: SessionConfig,
        http: Http,
        cluster: Option<ClusterConfig>,
    ) -> Result<Daemon, Error> {
        let manager = Manager::new(vault, sessions)?;
        let cluster = match cluster {
            Some(cfg) => {
                let url = cfg.node_url.clone();
                let c = Cluster::new(manager.vault().store().clone(), manager.node_id(), cfg);
                c.join(url, 0).await?;
                manager.subscribe(c.clone());
                Some(c)
            }
            None => None,
        };
        Ok(Daemon {
            state: AppState {
                manager,
                cluster,
                keys: Arc::new(http.keys),
                public_url: http.public_url,
                max_body: http.max_body,
                viewer_origins: http.viewer_origins,
                frame_ancestors: http.frame_ancestors,
            },
        })
    }

    /// The session manager.
    pub fn manager(&self) -> &Arc<Manager> {
        &self.state.manager
    }

    /// The HTTP state (for a router of one's own, as in-process tests make).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` resolves, then ends every session and waits up
    /// to `grace` for their saves ([`api::serve`]).
    ///
    /// # Errors
    /// Listener I/O errors.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        api::serve(listener, self.state, shutdown, grace).await
    }
}
