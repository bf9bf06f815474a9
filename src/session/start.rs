//! Starting a session's browser: restore the profile into its directory (bounded by
//! `server.restore_deadline`), then launch Chromium with the launch settings and the browser
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
    ) -> Result<crate::browser::Browser, Error> {
        self.write_record(record);
        let dir = &record.dir;
        if loaded {
            let profile = record
                .profile_id
                .as_deref()
                .expect("loaded sessions have a profile");
            let t = std::time::Instant::now();
            let vault = self.vault.with_actor(&req.actor);
            let restore = vault.restore(
                tenant,
                profile,
                record.base_generation,
                dir,
                Arc::new(NoProgress) as Arc<dyn Progress>,
            );
            match tokio::time::timeout(self.cfg.restore_deadline, restore).await {
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
        apply_identity(&mut launch, &record.identity);
        Ok(self
            .cfg
            .browser
            .launch(&record.id, dir, &launch, self.cfg.start_deadline)
            .await?)
    }
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
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        let m = &self.manager;
        m.starting.fetch_sub(1, Ordering::SeqCst);
        if !self.armed {
            return;
        }
        tracing::info!(session = %self.id, "session start abandoned; releasing what it held");
        if let Some(p) = &self.profile {
            m.release_profile(&self.tenant, p, &self.id);
        }
        let _ = std::fs::remove_dir_all(m.records.browser_dir(&self.id));
        let _ = std::fs::remove_file(m.records.path(&self.id));
        m.cfg.browser.cleanup(&self.id);
        if let Some(l) = self.lease.take() {
            let vault = m.vault.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = vault.release_lease(&l).await;
                });
            }
        }
    }
}
