//! The browser runtime: how a session's Chromium is started, confined and talked to.
//!
//! - [`sandbox`]: the wall around each browser (bubblewrap: its own uid, filesystem, PID and
//!   network namespaces, Chromium's own sandbox on, managed policies) and [`Runtime`], which
//!   starts browsers in it;
//! - `config`: its section of the configuration, `[browser]` ([`BrowserSection`]);
//! - [`cgroup`]: memory, process-count and CPU limits per browser;
//! - [`egress`]: the only way out of a browser's network namespace (public addresses only);
//! - [`mux`]: the ONE DevTools connection (a pipe, no port) shared by the CDP proxy, the
//!   live view and the daemon's own calls;
//! - [`init`]: the sandbox's PID 1 (`profile-vault sandbox-init`);
//! - [`tabs_ext`]: the tabs agent extension each session's browser loads (Chrome's tabs API);
//! - [`extension`]: a tenant's own extension (a zip), unpacked and loaded into its session;
//! - `process`: a running [`Browser`] and how it is stopped so everything reaches disk.
//!
//! It is a seam: a later runtime may place each browser in a Kubernetes pod instead.

pub mod cgroup;
mod config;
pub mod egress;
pub mod extension;
mod fds;
pub mod init;
mod layout;
pub mod mux;
mod probe;
mod process;
mod quota;
pub mod sandbox;
mod seccomp;
mod stderr;
pub mod tabs_ext;

pub use config::{BrowserSection, DisplayMode};
pub use layout::UPLOADS;
pub use process::{
    alive, find_binary, is_browser_of, on_path, signal_group, signal_pid, stop_orphan, version,
    Browser, Error, LaunchOptions,
};
pub use sandbox::{Runtime, Settings};
