//! `[live]`: the live view's section of the configuration ([`LiveSection`]) and the
//! settings each session's live view runs with ([`LiveConfig`]).

use serde::{Deserialize, Serialize};

/// `[live]`: viewers and the embed page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSection {
    /// Most live-view viewers per session.
    pub max_viewers: usize,
    /// Most live-view viewers of all of one tenant's sessions on a node (0: no cap).
    pub max_viewers_per_tenant: usize,
    /// Input messages per second one viewer may send.
    pub input_rate: u32,
    /// Origins whose pages may open the live-view socket besides the daemon's own (its embed
    /// page, wherever that is framed). `["*"]` (the default): any — the viewer token in the
    /// URL is the credential, and apps built on the Hyperbeam SDK run on their own origins.
    pub origins: Vec<String>,
    /// CSP `frame-ancestors` of the embed page (`*`: any site may frame it, as Hyperbeam's).
    pub frame_ancestors: String,
    /// Seconds one message to a viewer may take to go out: a viewer that stops reading is
    /// disconnected once its socket's buffers have been full this long.
    pub send_timeout: u64,
}

impl Default for LiveSection {
    fn default() -> Self {
        LiveSection {
            max_viewers: 20,
            max_viewers_per_tenant: 0,
            input_rate: 400,
            origins: vec!["*".into()],
            frame_ancestors: "*".into(),
            send_timeout: 20,
        }
    }
}

/// Live-view settings (from `[live]`).
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Most viewers connected to one session.
    pub max_viewers: usize,
    /// Largest message a viewer may send, bytes.
    pub max_message: usize,
    /// Input messages per second a viewer may send (a burst of twice that is allowed).
    pub max_input_rate: u32,
    /// JPEG quality of the screencast (1-100).
    pub jpeg_quality: u8,
    /// Longest one message to a viewer may take to go out.
    pub send_timeout: std::time::Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            max_viewers: 20,
            max_message: 64 * 1024,
            max_input_rate: 400,
            jpeg_quality: 70,
            send_timeout: std::time::Duration::from_secs(20),
        }
    }
}
