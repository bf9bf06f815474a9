//! `[http]`: the HTTP side's section of the configuration — where the daemon listens, the
//! address it is reached at, who may call it, and how large a request may be.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[http]`: the API's listener and its callers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Listen address (`PV_LISTEN`, `--listen`).
    pub listen: String,
    /// Base of `embed_url`/`cdp_url` (`PV_PUBLIC_URL`); default `http://` + listen address.
    pub public_url: Option<String>,
    /// File of `tenant:key` lines, mode 0600 (`PV_API_KEYS_FILE`); `PV_API_KEYS` gives them inline.
    pub api_keys_file: Option<PathBuf>,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            api_keys_file: None,
            max_body_bytes: 64 * 1024,
        }
    }
}
