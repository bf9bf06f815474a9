//! `profile-vault rollback ID --to N`.

use super::Ctx;

/// Arguments of `rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile id.
    pub profile: String,
    /// Generation to make the head.
    #[arg(long)]
    pub to: u64,
    /// Show what would change without changing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `rollback`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    if a.dry_run {
        let gens = vault.versions(&ctx.profile(&a.profile)?).await?;
        let head = gens.iter().find(|g| g.head).map(|g| g.generation);
        if !gens
            .iter()
            .any(|g| g.generation == a.to && g.payload && g.record.is_some())
        {
            return Err(profile_vault::vault::Error::GenerationNotFound {
                profile: a.profile,
                generation: a.to,
            }
            .into());
        }
        ctx.print(
            &serde_json::json!({"profile": a.profile, "from": head, "to": a.to, "dry_run": true}),
            || {
                format!(
                    "would move profile {} from generation {head:?} to {}",
                    a.profile, a.to
                )
            },
        );
        return Ok(());
    }
    let head = vault.rollback(&ctx.profile(&a.profile)?, a.to).await?;
    ctx.print(&head, || {
        format!(
            "profile {} now loads generation {}",
            head.profile, head.generation
        )
    });
    Ok(())
}
