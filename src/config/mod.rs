//! Configuration: one TOML file (`--config` / `PV_CONFIG`) plus `PV_*` environment
//! variables and flags, which win over the file. Unknown keys are rejected by name.
//!
//! With nothing configured, the embedded default applies: a filesystem store under
//! `<data_dir>/store` and a dev master key generated under `<data_dir>/keys` (0600).
//! Every key is documented in `deploy/config.example.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::KeySources;
use crate::profile::archive::{Compression, Limits, PackOptions};
use crate::profile::exclude::Excludes;
use crate::store::StoreOptions;
use crate::vault::VaultOptions;

mod server;
pub use server::{DisplayMode, Secret, ServerConfig};

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
    /// The session daemon.
    pub server: ServerConfig,
}

impl FileConfig {
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
            data_max_bytes: self.server.profile_data_max_bytes,
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
    /// unused at least this many seconds after one that marked them (`PV_PACK_GRACE_SECS`).
    pub pack_grace_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_generations: 5,
            max_idle_days: 90,
            sweep_every: 3600,
            pack_grace_secs: 3600,
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

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_bool(name: &'static str) -> Result<Option<bool>, Error> {
    env(name)
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(Error::Env {
                name,
                message: format!("expected true/false, got {v:?}"),
            }),
        })
        .transpose()
}

/// Parses `a=x,b=y` (the value may contain `=` and `:`, as ARNs do).
fn env_map(name: &'static str, v: &str) -> Result<BTreeMap<String, String>, Error> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(Error::Env {
                name,
                message: format!("expected name=value entries, got {item:?}"),
            }),
        })
        .collect()
}

