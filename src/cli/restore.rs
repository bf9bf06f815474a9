//! `profile-vault restore ID --to DIR [--generation N]`.

use std::path::PathBuf;

use super::{human_bytes, Ctx};

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile id.
    pub profile: String,
    /// Target directory; must not exist or be empty.
    #[arg(long)]
    pub to: PathBuf,
    /// Generation to restore (default: the head).
    #[arg(long)]
    pub generation: Option<u64>,
    /// Restore a profile saved by a newer Chromium than this machine's all the same.
    #[arg(long)]
    pub allow_older_browser: bool,
}

/// Runs `restore`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    // The directory is for a browser: this machine's, when it has one.
    if !a.allow_older_browser {
        let browser = profile_vault::browser::find_binary(ctx.cfg.file.browser.chromium.as_deref())
            .ok()
            .and_then(|b| profile_vault::browser::version(&b));
        vault
            .check_browser(&ctx.profile(&a.profile)?, a.generation, browser.as_deref())
            .await?;
    }
    let r = vault
        .restore(
            &ctx.profile(&a.profile)?,
            a.generation,
            &a.to,
            ctx.progress(),
        )
        .await?;
    ctx.print(&r, || {
        format!(
            "restored profile {} generation {} into {}: {} files, {} dirs, {}{}",
            r.profile,
            r.generation,
            a.to.display(),
            r.unpacked.files,
            r.unpacked.dirs,
            human_bytes(r.unpacked.bytes),
            r.chromium_version
                .as_ref()
                .map(|v| format!(" (saved by Chromium {v}; do not open it with an older one)"))
                .unwrap_or_default()
        )
    });
    Ok(())
}
