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
    /// Read every file, also those whose size and modification time say they did not change
    /// since the generation this save is based on (format 2).
    #[arg(long)]
    pub reread: bool,
}

/// Runs `save`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault_with(|o| o.reread = a.reread).await?;
    let base = match a.expect_generation {
        None => Base::Current,
        Some(0) => Base::Expect(None),
        Some(g) => Base::Expect(Some(g)),
    };
    let r = vault
        .save(&ctx.profile(&a.profile)?, &a.dir, base, ctx.progress())
        .await?;
    ctx.print(&r, || {
        let mut s = format!(
            "saved profile {} generation {}: {} files, {} in, {} stored (key {})",
            r.profile, r.generation, r.files, human_bytes(r.bytes_in), human_bytes(r.bytes_stored), r.key_id
        );
        if let Some(c) = &r.chunks {
            s.push_str(&format!(
                "\nformat 2: {} of {} chunks new ({} sent in {} packs), {} files read, {} unchanged{}",
                c.chunks_new,
                c.chunks,
                human_bytes(c.bytes_uploaded),
                c.packs_new,
                c.files_read,
                c.files_skipped,
                c.base.map_or(String::new(), |b| format!(" since generation {b}"))
            ));
        }
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
