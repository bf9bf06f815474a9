//! Profile archives and the at-rest object format.
//!
//! - [`exclude`]: what to leave out of a Chromium profile;
//! - [`zipw`]: the streaming ZIP writer used by packing;
//! - [`archive`]: packing a directory, and validating + extracting an untrusted archive;
//! - [`format`]: the versioned object header and the payload reader/writer (see `docs/FORMAT.md`).

pub mod archive;
pub mod exclude;
pub mod format;
pub mod zipw;