impl Config {
    /// Loads the file (if any), applies `PV_*` variables and `over`.
    ///
    /// # Errors
    /// Unreadable or invalid file, bad environment values.
    pub fn load(over: &Overrides) -> Result<Self, Error> {
        let mut file = match &over.config {
            Some(path) => Self::parse_file(path)?,
            None => FileConfig::default(),
        };
        if let Some(v) = env("PV_KEYS_DIR") {
            file.keys.dir = Some(v.into());
        }
        if let Some(v) = env("PV_ACTIVE_KEY") {
            file.keys.active = Some(v);
        }
        if let Some(v) = env_bool("PV_ALLOW_DEV_KEY")? {
            file.keys.allow_dev_key = v;
        }
        if let Some(v) = env("PV_KMS_KEYS") {
            file.keys.kms = env_map("PV_KMS_KEYS", &v)?;
        }
        if let Some(v) = env("PV_KMS_ENDPOINT") {
            file.keys.kms_endpoint = Some(v);
        }
        if let Some(v) = env("PV_TENANT_KEYS") {
            file.keys.tenants = env_map("PV_TENANT_KEYS", &v)?;
        }
        // A misspelt tenant would silently fall back to the active key.
        for t in file.keys.tenants.keys() {
            crate::vault::validate_id("tenant", t).map_err(|e| Error::Env {
                name: "PV_TENANT_KEYS / keys.tenants",
                message: e.to_string(),
            })?;
        }
        if let Some(v) = env_bool("PV_S3_PATH_STYLE")? {
            file.s3.path_style = v;
        }
        if let Some(v) = env("PV_KEEP_GENERATIONS") {
            file.retention.keep_generations = v.parse().map_err(|_| Error::Env {
                name: "PV_KEEP_GENERATIONS",
                message: format!("not a number: {v:?}"),
            })?;
        }
        if let Some(v) = env("PV_PACK_GRACE_SECS") {
            file.retention.pack_grace_secs = v.parse().map_err(|_| Error::Env {
                name: "PV_PACK_GRACE_SECS",
                message: format!("not a number: {v:?}"),
            })?;
        }
        if let Some(v) = env("PV_ARCHIVE_FORMAT") {
            file.archive.format = match v.as_str() {
                "1" => 1,
                "2" => 2,
                _ => {
                    return Err(Error::Env {
                        name: "PV_ARCHIVE_FORMAT",
                        message: format!("{v:?} is not 1 or 2"),
                    })
                }
            };
        }
        if let Some(v) = env("PV_LISTEN") {
            file.server.listen = v;
        }
        if let Some(v) = env("PV_PUBLIC_URL") {
            file.server.public_url = Some(v.trim_end_matches('/').to_string());
        }
        if let Some(v) = env("PV_CLUSTER_SECRET") {
            file.server.cluster_secret = Some(Secret::new(v));
        }
        if let Some(v) = env("PV_NODE_URL") {
            file.server.node_url = Some(v.trim_end_matches('/').to_string());
        }
        if file
            .server
            .cluster_secret
            .as_ref()
            .is_some_and(|s| s.expose().len() < 16)
        {
            return Err(Error::Env {
                name: "PV_CLUSTER_SECRET / server.cluster_secret",
                message: "must be at least 16 characters".into(),
            });
        }
        if let Some(v) = env("PV_UNSAFE_NO_SANDBOX") {
            file.server.unsafe_no_sandbox = matches!(v.as_str(), "1" | "true" | "yes");
        }
        if let Some(v) = env("PV_DISPLAY") {
            file.server.display = match v.as_str() {
                "virtual" => DisplayMode::Virtual,
                "headless" => DisplayMode::Headless,
                _ => {
                    return Err(Error::Env {
                        name: "PV_DISPLAY",
                        message: "must be `virtual` or `headless`".into(),
                    })
                }
            };
        }
        if let Some(v) = env("PV_SANDBOX_REQUIRE_CGROUPS") {
            file.server.sandbox_require_cgroups = !matches!(v.as_str(), "0" | "false" | "no");
        }
        if let Some(v) = env("PV_EGRESS_ALLOW") {
            file.server.egress_allow = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        for c in &file.server.egress_allow {
            if let Err(e) = c.parse::<crate::browser::egress::Cidr>() {
                return Err(Error::Env {
                    name: "PV_EGRESS_ALLOW / server.egress_allow",
                    message: e,
                });
            }
        }
        if let Some(v) = env("PV_CHROMIUM") {
            file.server.chromium = Some(v.into());
        }
        if let Some(v) = env("PV_API_KEYS_FILE") {
            file.server.api_keys_file = Some(v.into());
        }
        if let Some(v) = env("PV_COMPRESSION") {
            file.archive.compression = match v.as_str() {
                "zstd" => Compression::Zstd,
                "deflate" => Compression::Deflate,
                _ => {
                    return Err(Error::Env {
                        name: "PV_COMPRESSION",
                        message: "expected zstd or deflate".into(),
                    })
                }
            };
        }
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
            inline_keys: env("PV_MASTER_KEYS"),
            inline_api_keys: env("PV_API_KEYS"),
        })
    }

    /// Parses one config file.
    ///
    /// # Errors
    /// Unreadable or invalid file.
    pub fn parse_file(path: &Path) -> Result<FileConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
            path: path.into(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| Error::Parse {
            path: path.into(),
            message: e.to_string().trim().replace('\n', " "),
        })
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
    fn env_maps_parse_arns_and_reject_junk() {
        let m = env_map(
            "PV_KMS_KEYS",
            "prod=arn:aws:kms:eu-west-1:1:key/ab=c, dev = alias/x",
        )
        .unwrap();
        assert_eq!(m["prod"], "arn:aws:kms:eu-west-1:1:key/ab=c");
        assert_eq!(m["dev"], "alias/x");
        let err = env_map("PV_TENANT_KEYS", "acme").unwrap_err().to_string();
        assert!(
            err.contains("PV_TENANT_KEYS") && err.contains("acme"),
            "{err}"
        );
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
    fn example_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
        let c = Config::parse_file(&p).unwrap();
        assert_eq!(c.retention.keep_generations, 5);
    }
}
