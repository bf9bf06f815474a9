//! Format 2 generations: chunked, deduplicated, incremental (`docs/FORMAT.md` §10).
//!
//! - `save.rs`: a save walks the profile, reuses the chunk list of every file whose size and
//!   modification time did not change since the base generation (the head it started from),
//!   cuts the other files into chunks ([`crate::format::v2::chunker`]), seals only the chunks
//!   the base does not have, packs them and uploads the packs while later ones are still
//!   being made; then the manifest is the generation's payload object.
//!   The threads that read, hash, seal and pack are in `stages.rs`.
//! - `restore.rs`: a restore (or verify) reads the manifest, fetches the chunks with ranged
//!   reads in parallel, verifies each before writing a byte of it, and stages the tree.
//!
//! The data key of a format 2 generation is the profile's *content key*: drawn with the
//! first format 2 save of a profile and carried to every generation based on it (each record
//! wraps it for its own generation, so rekey and KMS contexts work as for format 1). Chunk
//! ids and blob keys derive from it ([`crate::crypt::blob`]), so reuse stays inside one
//! profile.

mod restore;
mod save;
mod stages;

use serde::{Deserialize, Serialize};

use super::*;
use crate::crypt::blob::ChunkId;
use crate::format::v2::manifest::{self, Manifest};

/// What a format 2 save reused and sent (recorded in its generation record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkStats {
    /// The generation it reused chunks from, if any.
    pub base: Option<u64>,
    /// Chunks the generation uses.
    pub chunks: u64,
    /// Chunks this save sealed and uploaded (the others were reused).
    pub chunks_new: u64,
    /// Packs this save uploaded.
    pub packs_new: u64,
    /// Bytes of the packs this save uploaded.
    pub bytes_uploaded: u64,
    /// Files read.
    pub files_read: u64,
    /// Files not read: size and modification time as in the base generation.
    pub files_skipped: u64,
    /// Whether every file was read (a periodic full pass, or no base).
    pub full_read: bool,
}

/// A format 2 generation's manifest, read and checked.
pub(super) struct Opened {
    /// The generation.
    pub generation: u64,
    /// The profile's content key.
    pub key: DataKey,
    /// The manifest.
    pub manifest: Manifest,
    /// Its chunk ids, decoded (parallel to `manifest.chunks`).
    pub ids: Vec<ChunkId>,
}

impl Vault {
    /// Reads the manifest of a fetched format 2 payload and checks it.
    pub(super) async fn open_manifest(
        &self,
        generation: u64,
        fetched: restore_api::Fetched,
    ) -> Result<Opened> {
        let limits = self.opts.limits.clone();
        let restore_api::Fetched {
            dek, reader, temp, ..
        } = fetched;
        let (manifest, ids) = blocking(move || {
            use std::io::Read;
            let mut bytes = Vec::new();
            let mut r = reader;
            r.read_to_end(&mut bytes)
                .map_err(|e| Error::Format(format::Error::Crypt(stream::unwrap_io(e))))?;
            drop(temp);
            Ok(manifest::decode(&bytes, &limits)?)
        })
        .await?;
        Ok(Opened {
            generation,
            key: dek,
            manifest,
            ids,
        })
    }
}

pub(super) use super::restore as restore_api;
