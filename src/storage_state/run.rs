//! The two jobs, shared by the API and the CLI: a profile from a storage state (generation 1,
//! written by a real Chromium and saved like any session), and the storage state of a
//! generation (read by a real Chromium from a restored copy). Their work directories are
//! private and removed on every path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{browser, Invalid, StorageState};
use crate::layout::ProfileAddr;
use crate::progress::NoProgress;
use crate::vault::{self, Base, SaveReport, Vault};

/// Errors of import and export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document is not a valid storage state.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A profile of that id exists already.
    #[error("profile {0:?} exists already; import creates new profiles only")]
    Exists(String),
    /// The browser failed or refused the state.
    #[error(transparent)]
    Browser(#[from] browser::Error),
    /// Storage, keys, restore.
    #[error(transparent)]
    Vault(#[from] vault::Error),
    /// The work directory.
    #[error("{0}")]
    Io(String),
}

/// Where the browsers run.
#[derive(Debug, Clone)]
pub struct Runner {
    /// Starts the (sandboxed, offline) browsers.
    pub browser: Arc<crate::browser::Runtime>,
    /// A private directory for the work directories.
    pub work_dir: PathBuf,
    /// How long the browser may take to start and to stop.
    pub deadline: Duration,
}

struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Runner {
    fn work(&self, what: &str) -> Result<WorkDir, Error> {
        crate::fsutil::create_private_dir(&self.work_dir)
            .map_err(|e| Error::Io(format!("{}: {e}", self.work_dir.display())))?;
        let p = self
            .work_dir
            .join(format!("{what}-{}", uuid::Uuid::new_v4().simple()));
        Ok(WorkDir(p))
    }

    /// Creates profile `at` whose generation 1 holds exactly `state`.
    ///
    /// # Errors
    /// [`Error::Exists`], a refused cookie, browser and vault failures; no profile is left
    /// behind by any of them (but for a racing save of the same new id, which wins).
    pub async fn import(
        &self,
        vault: &Vault,
        at: &ProfileAddr,
        state: &StorageState,
    ) -> Result<SaveReport, Error> {
        if vault.profile_exists(at).await? {
            return Err(Error::Exists(at.profile().into()));
        }
        let dir = self.work("import")?;
        crate::fsutil::create_private_dir(&dir.0).map_err(|e| Error::Io(e.to_string()))?;
        browser::import(&self.browser, &dir.0, state, self.deadline).await?;
        Ok(vault
            .save(at, &dir.0, Base::Expect(None), Arc::new(NoProgress))
            .await?)
    }

    /// The storage state of a generation (the head by default) of profile `at`.
    ///
    /// # Errors
    /// Not found, restore, browser failures.
    pub async fn export(
        &self,
        vault: &Vault,
        at: &ProfileAddr,
        generation: Option<u64>,
    ) -> Result<StorageState, Error> {
        let dir = self.work("export")?;
        vault
            .restore(at, generation, &dir.0, Arc::new(NoProgress))
            .await?;
        let root = dir.0.clone();
        let origins = tokio::task::spawn_blocking(move || {
            crate::profile::contents::read(&root).local_storage
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))?;
        Ok(browser::export(&self.browser, &dir.0, &origins, self.deadline).await?)
    }
}

/// A fresh profile id for an import that names none.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The work directory under a data directory.
pub fn work_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state-work")
}
