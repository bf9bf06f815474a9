//! Configuration: one TOML file (`--config` / `PV_CONFIG`) plus `PV_*` environment
//! variables ([`env`], one table of variable -> key) and flags, which win over the file.
//! Unknown keys are rejected by name.
//!
//! With nothing configured, the embedded default applies: a filesystem store under
//! `<data_dir>/store` and a dev master key generated under `<data_dir>/keys` (0600).
//! Every key is documented in `deploy/config.example.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::format::v1::archive::{Compression, Limits, PackOptions};
use crate::keys::KeySources;
use crate::profile::exclude::Excludes;
use crate::store::StoreOptions;
use crate::vault::VaultOptions;

pub mod env;
mod legacy;

pub use crate::api::HttpSection;
pub use crate::browser::{BrowserSection, DisplayMode};
pub use crate::cluster::ClusterSection;
pub use crate::crypt::Secret;
pub use crate::live::LiveSection;
pub use crate::room::RoomSection;
pub use crate::session::SessionsSection;

/// Errors of loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid (syntax, types, unknown keys).
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What toml said (names the key).
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// Variable.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The config file's shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Data directory (`PV_DATA_DIR`).
    pub data_dir: Option<PathBuf>,
    /// Store URL (`PV_STORE`).
    pub store: Option<String>,
    /// Default tenant for CLI jobs (`PV_TENANT`).
    pub tenant: Option<String>,
    /// Master keys.
    pub keys: KeysConfig,
    /// Packing.
    pub archive: ArchiveConfig,
    /// Limits on restored archives.
    pub limits: Limits,
    /// Retention.
    pub retention: RetentionConfig,
    /// S3 backend settings.
    pub s3: StoreOptions,
    /// The daemon's HTTP side.
    pub http: HttpSection,
    /// Sessions: how many, for how long, how they start, stop and save.
    pub sessions: SessionsSection,
    /// Each session's store.
    pub room: RoomSection,
    /// The live view.
    pub live: LiveSection,
    /// Nodes on one store.
    pub cluster: ClusterSection,
    /// The sessions' browsers and their sandbox.
    pub browser: BrowserSection,
}

impl FileConfig {
    /// Checks what the types alone do not: tenant ids of `keys.tenants`, the cluster
    /// secret's length, egress CIDRs, the archive format.
    ///
    /// # Errors
    /// [`Error::Env`] naming the variable and the key.
    pub fn validate(&self) -> Result<(), Error> {
        // A misspelt tenant would silently fall back to the active key.
        for t in self.keys.tenants.keys() {
            crate::layout::validate_id("tenant", t).map_err(|e| Error::Env {
                name: "PV_TENANT_KEYS / keys.tenants",
                message: e.to_string(),
            })?;
        }
        if self
            .cluster
            .secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 16)
        {
            return Err(Error::Env {
                name: "PV_CLUSTER_SECRET / cluster.secret",
                message: "must be at least 16 characters".into(),
            });
        }
        for (list, name) in [
            (
                &self.browser.egress_allow,
                "PV_EGRESS_ALLOW / browser.egress_allow",
            ),
            (
                &self.browser.egress_deny,
                "PV_EGRESS_DENY / browser.egress_deny",
            ),
        ] {
            for c in list {
                if let Err(e) = c.parse::<crate::browser::egress::Cidr>() {
                    return Err(Error::Env { name, message: e });
                }
            }
        }
        if !matches!(self.archive.format, 1 | 2) {
            return Err(Error::Env {
                name: "PV_ARCHIVE_FORMAT / archive.format",
                message: format!("{} is not 1 or 2", self.archive.format),
            });
        }
        Ok(())
    }

    /// Vault tunables, with the spool under `data_dir`.
    pub fn vault_options(&self, data_dir: &Path) -> VaultOptions {
        let a = &self.archive;
        let mut pack = PackOptions {
            compression: a.compression,
            level: a.level,
            excludes: Excludes::new(&a.exclude),
            ..PackOptions::default()
        };
        if a.threads > 0 {
            pack.threads = a.threads;
        }
        VaultOptions {
            spool_dir: data_dir.join("spool"),
            pack,
            limits: self.limits.clone(),
            chunk_size: a.chunk_size,
            keep: self.retention.keep_generations,
            max_parallel_jobs: a.parallel_jobs.max(1),
            data_max_bytes: self.sessions.profile_data_max_bytes,
            contents_report: a.contents_report,
            write_format: a.format,
            full_read_every: a.full_read_every.max(1),
            reread: false,
            pack_grace: std::time::Duration::from_secs(self.retention.pack_grace_secs),
        }
    }
}

