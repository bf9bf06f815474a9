//! `profile-vault serve`: the session daemon.

use std::sync::Arc;
use std::time::Duration;

use super::data::BadInput;
use super::Ctx;
use profile_vault::api::auth::ApiKeys;
use profile_vault::browser as chromium;
use profile_vault::daemon::{Daemon, Http};
use profile_vault::session::{Manager, SessionConfig};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long, env = "PV_LISTEN")]
    pub listen: Option<String>,
}

/// Loads API keys: `PV_API_KEYS`, else `http.api_keys_file`, else `<data_dir>/api-keys`;
/// on the embedded default with none, generates one there.
fn api_keys(ctx: &Ctx) -> anyhow::Result<ApiKeys> {
    if let Some(inline) = ctx.cfg.inline_api_keys() {
        return Ok(ApiKeys::parse(inline)?);
    }
    if let Some(file) = &ctx.cfg.file.http.api_keys_file {
        return Ok(ApiKeys::from_file(file)?);
    }
    let default_file = ctx.cfg.data_dir.join("api-keys");
    if default_file.exists() {
        return Ok(ApiKeys::from_file(&default_file)?);
    }
    if ctx.cfg.embedded_default {
        let keys = ApiKeys::generate(&default_file, &ctx.cfg.tenant)?;
        eprintln!("generated an API key for tenant '{}' in {} (mode 0600); send it as 'Authorization: Bearer <key>'", ctx.cfg.tenant, default_file.display());
        return Ok(keys);
    }
    anyhow::bail!("no API keys configured: set PV_API_KEYS=tenant:key or http.api_keys_file")
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("stop signal received: ending sessions and saving them");
}

