//! # profile-vault
//!
//! Gives browser sessions a memory: Chromium profile directories are packed (ZIP, zstd),
//! encrypted (AES-256-GCM STREAM under per-object data keys wrapped by named master keys)
//! and stored as immutable, versioned generations in an object store (a local directory
//! or S3), and restored safely.
//!
//! ## Layout
//! Storage core (sync where it is CPU work):
//! - [`crypt`]: AEAD primitives: chunked payload encryption, sealed chunks, key wrapping;
//! - [`keys`]: master keys: sources, ids, the [`Keyring`];
//! - [`profile`]: reading Chromium's directories (what to leave out, what a profile holds);
//! - [`format`]: the at-rest object format as `docs/FORMAT.md` has it: the sealed object,
//!   version 1's ZIP payload ([`format::v1`]), version 2's chunks, packs and manifests
//!   ([`format::v2`]);
//! - [`store`]: the [`Store`] trait with filesystem and S3 backends and their conformance suite;
//! - [`vault`]: generations, head records, save/restore/verify/rollback/delete/rekey;
//! - [`layout`]: every object key of the store (FORMAT.md §1), and the validated ids
//!   ([`layout::ProfileAddr`]) they are made of;
//! - [`fsutil`]: owner-only files and durable replacement.
//!
//! Service:
//! - [`browser`]: the browser runtime: each Chromium in a sandbox of its own (bubblewrap,
//!   egress proxy, cgroup limits), the one DevTools pipe everything talks to it through, and
//!   the extensions it loads (the tabs agent, a tenant's own);
//! - `cdp`: the daemon's own DevTools client over that pipe;
//! - `display`: a headful browser's virtual display: its capture (JPEG tiles of what
//!   changed), sound and display-level input;
//! - `live`: the live view: users, roles, viewer tokens, the screencast hub, input, Chrome's
//!   tabs API, and the client code served at `embed_url` (page and SDK module);
//! - `room`: a session's shared key-value store;
//! - [`session`]: browser sessions: lifecycle, timeouts, saves at the end, recovery;
//! - [`storage_state`]: Playwright's storageState in and out of a profile;
//! - [`cluster`]: nodes on one store answering as one service;
//! - [`api`]: the HTTP API (routes, OpenAPI, errors);
//! - [`daemon`]: the daemon wired once from its parts, and run until shut down;
//! - [`audit`]: the audit trail of who did what to which profile;
//! - [`config`]: the TOML config and `PV_*` environment;
//! - [`metrics`], [`telemetry`], [`progress`]: Prometheus metrics, tracing setup, progress
//!   reporting for long work.
//!
//! The `profile-vault` binary (`src/main.rs`, `src/cli/`) is a thin layer over this library.
//! What neither it nor the integration tests use (`cdp`, `display`, `live`, `room`)
//! is private to the crate.

pub mod api;
pub mod audit;
pub mod browser;
pub(crate) mod cdp;
pub mod cluster;
pub mod config;
pub mod crypt;
pub mod daemon;
pub(crate) mod display;
pub mod format;
pub mod fsutil;
pub mod keys;
pub mod layout;
pub(crate) mod live;
pub mod metrics;
pub mod profile;
pub mod progress;
pub(crate) mod room;
pub mod session;
pub mod storage_state;
pub mod store;
pub mod telemetry;
pub mod vault;

pub use format::v1::archive::{Limits, PackOptions, PackStats};
pub use keys::Keyring;
pub use progress::{NoProgress, Progress};
pub use store::{PutBody, PutMode, Store};
pub use vault::{Base, Vault, VaultOptions};