/// `[keys]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Directory of `<id>.key` files (`PV_KEYS_DIR`), default `<data_dir>/keys`.
    pub dir: Option<PathBuf>,
    /// Active key id (`PV_ACTIVE_KEY`).
    pub active: Option<String>,
    /// Allow generating a dev key even with a non-default store (`PV_ALLOW_DEV_KEY`).
    pub allow_dev_key: bool,
    /// KMS master keys: keyring id -> KMS key id, key ARN, alias name or alias ARN
    /// (`PV_KMS_KEYS="id=alias/x,id2=arn:..."`).
    pub kms: BTreeMap<String, String>,
    /// KMS endpoint (`PV_KMS_ENDPOINT`); default: the AWS chain's (`AWS_ENDPOINT_URL_KMS`,
    /// `AWS_ENDPOINT_URL`, else the regional AWS endpoint).
    pub kms_endpoint: Option<String>,
    /// Master key per tenant: tenant -> keyring id (`PV_TENANT_KEYS="acme=id,..."`); other
    /// tenants use `active`.
    pub tenants: BTreeMap<String, String>,
}

/// `[archive]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// `zstd` (default) or `deflate` (`PV_COMPRESSION`).
    pub compression: Compression,
    /// Compression level (zstd 1-19, deflate 1-9).
    pub level: i32,
    /// Extra leave-out patterns, added to the defaults.
    pub exclude: Vec<String>,
    /// Plaintext bytes per encrypted chunk.
    pub chunk_size: u32,
    /// Worker threads for compression (0: one per core).
    pub threads: usize,
    /// Saves/restores packing or unpacking at once (each uses `threads` cores); more queue.
    pub parallel_jobs: usize,
    /// Record what each generation holds (counts and site names, sealed in its sidecar).
    pub contents_report: bool,
    /// Payload format new saves write (`PV_ARCHIVE_FORMAT`): 2 (chunked, deduplicated,
    /// incremental; the default) or 1 (one archive per generation, for clusters that still
    /// run nodes that only read version 1). Both are always read.
    pub format: u16,
    /// Format 2: every this many saves of a profile, every file is read again, even those
    /// whose size and modification time did not change (1: every save reads everything).
    pub full_read_every: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            compression: Compression::Zstd,
            level: 1,
            exclude: Vec::new(),
            chunk_size: crate::crypt::stream::DEFAULT_CHUNK_SIZE,
            threads: 0,
            parallel_jobs: 2,
            contents_report: true,
            format: 2,
            full_read_every: 10,
        }
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Generations kept per profile (`PV_KEEP_GENERATIONS`).
    pub keep_generations: usize,
    /// Profiles not loaded or saved for this many days are deleted (0: never).
    pub max_idle_days: u64,
    /// Seconds between retention sweeps of the daemon.
    pub sweep_every: u64,
    /// Format 2 packs no generation uses are deleted by a garbage collection that finds them
    /// unused at least this many seconds after one that marked them, and stored at least
    /// that long ago (`PV_PACK_GRACE_SECS`). The default, 6 h, is the longest a save may
    /// run: the packs a save is still uploading are never collected under it (a shorter
    /// grace makes saves longer than it start over, and after two tries fail).
    pub pack_grace_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_generations: 5,
            max_idle_days: 90,
            sweep_every: 3600,
            pack_grace_secs: 21_600,
        }
    }
}

/// Values given on the command line / environment (already merged by clap).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data-dir` / `PV_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--config` / `PV_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--store` / `PV_STORE`.
    pub store: Option<String>,
    /// `--tenant` / `PV_TENANT`.
    pub tenant: Option<String>,
}

/// The resolved configuration.
#[derive(Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store URL.
    pub store_url: String,
    /// Whether the store is the embedded default.
    pub embedded_default: bool,
    /// Tenant for CLI jobs.
    pub tenant: String,
    /// The file part.
    pub file: FileConfig,
    /// Inline master keys from `PV_MASTER_KEYS`.
    inline_keys: Option<String>,
    /// Inline API keys from `PV_API_KEYS`.
    inline_api_keys: Option<String>,
}

