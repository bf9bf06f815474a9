//! `profile-vault save DIR --profile ID`: pack, encrypt and store a new generation.

use std::path::PathBuf;

use super::{human_bytes, Ctx};
use profile_vault::vault::Base;

/// Arguments of `save`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The profile directory (Chromium's --user-data-dir), with the browser stopped.
    pub dir: PathBuf,
    /// Profile id to save under.
    #[arg(long)]
    pub profile: String,
    /// Fail with a conflict unless the head is this generation (0: the profile must be new).
    #[arg(long)]
    pub expect_generation: Option<u64>,
}

/// Runs `save`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let base = match a.expect_generation {
        None => Base::Current,
        Some(0) => Base::Expect(None),
        Some(g) => Base::Expect(Some(g)),
    };
    let r = vault
        .save(ctx.tenant(), &a.profile, &a.dir, base, ctx.progress())
        .await?;
    ctx.print(&r, || {
        let mut s = format!(
            "saved profile {} generation {}: {} files, {} in, {} stored (key {})",
            r.profile, r.generation, r.files, human_bytes(r.bytes_in), human_bytes(r.bytes_stored), r.key_id
        );
        if r.stats.clean_exit == Some(false) {
            s.push_str("\nwarning: the browser did not exit cleanly; this is a crash snapshot");
        }
        if r.stats.cookie_v11_warning {
            s.push_str("\nwarning: cookies use v11 (keyring) encryption and will be lost on another machine");
        }
        if !r.pruned.is_empty() {
            s.push_str(&format!("\npruned generations {:?}", r.pruned));
        }
        s
    });
    Ok(())
}
