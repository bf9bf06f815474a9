//! In-process daemons for the service benches, and the HTTP calls the benches make to them.

use std::path::Path;

use super::common::bench_vault;
use crate::cli::Ctx;
use profile_vault::Vault;

/// A minimal HTTP/1.1 exchange on loopback (the bench talks to its own in-process daemon).
pub(super) async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or_default();
    Ok((status, json))
}

/// One keep-alive HTTP/1.1 connection for measuring request latency (no connection setup
/// in the figures).
pub(super) struct KeepAlive {
    conn: tokio::io::BufReader<tokio::net::TcpStream>,
}

impl KeepAlive {
    pub(super) async fn connect(addr: &str) -> anyhow::Result<KeepAlive> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(KeepAlive {
            conn: tokio::io::BufReader::new(s),
        })
    }

    /// Sends one request; returns the status and the body.
    pub(super) async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.conn
            .get_mut()
            .write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
            .await?;
        let (mut status, mut len) = (0, 0usize);
        loop {
            let mut l = String::new();
            anyhow::ensure!(
                self.conn.read_line(&mut l).await? > 0,
                "the daemon closed the connection"
            );
            let l = l.trim_end();
            if l.is_empty() && status != 0 {
                break;
            }
            if let Some(s) = l.strip_prefix("HTTP/1.1 ") {
                status = s
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            } else if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length: ") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut b = vec![0; len];
        self.conn.read_exact(&mut b).await?;
        Ok((status, b))
    }
}

/// An in-process daemon on 127.0.0.1 for the session and live-view benches.
pub(super) struct BenchDaemon {
    /// Listen address.
    pub addr: String,
    /// Its one API key.
    pub token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl BenchDaemon {
    pub(super) async fn start(ctx: &Ctx, vault: Vault, data: &Path) -> anyhow::Result<BenchDaemon> {
        Self::start_node(ctx, vault, data, "bench", None).await
    }

    /// A daemon whose browsers run sandboxed or (to measure what the sandbox costs) not.
    pub(super) async fn start_sandboxed(
        ctx: &Ctx,
        vault: Vault,
        data: &Path,
        sandboxed: bool,
    ) -> anyhow::Result<BenchDaemon> {
        Self::start_with(ctx, vault, data, "bench", None, |s| {
            s.unsafe_no_sandbox = !sandboxed;
            // Headless on both sides: this measures the sandbox alone (the display's cost is
            // `bench --live-view`'s).
            s.display = false;
        })
        .await
    }

    /// A daemon whose API key is `bench:<token>` (`token` = "bench" makes a fresh one); with
    /// `cluster_secret`, a node of the cluster on its vault's store (`data` is its own).
    pub(super) async fn start_node(
        ctx: &Ctx,
        vault: Vault,
        data: &Path,
        token: &str,
        cluster_secret: Option<&str>,
    ) -> anyhow::Result<BenchDaemon> {
        Self::start_with(ctx, vault, data, token, cluster_secret, |_| {}).await
    }

    /// A daemon on a local store whose browsers have a virtual display or not, and whose
    /// pages may reach `allow` (the bench's own site).
    pub(super) async fn for_live_view(
        ctx: &Ctx,
        data: &Path,
        display: bool,
        allow: profile_vault::browser::egress::Cidr,
    ) -> anyhow::Result<BenchDaemon> {
        let store = std::path::absolute(data.join("store"))?;
        let url = format!("file://{}", store.display());
        let vault = bench_vault(ctx, &url, &data.join("spool")).await?;
        Self::start_with(ctx, vault, data, "bench", None, |s| {
            s.display = display;
            s.egress = std::sync::Arc::new(profile_vault::browser::egress::Policy {
                allow: vec![allow],
                deny: Vec::new(),
            });
        })
        .await
    }

    async fn start_with(
        ctx: &Ctx,
        vault: Vault,
        data: &Path,
        token: &str,
        cluster_secret: Option<&str>,
        tweak: impl FnOnce(&mut profile_vault::browser::Settings),
    ) -> anyhow::Result<BenchDaemon> {
        use profile_vault::api::auth::ApiKeys;
        use profile_vault::browser as chromium;
        use profile_vault::daemon::{Daemon, Http};
        use profile_vault::session::SessionConfig;
        let mut settings = ctx
            .cfg
            .file
            .browser
            .settings(
                chromium::find_binary(ctx.cfg.file.browser.chromium.as_deref())?,
                data,
                ctx.cfg.file.sessions.max_sessions,
            )
            .map_err(anyhow::Error::msg)?;
        tweak(&mut settings);
        let browser = chromium::Runtime::new(settings);
        if let Err(e) = browser.status() {
            anyhow::bail!("the browser sandbox is unavailable here: {e}");
        }
        let token = if token == "bench" {
            format!("bench-{}", uuid::Uuid::new_v4().simple())
        } else {
            token.to_string()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let cluster = cluster_secret.map(|secret| profile_vault::cluster::ClusterConfig {
            node_url: Some(format!("http://{addr}")),
            secret: Some(profile_vault::crypt::Secret::new(secret)),
            heartbeat: std::time::Duration::from_secs(2),
            node_ttl: std::time::Duration::from_secs(10),
            capacity: 4,
            accept_unsigned_members: false,
        });
        let daemon = Daemon::build(
            vault,
            SessionConfig {
                browser,
                data_dir: data.to_path_buf(),
                max_sessions: 10,
                max_sessions_per_tenant: 0,
                max_cdp_clients: 0,
                max_cdp_clients_per_tenant: 0,
                max_viewers_per_tenant: 0,
                max_state_jobs: (0, 0),
                inactive_timeout: None,
                absolute_timeout: None,
                max_session_secs: None,
                close_deadline: std::time::Duration::from_secs(30),
                restore_deadline: std::time::Duration::from_secs(600),
                start_deadline: std::time::Duration::from_secs(60),
                max_concurrent_saves: 2,
                retry_failed_every: std::time::Duration::from_secs(60),
                lease_ttl: std::time::Duration::from_secs(30),
                hold_failed: std::time::Duration::from_secs(3600),
                keep_refused: std::time::Duration::from_secs(86_400),
                live: Default::default(),
                browser_version: None,
                allow_older_browser: true,
                room: Default::default(),
                store_watch_max: std::time::Duration::from_secs(3600),
            },
            Http {
                keys: ApiKeys::parse(&format!("bench:{token}"))?,
                public_url: format!("http://{addr}"),
                max_body: 65536,
                viewer_origins: Vec::new(),
                frame_ancestors: "*".into(),
            },
            cluster,
        )
        .await?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(daemon.run(
            listener,
            async move {
                let _ = stop_rx.await;
            },
            std::time::Duration::from_secs(60),
        ));
        Ok(BenchDaemon {
            addr,
            token,
            stop,
            server,
        })
    }

    /// A daemon on a fresh filesystem store under `data`.
    pub(super) async fn on_local_store(ctx: &Ctx, data: &Path) -> anyhow::Result<BenchDaemon> {
        let store = std::path::absolute(data.join("store"))?;
        let url = format!("file://{}", store.display());
        let vault = bench_vault(ctx, &url, &data.join("spool")).await?;
        Self::start(ctx, vault, data).await
    }

    /// Ends session `id` and waits for its save.
    pub(super) async fn end(&self, id: &str) {
        let path = format!("/v0/vm/{id}?wait=true");
        let _ = http(&self.addr, "DELETE", &path, &self.token, "").await;
    }

    /// Ends every session and stops serving.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}