impl Config {
    /// API keys given inline (`PV_API_KEYS`).
    pub fn inline_api_keys(&self) -> Option<&str> {
        self.inline_api_keys.as_deref()
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("store_url", &self.store_url)
            .field("embedded_default", &self.embedded_default)
            .field("tenant", &self.tenant)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Loads the file (if any), applies `PV_*` variables and `over`.
    ///
    /// # Errors
    /// Unreadable or invalid file, bad environment values.
    pub fn load(over: &Overrides) -> Result<Self, Error> {
        let doc = match &over.config {
            Some(path) => Self::parse_document(path)?.1,
            None => toml::Table::new(),
        };
        let file = env::overlay(doc, env::var)?;
        file.validate()?;
        let data_dir = over
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./pv-data"));
        let (store_url, embedded_default) = match over.store.clone().or_else(|| file.store.clone())
        {
            Some(s) => (s, false),
            None => {
                let abs = std::path::absolute(data_dir.join("store"))
                    .unwrap_or_else(|_| data_dir.join("store"));
                (format!("file://{}", abs.display()), true)
            }
        };
        let tenant = over
            .tenant
            .clone()
            .or_else(|| file.tenant.clone())
            .unwrap_or_else(|| "default".into());
        Ok(Config {
            data_dir,
            store_url,
            embedded_default,
            tenant,
            file,
            inline_keys: env::var("PV_MASTER_KEYS"),
            inline_api_keys: env::var("PV_API_KEYS"),
        })
    }

    /// Parses one config file.
    ///
    /// # Errors
    /// Unreadable or invalid file.
    pub fn parse_file(path: &Path) -> Result<FileConfig, Error> {
        Ok(Self::parse_document(path)?.0)
    }

    /// One config file, read as the config and as the document the environment goes over.
    fn parse_document(path: &Path) -> Result<(FileConfig, toml::Table), Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.into(),
            source: e,
        })?;
        let parse = |e: &dyn std::fmt::Display| Error::Parse {
            path: path.into(),
            message: e.to_string().trim().replace('\n', " "),
        };
        let mut doc: toml::Table = toml::from_str(&text).map_err(|e| parse(&e))?;
        // A file of sections is read from its text, so errors show their line; one with the
        // old `[server]` section is read once its keys are in their sections.
        let file: FileConfig = if legacy::lift(&mut doc).map_err(|e| parse(&e))? {
            FileConfig::deserialize(doc.clone()).map_err(|e| parse(&e))?
        } else {
            toml::from_str(&text).map_err(|e| parse(&e))?
        };
        Ok((file, doc))
    }

    /// Where master keys come from.
    pub fn key_sources(&self) -> KeySources {
        KeySources {
            dir: self
                .file
                .keys
                .dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("keys")),
            inline: self.inline_keys.clone(),
            kms: self.file.keys.kms.clone(),
            kms_endpoint: self.file.keys.kms_endpoint.clone(),
            tenants: self.file.keys.tenants.clone(),
            active: self.file.keys.active.clone(),
            allow_dev_key: self.embedded_default || self.file.keys.allow_dev_key,
        }
    }

    /// Vault tunables.
    pub fn vault_options(&self) -> VaultOptions {
        self.file.vault_options(&self.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "store = \"file:///x\"\n[archive]\nlevle = 3\n").unwrap();
        let err = Config::parse_file(&p).unwrap_err().to_string();
        assert!(err.contains("levle"), "{err}");
    }

    #[test]
    fn kms_and_tenant_keys_parse_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[keys]\nactive = \"vault\"\nkms_endpoint = \"http://127.0.0.1:4566\"\n[keys.kms]\nvault = \"alias/profile-vault\"\n[keys.tenants]\nacme = \"vault\"\n",
        )
        .unwrap();
        let c = Config::parse_file(&p).unwrap();
        assert_eq!(c.keys.kms["vault"], "alias/profile-vault");
        assert_eq!(c.keys.tenants["acme"], "vault");
        assert_eq!(
            c.keys.kms_endpoint.as_deref(),
            Some("http://127.0.0.1:4566")
        );
    }

    #[test]
    fn the_old_server_section_sets_every_key_of_the_new_sections() {
        // Every key of the sections the old `[server]` was split into has exactly one old
        // name, and every old name lands on a key those sections have.
        let v = serde_json::to_value(FileConfig::default()).unwrap();
        let mut keys = std::collections::BTreeSet::new();
        for section in ["http", "sessions", "room", "live", "cluster", "browser"] {
            for k in v[section].as_object().unwrap().keys() {
                keys.insert(format!("{section}.{k}"));
            }
        }
        let homes: std::collections::BTreeSet<String> = legacy::SERVER_KEYS
            .iter()
            .map(|(_, s, k)| format!("{s}.{k}"))
            .collect();
        assert_eq!(
            homes.len(),
            legacy::SERVER_KEYS.len(),
            "two old keys share a home"
        );
        assert_eq!(keys, homes);
        // And an old file reads as its new form.
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.toml");
        std::fs::write(&old, "[server]\nstore_max_keys = 6\nviewer_origins = [\"https://a.example\"]\ncluster_heartbeat_secs = 1\nsandbox_pids = 7\nlisten = \"127.0.0.1:1\"\nlease_ttl = 3\n").unwrap();
        let c = Config::parse_file(&old).unwrap();
        assert_eq!(c.room.max_keys, 6);
        assert_eq!(c.live.origins, ["https://a.example"]);
        assert_eq!(c.cluster.heartbeat_secs, 1);
        assert_eq!(c.browser.sandbox_pids, 7);
        assert_eq!(c.http.listen, "127.0.0.1:1");
        assert_eq!(c.sessions.lease_ttl, 3);
        std::fs::write(&old, "[server]\nstore_max_keys = \"six\"\n").unwrap();
        let err = Config::parse_file(&old).unwrap_err().to_string();
        assert!(err.contains("max_keys"), "{err}");
    }

    #[test]
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
        let c = Config::parse_file(&p).unwrap();
        assert_eq!(c.retention.keep_generations, 5);
    }
}
