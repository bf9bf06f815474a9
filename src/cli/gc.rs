//! `profile-vault gc [--older-than-days N] [--dry-run] [--all-tenants]`: retention, then
//! collection of format 2 packs no kept generation uses.

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
    let mut failed = Vec::new();
    let mut packs = Vec::new();
    // A tenant that fails does not stop the others; what was done is printed either way.
    for t in &tenants {
        match vault.gc(t, max_idle, a.dry_run, &[]).await {
            Ok(r) => {
                for p in r.deleted {
                    out.push(serde_json::json!({"tenant": t, "profile": p}));
                }
                for (p, e) in r.failed {
                    failed.push(
                        serde_json::json!({"tenant": t, "profile": p, "error": e.to_string()}),
                    );
                }
            }
            Err(e) => failed.push(
                serde_json::json!({"tenant": t, "profile": "*", "error": format!("retention: {e}")}),
            ),
        }
        match vault.gc_all_packs(t, a.dry_run).await {
            Ok(r) => packs.extend(r),
            Err(e) => failed.push(
                serde_json::json!({"tenant": t, "profile": "*", "error": format!("pack collection: {e}")}),
            ),
        }
    }
    packs.retain(|r| r.packs > 0);
    ctx.print(
        &serde_json::json!({"dry_run": a.dry_run, "older_than_days": days, "profiles": out, "failed": failed, "packs": packs}),
        || {
            let verb = if a.dry_run { "would delete" } else { "deleted" };
            let mut lines: Vec<String> = out
                .iter()
                .map(|p| {
                    format!(
                        "{verb} {}/{}",
                        p["tenant"].as_str().unwrap_or(""),
                        p["profile"].as_str().unwrap_or("")
                    )
                })
                .collect();
            if lines.is_empty() && failed.is_empty() {
                lines.push(format!("no profile idle for {days} days"));
            }
            for f in &failed {
                lines.push(format!(
                    "FAILED {}/{}: {}",
                    f["tenant"].as_str().unwrap_or(""),
                    f["profile"].as_str().unwrap_or(""),
                    f["error"].as_str().unwrap_or("")
                ));
            }
            for r in &packs {
                let mut l = format!(
                    "{}/{}: {} packs, {} used, {} unused (marked)",
                    r.tenant, r.profile, r.packs, r.used, r.marked
                );
                if !r.deleted.is_empty() {
                    l.push_str(&format!(
                        "; {verb} {} ({}): {}",
                        r.deleted.len(),
                        super::human_bytes(r.deleted_bytes),
                        r.deleted.join(" ")
                    ));
                }
                if let Some(why) = &r.skipped {
                    l.push_str(&format!("; nothing deleted: {why}"));
                }
                lines.push(l);
            }
            lines.join("\n")
        },
    );
    anyhow::ensure!(
        failed.is_empty(),
        "{} profile(s) or tenant(s) could not be collected (listed above); the rest were",
        failed.len()
    );
    Ok(())
}
