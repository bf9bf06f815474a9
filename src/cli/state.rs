//! `profile-vault import-state FILE --profile ID` and `profile-vault export-state ID`:
//! Playwright storageState in and out of profiles, through a real (offline) Chromium.

use std::io::Read;

use profile_vault::storage_state::{self, Runner};

use super::data::BadInput;
use super::Ctx;

/// Arguments of `import-state`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The storageState JSON file (`-`: standard input).
    pub file: std::path::PathBuf,
    /// The new profile's id.
    #[arg(long)]
    pub profile: String,
    /// Chromium binary (default: PV_CHROMIUM, browser.chromium, or the one on PATH).
    #[arg(long, env = "PV_CHROMIUM")]
    pub chromium: Option<std::path::PathBuf>,
}

/// Arguments of `export-state`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Profile id.
    pub profile: String,
    /// The generation (default: the head).
    #[arg(long)]
    pub generation: Option<u64>,
    /// Write the state to this file (mode 0600) instead of standard output.
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    /// Chromium binary (default: PV_CHROMIUM, browser.chromium, or the one on PATH).
    #[arg(long, env = "PV_CHROMIUM")]
    pub chromium: Option<std::path::PathBuf>,
}

fn runner(ctx: &Ctx, chromium: Option<&std::path::Path>) -> anyhow::Result<Runner> {
    let configured = chromium.or(ctx.cfg.file.browser.chromium.as_deref());
    Ok(Runner {
        browser: profile_vault::browser::Runtime::new(
            ctx.cfg
                .file
                .browser
                .settings(
                    profile_vault::browser::find_binary(configured)?,
                    &ctx.cfg.data_dir,
                    ctx.cfg.file.sessions.max_sessions,
                )
                .map_err(BadInput)?,
        ),
        work_dir: storage_state::work_dir(&ctx.cfg.data_dir),
        deadline: std::time::Duration::from_secs(ctx.cfg.file.sessions.start_deadline.max(30)),
    })
}

/// Runs `import-state`.
pub async fn run_import(ctx: &Ctx, a: ImportArgs) -> anyhow::Result<()> {
    let mut text = Vec::new();
    if a.file.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut text)?;
    } else {
        text = std::fs::read(&a.file).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    }
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| BadInput(format!("{} is not JSON: {e}", a.file.display())))?;
    let state = storage_state::parse(&v).map_err(|e| BadInput(e.to_string()))?;
    let vault = ctx.vault().await?;
    let rep = runner(ctx, a.chromium.as_deref())?
        .import(&vault, &ctx.profile(&a.profile)?, &state)
        .await
        .map_err(state_error)?;
    ctx.print(
        &serde_json::json!({"profile": a.profile, "generation": rep.generation, "cookies": state.cookies.len(), "origins": state.origins.len()}),
        || {
            format!(
                "imported {} cookies and {} origins into profile {} generation {}",
                state.cookies.len(),
                state.origins.len(),
                a.profile,
                rep.generation
            )
        },
    );
    Ok(())
}

/// Runs `export-state`.
pub async fn run_export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<()> {
    let vault = ctx.vault().await?;
    let runner = runner(ctx, a.chromium.as_deref())?;
    // An invalid id is audited as a failed export, as every refused export is.
    let r = match ctx.profile(&a.profile) {
        Ok(at) => runner.export(&vault, &at, a.generation).await,
        Err(e) => Err(e.into()),
    };
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let err = r.as_ref().err().map(ToString::to_string);
    vault
        .audit()
        .record(
            profile_vault::audit::Action::ExportState,
            ctx.tenant(),
            Some(&a.profile),
            a.generation,
            &actor,
            err,
        )
        .await;
    let state = r.map_err(state_error)?;
    let text = serde_json::to_string_pretty(&state)?;
    match &a.output {
        Some(path) => {
            profile_vault::fsutil::write_private_atomic(path, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!(
                "wrote {} cookies and {} origins to {} (it holds the profile's secrets)",
                state.cookies.len(),
                state.origins.len(),
                path.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// Job errors as the error types the exit codes know.
fn state_error(e: storage_state::Error) -> anyhow::Error {
    use storage_state::browser::Error as B;
    match e {
        storage_state::Error::Vault(v) => v.into(),
        storage_state::Error::Invalid(i) => BadInput(i.to_string()).into(),
        storage_state::Error::Browser(
            b @ (B::CookieRefused { .. } | B::OriginRefused { .. } | B::TooLarge(_)),
        ) => BadInput(b.to_string()).into(),
        storage_state::Error::Exists(id) => anyhow::Error::new(BadInput(format!(
            "profile {id:?} exists already; import-state creates new profiles only"
        ))),
        other => other.into(),
    }
}
