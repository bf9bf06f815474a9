//! `profile-vault list`, `profile-vault versions ID [--contents]` and
//! `profile-vault diff ID A B`.

use profile_vault::layout::ProfileAddr;
use profile_vault::profile::contents::{self, Contents};
use profile_vault::vault::{GenerationMeta, Vault};

use super::{human_bytes, Ctx};

/// Arguments of `versions`.
#[derive(Debug, clap::Args)]
pub struct VersionsArgs {
    /// Profile id.
    pub profile: String,
    /// Also show what each generation holds (counts and site names; decrypts each sidecar)
    /// and the browser identity pinned to it.
    #[arg(long)]
    pub contents: bool,
}

/// Arguments of `diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Profile id.
    pub profile: String,
    /// The older generation.
    pub a: u64,
    /// The newer generation.
    pub b: u64,
}

async fn meta_of(vault: &Vault, at: &ProfileAddr, g: u64) -> anyhow::Result<GenerationMeta> {
    Ok(vault
        .meta(at, Some(g))
        .await?
        .map(|(_, m)| m)
        .unwrap_or_default())
}

/// One line per kind of content.
fn summary(c: &Contents) -> String {
    let (mut persistent, mut session) = (0, 0);
    for n in c.cookies.values() {
        persistent += n.persistent;
        session += n.session;
    }
    let opt = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
    format!(
        "{persistent} persistent + {session} session cookies on {} sites, localStorage {} / IndexedDB {} / service workers {} origins, {} history entries, {} bookmarks, {} saved logins, {} extensions{}",
        c.cookies.len(),
        c.local_storage.len(),
        c.indexed_db.len(),
        c.service_workers.len(),
        opt(c.history_entries),
        opt(c.bookmarks),
        opt(c.saved_logins),
        opt(c.extensions),
        if c.unreadable.is_empty() {
            String::new()
        } else {
            format!(" (unreadable: {})", c.unreadable.join("; "))
        }
    )
}

/// Runs `diff`: how generation B differs from generation A.
pub async fn run_diff(ctx: &Ctx, a: DiffArgs) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let at = ctx.profile(&a.profile)?;
    let (ma, mb) = (
        meta_of(&vault, &at, a.a).await?,
        meta_of(&vault, &at, a.b).await?,
    );
    let (Some(ca), Some(cb)) = (&ma.contents, &mb.contents) else {
        anyhow::bail!(
            "generation {} has no contents report (saved before reports, or with archive.contents_report = false)",
            if ma.contents.is_none() { a.a } else { a.b }
        );
    };
    let lines = contents::diff(ca, cb);
    ctx.print(
        &serde_json::json!({"profile": a.profile, "from": a.a, "to": a.b, "changes": lines}),
        || {
            if lines.is_empty() {
                format!("generations {} and {} hold the same", a.a, a.b)
            } else {
                lines.join("\n")
            }
        },
    );
    Ok(())
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
    let at = ctx.profile(&a.profile)?;
    let gens = vault.versions(&at).await?;
    if a.contents {
        let mut out = Vec::new();
        for g in &gens {
            let meta = match g.record {
                Some(_) => Some(meta_of(&vault, &at, g.generation).await?),
                None => None,
            };
            out.push((g, meta));
        }
        let json: Vec<serde_json::Value> = out
            .iter()
            .map(|(g, m)| {
                let mut v = serde_json::to_value(g).expect("serializes");
                v["identity"] =
                    serde_json::to_value(m.as_ref().map(|m| &m.identity)).expect("serializes");
                v["contents"] = serde_json::to_value(m.as_ref().and_then(|m| m.contents.as_ref()))
                    .expect("serializes");
                v
            })
            .collect();
        ctx.print(&json, || {
            out.iter()
                .map(|(g, m)| {
                    let mark = if g.head { "*" } else { " " };
                    let c = m.as_ref().and_then(|m| m.contents.as_ref());
                    let id = m
                        .as_ref()
                        .map(|m| &m.identity)
                        .filter(|i| !i.is_empty())
                        .map(|i| {
                            format!(
                                "\n        identity: {}",
                                serde_json::to_string(i).expect("serializes")
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "{mark} {:>4}  {}{id}",
                        g.generation,
                        c.map_or("no contents report".to_string(), summary)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        return Ok(());
    }
    ctx.print(&gens, || {
        gens.iter()
            .map(|g| {
                let mark = if g.head { "*" } else { " " };
                match (&g.record, g.payload) {
                    (Some(r), true) => format!(
                        "{mark} {:>4}  created {}  {} files  {} stored{}  key {}  chromium {}{}",
                        g.generation,
                        r.created_at,
                        r.stats.files,
                        human_bytes(
                            r.object_size + r.chunks.as_ref().map_or(0, |c| c.bytes_uploaded)
                        ),
                        r.chunks.as_ref().map_or(String::new(), |c| format!(
                            " (format 2: {} of {} chunks new)",
                            c.chunks_new, c.chunks
                        )),
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
