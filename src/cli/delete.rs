//! `profile-vault delete ID`.

use super::Ctx;

/// Arguments of `delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile id.
    pub profile: String,
    /// Show what would be deleted without deleting.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `delete`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    if a.dry_run {
        let gens = vault.versions(&ctx.profile(&a.profile)?).await?;
        let list: Vec<u64> = gens.iter().map(|g| g.generation).collect();
        ctx.print(
            &serde_json::json!({"profile": a.profile, "generations": list, "dry_run": true}),
            || {
                format!(
                    "would delete profile {} with generations {list:?}",
                    a.profile
                )
            },
        );
        return Ok(());
    }
    // Held as a session would hold it: refused while a session of any node holds it, and
    // none starts on it while it goes.
    let holder = format!("cli-delete:{}", uuid::Uuid::new_v4());
    let n = vault
        .delete_unleased(
            &ctx.profile(&a.profile)?,
            "cli",
            &holder,
            std::time::Duration::from_secs(60),
        )
        .await?;
    ctx.print(
        &serde_json::json!({"profile": a.profile, "deleted_objects": n}),
        || format!("deleted profile {} ({n} objects)", a.profile),
    );
    Ok(())
}
