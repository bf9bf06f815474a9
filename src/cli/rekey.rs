//! `profile-vault keygen`, `profile-vault keys` and `profile-vault rekey [--to KEY_ID]`.

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

/// Arguments of `keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// Also check that every key works (KMS: DescribeKey: exists, enabled, symmetric).
    #[arg(long)]
    pub check: bool,
}

/// Arguments of `rekey`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Master key id (local or KMS) to wrap every data key with; default: each tenant's
    /// configured key ([keys.tenants], else the active key).
    #[arg(long)]
    pub to: Option<String>,
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

/// Runs `keys`.
pub async fn run_keys(ctx: &Ctx, a: KeysArgs) -> anyhow::Result<()> {
    let ring = ctx.keyring().await?;
    let (check, failure) = if a.check {
        match ring.probe_all().await {
            Ok(()) => (Some(Ok(())), None),
            Err(e) => (Some(Err(e.to_string())), Some(e)),
        }
    } else {
        (None, None)
    };
    let infos = ring.infos();
    ctx.print(
        &serde_json::json!({"keys": infos, "check": check.as_ref().map(|c| match c {
            Ok(()) => serde_json::json!({"ok": true}),
            Err(e) => serde_json::json!({"ok": false, "error": e}),
        })}),
        || {
            let mut out = String::new();
            for k in &infos {
                out.push_str(&format!(
                    "{:<24} {:<5} {}{}{}\n",
                    k.id,
                    k.source,
                    k.kms_key.as_deref().unwrap_or("-"),
                    if k.active { "  [active]" } else { "" },
                    if k.tenants.is_empty() {
                        String::new()
                    } else {
                        format!("  [tenants: {}]", k.tenants.join(", "))
                    }
                ));
            }
            match &check {
                Some(Ok(())) => out.push_str("check: ok"),
                Some(Err(e)) => out.push_str(&format!("check: FAILED: {e}")),
                None => out.truncate(out.trim_end().len()),
            }
            out
        },
    );
    // Exit 6 when KMS cannot be reached (retry later), 2 for a key that is wrong.
    failure.map_or(Ok(()), |e| Err(e.into()))
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
    let mut targets = std::collections::BTreeMap::new();
    for t in &tenants {
        let to =
            a.to.clone()
                .unwrap_or_else(|| vault.keys().active_for(t).to_string());
        let (r, k) = vault.rekey(t, &to, a.dry_run).await?;
        rewrapped += r;
        already += k;
        targets.insert(t.clone(), to);
    }
    let mut to_ids: Vec<&str> = targets.values().map(String::as_str).collect();
    to_ids.sort_unstable();
    to_ids.dedup();
    let to_text = match (&a.to, to_ids.is_empty()) {
        (Some(to), true) => to.clone(),
        _ => to_ids.join(", "),
    };
    ctx.print(&serde_json::json!({"to": targets, "tenants": tenants, "rewrapped": rewrapped, "already": already, "dry_run": a.dry_run}), || {
        format!("{} {rewrapped} data keys to master key {to_text} ({already} already used it)", if a.dry_run { "would re-wrap" } else { "re-wrapped" })
    });
    Ok(())
}
