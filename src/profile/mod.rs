//! Profile archives and the at-rest object format.
//!
//! - [`exclude`]: what to leave out of a Chromium profile;
//! - [`zipw`]: the streaming ZIP writer used by packing;
//! - [`archive`]: packing a directory, and validating + extracting an untrusted archive;
//! - [`format`]: the versioned object header and the payload reader/writer (see `docs/FORMAT.md`);
//! - [`contents`]: what a saved profile holds (counts and site names, never values) and diffs;
//! - `leveldb`: the bounded, read-only LevelDB key reader behind [`contents`];
//! - format v2 (chunked, deduplicated generations): [`chunker`] where files are cut,
//!   [`pack`] the pack objects sealed chunks travel in, [`manifest`] what a generation holds.

pub mod archive;
pub mod chunker;
pub mod contents;
pub mod exclude;
pub mod format;
mod leveldb;
pub mod manifest;
pub mod pack;
pub mod zipw;
