//! `profile-vault data ID [--set FILE]`: read or replace a profile's data document.

use std::io::Read;

use profile_vault::vault::{self, DataCondition};

use super::Ctx;

/// Arguments of `data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile id.
    pub profile: String,
    /// Replace the document with this JSON file (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    pub set: Option<std::path::PathBuf>,
    /// With --set: write only if the document is at this version (0: none written yet).
    #[arg(long, value_name = "VERSION", requires = "set")]
    pub if_match: Option<u64>,
}

/// Runs `data`. Reading prints the document itself (`--json`: with its version).
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let tenant = ctx.tenant();
    let at = ctx.profile(&a.profile)?;
    if !vault.profile_exists(&at).await? {
        return Err(vault::Error::ProfileNotFound {
            tenant: tenant.into(),
            profile: a.profile,
        }
        .into());
    }
    let Some(path) = a.set else {
        let d = vault.data(&at).await?;
        if ctx.json {
            ctx.print(
                &serde_json::json!({"profile": a.profile, "version": d.version, "updated_at": d.updated_at, "data": d.data}),
                String::new,
            );
        } else {
            println!("{}", serde_json::to_string_pretty(&d.data)?);
        }
        return Ok(());
    };
    let mut text = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut text)?;
    } else {
        text = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let data: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        anyhow::Error::new(BadInput(format!("{} is not JSON: {e}", path.display())))
    })?;
    let cond = a
        .if_match
        .map_or(DataCondition::Always, DataCondition::Version);
    let version = vault.set_data(&at, &data, cond).await?;
    ctx.print(
        &serde_json::json!({"profile": a.profile, "version": version}),
        || {
            format!(
                "profile {} data document is now version {version}",
                a.profile
            )
        },
    );
    Ok(())
}

/// Input that is not what the command takes (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);
