//! `profile-vault keygen` and `profile-vault rekey --to KEY_ID`.

use super::Ctx;

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Key id (default: key-<date>-<random>).
    #[arg(long)]
    pub id: Option<String>,
    /// Make it the active key (writes <keys dir>/ACTIVE).
    #[arg(long)]
    pub activate: bool,
}

/// Arguments of `rekey`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master key id to wrap every data key with.
    #[arg(long)]
    pub to: String,
    /// Rekey every tenant, not just --tenant.
    #[arg(long)]
    pub all_tenants: bool,
    /// Count what would change without changing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs `keygen`.
pub fn run_keygen(ctx: &Ctx, a: KeygenArgs) -> anyhow::Result<()> {
    let dir = ctx.cfg.key_sources().dir;
    let id =
        a.id.unwrap_or_else(|| format!("key-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    profile_vault::keys::generate_key_file(&dir, &id)?;
    if a.activate {
        profile_vault::fsutil::write_private_atomic(&dir.join("ACTIVE"), id.as_bytes())?;
    }
    let path = dir.join(format!("{id}.key"));
    ctx.print(&serde_json::json!({"key_id": id, "path": path, "active": a.activate}), || {
        format!("generated master key {id} at {} (mode 0600){}; back it up: without it, profiles wrapped by it cannot be restored", path.display(), if a.activate { ", now active" } else { "" })
    });
    Ok(())
}

/// Runs `rekey`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let tenants = if a.all_tenants {
        vault.tenants().await?
    } else {
        vec![ctx.tenant().to_string()]
    };
    let (mut rewrapped, mut already) = (0, 0);
    for t in &tenants {
        let (r, k) = vault.rekey(t, &a.to, a.dry_run).await?;
        rewrapped += r;
        already += k;
    }
    ctx.print(&serde_json::json!({"to": a.to, "tenants": tenants, "rewrapped": rewrapped, "already": already, "dry_run": a.dry_run}), || {
        format!("{} {rewrapped} data keys to master key {} ({already} already used it)", if a.dry_run { "would re-wrap" } else { "re-wrapped" }, a.to)
    });
    Ok(())
}
