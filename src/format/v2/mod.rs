//! Version 2 payloads (`docs/FORMAT.md` §10): chunked, deduplicated generations.

pub mod chunker;
pub mod manifest;
pub mod pack;
