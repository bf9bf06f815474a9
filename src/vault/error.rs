//! The errors of vault operations, and how callers tell them apart: [`Error::class`], the one
//! classification both the HTTP API (status and code) and the CLI (exit code) answer from.

use super::*;

impl From<crate::layout::InvalidId> for Error {
    fn from(e: crate::layout::InvalidId) -> Self {
        Error::InvalidId {
            what: e.what,
            id: e.id,
        }
    }
}

/// Errors of vault operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant or profile id that is not allowed.
    #[error("invalid {what} id {id:?}: use 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit")]
    InvalidId {
        /// "tenant" or "profile".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// No such profile for this tenant.
    #[error("profile {profile:?} not found for tenant {tenant:?}")]
    ProfileNotFound {
        /// Tenant.
        tenant: String,
        /// Profile.
        profile: String,
    },
    /// No such generation.
    #[error("generation {generation} of profile {profile:?} not found (see `profile-vault versions {profile}`)")]
    GenerationNotFound {
        /// Profile.
        profile: String,
        /// Generation.
        generation: u64,
    },
    /// Another save moved the head first.
    #[error("conflict: profile {profile:?} head moved to generation {head:?} during this save; this save's generation {kept} is kept (roll back to it with `profile-vault rollback {profile} --to {kept}`)")]
    Conflict {
        /// Profile.
        profile: String,
        /// The generation this save stored.
        kept: u64,
        /// The head now.
        head: Option<u64>,
    },
    /// The profile a save continues was deleted while the save's session ran: nothing is
    /// saved (it would be a generation nobody can list or load).
    #[error("profile {profile:?} was deleted while this save's session ran; nothing is saved")]
    ProfileDeleted {
        /// Profile.
        profile: String,
    },
    /// A session (of any node) holds the profile's lease: it is not deleted under it.
    #[error(
        "profile {profile:?} is in use by a session (it holds the profile's lease); end it first"
    )]
    Leased {
        /// Profile.
        profile: String,
    },
    /// A generation record that cannot be used.
    #[error("generation record {key} is invalid: {reason}")]
    BadRecord {
        /// Object key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A record of a later format than this build reads: a newer profile-vault wrote it.
    /// Nothing was changed; upgrade this node.
    #[error("{what} {key} was written by a newer profile-vault (format {format}); upgrade this node (it reads format {reads})")]
    NewerFormat {
        /// `head`, `generation record`, `lease`.
        what: &'static str,
        /// Object key.
        key: String,
        /// Its format.
        format: u64,
        /// The newest format this build reads.
        reads: u32,
    },
    /// The profile was last opened by a newer Chromium than this node's: opening it with an
    /// older one can silently break it (History stops recording, say).
    #[error("profile {profile:?} generation {generation} was written by Chromium {profile_version}; this node's browser is Chromium {browser_version}, which is older (upgrade the browser, or override with sessions.allow_older_browser / --allow-older-browser)")]
    BrowserTooOld {
        /// Profile.
        profile: String,
        /// Generation.
        generation: u64,
        /// Chromium version recorded in the generation.
        profile_version: String,
        /// This node's browser version.
        browser_version: String,
    },
    /// Packing or unpacking failed (including hostile archives).
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// The object failed its format or integrity checks.
    #[error(transparent)]
    Format(#[from] format::Error),
    /// A format 2 manifest that cannot be used.
    #[error(transparent)]
    Manifest(#[from] crate::format::v2::manifest::Error),
    /// A pack of a format 2 generation with a bad prefix.
    #[error(transparent)]
    Pack(#[from] crate::format::v2::pack::PackError),
    /// A chunk of a format 2 generation that does not open.
    #[error("pack {pack}, chunk {chunk}: {source}")]
    Blob {
        /// Pack id.
        pack: String,
        /// Chunk id (hex).
        chunk: String,
        /// Why.
        source: crate::crypt::blob::BlobError,
    },
    /// A pack a format 2 generation uses is gone or shorter than its manifest says.
    #[error("pack {pack} used by generation {generation} of profile {profile:?} is missing or truncated: {reason}")]
    PackMissing {
        /// Profile.
        profile: String,
        /// Generation.
        generation: u64,
        /// Pack id.
        pack: String,
        /// What the store said.
        reason: String,
    },
    /// A garbage collection deleted packs this save meant to reuse while it ran; nothing was
    /// written; save again.
    #[error("packs of profile {profile:?} this save reused were garbage-collected while it ran; save again")]
    PacksCollected {
        /// Profile.
        profile: String,
    },
    /// Master key problems.
    #[error(transparent)]
    Keys(#[from] keys::Error),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Local I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What kind of failure a vault [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A malformed tenant or profile id.
    InvalidId,
    /// The restore target exists and is not empty.
    TargetNotEmpty,
    /// No such profile or generation.
    NotFound,
    /// Another save moved the profile's head.
    Conflict,
    /// A newer Chromium wrote the profile.
    BrowserTooOld,
    /// A newer profile-vault wrote the profile's records or objects.
    Newer,
    /// The store failed for now, or collected packs under a reader: retry.
    Unavailable,
    /// The key service failed for now: retry.
    KeysUnavailable,
    /// The profile names a master key this node does not have.
    UnknownKey,
    /// Tampered, damaged, sealed under another key, or hostile.
    Corrupt,
    /// A master key missing, disabled or forbidden, or of another source: configuration.
    KeyConfig,
    /// An object the store does not have, outside a profile lookup.
    StoreMissing,
    /// A store key the store refuses.
    StoreKey,
    /// A conditional write to the store lost a race.
    StoreRace,
    /// A profile to save holds what a restore would refuse (the limits).
    OverLimits,
    /// Anything else: a bug or a local I/O failure.
    Internal,
}

impl Class {
    /// What kind of failure a store error is.
    pub fn of_store(e: &crate::store::Error) -> Class {
        use crate::store::Error as S;
        match e {
            S::NotFound { .. } => Class::StoreMissing,
            S::InvalidKey { .. } => Class::StoreKey,
            S::AlreadyExists { .. } | S::Precondition { .. } => Class::StoreRace,
            S::Unavailable { .. } => Class::Unavailable,
            _ => Class::Internal,
        }
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn class(&self) -> Class {
        match self {
            Error::BrowserTooOld { .. } => Class::BrowserTooOld,
            e if e.is_newer() => Class::Newer,
            Error::InvalidId { .. } => Class::InvalidId,
            Error::ProfileNotFound { .. }
            | Error::GenerationNotFound { .. }
            | Error::ProfileDeleted { .. } => Class::NotFound,
            Error::Archive(archive::Error::OverLimits(_)) => Class::OverLimits,
            Error::Conflict { .. } | Error::Leased { .. } => Class::Conflict,
            Error::PacksCollected { .. } => Class::Unavailable,
            Error::Archive(archive::Error::TargetNotEmpty(_)) => Class::TargetNotEmpty,
            Error::Keys(crate::keys::Error::UnknownKey(_)) => Class::UnknownKey,
            Error::Keys(k) if k.is_transient() => Class::KeysUnavailable,
            Error::Store(s) => Class::of_store(s),
            e if e.is_integrity() => Class::Corrupt,
            Error::Keys(_) => Class::KeyConfig,
            _ => Class::Internal,
        }
    }

    /// Whether a newer profile-vault or a newer Chromium wrote what this node met (nothing
    /// is wrong with it; this node is too old to use it).
    pub fn is_newer(&self) -> bool {
        matches!(
            self,
            Error::NewerFormat { .. }
                | Error::BrowserTooOld { .. }
                | Error::Format(format::Error::NewerVersion(_))
                | Error::Pack(crate::format::v2::pack::PackError::NewerVersion { .. })
        )
    }

    /// Whether a save was refused for good: the profile holds what a restore would refuse
    /// (trying again fails the same way until the profile or the limits change), or the
    /// profile it continues was deleted meanwhile.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Archive(archive::Error::OverLimits(_)) | Error::ProfileDeleted { .. }
        )
    }

    /// Whether the cause is tampering, corruption, a wrong key or a hostile archive.
    pub fn is_integrity(&self) -> bool {
        match self {
            Error::Format(format::Error::NewerVersion(_)) => false,
            Error::Pack(crate::format::v2::pack::PackError::NewerVersion { .. }) => false,
            Error::Format(_)
            | Error::BadRecord { .. }
            | Error::Manifest(_)
            | Error::Pack(_)
            | Error::Blob { .. }
            | Error::PackMissing { .. } => true,
            Error::Keys(k) => k.is_integrity(),
            Error::Archive(a) => !matches!(
                a,
                archive::Error::Io { .. }
                    | archive::Error::OverLimits(_)
                    | archive::Error::Write(_)
                    | archive::Error::NotADirectory(_)
                    | archive::Error::TargetNotEmpty(_)
            ),
            _ => false,
        }
    }
}
