//! The manager's upkeep besides starting and ending sessions: failed saves (listed, retried),
//! the sweeper (timeouts and their webhook warnings, lease renewal), shutdown, garbage
//! collection of what crashes leave behind, and recovery of sessions a killed daemon left.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// A kept directory being saved (by a retry, or recovery at start): unmarked when this is
/// dropped, also when its task panics or its future is dropped (those waiting then see no
/// outcome, and take it as a failure).
struct Retrying {
    manager: Arc<Manager>,
    id: String,
    outcome: tokio::sync::watch::Sender<Option<bool>>,
    /// The directory, locked (`flock`) against other processes on this data directory (a
    /// daemon's retry and `profile-vault saves --retry` at once); unlocked when dropped.
    _dir: Option<std::fs::File>,
}

impl Retrying {
    /// Tells those waiting whether the save landed.
    fn finish(self, saved: bool) {
        self.outcome.send_replace(Some(saved));
    }
}

impl Drop for Retrying {
    fn drop(&mut self) {
        self.manager
            .retrying
            .lock()
            .expect("retrying lock")
            .remove(&self.id);
    }
}

impl Manager {
    /// Marks session `id`'s directory as being saved; when it already is, the save under
    /// way's outcome (whether it landed) is awaited and returned instead. Another process
    /// saving it is waited for too: then `true` if it saved it (its record is gone).
    async fn start_retry(self: &Arc<Self>, id: &str) -> Result<Retrying, bool> {
        let (mut under_way, mark) = {
            let mut m = self.retrying.lock().expect("retrying lock");
            match m.get(id) {
                Some(rx) => (rx.clone(), None),
                None => {
                    let (outcome, rx) = tokio::sync::watch::channel(None);
                    m.insert(id.to_string(), rx.clone());
                    let mark = Retrying {
                        manager: self.clone(),
                        id: id.to_string(),
                        outcome,
                        _dir: None,
                    };
                    (rx, Some(mark))
                }
            }
        };
        if let Some(mut mark) = mark {
            let (dir, waited) = lock_dir(self.records.browser_dir(id)).await;
            mark._dir = dir;
            if waited && !self.records.path(id).exists() {
                mark.finish(true);
                return Err(true);
            }
            return Ok(mark);
        }
        let saved = under_way
            .wait_for(Option::is_some)
            .await
            .map(|v| v.unwrap_or(false))
            .unwrap_or(false);
        Err(saved)
    }
}

/// Locks `dir` against other processes (`flock`, waiting for one that holds it); whether
/// another held it. `None` (nothing to lock) when it cannot be opened: gone, or not a
/// directory.
async fn lock_dir(dir: std::path::PathBuf) -> (Option<std::fs::File>, bool) {
    let Ok(f) = std::fs::File::open(&dir) else {
        return (None, false);
    };
    if f.try_lock().is_ok() {
        return (Some(f), false);
    }
    tracing::info!(dir = %dir.display(), "another process is saving this directory: waiting for it");
    let locked = tokio::task::spawn_blocking(move || f.lock().map(|()| f)).await;
    (locked.ok().and_then(Result::ok), true)
}

/// How often the browsers' disk use is measured against their quota.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);

impl Manager {
    /// Session records whose save failed or was refused (their directories are kept), for
    /// `tenant` or all.
    pub fn failed_saves(&self, tenant: Option<&str>) -> Vec<Record> {
        self.records
            .read_all()
            .into_iter()
            .filter(|r| {
                matches!(r.state, RecordState::Failed | RecordState::Refused)
                    && tenant.is_none_or(|t| r.tenant == t)
            })
            .collect()
    }

