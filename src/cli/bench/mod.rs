//! `profile-vault bench`: the dispatch to each bench. `speed` (the default): save and restore
//! speed and peak memory on a synthetic profile (`profile.rs`); the others measure one thing
//! each (`--vs-tar`, `--resave`, `--session`, `--live-view`, `--session-store`, `--cluster`,
//! `--contents-report`). Sizes count kept bytes.

mod args;
mod cluster;
mod common;
mod contents;
mod daemon;
mod limits;
mod live;
mod phases;
mod profile;
mod resave;
mod session;
mod speed;
mod store;
mod tar;

pub use args::Args;

use crate::cli::Ctx;

/// Runs `bench`.
pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let bench_dir = ctx.cfg.data_dir.join("bench");
    profile_vault::fsutil::create_private_dir(&bench_dir)?;
    if a.live_view {
        return live::run(ctx, &a, &bench_dir).await;
    }
    if a.session_store {
        return store::run(ctx, &a, &bench_dir).await;
    }
    if a.cluster {
        return cluster::run(ctx, &a, &bench_dir).await;
    }
    let src_for = |mb: u64| bench_dir.join(format!("profile-{mb}mb"));
    if a.resave {
        let src = src_for(a.size_mb);
        profile::ensure(&src, a.size_mb).await?;
        return resave::run(ctx, &a, &src, &bench_dir).await;
    }
    let src = src_for(a.size_mb);
    profile::ensure(&src, a.size_mb).await?;
    if a.session {
        return session::run(ctx, &a, &src, &bench_dir).await;
    }
    if a.contents_report {
        return contents::run(ctx, &a, &src, &bench_dir).await;
    }
    if a.vs_tar {
        return tar::run(ctx, &a, &src, &bench_dir).await;
    }
    speed::run(ctx, &a, &src, &bench_dir).await
}
