//! Object storage: a small object-safe [`Store`] trait and its backends.
//!
//! - [`fs::LocalFileSystem`]: a directory (the embedded default); atomic writes by
//!   temp file + rename, conditional writes under a per-key lock that holds across processes;
//! - [`memory::InMemory`]: a map, for tests that need a store and nothing else;
//! - [`s3::AmazonS3`] (feature `s3`): aws-sdk-s3 with the standard credential chain, streaming
//!   multipart uploads, and `If-None-Match: *` / `If-Match` conditional writes.
//!
//! [`conformance`] is the one test suite every backend must pass. Keys are `/`-separated
//! relative paths validated by [`validate_key`]; callers namespace them by tenant.

pub mod conformance;
pub mod fs;
pub mod memory;
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;

use std::fmt::Debug;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;

/// Errors every backend maps its failures onto.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object at that key.
    #[error("object not found: {key}")]
    NotFound {
        /// The key.
        key: String,
    },
    /// `PutMode::Create` and the object exists.
    #[error("object already exists: {key}")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// `PutMode::Update` and the object changed (or vanished) since that version.
    #[error("object changed concurrently: {key}")]
    Precondition {
        /// The key.
        key: String,
    },
    /// A key that is not a clean relative path.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The backend failed in a way that may pass (network, 5xx, throttling).
    #[error("storage unavailable ({op} {key}): {message}")]
    Unavailable {
        /// Operation.
        op: &'static str,
        /// Key or prefix.
        key: String,
        /// Backend message.
        message: String,
    },
    /// Access denied, bad credentials, missing bucket, or another permanent failure.
    #[error("storage error ({op} {key}): {message}")]
    Backend {
        /// Operation.
        op: &'static str,
        /// Key or prefix.
        key: String,
        /// Backend message.
        message: String,
    },
    /// A ranged read past the end of the object.
    #[error("range {start}+{len} is past the end of {key} ({size} bytes)")]
    OutOfRange {
        /// The key.
        key: String,
        /// First byte asked for.
        start: u64,
        /// Bytes asked for.
        len: u64,
        /// The object's size.
        size: u64,
    },
    /// Local I/O failed (reading the body, local backend).
    #[error("storage i/o ({key}): {source}")]
    Io {
        /// Key or path.
        key: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl Error {
    /// The metrics label of this kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Precondition { .. } => "precondition",
            Error::InvalidKey { .. } => "invalid_key",
            Error::Unavailable { .. } => "unavailable",
            Error::Backend { .. } => "backend",
            Error::OutOfRange { .. } => "out_of_range",
            Error::Io { .. } => "io",
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a put treats an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with [`Error::AlreadyExists`] if the key exists.
    Create,
    /// Replace only the version with this etag, else [`Error::Precondition`].
    Update(String),
}

/// What to upload.
#[derive(Debug, Clone)]
pub enum PutBody {
    /// Small data in memory.
    Bytes(Bytes),
    /// A local file, streamed (and re-readable, so uploads can retry). It must not be
    /// modified in place afterwards (the filesystem store may hard-link it).
    File(PathBuf),
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Version tag for [`PutMode::Update`].
    pub etag: String,
    /// Last modification, Unix seconds.
    pub modified: u64,
}

/// A streamed object body.
pub type Body = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// An object being read.
pub struct GetResult {
    /// Its metadata.
    pub meta: ObjectMeta,
    /// Its bytes.
    pub body: Body,
}

impl Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// The most [`GetResult::bytes`] reads: records, heads, `gc.json`, leases and cluster
/// records are far smaller (payloads and packs are streamed or read by range).
pub const MAX_READ_WHOLE: u64 = 64 << 20;

impl GetResult {
    /// Reads the whole body into memory (small objects only, at most [`MAX_READ_WHOLE`]).
    ///
    /// # Errors
    /// I/O errors of the body; a body over [`MAX_READ_WHOLE`] ([`Error::Backend`]).
    pub async fn bytes(self) -> Result<Bytes> {
        use tokio::io::AsyncReadExt;
        let key = self.meta.key.clone();
        let mut v = Vec::with_capacity(self.meta.size.min(16 << 20) as usize);
        self.body
            .take(MAX_READ_WHOLE + 1)
            .read_to_end(&mut v)
            .await
            .map_err(|e| Error::Unavailable {
                op: "get",
                key: key.clone(),
                message: e.to_string(),
            })?;
        if v.len() as u64 > MAX_READ_WHOLE {
            // What the store holds may have been planted: an object this large is not one
            // of the records read whole, and is not held in memory to find out.
            return Err(Error::Backend {
                op: "get",
                key,
                message: format!(
                    "larger than the {MAX_READ_WHOLE} bytes an object read whole may be"
                ),
            });
        }
        Ok(v.into())
    }
}

/// The storage interface. Object-safe; hold it as `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: Debug + Send + Sync {
    /// Stores `body` at `key` according to `mode`; returns the new etag.
    async fn put(&self, key: &str, body: PutBody, mode: PutMode) -> Result<String>;
    /// Opens the object at `key` for streaming.
    async fn get(&self, key: &str) -> Result<GetResult>;
    /// Metadata of the object at `key`.
    async fn head(&self, key: &str) -> Result<ObjectMeta>;
    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// Deletes the object at `key`; deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Bytes `start .. start + len` of the object at `key`, read whole (a body cut short is
    /// [`Error::Unavailable`], so retries cover it). A range past the end of the object is
    /// [`Error::OutOfRange`]. The default reads the object from the start.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes> {
        use tokio::io::AsyncReadExt;
        let got = self.get(key).await?;
        if start.saturating_add(len) > got.meta.size {
            return Err(Error::OutOfRange {
                key: key.into(),
                start,
                len,
                size: got.meta.size,
            });
        }
        let mut body = got.body;
        let cut = |e: std::io::Error| Error::Unavailable {
            op: "get",
            key: key.into(),
            message: e.to_string(),
        };
        tokio::io::copy(&mut (&mut body).take(start), &mut tokio::io::sink())
            .await
            .map_err(cut)?;
        let mut v = vec![0u8; len as usize];
        body.read_exact(&mut v).await.map_err(cut)?;
        Ok(v.into())
    }
    /// A short description for logs and `readyz` (no secrets).
    fn describe(&self) -> String;
    /// Where the object lives on this machine, for stores that keep objects as local files
    /// (lets restore read it in place instead of copying it).
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}

