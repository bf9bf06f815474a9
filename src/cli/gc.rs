//! `profile-vault gc [--older-than-days N] [--dry-run] [--all-tenants]`: retention.

use std::time::Duration;

use super::Ctx;

/// Arguments of `gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Delete profiles not loaded or saved for this many days (default: retention.max_idle_days).
    #[arg(long)]
    pub older_than_days: Option<f64>,
    /// Only show what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Every tenant, not just --tenant.
    #[arg(long)]
    pub all_tenants: bool,
}

/// Runs `gc`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let days = a
        .older_than_days
        .unwrap_or(ctx.cfg.file.retention.max_idle_days as f64);
    anyhow::ensure!(
        days.is_finite() && days >= 0.0,
        "--older-than-days must be a non-negative number"
    );
    let max_idle = Duration::from_secs_f64(days * 86_400.0);
    let vault = ctx.vault().await?;
    let tenants = if a.all_tenants {
        vault.tenants().await?
    } else {
        vec![ctx.tenant().to_string()]
    };
    let mut out = Vec::new();
    for t in &tenants {
        for p in vault.gc(t, max_idle, a.dry_run, &[]).await? {
            out.push(serde_json::json!({"tenant": t, "profile": p}));
        }
    }
    ctx.print(
        &serde_json::json!({"dry_run": a.dry_run, "older_than_days": days, "profiles": out}),
        || {
            let verb = if a.dry_run { "would delete" } else { "deleted" };
            if out.is_empty() {
                format!("no profile idle for {days} days")
            } else {
                out.iter()
                    .map(|p| {
                        format!(
                            "{verb} {}/{}",
                            p["tenant"].as_str().unwrap_or(""),
                            p["profile"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        },
    );
    Ok(())
}
