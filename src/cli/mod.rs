//! The command line: global options, one sub-command per job (one file each), exit codes,
//! and progress bars. This is glue: `anyhow` is used here and nowhere in the library.
//!
//! Exit codes (stable, for operators' scripts):
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | other failure (I/O, bug) |
//! | 2 | invalid usage or input (bad flags, ids, config, restore target not empty) |
//! | 3 | not found (profile, generation) |
//! | 4 | conflict (another save moved the head; the generation is kept) |
//! | 5 | integrity failure: tampered/truncated object, wrong or unknown key, hostile archive |
//! | 6 | storage unavailable (network, 5xx, throttling): retry later |

mod audit;
mod bench;
mod data;
mod delete;
mod gc;
mod list;
mod rekey;
mod restore;
mod rollback;
mod save;
mod saves;
mod serve;
mod state;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use profile_vault::config::{Config, Overrides};
use profile_vault::layout::ProfileAddr;
use profile_vault::{keys, store, vault, Keyring, NoProgress, Progress, Vault};

/// Encrypted, versioned Chromium profiles: ops jobs and the session daemon.
#[derive(Debug, Parser)]
#[command(name = "profile-vault", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory (spool files, embedded store, generated keys).
    #[arg(long, global = true, env = "PV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file.
    #[arg(long, global = true, env = "PV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store URL: file:///PATH or s3://BUCKET[/PREFIX].
    #[arg(long, global = true, env = "PV_STORE")]
    pub store: Option<String>,
    /// Tenant the job acts for.
    #[arg(long, global = true, env = "PV_TENANT")]
    pub tenant: Option<String>,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The job.
    #[command(subcommand)]
    pub command: Command,
}

/// Jobs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the session daemon (POST /v0/vm) until SIGTERM/SIGINT.
    Serve(serve::Args),
    /// Pack, encrypt and store a profile directory as a new generation.
    Save(save::Args),
    /// Restore a profile (head or a generation) into a new or empty directory.
    Restore(restore::Args),
    /// Download and fully verify a profile's generation(s) without writing files.
    Verify(verify::Args),
    /// List the tenant's profiles.
    List,
    /// List a profile's generations.
    Versions(list::VersionsArgs),
    /// What changed between two generations: "+3 cookies on example.com", "-1 origin".
    Diff(list::DiffArgs),
    /// Move a profile's head to another generation.
    Rollback(rollback::Args),
    /// Delete every generation and wrapped key of a profile.
    Delete(delete::Args),
    /// Generate a new master key file in the keys directory.
    Keygen(rekey::KeygenArgs),
    /// List the master keys: source (local file or KMS), active, per-tenant keys.
    Keys(rekey::KeysArgs),
    /// Re-wrap data keys with another master key, local or KMS (payloads are not rewritten).
    Rekey(rekey::Args),
    /// Retention: delete profiles not used for N days (--dry-run shows them).
    Gc(gc::Args),
    /// A new profile from a Playwright storageState file (cookies, localStorage, IndexedDB).
    ImportState(state::ImportArgs),
    /// A generation's Playwright storageState (HttpOnly and session cookies, localStorage).
    ExportState(state::ExportArgs),
    /// Read a profile's data document, or replace it (--set FILE).
    Data(data::Args),
    /// Show the audit trail: loads, saves, rollbacks, rekeys and deletes.
    Audit(audit::Args),
    /// List failed session saves kept on this node, or retry them.
    Saves(saves::Args),
    /// Measure save and restore speed and memory on a synthetic profile.
    Bench(bench::Args),
}

/// What every job gets.
pub struct Ctx {
    /// Resolved config.
    pub cfg: Config,
    /// `--json`.
    pub json: bool,
    /// Draw progress bars.
    pub bars: bool,
}

impl Ctx {
    /// Opens the store and keys and builds the vault.
    pub async fn vault(&self) -> anyhow::Result<Vault> {
        self.vault_with(|_| {}).await
    }

    /// [`Ctx::vault`] with options changed for one job.
    pub async fn vault_with(
        &self,
        edit: impl FnOnce(&mut profile_vault::VaultOptions),
    ) -> anyhow::Result<Vault> {
        let ring = self.keyring().await?;
        let store = store::from_url(&self.cfg.store_url, &self.cfg.file.s3).await?;
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let mut opts = self.cfg.vault_options();
        edit(&mut opts);
        Ok(Vault::new(store, Arc::new(ring), opts)?.with_actor(&format!("cli:{user}")))
    }

    /// Loads the master keys.
    pub async fn keyring(&self) -> anyhow::Result<Keyring> {
        Ok(Keyring::load(&self.cfg.key_sources()).await?)
    }

