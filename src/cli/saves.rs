//! `profile-vault saves [--retry ID | --retry-all]`: failed session saves kept on this node.

use std::time::Duration;

use super::Ctx;
use profile_vault::session::{Manager, SessionConfig};

/// Arguments of `saves`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Retry this session's save now.
    #[arg(long, conflicts_with = "retry_all")]
    pub retry: Option<String>,
    /// Retry every failed save now, the refused ones too (after the limits were raised).
    #[arg(long)]
    pub retry_all: bool,
}

/// Runs `saves`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let f = &ctx.cfg.file;
    // No browser is started: only the kept directories are saved.
    let manager = Manager::new(
        vault,
        SessionConfig {
            max_sessions: 0,
            max_sessions_per_tenant: 0,
            max_cdp_clients: 0,
            max_cdp_clients_per_tenant: 0,
            max_viewers_per_tenant: 0,
            max_state_jobs: (0, 0),
            inactive_timeout: None,
            absolute_timeout: None,
            max_session_secs: None,
            start_deadline: Duration::from_secs(1),
            retry_failed_every: Duration::from_secs(3600),
            live: Default::default(),
            allow_older_browser: true,
            room: Default::default(),
            store_watch_max: Duration::from_secs(3600),
            ..SessionConfig::from_sections(
                &f.sessions,
                &f.live,
                &f.room,
                profile_vault::browser::Runtime::inert(ctx.cfg.data_dir.join("run")),
                ctx.cfg.data_dir.clone(),
                None,
            )
        },
    )?;
    if let Some(id) = &a.retry {
        let ok = manager.retry_save(None, id).await?;
        ctx.print(&serde_json::json!({"session_id": id, "saved": ok}), || {
            if ok {
                format!("session {id}: saved")
            } else {
                format!("session {id}: the save failed again; its directory is kept")
            }
        });
        anyhow::ensure!(ok, "the save of session {id} failed again");
        return Ok(());
    }
    if a.retry_all {
        let n = manager.retry_failed_saves(true).await;
        let left = manager.failed_saves(None).len();
        ctx.print(
            &serde_json::json!({"saved": n, "still_failed": left}),
            || format!("saved {n}; {left} still failing"),
        );
        anyhow::ensure!(left == 0, "{left} saves still failing");
        return Ok(());
    }
    let list = manager.failed_saves(None);
    let out: Vec<serde_json::Value> = list
        .iter()
        .map(|r| serde_json::json!({"session_id": r.id, "tenant": r.tenant, "profile": r.profile_id, "dir": r.dir, "created_at": r.created_at, "state": r.state, "refused": r.refused}))
        .collect();
    ctx.print(&out, || {
        if list.is_empty() {
            return "no failed saves".into();
        }
        list.iter()
            .map(|r| {
                format!(
                    "{}\ttenant {}\tprofile {}\t{}{}",
                    r.id,
                    r.tenant,
                    r.profile_id.as_deref().unwrap_or("-"),
                    r.dir.display(),
                    r.refused
                        .as_ref()
                        .map(|w| format!("\trefused: {}", w.reason))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