/// The retention sweeper: every `retention.sweep_every` seconds, deletes profiles not loaded
/// or saved for `retention.max_idle_days` (`PV_RETENTION_MAX_IDLE_SECS` overrides, in seconds;
/// 0: never), skipping profiles that live sessions use, then collects format 2 packs no
/// kept generation uses.
fn spawn_retention(ctx: &Ctx, manager: Arc<Manager>) {
    let r = &ctx.cfg.file.retention;
    let max_idle = std::env::var("PV_RETENTION_MAX_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(r.max_idle_days.saturating_mul(86_400)));
    let every = Duration::from_secs(r.sweep_every.max(1));
    tokio::spawn(async move {
        let vault = manager.vault().with_actor("daemon:retention");
        loop {
            tokio::time::sleep(every).await;
            let tenants = match vault.tenants().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "retention sweep could not list tenants");
                    continue;
                }
            };
            for t in tenants {
                let in_use: Vec<String> = manager
                    .list(&t, true)
                    .iter()
                    .filter_map(|s| s.profile_id.clone())
                    .collect();
                let swept = if max_idle.is_zero() {
                    Ok(Default::default())
                } else {
                    vault.gc(&t, max_idle, false, &in_use).await
                };
                // Each profile that failed was logged by the pass (the others went on).
                match swept {
                    Ok(r) if !r.deleted.is_empty() => {
                        tracing::info!(tenant = %t, profiles = ?r.deleted, "retention deleted idle profiles")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(tenant = %t, error = %e, "retention sweep failed"),
                }
                // Format 2 packs no kept generation uses (safe beside running saves).
                if let Err(e) = vault.gc_all_packs(&t, false).await {
                    tracing::warn!(tenant = %t, error = %e, "pack garbage collection failed");
                }
            }
        }
    });
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let f = &ctx.cfg.file;
    let vault = ctx.vault().await?;
    // A KMS key that is missing, disabled or forbidden is a configuration error: stop now.
    // One that cannot be reached yet is not: /readyz stays false until it can.
    match vault.keys().probe().await {
        Ok(()) => {}
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "master key not reachable yet; /readyz reports not ready until it is");
        }
        Err(e) => return Err(e.into()),
    }
    // A store that ignores conditional writes would let concurrent saves overwrite each
    // other silently: refused. One that cannot be reached yet proves nothing.
    let check = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        profile_vault::store::check_conditional_writes(vault.store().as_ref()),
    );
    match check.await {
        Ok(Ok(profile_vault::store::Conditional::Enforced)) => {}
        Ok(Ok(profile_vault::store::Conditional::Ignored(what))) => {
            return Err(BadInput(format!(
                "the store {} ignores conditional writes ({what}): saves of one profile could overwrite each other; use a store that honours If-None-Match and If-Match",
                ctx.cfg.store_url
            ))
            .into())
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not check that the store honours conditional writes; /readyz reports the store");
        }
        Err(_) => {
            tracing::warn!("the store did not answer the conditional-write check within 10 s; /readyz reports the store");
        }
    }
    // Without a browser the daemon still starts (profiles API, health): /readyz reports it
    // and POST /v0/vm answers 503 browser_failed until Chromium is installed.
    let chromium = match chromium::find_binary(f.browser.chromium.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no Chromium found: sessions cannot start (apt-get install chromium, or set PV_CHROMIUM)");
            f.browser
                .chromium
                .clone()
                .unwrap_or_else(|| "chromium".into())
        }
    };
    // Read once: loads compare it with the Chromium that saved the profile.
    let browser_version = chromium::version(&chromium);
    match &browser_version {
        Some(v) => tracing::info!(version = %v, "browser"),
        None => tracing::warn!("the browser's version is unknown: profiles are loaded without comparing Chromium versions"),
    }
    let browser = chromium::Runtime::new(
        f.browser
            .settings(chromium.clone(), &ctx.cfg.data_dir, f.sessions.max_sessions)
            .map_err(BadInput)?,
    );
    match browser.status() {
        Ok(()) if browser.unsandboxed() => tracing::warn!("browser.unsafe_no_sandbox is set: browsers run UNCONFINED with this daemon's privileges; any tenant or viewer can reach this host"),
        Ok(()) => tracing::info!(egress_allow = ?f.browser.egress_allow, egress_deny = ?f.browser.egress_deny, "browsers run sandboxed"),
        Err(e) => tracing::error!(reason = %e, "the browser sandbox cannot be built here: sessions are refused (see /readyz; browser.unsafe_no_sandbox turns it off)"),
    }
    let keys = api_keys(ctx)?;
    let listen = a.listen.unwrap_or_else(|| f.http.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let public_url = f
        .http
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    // The cluster: a member record in the store (refused when other nodes run with another
    // secret, or this node has none), and session records every node answers from.
    let node_url = f
        .cluster
        .node_url
        .clone()
        .or_else(|| (!addr.ip().is_unspecified()).then(|| format!("http://{addr}")));
    if node_url.is_none() {
        tracing::warn!("listening on a wildcard address without cluster.node_url (PV_NODE_URL): other nodes cannot forward requests to this one");
    }
    let api_keys = keys.len();
    let daemon = Daemon::build(
        vault,
        SessionConfig::from_sections(
            &f.sessions,
            &f.live,
            &f.room,
            browser,
            ctx.cfg.data_dir.clone(),
            browser_version,
        ),
        Http {
            keys,
            public_url: public_url.clone(),
            max_body: f.http.max_body_bytes,
            viewer_origins: f.live.origins.clone(),
            frame_ancestors: f.live.frame_ancestors.clone(),
        },
        Some(f.cluster.settings(node_url, f.sessions.max_sessions)),
    )
    .await?;
    let manager = daemon.manager().clone();
    {
        let m = manager.clone();
        tokio::spawn(async move {
            let n = m.recover().await;
            if n > 0 {
                tracing::warn!(
                    sessions = n,
                    "saved the sessions a previous daemon left running"
                );
            }
        });
    }
    spawn_retention(ctx, manager);
    tracing::info!(listen = %addr, public_url, store = %ctx.cfg.store_url, chromium = %chromium.display(), api_keys, "profile-vault serving");
    eprintln!(
        "profile-vault listening on http://{addr} (store {})",
        ctx.cfg.store_url
    );
    daemon
        .run(
            listener,
            shutdown_signal(),
            Duration::from_secs(f.sessions.shutdown_grace),
        )
        .await?;
    tracing::info!("profile-vault stopped");
    Ok(())
}