    /// Retries the failed (or refused) save of session `id` now. Returns whether it is saved.
    ///
    /// # Errors
    /// [`Error::ProfileNotFound`] when there is no failed save with that id.
    pub async fn retry_save(
        self: &Arc<Self>,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<bool, Error> {
        let Some(r) = self.failed_saves(tenant).into_iter().find(|r| r.id == id) else {
            return Err(Error::ProfileNotFound(id.into()));
        };
        // A retry (or recovery) of it under way: its outcome is this one's.
        let retrying = match self.start_retry(&r.id).await {
            Ok(g) => g,
            Err(saved) => {
                if saved {
                    self.saved_elsewhere(&r).await;
                }
                return Ok(saved);
            }
        };
        if r.state == RecordState::Refused {
            // Its directory is not removed under a retry, this process's or another's
            // (`profile-vault saves --retry`): see `expire_refused`.
            self.touch_record(&r.id);
        }
        // The retry runs to its end in a task of its own: a caller that goes away (a client
        // hanging up on `POST /v0/vm` or `/v0/saves/{id}/retry`) neither stops a save half
        // way nor leaves the id marked as retrying for good.
        let this = self.clone();
        let retry = tokio::spawn(async move {
            let mut r = r;
            let session = this.get(&r.id);
            let (outcome, shown) = this.save_record(&r, session.as_deref()).await;
            if outcome != Outcome::Failed || r.state == RecordState::Refused {
                // Landed, refused, or a refused one failed (now retried as any failed save):
                // nothing for the profile to wait for.
                this.settle_record(&mut r, &outcome);
                this.unhold(&r.id).await;
            }
            if let Some(s) = &session {
                Self::show(s, shown);
            }
            let ok = outcome.is_done();
            if ok {
                tracing::info!(session = %r.id, profile = ?r.profile_id, "failed save retried successfully");
            }
            retrying.finish(ok);
            ok
        });
        Ok(retry.await.unwrap_or(false))
    }

    /// Session `r`'s failed save landed by another retry (of this process, or of another
    /// one on this data directory: `profile-vault saves --retry`): what this node held for it
    /// is freed (idempotent), and its session, if still known here, shows the head saved.
    async fn saved_elsewhere(&self, r: &Record) {
        self.unhold(&r.id).await;
        let (Some(s), Some(p)) = (self.get(&r.id), &r.profile_id) else {
            return;
        };
        if !matches!(s.info().save, SaveState::Failed { .. }) {
            return;
        }
        let head = match crate::layout::ProfileAddr::new(&r.tenant, p) {
            Ok(at) => self.vault.head(&at).await.ok().flatten(),
            Err(_) => None,
        };
        if let Some((h, _)) = head {
            Self::show(
                &s,
                Some(SaveState::Saved {
                    generation: h.generation,
                }),
            );
        }
    }

    /// Retries every failed save once, and the refused ones too when `refused_too` (an
    /// operator who raised the limits; the sweeper does not); returns how many are now saved.
    pub async fn retry_failed_saves(self: &Arc<Self>, refused_too: bool) -> usize {
        let mut n = 0;
        for r in self.failed_saves(None) {
            if r.state != RecordState::Failed && !refused_too {
                continue;
            }
            if let Ok(true) = self.retry_save(None, &r.id).await {
                n += 1;
            }
        }
        n
    }

    /// What the record of session `id` says of its last save: refused, or (also when it is
    /// gone or unreadable) failed.
    fn refusal_of(&self, id: &str) -> Outcome {
        match self.failed_saves(None).into_iter().find(|r| r.id == id) {
            Some(Record {
                state: RecordState::Refused,
                refused: Some(why),
                ..
            }) => Outcome::Refused(why),
            _ => Outcome::Failed,
        }
    }

    /// Marks session `id`'s record as touched now (a retry of it started).
    fn touch_record(&self, id: &str) {
        let touched = std::fs::File::options()
            .write(true)
            .open(self.records.path(id))
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::warn!(session = %id, error = %e, "could not mark the refused save's record as retried");
        }
    }

    /// Removes the directories and records of refused saves kept longer than
    /// `sessions.keep_refused_saves` (an operator who raised the limits retried them before)
    /// since their record was last written: at the refusal, or when a retry of it started in
    /// any process (it touches the record), so a directory is not removed under a save of it
    /// (unless that runs longer than `keep_refused_saves`).
    pub fn expire_refused(&self) {
        let keep = self.cfg.keep_refused.as_secs();
        for r in self.failed_saves(None) {
            let Some(why) = &r.refused else { continue };
            let touched_ago = std::fs::metadata(self.records.path(&r.id))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if r.state != RecordState::Refused
                || touched_ago.is_none_or(|a| a.as_secs() < keep)
                || self
                    .retrying
                    .lock()
                    .expect("retrying lock")
                    .contains_key(&r.id)
            {
                continue;
            }
            tracing::warn!(session = %r.id, tenant = %r.tenant, profile = ?r.profile_id, reason = %why.reason, "removing the directory of a refused save kept for sessions.keep_refused_saves");
            self.forget(&r.id, &r.dir);
        }
    }

