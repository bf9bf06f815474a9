//! Starting a session's browser: restore the profile into its directory (bounded by
//! `sessions.restore_deadline`), then launch Chromium with the launch settings and the browser
//! identity pinned to the profile (request fields override the pinned ones).

use super::*;

/// Puts the identity's fields into the launch options.
pub(super) fn apply_identity(launch: &mut LaunchOptions, id: &vault::Identity) {
    launch.window = match (id.width, id.height) {
        (None, None) => None,
        (w, h) => Some((w.unwrap_or(1280), h.unwrap_or(720))),
    };
    launch.user_agent = id.user_agent.clone();
    launch.locale = id.locale.clone();
    launch.timezone = id.timezone.clone();
}

impl Manager {
    pub(super) async fn start_browser(
        &self,
        tenant: &str,
        req: &CreateSession,
        record: &Record,
        loaded: bool,
        guard: &mut StartGuard,
    ) -> Result<crate::browser::Browser, Error> {
        self.write_record(record);
        let dir = &record.dir;
        if loaded {
            let profile = record
                .profile_id
                .as_deref()
                .expect("loaded sessions have a profile");
            let t = std::time::Instant::now();
            let at = crate::layout::ProfileAddr::new(tenant, profile).map_err(|e| {
                self.counters
                    .restores_failed
                    .fetch_add(1, Ordering::Relaxed);
                Error::Restore {
                    profile: profile.into(),
                    source: e.into(),
                }
            })?;
            let vault = self.vault.with_actor(&req.actor);
            // A task of its own, so that an abandoned start (or a timeout) can wait for the
            // restore's blocking work to end before it removes what the restore wrote.
            let (g, d) = (record.base_generation, dir.clone());
            let restore = tokio::spawn(async move {
                vault
                    .restore(&at, g, &d, Arc::new(NoProgress) as Arc<dyn Progress>)
                    .await
            });
            let done = guard.restore.insert(restore);
            let finished = tokio::time::timeout(self.cfg.restore_deadline, done).await;
            if finished.is_ok() {
                guard.restore = None;
            }
            let finished = finished.map(|r| {
                r.unwrap_or_else(|e| {
                    Err(vault::Error::Io {
                        path: dir.clone(),
                        source: std::io::Error::other(e),
                    })
                })
            });
            match finished {
                Ok(Ok(_)) => {
                    self.counters.restores_ok.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .restore_ms
                        .fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                    crate::metrics::METRICS.restore_seconds.observe(t.elapsed());
                }
                Ok(Err(e)) => {
                    self.counters
                        .restores_failed
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Restore {
                        profile: profile.into(),
                        source: e,
                    });
                }
                Err(_) => {
                    self.counters
                        .restores_failed
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(Error::RestoreTimeout(profile.into()));
                }
            }
        } else {
            fsutil::create_private_dir(dir).map_err(io_at(dir))?;
        }
        let mut launch = req.launch.clone();
        launch.restore_last_session = loaded;
        launch.display = self.cfg.browser.display().is_ok();
        launch.audio = self.cfg.browser.audio().is_ok();
        apply_identity(&mut launch, &record.identity);
        Ok(self
            .cfg
            .browser
            .launch(&record.id, dir, &launch, self.cfg.start_deadline)
            .await?)
    }
}

/// The live view's hold on a headful browser's display and sound; `None` (the page-only view,
/// with a warning) when it has none or it cannot be reached.
pub(super) async fn open_display(
    browser: &crate::browser::Browser,
    id: &str,
    quality: u8,
) -> Option<Arc<crate::display::Display>> {
    let sock = browser.display_socket()?.to_path_buf();
    let uid = browser.uid()?;
    let opened =
        tokio::task::spawn_blocking(move || crate::display::Display::open(&sock, uid, quality))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let mut d = match opened {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "live view: the display cannot be captured; showing the page only");
            return None;
        }
    };
    if let Some(fifo) = browser.audio_fifo() {
        match crate::display::Sound::start(fifo) {
            Ok(snd) => d.sound = Some(snd),
            Err(e) => tracing::warn!(session = %id, error = %e, "live view: no sound"),
        }
    }
    Some(Arc::new(d))
}

/// Gives back what a session start took if it does not finish: its slot always; while armed
/// (the start failed, or its future was dropped because the client went away) also the
/// profile lock, the lease, the directory and the record. A browser that had started is
/// killed by its own drop.
pub(super) struct StartGuard {
    pub(super) manager: Arc<Manager>,
    pub(super) tenant: String,
    pub(super) id: String,
    pub(super) profile: Option<String>,
    pub(super) lease: Option<vault::Lease>,
    pub(super) armed: bool,
    /// A restore still running (its blocking work outlives a dropped future).
    pub(super) restore: Option<tokio::task::JoinHandle<Result<vault::RestoreReport, vault::Error>>>,
    /// A lease being taken: its write may land after the start's future was dropped, and
    /// the lease it took is then released here (not left to block the profile until it
    /// expires).
    pub(super) leasing: Option<tokio::task::JoinHandle<Result<Option<vault::Lease>, vault::Error>>>,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        let m = &self.manager;
        if let Some(n) = m
            .starting
            .lock()
            .expect("starting lock")
            .get_mut(&self.tenant)
        {
            *n = n.saturating_sub(1);
        }
        if !self.armed {
            return;
        }
        tracing::info!(session = %self.id, "session start abandoned; releasing what it held");
        if let Some(p) = &self.profile {
            m.release_profile(&self.tenant, p, &self.id);
        }
        let _ = std::fs::remove_file(m.records.path(&self.id));
        m.cfg.browser.cleanup(&self.id);
        let dir = m.records.browser_dir(&self.id);
        let (restore, lease, vault) = (self.restore.take(), self.lease.take(), m.vault.clone());
        let leasing = self.leasing.take();
        let cleanup = async move {
            // What a restore still running writes is removed once it has ended.
            if let Some(r) = restore {
                let _ = r.await;
            }
            let _ = std::fs::remove_dir_all(&dir);
            let taken = match leasing {
                Some(t) => t.await.ok().and_then(Result::ok).flatten(),
                None => None,
            };
            for l in lease.into_iter().chain(taken) {
                let _ = vault.release_lease(&l).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(cleanup);
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(m.records.browser_dir(&self.id));
            }
        }
    }
}