    /// A progress reporter for one job.
    pub fn progress(&self) -> Arc<dyn Progress> {
        if self.bars {
            Arc::new(Bar::default())
        } else {
            Arc::new(NoProgress)
        }
    }

    /// Prints a result: JSON with `--json`, else the text.
    pub fn print<T: serde::Serialize>(&self, value: &T, text: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).expect("output serializes")
            );
        } else {
            println!("{}", text());
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.cfg.tenant
    }

    /// The address of profile `id` of the tenant: an invalid id is refused here, at the
    /// edge (exit code 2), before the vault is asked anything.
    pub fn profile(&self, id: &str) -> Result<ProfileAddr, vault::Error> {
        Ok(ProfileAddr::new(self.tenant(), id)?)
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let over = Overrides {
        data_dir: cli.data_dir.clone(),
        config: cli.config.clone(),
        store: cli.store.clone(),
        tenant: cli.tenant.clone(),
    };
    let cfg = Config::load(&over)?;
    profile_vault::fsutil::create_private_dir(&cfg.data_dir)?;
    let ctx = Ctx {
        cfg,
        json: cli.json,
        bars: !cli.quiet && !cli.json && std::io::stderr().is_terminal(),
    };
    match cli.command {
        Command::Serve(a) => serve::run(&ctx, a).await,
        Command::Save(a) => save::run(&ctx, a).await,
        Command::Restore(a) => restore::run(&ctx, a).await,
        Command::Verify(a) => verify::run(&ctx, a).await,
        Command::List => list::run_list(&ctx).await,
        Command::Versions(a) => list::run_versions(&ctx, a).await,
        Command::Diff(a) => list::run_diff(&ctx, a).await,
        Command::Rollback(a) => rollback::run(&ctx, a).await,
        Command::Delete(a) => delete::run(&ctx, a).await,
        Command::Keygen(a) => rekey::run_keygen(&ctx, a),
        Command::Keys(a) => rekey::run_keys(&ctx, a).await,
        Command::Rekey(a) => rekey::run(&ctx, a).await,
        Command::Saves(a) => saves::run(&ctx, a).await,
        Command::Audit(a) => audit::run(&ctx, a).await,
        Command::Data(a) => data::run(&ctx, a).await,
        Command::ImportState(a) => state::run_import(&ctx, a).await,
        Command::ExportState(a) => state::run_export(&ctx, a).await,
        Command::Gc(a) => gc::run(&ctx, a).await,
        Command::Bench(a) => bench::run(&ctx, a).await,
    }
}

/// Maps an error to the documented exit code.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(e) = err.downcast_ref::<vault::DataError>() {
        return match e {
            vault::DataError::TooLarge { .. } => 2,
            vault::DataError::Precondition { .. } => 4,
            vault::DataError::Vault(v) => exit_code_vault(v),
        };
    }
    if err.downcast_ref::<data::BadInput>().is_some() {
        return 2;
    }
    if let Some(e) = err.downcast_ref::<vault::Error>() {
        return exit_code_vault(e);
    }
    if let Some(s) = err.downcast_ref::<store::Error>() {
        return exit_code_class(vault::Class::of_store(s));
    }
    if let Some(k) = err.downcast_ref::<keys::Error>() {
        return if k.is_transient() { 6 } else { 2 };
    }
    if err.downcast_ref::<profile_vault::config::Error>().is_some() {
        return 2;
    }
    1
}

fn exit_code_vault(e: &vault::Error) -> u8 {
    exit_code_class(e.class())
}

fn exit_code_class(c: vault::Class) -> u8 {
    use vault::Class as C;
    match c {
        C::Newer | C::BrowserTooOld => 7,
        C::InvalidId | C::TargetNotEmpty | C::KeyConfig | C::StoreKey | C::OverLimits => 2,
        C::NotFound | C::StoreMissing => 3,
        C::Conflict | C::StoreRace => 4,
        C::Corrupt | C::UnknownKey => 5,
        C::Unavailable | C::KeysUnavailable => 6,
        C::Internal => 1,
    }
}

/// A progress bar on stderr.
#[derive(Default)]
struct Bar {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, label: &str, total: u64) {
        let bar = if total > 0 {
            indicatif::ProgressBar::new(total)
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        let style = if total > 0 {
            indicatif::ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
        } else {
            indicatif::ProgressStyle::with_template("{msg:>12} {spinner} {elapsed}")
        };
        if let Ok(s) = style {
            bar.set_style(s.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        *self.bar.lock().expect("bar lock") = Some(bar);
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().expect("bar lock").as_ref() {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("bar lock").take() {
            b.finish_and_clear();
        }
    }
}

/// Formats bytes for people.
pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
