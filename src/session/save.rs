//! How a session ends: stop the browser cleanly, merge pending bookmarks, save a new
//! generation (or keep the directory and record for a retry when the save fails, or for a
//! while when it is refused), release the lease and the local lock, and forget the session.

use super::*;

/// How a save of a kept directory ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Saved, kept as a non-head generation, or nothing to save: the directory can go.
    Done,
    /// Failed: the directory is kept for a retry, and the profile held until it lands.
    Failed,
    /// Refused for what the profile holds (a restore of it would refuse it): retrying
    /// cannot land, so it is not retried and the profile not held; the directory is kept
    /// for `sessions.keep_refused_saves` seconds.
    Refused(Refusal),
}

impl Outcome {
    /// Whether nothing is left to do.
    pub(super) fn is_done(&self) -> bool {
        matches!(self, Outcome::Done)
    }
}

impl Manager {
    pub(super) async fn finish(self: Arc<Self>, s: Arc<Session>) {
        let mut record = Record {
            id: s.id.clone(),
            tenant: s.tenant.clone(),
            profile_id: s.profile_id.clone(),
            save: s.save,
            base_generation: s.base_generation,
            dir: s.dir.clone(),
            pid: 0,
            created_at: s.created_at,
            state: RecordState::Ending,
            identity: s.identity.clone(),
            refused: None,
        };
        self.publish(&s).await;
        if s.profile_id.is_some() {
            self.notify(Event::AdminTokenRetired {
                token_sha256: crate::crypt::hex(&s.admin_token_hash),
            })
            .await;
        }
        if let Some(mut b) = s.browser.lock().await.take() {
            record.pid = b.pid();
            self.write_record(&record);
            b.close(self.cfg.close_deadline).await;
        }
        let bookmarks = std::mem::take(&mut *s.pending_bookmarks.lock().expect("bookmarks"));
        if !bookmarks.is_empty() {
            let dir = s.dir.clone();
            let merged = tokio::task::spawn_blocking(move || {
                crate::live::bookmarks::merge_into(&dir, &bookmarks)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match merged {
                Ok(n) => {
                    tracing::info!(session = %s.id, added = n, "bookmarks merged into the profile")
                }
                Err(e) => {
                    tracing::warn!(session = %s.id, error = %e, "could not merge bookmarks into the profile")
                }
            }
        }
        let (outcome, shown) = self.save_record(&record, Some(&s)).await;
        self.settle_record(&mut record, &outcome);
        // The store lease first, then the local lock: whoever takes the profile next finds both free.
        // A failed save holds both until it is retried (`held`).
        let lease = s.lease.take().await;
        if let (Some(p), true) = (&s.profile_id, s.save) {
            if outcome != Outcome::Failed {
                if let Some(l) = lease {
                    if let Err(e) = self.vault.release_lease(&l).await {
                        tracing::warn!(session = %s.id, error = %e, "could not release the profile lease; it expires by itself");
                    }
                }
                self.release_profile(&s.tenant, p, &s.id);
            } else {
                self.hold(&s.tenant, p, &s.id, lease, std::time::Duration::ZERO);
            }
        }
        // Shown once the profile is free: a client that sees `saved` loads it at once.
        Self::show(&s, shown);
        self.counters.ended.fetch_add(1, Ordering::Relaxed);
        self.publish(&s).await;
        s.done.send_replace(true);
        if let Some(hook) = &s.webhook {
            let info = s.info();
            let body = serde_json::json!({"session_id": s.id, "type": "ended", "reason": info.end_reason, "termination_date": info.termination_date, "save": info.save});
            if let Err(e) = webhook::send(hook, &body, self.cfg.browser.egress()).await {
                tracing::warn!(session = %s.id, error = %e, "timeout webhook (ended) not delivered");
            }
        }
    }

    /// What a save's outcome leaves of session `record`: nothing when it is done (directory
    /// and record removed); otherwise the record, rewritten as failed or refused.
    pub(super) fn settle_record(&self, record: &mut Record, outcome: &Outcome) {
        match outcome {
            Outcome::Done => self.forget(&record.id, &record.dir),
            Outcome::Failed => {
                record.state = RecordState::Failed;
                record.refused = None;
                self.write_record(record);
            }
            Outcome::Refused(why) => {
                // When it was first refused (the directory's keep counts from the record's
                // last write: see `expire_refused`).
                let at = record.refused.as_ref().map_or(why.at, |w| w.at.min(why.at));
                record.state = RecordState::Refused;
                record.refused = Some(Refusal {
                    at,
                    reason: why.reason.clone(),
                });
                self.write_record(record);
            }
        }
    }

    /// Saves a stopped browser's directory; the outcome, and the save state to show once
    /// the caller has done with the profile (a client that sees `saved` may load it at once).
    // Eight plain facts of one save; a struct for them belongs to the session refactor (#25).
    #[allow(clippy::too_many_arguments)]
    async fn save_dir(
        &self,
        tenant: &str,
        profile: Option<&str>,
        save: bool,
        base: Option<u64>,
        dir: &Path,
        identity: &vault::Identity,
        s: Option<&Session>,
    ) -> (Outcome, Option<SaveState>) {
        let (Some(profile), true) = (profile, save) else {
            return (Outcome::Done, None);
        };
        if !dir.is_dir() {
            return (Outcome::Done, None);
        }
        let waiting = &crate::metrics::METRICS.saves_waiting;
        waiting.fetch_add(1, Ordering::Relaxed);
        let _slot = self
            .save_slots
            .acquire()
            .await
            .expect("semaphore never closed");
        waiting.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = s {
            s.status.lock().expect("status lock").save = SaveState::Saving;
            self.publish(s).await;
        }
        let t = std::time::Instant::now();
        let actor = match s {
            Some(s) => match s.status.lock().expect("status lock").ended.map(|(_, r)| r) {
                Some(EndReason::Client) => format!("api-key:{tenant}"),
                Some(EndReason::Admin) => format!("admin-token:{}", s.id),
                Some(other) => format!(
                    "daemon:{}",
                    serde_json::to_value(other)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                None => "daemon".into(),
            },
            None => "daemon:recovery".into(),
        };
        // The ids come from the session's record: checked again, as anything read back is
        // (an invalid one fails like any other save).
        let r = match crate::layout::ProfileAddr::new(tenant, profile) {
            Ok(at) => {
                self.vault
                    .with_actor(&actor)
                    .save_with(&at, dir, Base::Expect(base), identity, Arc::new(NoProgress))
                    .await
            }
            Err(e) => Err(e.into()),
        };
        self.counters
            .save_ms
            .fetch_add(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        crate::metrics::METRICS.save_seconds.observe(t.elapsed());
        let (outcome, shown) = match r {
            Ok(rep) => {
                self.counters.saves_ok.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_saved
                    .fetch_add(rep.bytes_stored, Ordering::Relaxed);
                (
                    Outcome::Done,
                    SaveState::Saved {
                        generation: rep.generation,
                    },
                )
            }
            // Another save moved the head first: this generation is stored and listed, so
            // nothing is lost and the directory can go; the head is not moved over theirs.
            Err(vault::Error::Conflict { kept, head, .. }) => {
                self.counters.saves_ok.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant, profile, kept, ?head, "the profile moved on while this session ran: saved as a non-head generation (roll back to it to use it)");
                (
                    Outcome::Done,
                    SaveState::Conflict {
                        generation: kept,
                        head,
                    },
                )
            }
            Err(e) if e.is_refusal() => {
                self.counters.saves_failed.fetch_add(1, Ordering::Relaxed);
                let keep = self.cfg.keep_refused.as_secs();
                tracing::error!(tenant, profile, error = %e, dir = %dir.display(), keep_secs = keep, "the save was refused for good (the error says why); the profile stays at its last generation, and the directory is kept, not retried, for sessions.keep_refused_saves");
                (
                    Outcome::Refused(Refusal {
                        at: now_ms() / 1000,
                        reason: e.to_string(),
                    }),
                    SaveState::Refused {
                        error: e.to_string(),
                    },
                )
            }
            Err(e) => {
                self.counters.saves_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(tenant, profile, error = %e, dir = %dir.display(), "saving the profile failed; its directory is kept");
                (
                    Outcome::Failed,
                    SaveState::Failed {
                        error: e.to_string(),
                    },
                )
            }
        };
        (outcome, Some(shown))
    }

    /// Shows `shown` as session `s`'s save state (and its generation, once saved).
    pub(super) fn show(s: &Session, shown: Option<SaveState>) {
        let Some(shown) = shown else { return };
        let mut st = s.status.lock().expect("status lock");
        if let SaveState::Saved { generation } = shown {
            st.generation = Some(generation);
        }
        st.save = shown;
    }

    /// Saves the directory a session record names (see [`Manager::save_dir`]).
    pub(super) async fn save_record(
        &self,
        r: &Record,
        s: Option<&Session>,
    ) -> (Outcome, Option<SaveState>) {
        if let (Some(p), true) = (&r.profile_id, r.save) {
            if let Some(other) = self.other_holder(&r.tenant, p, &r.id).await {
                // Another session (on a node that took the profile over while this one was
                // down, or once its hold ran out) has it loaded: moving the head now would
                // leave that session's save a conflict. Retried once it is free.
                tracing::warn!(session = %r.id, profile = %p, holder = %other, "another session holds the profile: this save waits for it");
                return (
                    Outcome::Failed,
                    Some(SaveState::Failed {
                        error: format!(
                            "another session ({other}) holds the profile; retried once it is free"
                        ),
                    }),
                );
            }
        }
        self.save_dir(
            &r.tenant,
            r.profile_id.as_deref(),
            r.save,
            r.base_generation,
            &r.dir,
            &r.identity,
            s,
        )
        .await
    }

    /// The session other than `id` (of this node) holding the live lease of `profile`, if
    /// any, as "node/session". A lease that cannot be read is no one's here (the save
    /// fails on the store as well, or its head check guards it).
    async fn other_holder(&self, tenant: &str, profile: &str, id: &str) -> Option<String> {
        let at = crate::layout::ProfileAddr::new(tenant, profile).ok()?;
        match self.vault.lease_holder(&at).await {
            Ok(Some((node, session))) if !(node == self.node_id && session == id) => {
                Some(format!("{node}/{session}"))
            }
            _ => None,
        }
    }

    /// Removes a finished session's directory and record.
    pub(super) fn forget(&self, id: &str, dir: &Path) {
        // Only ever the session's own browser directory (records are checked when read,
        // and this holds whatever a caller passes).
        if dir == self.records.browser_dir(id) {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_file(self.record_path(id));
    }
}