    fn active_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.is_active())
            .cloned()
            .collect()
    }

    /// Checks timeouts and crashed browsers once; returns how many sessions it ended.
    pub async fn sweep(self: &Arc<Self>) -> usize {
        let active = self.active_sessions();
        let now = now_ms();
        // Deadlines are on tokio's clock; what is published is Unix time.
        let mono = timer::mono_ms();
        let mut n = 0;
        // Leases are held until the session's save is done, not only while it runs: a save
        // that waits for a slot or uploads for minutes would otherwise let another node take
        // the profile, load the generation before it, and end in a conflict.
        let unsaved: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| !*s.done.borrow())
            .cloned()
            .collect();
        for s in &unsaved {
            self.renew_when_due(&s.lease, &s.id, mono);
        }
        self.keep_holds(mono);
        for s in active {
            let (crashed, limited) = match s.browser.try_lock() {
                Ok(mut g) => (
                    g.as_mut().is_some_and(|b| b.try_exited()),
                    g.as_ref()
                        .and_then(|b| b.group())
                        .is_some_and(|c| c.oom_kills() > 0 || c.pids_exhausted()),
                ),
                Err(_) => (false, false),
            };
            if let Some(hook) = &s.webhook {
                if let timer::Warning::Due(at, why) = s.timer.warning_due(mono) {
                    let (hook, id) = (hook.clone(), s.id.clone());
                    let policy = self.cfg.browser.egress().clone();
                    let body = serde_json::json!({"session_id": id, "type": "timeout_warning", "reason": why, "expires_at": timer::to_unix(at).div_ceil(1000)});
                    tokio::spawn(async move {
                        if let Err(e) = webhook::send(&hook, &body, &policy).await {
                            tracing::warn!(session = %id, error = %e, "timeout webhook (warning) not delivered");
                        }
                    });
                }
            }
            // Viewers are warned too (the SDK's onCloseWarning), `timeout.warning` ahead.
            let near = s.timer.near(mono).and_then(|(at, why)| {
                let kind = match why {
                    EndReason::Inactive => crate::live::WarningKind::Inactive,
                    EndReason::Absolute => crate::live::WarningKind::Absolute,
                    _ => return None,
                };
                Some(crate::live::CloseWarning { kind, at_ms: at })
            });
            s.live.warn_close(near);
            if limited {
                tracing::warn!(session = %s.id, "the browser hit its memory or process limit; ending the session");
                n += usize::from(self.end(&s, EndReason::ResourceLimit));
            } else if crashed {
                tracing::warn!(session = %s.id, "browser exited by itself; saving what reached disk");
                n += usize::from(self.end(&s, EndReason::Crash));
            } else if let Some(why) = s.timer.expired(mono) {
                n += usize::from(self.end(&s, why));
            }
        }
        // Forget sessions that ended more than an hour ago.
        let cutoff = now / 1000 - 3600.min(now / 1000);
        let mut forgotten = Vec::new();
        self.sessions
            .lock()
            .expect("sessions lock")
            .retain(|id, s| {
                let keep = s
                    .status
                    .lock()
                    .expect("status lock")
                    .ended
                    .is_none_or(|(t, _)| t > cutoff)
                    || !*s.done.borrow();
                if !keep {
                    forgotten.push(id.clone());
                }
                keep
            });
        if let (Some(sub), false) = (self.subscriber.get(), forgotten.is_empty()) {
            let sub = sub.clone();
            tokio::spawn(async move { sub.notify(Event::Forgotten(forgotten)).await });
        }
        n
    }

    /// Ends the sessions whose browser occupies more disk than its quota (profile and
    /// downloads): `end_reason: "resource_limit"`, what reached disk is saved.
    pub async fn check_disk(self: &Arc<Self>) {
        let Some(limit) = self.cfg.browser.disk_limit() else {
            return;
        };
        let active = self.active_sessions();
        let rt = self.cfg.browser.clone();
        let over = tokio::task::spawn_blocking(move || {
            active
                .into_iter()
                .filter(|s| rt.disk_used(&s.id, &s.dir, limit) > limit)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for s in over {
            tracing::warn!(session = %s.id, limit_mib = limit >> 20, "the browser is over its disk quota; ending the session");
            self.end(&s, EndReason::ResourceLimit);
        }
    }

    /// Runs [`Manager::sweep`] every `every` until `stop` fires.
    pub async fn run_sweeper(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(every);
        let mut last_retry = tokio::time::Instant::now();
        let mut last_disk = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.sweep().await;
                    if last_disk.elapsed() >= DISK_CHECK_EVERY {
                        last_disk = tokio::time::Instant::now();
                        let this = self.clone();
                        tokio::spawn(async move { this.check_disk().await });
                    }
                    // Shutting down: the sweeper only keeps leases of saves under way.
                    if last_retry.elapsed() >= self.cfg.retry_failed_every
                        && !self.shutting_down.load(Ordering::SeqCst)
                    {
                        last_retry = tokio::time::Instant::now();
                        self.expire_refused();
                        let this = self.clone();
                        tokio::spawn(async move { this.retry_failed_saves(false).await });
                    }
                }
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
    }

    /// Stops taking sessions, ends every session and waits (up to `grace`) for their saves.
    pub async fn shutdown(self: &Arc<Self>, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let all: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .cloned()
            .collect();
        for s in &all {
            self.end(s, EndReason::Shutdown);
        }
        let wait = async {
            for s in &all {
                s.wait_done().await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::error!("shutdown grace period over with saves still running; their directories and records are kept and will be saved at the next start");
        }
    }

    /// Removes what killed processes leave on local disk: restore staging directories and
    /// downloads beside browser dirs, and spool files and storage-state work directories older
    /// than an hour (a CLI job may share them, so young ones are left alone).
    pub(super) fn collect_garbage(&self) {
        let browsers = self.cfg.data_dir.join("browsers");
        for e in std::fs::read_dir(&browsers).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".pv-") {
                tracing::info!(path = %e.path().display(), "removing a staging directory left by a killed restore");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let spool = self.cfg.data_dir.join("spool");
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for e in std::fs::read_dir(&spool).into_iter().flatten().flatten() {
            if e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago)
            {
                tracing::info!(path = %e.path().display(), "removing a spool file left by a killed save");
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Storage-state work directories hold plaintext profiles: an hour is longer than any
        // import or export takes.
        let work = crate::storage_state::work_dir(&self.cfg.data_dir);
        for e in std::fs::read_dir(&work).into_iter().flatten().flatten() {
            if e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < hour_ago)
            {
                tracing::info!(path = %e.path().display(), "removing a storage-state work directory left by a killed job");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Finds sessions left by a previous daemon (crash, kill -9): stops their browsers and
    /// saves their profiles. Returns how many were recovered.
    pub async fn recover(self: &Arc<Self>) -> usize {
        self.collect_garbage();
        let records = self.records.read_all();
        self.recovering.store(records.len(), Ordering::SeqCst);
        // Every kept directory's profile is taken before anything awaits: a session started
        // while recovery runs must not load the generation before it (nor is the lock of one
        // that came first taken over).
        {
            let mut saving = self.saving.lock().expect("saving lock");
            for r in &records {
                if let (Some(p), true) = (&r.profile_id, r.save) {
                    saving
                        .entry((r.tenant.clone(), p.clone()))
                        .or_insert_with(|| r.id.clone());
                }
            }
        }
        let mut n = 0;
        for r in records {
            if r.pid > 0 && crate::browser::is_browser_of(r.pid, &r.id, &r.dir) {
                tracing::warn!(session = %r.id, pid = r.pid, "stopping a browser left by the previous daemon");
                crate::browser::stop_orphan(r.pid, self.cfg.close_deadline).await;
            }
            self.cfg.browser.cleanup(&r.id);
            if r.state == RecordState::Refused {
                // Refused for good: kept as it is (and expired) until an operator retries it.
                if let (Some(p), true) = (&r.profile_id, r.save) {
                    self.release_profile(&r.tenant, p, &r.id);
                }
                self.recovering.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            // A retry (the sweeper's, the API's) waits for recovery's save of the directory,
            // and recovery for a retry that came first.
            let (outcome, retrying) = match self.start_retry(&r.id).await {
                Ok(g) => (self.save_record(&r, None).await.0, Some(g)),
                Err(true) => (Outcome::Done, None),
                // The retry that came first did not land: its record says whether it was
                // refused (and written so) or failed.
                Err(false) => (self.refusal_of(&r.id), None),
            };
            let ok = outcome.is_done();
            if let Outcome::Refused(_) = &outcome {
                // Refused (again): kept a while, not retried, the profile free.
                if retrying.is_some() {
                    self.settle_record(&mut r.clone(), &outcome);
                }
                if let (Some(p), true) = (&r.profile_id, r.save) {
                    self.release_profile(&r.tenant, p, &r.id);
                }
            } else if ok {
                self.forget(&r.id, &r.dir);
                if retrying.is_some() {
                    tracing::info!(session = %r.id, profile = ?r.profile_id, "recovered session saved");
                }
                n += 1;
                if let (Some(p), true) = (&r.profile_id, r.save) {
                    self.release_profile(&r.tenant, p, &r.id);
                }
            } else {
                // A record written `failed` before was written when the save first failed.
                let failed_ago = match r.state {
                    RecordState::Failed => std::fs::metadata(self.records.path(&r.id))
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default(),
                    _ => Duration::ZERO,
                };
                self.hold_recovered(&r, failed_ago).await;
                // Listed and retried as any failed save from now on (a record the crash left
                // `running` or `ending` would otherwise wait for the next start).
                if r.state != RecordState::Failed {
                    let mut failed = r.clone();
                    failed.state = RecordState::Failed;
                    failed.refused = None;
                    self.write_record(&failed);
                }
            }
            if let Some(g) = retrying {
                g.finish(ok);
            }
            self.recovering.fetch_sub(1, Ordering::SeqCst);
        }
        n
    }
}
