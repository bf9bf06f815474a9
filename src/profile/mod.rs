//! Reading Chromium's profile directories: what to leave out of a save ([`exclude`]), and
//! what a saved profile holds ([`contents`]: counts and site names, never values, through
//! the bounded read-only LevelDB reader `leveldb`), all read through [`untrusted`] (the
//! browser wrote the tree: no link is followed, only regular files are read). How profiles
//! are packed, sealed and stored is [`crate::format`].

pub mod contents;
pub mod exclude;
mod leveldb;
pub mod untrusted;
