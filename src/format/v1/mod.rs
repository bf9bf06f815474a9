//! Version 1 payloads (`docs/FORMAT.md` §6): the profile as one ZIP archive.

pub mod archive;
pub mod zipw;
