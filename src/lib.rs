//! # profile-vault
//!
//! Gives browser sessions a memory: Chromium profile directories are packed (ZIP, zstd),
//! encrypted (AES-256-GCM STREAM under per-object data keys wrapped by named master keys)
//! and stored as immutable, versioned generations in an object store (a local directory
//! or S3), and restored safely.
//!
//! ## Layout
//! - [`crypt`]: AEAD primitives (sync): chunked payload encryption and key wrapping;
//! - [`keys`]: master keys: sources, ids, the [`Keyring`];
//! - [`profile`]: archives (pack, validate, unpack) and the versioned object format;
//! - [`store`]: the [`Store`] trait with filesystem and S3 backends and their conformance suite;
//! - [`vault`]: generations, head records, save/restore/verify/rollback/delete/rekey;
//! - [`browser`]: the browser runtime: each Chromium in a sandbox of its own (bubblewrap,
//!   egress proxy, cgroup limits) and the one DevTools pipe everything talks to it through;
//! - [`display`]: a headful browser's virtual display: its capture (JPEG tiles of what
//!   changed) and display-level input;
//! - [`session`]: browser sessions; [`api`]: the HTTP API; [`cluster`]: nodes on one store
//!   answering as one service;
//! - [`config`]: the TOML config and `PV_*` environment;
//! - [`progress`]: progress reporting for long work;
//! - [`telemetry`]: tracing setup.
//!
//! The `profile-vault` binary (`src/main.rs`, `src/cli/`) is a thin layer over this library.

pub mod config;
pub mod crypt;
pub mod fsutil;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod profile;
pub mod progress;
pub mod room;
pub mod store;
pub mod telemetry;
pub mod vault;

pub use keys::Keyring;
pub use profile::archive::{Limits, PackOptions, PackStats};
pub use progress::{NoProgress, Progress};
pub use store::{PutBody, PutMode, Store};
pub use vault::{Base, Vault, VaultOptions};
pub mod api;
pub mod audit;
pub mod browser;
pub mod cdp;
pub mod cluster;
pub mod display;
pub mod session;
pub mod storage_state;