/// Checks that a key is a clean relative path: no empty, `.` or `..` components, no
/// leading `/`, no NUL or backslash, at most 1024 bytes.
///
/// # Errors
/// [`Error::InvalidKey`].
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidKey {
            key: key.into(),
            reason,
        })
    };
    if key.is_empty() || key.len() > 1024 {
        return bad("empty or longer than 1024 bytes");
    }
    if key.contains('\0') || key.contains('\\') {
        return bad("contains NUL or backslash");
    }
    if key
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("empty, '.' or '..' path component");
    }
    if key.split('/').any(|c| c.starts_with(".pv-")) {
        return bad("components starting with '.pv-' are reserved");
    }
    Ok(())
}

/// What [`check_conditional_writes`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Conditional {
    /// Create-only and compare-and-swap writes are refused as they must be.
    Enforced,
    /// The store replaced an object a write said must not exist, or whose version it
    /// named wrongly: every head, lease and claim would be last-writer-wins.
    Ignored(&'static str),
}

/// Checks that the store honours conditional writes (`If-None-Match: *`, `If-Match`), which
/// keep concurrent saves from overwriting each other: a scratch object under `probe/` is
/// created twice and updated with a wrong version, then removed.
///
/// # Errors
/// Storage errors (an unreachable store proves nothing either way).
pub async fn check_conditional_writes(store: &dyn Store) -> Result<Conditional> {
    let key = format!("probe/conditional-{}", uuid::Uuid::new_v4().simple());
    let body = || PutBody::Bytes(bytes::Bytes::from_static(b"probe"));
    store.put(&key, body(), PutMode::Create).await?;
    let found = async {
        match store.put(&key, body(), PutMode::Create).await {
            Err(Error::AlreadyExists { .. }) => {}
            Ok(_) => {
                return Ok(Conditional::Ignored(
                    "a create-only write replaced an object",
                ))
            }
            Err(e) => return Err(e),
        }
        match store
            .put(&key, body(), PutMode::Update("\"not-its-version\"".into()))
            .await
        {
            Err(Error::Precondition { .. }) => Ok(Conditional::Enforced),
            Ok(_) => Ok(Conditional::Ignored(
                "a write naming a wrong version replaced an object",
            )),
            Err(e) => Err(e),
        }
    }
    .await;
    let _ = store.delete(&key).await;
    found
}

/// Opens the store named by a URL: `file:///path` or `s3://bucket[/prefix]`.
///
/// # Errors
/// An unknown scheme, or a backend that cannot be set up.
pub async fn from_url(url: &str, opts: &StoreOptions) -> Result<std::sync::Arc<dyn Store>> {
    let backend = open_backend(url, opts).await?;
    let policy = retry::RetryPolicy {
        deadline: std::time::Duration::from_secs(opts.retry_deadline),
        ..Default::default()
    };
    Ok(std::sync::Arc::new(retry::RetryStore::new(backend, policy)))
}

async fn open_backend(url: &str, opts: &StoreOptions) -> Result<std::sync::Arc<dyn Store>> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(Error::InvalidKey {
                key: url.into(),
                reason: "file:// needs a path",
            });
        }
        return Ok(std::sync::Arc::new(fs::LocalFileSystem::new(path)?));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        #[cfg(feature = "s3")]
        {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Ok(std::sync::Arc::new(
                s3::AmazonS3::from_env(bucket, prefix, opts).await?,
            ));
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = (rest, opts);
            return Err(Error::Backend {
                op: "open",
                key: url.into(),
                message: "built without the `s3` feature".into(),
            });
        }
    }
    Err(Error::InvalidKey {
        key: url.into(),
        reason: "store URL must be file:///PATH or s3://BUCKET[/PREFIX]",
    })
}

/// Backend settings from the config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreOptions {
    /// Force path-style S3 addressing (MinIO, LocalStack). Env `PV_S3_PATH_STYLE`.
    pub path_style: bool,
    /// Multipart part size in bytes (min 5 MiB).
    pub part_size: u64,
    /// Parts uploaded at once.
    pub concurrency: usize,
    /// Seconds one storage operation may keep retrying transient errors.
    pub retry_deadline: u64,
    /// Seconds one S3 request attempt may take before it is abandoned and retried.
    pub attempt_timeout: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            path_style: false,
            part_size: 8 << 20,
            concurrency: 4,
            retry_deadline: 60,
            attempt_timeout: 60,
        }
    }
}
