//! `profile-vault bench`: save and restore speed and peak memory on a synthetic profile
//! (`bench_profile.rs`), and the dispatch to the other benches (`bench_*.rs`). Sizes count
//! kept bytes. Peak RSS is the process's `VmHWM`, reset before each phase.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;

use super::{human_bytes, Ctx};
use profile_vault::vault::Base;
use profile_vault::{Keyring, NoProgress, Vault};

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kept size of the synthetic profile, in MB (10^6 bytes).
    #[arg(long, default_value_t = 500)]
    pub size_mb: u64,
    /// Store to benchmark (default: a temporary filesystem store in the data dir).
    #[arg(long = "bench-store")]
    pub bench_store: Option<String>,
    /// Keep the generated profile for the next run (in <data_dir>/bench).
    #[arg(long)]
    pub keep_profile: bool,
    /// Measure the session service instead: POST /v0/vm with a load of the profile until
    /// the browser answers on CDP, and DELETE until the generation is saved.
    #[arg(long)]
    pub session: bool,
    /// Repetitions of the session measurement.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Save the profile as this many different profiles at once (sessions ending together)
    /// and report total time and peak RSS.
    #[arg(long)]
    pub concurrent: Option<usize>,
    /// Measure the live view instead: frames per second on an animating page,
    /// input-to-frame latency, and CPU of daemon and browser with 1 and `--viewers` viewers.
    #[arg(long)]
    pub live_view: bool,
    /// Viewers of the second live-view measurement.
    #[arg(long, default_value_t = 5)]
    pub viewers: usize,
    /// Measure the session store instead: one writer and `--watchers` SSE watchers.
    #[arg(long = "session-store")]
    pub session_store: bool,
    /// Watchers of the store measurement.
    #[arg(long, default_value_t = 20)]
    pub watchers: usize,
    /// Measure what the contents report adds to a save: the same profile saved with and
    /// without it, `--rounds` times each, alternately.
    #[arg(long)]
    pub contents_report: bool,
    /// Seconds of each live-view or store measurement.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Bench a cluster: two in-process nodes on one store; the latency a forwarding node adds
    /// to an API call and to a CDP round trip, against calling the owner directly.
    #[arg(long)]
    pub cluster: bool,
    /// Calls (and CDP round trips) per path in `--cluster`.
    #[arg(long, default_value_t = 300)]
    pub calls: usize,
    /// Measure re-saves instead: format 1 against format 2 in one run (`--rounds` each,
    /// alternating): first save, a re-save after `--change-pct` % of the files changed
    /// (bytes sent), and restore.
    #[arg(long)]
    pub resave: bool,
    /// Percent of the kept files `--resave` changes between the two saves.
    #[arg(long, default_value_t = 2.0)]
    pub change_pct: f64,
    /// Measure first saves and restores against `tar | zstd -1 -T0 | openssl enc` (and
    /// back) in one run, `--rounds` each, alternating.
    #[arg(long)]
    pub vs_tar: bool,
}

#[derive(serde::Serialize)]
struct Report {
    store: String,
    files: u64,
    kept_bytes: u64,
    excluded_bytes: u64,
    stored_bytes: u64,
    save_seconds: f64,
    save_mb_per_s: f64,
    save_peak_rss_mib: f64,
    restore_seconds: f64,
    restore_mb_per_s: f64,
    restore_peak_rss_mib: f64,
}

pub(super) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(super) fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Restores `profile` (of tenant `bench`) into `dst`; returns the seconds it took, after
/// checking that every kept byte came back.
pub(super) async fn timed_restore(
    vault: &Vault,
    profile: &str,
    dst: &Path,
    kept_bytes: u64,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let restored = vault
        .restore("bench", profile, None, dst, Arc::new(NoProgress))
        .await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        restored.unpacked.bytes == kept_bytes,
        "restored {} bytes, saved {kept_bytes}",
        restored.unpacked.bytes
    );
    Ok(secs)
}

