//! `profile-vault audit [--profile ID]`: the tenant's audit trail (loads, saves, rollbacks,
//! rekeys, deletes), oldest first.

use super::Ctx;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this profile's events.
    #[arg(long)]
    pub profile: Option<String>,
}

/// Runs `audit`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    profile_vault::vault::validate_id("tenant", ctx.tenant())
        .map_err(profile_vault::vault::Error::from)?;
    let events = vault
        .audit()
        .list(ctx.tenant(), a.profile.as_deref())
        .await?;
    ctx.print(&events, || {
        if events.is_empty() {
            return "no audit events".into();
        }
        events
            .iter()
            .map(|e| {
                format!(
                    "{}\t{:?}\t{}\tgeneration {}\t{}\t{}{}",
                    e.at_ms,
                    e.action,
                    e.profile.as_deref().unwrap_or("-"),
                    e.generation.map_or("-".into(), |g| g.to_string()),
                    e.actor,
                    e.outcome,
                    e.error
                        .as_ref()
                        .map(|x| format!(": {x}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
