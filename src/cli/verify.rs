//! `profile-vault verify ID [--all] [--generation N]`: download and check without writing.

use super::Ctx;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile id.
    pub profile: String,
    /// Verify every generation, not just the head.
    #[arg(long, conflicts_with = "generation")]
    pub all: bool,
    /// Verify this generation.
    #[arg(long)]
    pub generation: Option<u64>,
}

#[derive(serde::Serialize)]
struct Outcome {
    generation: u64,
    ok: bool,
    files: u64,
    bytes: u64,
    error: Option<String>,
}

/// Runs `verify`; fails if any generation fails.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let gens: Vec<Option<u64>> = if a.all {
        vault
            .versions(&ctx.profile(&a.profile)?)
            .await?
            .into_iter()
            .map(|g| Some(g.generation))
            .collect()
    } else {
        vec![a.generation]
    };
    let mut outcomes = Vec::new();
    let mut first_err = None;
    for g in gens {
        match vault
            .verify(&ctx.profile(&a.profile)?, g, ctx.progress())
            .await
        {
            Ok(r) => outcomes.push(Outcome {
                generation: r.generation,
                ok: true,
                files: r.unpacked.files,
                bytes: r.unpacked.bytes,
                error: None,
            }),
            Err(e) => {
                outcomes.push(Outcome {
                    generation: g.unwrap_or(0),
                    ok: false,
                    files: 0,
                    bytes: 0,
                    error: Some(e.to_string()),
                });
                if !a.all {
                    return Err(e.into());
                }
                first_err.get_or_insert(e);
            }
        }
    }
    ctx.print(&outcomes, || {
        outcomes
            .iter()
            .map(|o| match &o.error {
                None => format!(
                    "generation {}: OK ({} files, {} bytes)",
                    o.generation, o.files, o.bytes
                ),
                Some(e) => format!("generation {}: FAILED: {e}", o.generation),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