/// The store to bench: `--bench-store`, or a fresh filesystem store in `bench_dir` (the
/// directory to remove afterwards).
pub(super) fn store_url(a: &Args, bench_dir: &Path) -> (String, PathBuf) {
    let tmp: PathBuf = bench_dir.join(format!("store-{}", uuid::Uuid::new_v4().simple()));
    let url = a.bench_store.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            std::path::absolute(&tmp).unwrap_or(tmp.clone()).display()
        )
    });
    (url, tmp)
}

/// A vault on `url` with a throw-away in-memory master key.
pub(super) async fn bench_vault(ctx: &Ctx, url: &str, spool: &Path) -> anyhow::Result<Vault> {
    bench_vault_with(ctx, url, spool, |_| {}).await
}

/// [`bench_vault`] with its options changed.
pub(super) async fn bench_vault_with(
    ctx: &Ctx,
    url: &str,
    spool: &Path,
    edit: impl FnOnce(&mut profile_vault::VaultOptions),
) -> anyhow::Result<Vault> {
    let store = profile_vault::store::from_url(url, &ctx.cfg.file.s3).await?;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    let ring = Arc::new(Keyring::from_keys(vec![("bench".into(), key)], "bench")?);
    let mut opts = ctx.cfg.vault_options();
    opts.spool_dir = spool.to_path_buf();
    edit(&mut opts);
    Ok(Vault::new(store, ring, opts)?)
}

/// Runs `bench`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let bench_dir = ctx.cfg.data_dir.join("bench");
    profile_vault::fsutil::create_private_dir(&bench_dir)?;
    if a.live_view {
        return super::bench_live::run(ctx, &a, &bench_dir).await;
    }
    if a.session_store {
        return super::bench_store::run(ctx, &a, &bench_dir).await;
    }
    if a.cluster {
        return super::bench_cluster::run(ctx, &a, &bench_dir).await;
    }
    let src_for = |mb: u64| bench_dir.join(format!("profile-{mb}mb"));
    if a.resave {
        let src = src_for(a.size_mb);
        super::bench_profile::ensure(&src, a.size_mb).await?;
        return super::bench_resave::run(ctx, &a, &src, &bench_dir).await;
    }
    let src = src_for(a.size_mb);
    super::bench_profile::ensure(&src, a.size_mb).await?;
    if a.session {
        return super::bench_session::run(ctx, &a, &src, &bench_dir).await;
    }
    if a.contents_report {
        return super::bench_contents::run(ctx, &a, &src, &bench_dir).await;
    }
    if a.vs_tar {
        return super::bench_tar::run(ctx, &a, &src, &bench_dir).await;
    }
    let (url, tmp_store) = store_url(&a, &bench_dir);
    let vault = bench_vault(ctx, &url, &bench_dir.join("spool")).await?;
    let profile = format!("bench-{}", uuid::Uuid::new_v4().simple());

    if let Some(n) = a.concurrent {
        reset_peak_rss();
        let t = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..n {
            let (v, src, p) = (vault.clone(), src.clone(), format!("{profile}-{i}"));
            tasks.push(tokio::spawn(async move {
                v.save("bench", &p, &src, Base::Expect(None), Arc::new(NoProgress))
                    .await
            }));
        }
        let mut bytes = 0;
        for task in tasks {
            bytes += task.await??.bytes_in;
        }
        let secs = t.elapsed().as_secs_f64();
        let rss = peak_rss_mib();
        for i in 0..n {
            vault.delete("bench", &format!("{profile}-{i}")).await?;
        }
        let _ = std::fs::remove_dir_all(&tmp_store);
        if !a.keep_profile {
            let _ = std::fs::remove_dir_all(&src);
        }
        let r = serde_json::json!({"profiles": n, "kept_bytes_total": bytes, "seconds": secs, "mb_per_s": bytes as f64 / 1e6 / secs, "peak_rss_mib": rss});
        ctx.print(&r, || {
            format!(
                "{n} saves at once: {} kept in {secs:.2} s ({:.0} MB/s), peak RSS {rss:.1} MiB",
                human_bytes(bytes),
                bytes as f64 / 1e6 / secs
            )
        });
        return Ok(());
    }
    reset_peak_rss();
    let t = Instant::now();
    let saved = vault
        .save("bench", &profile, &src, Base::Current, Arc::new(NoProgress))
        .await?;
    let save_s = t.elapsed().as_secs_f64();
    let save_rss = peak_rss_mib();

    let dst = bench_dir.join(format!("restore-{}", uuid::Uuid::new_v4().simple()));
    reset_peak_rss();
    let restore_s = timed_restore(&vault, &profile, &dst, saved.bytes_in).await?;
    let restore_rss = peak_rss_mib();

    vault.delete("bench", &profile).await?;
    let _ = std::fs::remove_dir_all(&dst);
    let _ = std::fs::remove_dir_all(&tmp_store);
    if !a.keep_profile {
        let _ = std::fs::remove_dir_all(&src);
    }
    let mb = saved.bytes_in as f64 / 1e6;
    let r = Report {
        store: url.split('?').next().unwrap_or_default().to_string(),
        files: saved.files,
        kept_bytes: saved.bytes_in,
        excluded_bytes: saved.stats.excluded_bytes,
        stored_bytes: saved.bytes_stored,
        save_seconds: save_s,
        save_mb_per_s: mb / save_s,
        save_peak_rss_mib: save_rss,
        restore_seconds: restore_s,
        restore_mb_per_s: mb / restore_s,
        restore_peak_rss_mib: restore_rss,
    };
    ctx.print(&r, || {
        format!(
            "store {}\nprofile: {} files, {} kept ({} left out), {} stored\nsave:    {:.2} s, {:.0} MB/s, peak RSS {:.1} MiB\nrestore: {:.2} s, {:.0} MB/s, peak RSS {:.1} MiB",
            r.store,
            r.files,
            human_bytes(r.kept_bytes),
            human_bytes(r.excluded_bytes),
            human_bytes(r.stored_bytes),
            r.save_seconds,
            r.save_mb_per_s,
            r.save_peak_rss_mib,
            r.restore_seconds,
            r.restore_mb_per_s,
            r.restore_peak_rss_mib
        )
    });
    Ok(())
}

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

