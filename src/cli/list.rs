//! `profile-vault list` and `profile-vault versions ID`.

use super::{human_bytes, Ctx};

/// Arguments of `versions`.
#[derive(Debug, clap::Args)]
pub struct VersionsArgs {
    /// Profile id.
    pub profile: String,
}

/// Runs `list`.
pub async fn run_list(ctx: &Ctx) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let profiles = vault.list(ctx.tenant()).await?;
    ctx.print(&profiles, || {
        if profiles.is_empty() {
            return format!("no profiles for tenant {}", ctx.tenant());
        }
        profiles
            .iter()
            .map(|p| {
                format!(
                    "{}\tgeneration {}\tupdated {}",
                    p.profile, p.generation, p.updated_at
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

/// Runs `versions`.
pub async fn run_versions(ctx: &Ctx, a: VersionsArgs) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let gens = vault.versions(ctx.tenant(), &a.profile).await?;
    ctx.print(&gens, || {
        gens.iter()
            .map(|g| {
                let mark = if g.head { "*" } else { " " };
                match (&g.record, g.payload) {
                    (Some(r), true) => format!(
                        "{mark} {:>4}  created {}  {} files  {} stored  key {}  chromium {}{}",
                        g.generation,
                        r.created_at,
                        r.stats.files,
                        human_bytes(r.object_size),
                        r.key_id,
                        r.stats.chromium_version.as_deref().unwrap_or("?"),
                        if r.stats.clean_exit == Some(false) {
                            "  (unclean)"
                        } else {
                            ""
                        }
                    ),
                    (None, true) => format!(
                        "{mark} {:>4}  incomplete: payload without record (interrupted save)",
                        g.generation
                    ),
                    (_, false) => format!(
                        "{mark} {:>4}  incomplete: record without payload",
                        g.generation
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}