/// The value `p` of the way up `v` (0.5: the median; the upper one of an even count).
pub(super) fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// The median of `v`.
pub(super) fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
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
            s.egress =
                std::sync::Arc::new(profile_vault::browser::egress::Policy { allow: vec![allow] });
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
        use profile_vault::api::{self, auth::ApiKeys, AppState};
        use profile_vault::browser as chromium;
        use profile_vault::session::{Manager, SessionConfig};
        let mut settings = ctx
            .cfg
            .file
            .server
            .browser_settings(
                chromium::find_binary(ctx.cfg.file.server.chromium.as_deref())?,
                data,
            )
            .map_err(anyhow::Error::msg)?;
        tweak(&mut settings);
        let browser = chromium::Runtime::new(settings);
        if let Err(e) = browser.status() {
            anyhow::bail!("the browser sandbox is unavailable here: {e}");
        }
        let manager = Manager::new(
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
                live: Default::default(),
                browser_version: None,
                allow_older_browser: true,
                room: Default::default(),
                store_watch_max: std::time::Duration::from_secs(3600),
            },
        )?;
        let token = if token == "bench" {
            format!("bench-{}", uuid::Uuid::new_v4().simple())
        } else {
            token.to_string()
        };
        let keys = ApiKeys::parse(&format!("bench:{token}"))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        if let Some(secret) = cluster_secret {
            use profile_vault::cluster::{Cluster, ClusterConfig};
            let url = format!("http://{addr}");
            let cluster = Cluster::new(
                manager.vault().store().clone(),
                manager.node_id(),
                ClusterConfig {
                    node_url: Some(url.clone()),
                    secret: Some(profile_vault::config::Secret::new(secret)),
                    heartbeat: std::time::Duration::from_secs(2),
                    node_ttl: std::time::Duration::from_secs(10),
                    capacity: 4,
                },
            );
            cluster
                .join(Some(url), 0)
                .await
                .map_err(|e| anyhow::anyhow!("cannot join the cluster: {e}"))?;
            manager.attach_cluster(cluster);
        }
        let state = AppState {
            manager,
            keys: Arc::new(keys),
            public_url: format!("http://{addr}"),
            max_body: 65536,
            viewer_origins: Vec::new(),
            frame_ancestors: "*".into(),
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(
            listener,
            state,
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
