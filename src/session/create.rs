//! `POST /v0/vm`: a session's creation as named steps — reserve a slot, resolve the profile
//! to load (and what is pinned to it), claim it (this node's lock, the store's lease),
//! start the browser ([`super::start`]), then assemble and register the session. A step
//! that fails gives back what the ones before took (the [`StartGuard`]).

use super::start::StartGuard;
use super::*;
use crate::layout::ProfileAddr;

/// The profile a new session runs on, as resolved before anything starts.
struct ProfilePlan {
    /// The profile (named by its first session's id), if the session has one.
    at: Option<ProfileAddr>,
    save: bool,
    loaded: bool,
    /// The generation to restore (the head when it was resolved).
    base_generation: Option<u64>,
    /// Its data document, read before the start (an unreadable one fails the request).
    data_at_load: Option<vault::DataDoc>,
    /// The browser identity pinned to it.
    pinned: vault::Identity,
}

/// What [`Manager::launch`] left: the browser running, its record, and what it holds.
struct Started {
    record: Record,
    /// When the record was made, on [`timer::mono_ms`]'s clock.
    created_mono: u64,
    plan: ProfilePlan,
    lease: Option<vault::Lease>,
    browser: crate::browser::Browser,
}

/// A fresh admin token (shown once; only its hash is kept).
fn new_admin_token() -> String {
    let mut token_bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token_bytes);
    base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        token_bytes,
    )
}

impl Manager {
    /// Starts a session: restores its profile (if any), then starts Chromium.
    /// Returns the session and its admin token (shown once).
    ///
    /// # Errors
    /// Limits, profile-in-use, unknown profile, failed restore (the session is not started),
    /// browser start failures.
    pub async fn create(
        self: &Arc<Self>,
        tenant: &str,
        req: CreateSession,
        ignored: Vec<String>,
    ) -> Result<(Arc<Session>, String), Error> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let id = uuid::Uuid::new_v4().to_string();
        // The slot is reserved atomically before the slow start, and the guard gives
        // everything back if the start does not finish (an error, or a client that went
        // away and dropped this future).
        let mut guard = self.reserve_slot(tenant, &id)?;
        let admin_token = new_admin_token();
        let mut plan = self.plan_profile(tenant, &req, &id).await?;
        if let (Some(at), true) = (&plan.at, plan.loaded) {
            // A failed save of this profile on this node lands first, or the load waits.
            if self.settle_held(tenant, at.profile()).await && plan.save {
                return Err(Error::SavePending(at.profile().to_string()));
            }
        }
        let lease = self.claim_profile(tenant, &plan, &id, &mut guard).await?;
        if plan.loaded && self.head_moved(tenant, &req, &plan).await? {
            // Another session saved the profile between the plan and the claim (or the
            // held save just landed): the new head is what is loaded.
            plan = self.plan_profile(tenant, &req, &id).await?;
        }
        // The absolute timeout counts from here (on the deadlines' clock).
        let created_mono = timer::mono_ms();
        let record = Record {
            id: id.clone(),
            tenant: tenant.into(),
            profile_id: plan.at.as_ref().map(|a| a.profile().to_string()),
            save: plan.save,
            base_generation: plan.base_generation,
            dir: self.records.browser_dir(&id),
            pid: 0,
            created_at: now_ms() / 1000,
            state: RecordState::Starting,
            identity: plan.pinned.overridden_by(&req.identity),
            refused: None,
        };
        let (browser, record) = self
            .launch(tenant, &req, record, &plan, lease.as_ref(), &mut guard)
            .await?;
        let started = Started {
            record,
            created_mono,
            plan,
            lease,
            browser,
        };
        let session = self.assemble(&req, ignored, &admin_token, started).await;
        self.register(&session).await;
        Ok((session, admin_token))
    }

    /// Which profile the session runs on: none, a new one (named after the session), or one
    /// to load — resolved by its id or a later session's, checked against this node's
    /// browser, its data document and pinned identity read.
    async fn plan_profile(
        &self,
        tenant: &str,
        req: &CreateSession,
        id: &str,
    ) -> Result<ProfilePlan, Error> {
        let mut plan = ProfilePlan {
            at: None,
            save: false,
            loaded: false,
            base_generation: None,
            data_at_load: None,
            pinned: vault::Identity::default(),
        };
        match &req.profile {
            ProfileRequest::None => {}
            ProfileRequest::New => {
                plan.at = Some(ProfileAddr::new(tenant, id).map_err(vault::Error::from)?);
                plan.save = true;
            }
            ProfileRequest::Load { id: load_id, save } => {
                ProfileAddr::new(tenant, load_id)
                    .map_err(|_| Error::ProfileNotFound(load_id.clone()))?;
                let Some((p, g)) = self.vault.resolve_profile(tenant, load_id).await? else {
                    return Err(Error::ProfileNotFound(load_id.clone()));
                };
                let at = ProfileAddr::new(tenant, &p).map_err(vault::Error::from)?;
                if !self.cfg.allow_older_browser {
                    self.vault
                        .check_browser(&at, g, self.cfg.browser_version.as_deref())
                        .await?;
                }
                // Read before anything starts: a document that cannot be read fails the
                // request and changes nothing.
                plan.data_at_load = Some(self.vault.data(&at).await?);
                if let Some((_, meta)) = self.vault.meta(&at, g).await? {
                    plan.pinned = meta.identity;
                }
                plan.at = Some(at);
                plan.save = *save;
                plan.loaded = true;
                plan.base_generation = g;
            }
        }
        Ok(plan)
    }

    /// Whether the profile's head is no longer the generation `plan` resolved.
    async fn head_moved(
        &self,
        tenant: &str,
        req: &CreateSession,
        plan: &ProfilePlan,
    ) -> Result<bool, Error> {
        let ProfileRequest::Load { id: load_id, .. } = &req.profile else {
            return Ok(false);
        };
        Ok(match self.vault.resolve_profile(tenant, load_id).await? {
            Some((_, g)) => g != plan.base_generation,
            None => true,
        })
    }

    /// A saving session holds its profile: this node's lock, and across nodes a lease in
    /// the store (only a continued profile can be contended).
    async fn claim_profile(
        &self,
        tenant: &str,
        plan: &ProfilePlan,
        id: &str,
        guard: &mut StartGuard,
    ) -> Result<Option<vault::Lease>, Error> {
        let (Some(at), true) = (&plan.at, plan.save) else {
            return Ok(None);
        };
        let p = &at.profile().to_string();
        {
            let mut m = self.saving.lock().expect("saving lock");
            let k = (tenant.to_string(), p.clone());
            if m.contains_key(&k) {
                return Err(Error::ProfileInUse(p.clone()));
            }
            m.insert(k, id.to_string());
            guard.profile = Some(p.clone());
        }
        if !plan.loaded {
            return Ok(None);
        }
        // A task of its own, held by the guard: a client that goes away while the lease is
        // written leaves it to the guard to release.
        let (vault, at2, node, id2, ttl) = (
            self.vault.clone(),
            at.clone(),
            self.node_id.clone(),
            id.to_string(),
            self.cfg.lease_ttl,
        );
        let task = guard.leasing.insert(tokio::spawn(async move {
            vault.acquire_lease(&at2, &node, &id2, ttl).await
        }));
        let lease = task.await.unwrap_or_else(|e| {
            Err(vault::Error::Io {
                path: "<lease>".into(),
                source: std::io::Error::other(e),
            })
        });
        guard.leasing = None;
        match lease {
            Ok(Some(l)) => {
                guard.lease = Some(l.clone());
                Ok(Some(l))
            }
            Ok(None) => {
                self.release_profile(tenant, p, id);
                Err(Error::ProfileInUse(p.clone()))
            }
            Err(e) => {
                self.release_profile(tenant, p, id);
                Err(e.into())
            }
        }
    }

    /// Restores the profile and starts the browser; its record says `running` after. On
    /// failure everything the session took is given back before the error is answered (so
    /// the client's next attempt finds the profile free).
    async fn launch(
        &self,
        tenant: &str,
        req: &CreateSession,
        mut record: Record,
        plan: &ProfilePlan,
        lease: Option<&vault::Lease>,
        guard: &mut StartGuard,
    ) -> Result<(crate::browser::Browser, Record), Error> {
        let id = record.id.clone();
        let started = self
            .start_browser(tenant, req, &record, plan.loaded, guard)
            .await;
        let browser = match started {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&record.dir);
                let _ = std::fs::remove_file(self.record_path(&id));
                if let Some(l) = lease {
                    if let Err(le) = self.vault.release_lease(l).await {
                        tracing::warn!(session = %id, error = %le, "could not release the profile lease; it expires by itself");
                    }
                }
                if let (Some(at), true) = (&plan.at, plan.save) {
                    self.release_profile(tenant, at.profile(), &id);
                }
                return Err(e);
            }
        };
        record.pid = browser.pid();
        record.state = RecordState::Running;
        self.write_record(&record);
        guard.armed = false;
        if let (true, Some(at)) = (plan.loaded, &plan.at) {
            if let Err(e) = self.vault.write_alias(tenant, &id, at.profile()).await {
                tracing::warn!(session = %id, error = %e, "could not record the session alias of the profile");
            }
        }
        Ok((browser, record))
    }

    /// The session around a started browser: its live view (on the browser's display when
    /// it has one), room, timer and state.
    async fn assemble(
        &self,
        req: &CreateSession,
        ignored: Vec<String>,
        admin_token: &str,
        started: Started,
    ) -> Arc<Session> {
        let Started {
            record,
            created_mono,
            plan,
            lease,
            browser,
        } = started;
        let (id, created_at) = (record.id.clone(), record.created_at);
        let cdp = browser.mux().clone();
        let display = start::open_display(&browser, &id, self.cfg.live.jpeg_quality).await;
        let live = crate::live::Live::new(
            self.cfg.live.clone(),
            cdp.clone(),
            display,
            (browser.uploads_dir().is_some(), req.control_disable_default),
            browser.tabs_extension(),
        );
        let downloads = browser
            .home_dir()
            .map(|h| crate::live::downloads::Downloads::new(&h));
        let uploads = browser
            .uploads_dir()
            .map(|(dir, uid)| crate::live::uploads::Uploads::new(&dir, uid));
        let (done, _) = tokio::sync::watch::channel(false);
        Arc::new(Session {
            uploads,
            downloads,
            id: id.clone(),
            node: self.node_id.clone(),
            tenant: record.tenant.clone(),
            admin_token_hash: token_hash(admin_token),
            save: plan.save,
            loaded: plan.loaded,
            base_generation: plan.base_generation,
            created_at,
            timer: timer::Timer::new(req.timeouts, req.warning.unwrap_or(60), created_mono),
            ignored,
            default_roles: req.default_roles.clone(),
            dir: record.dir.clone(),
            cdp,
            browser: tokio::sync::Mutex::new(Some(browser)),
            lease: lease::KeptLease::new(lease, timer::mono_ms()),
            webhook: req.webhook.clone(),
            auth: req.auth.clone(),
            status: Mutex::new(Status {
                ended: None,
                save: if plan.save {
                    SaveState::Pending
                } else {
                    SaveState::None
                },
                generation: plan.base_generation,
            }),
            done,
            live,
            room: crate::room::Room::new(self.cfg.room.clone()),
            pending_bookmarks: Mutex::new(Vec::new()),
            data_at_load: plan.data_at_load,
            identity: record.identity.clone(),
            published: tokio::sync::Mutex::new(()),
            profile_id: plan.at.map(|a| a.profile().to_string()),
        })
    }

    /// The session joins the manager's map and its public record is published.
    async fn register(&self, session: &Arc<Session>) {
        let id = session.id.clone();
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(id.clone(), session.clone());
        self.counters.started.fetch_add(1, Ordering::Relaxed);
        self.publish(session).await;
        if session.profile_id.is_some() {
            // Its admin token reaches the profile's data document through any node.
            self.notify(Event::AdminTokenIssued {
                token_sha256: crate::crypt::hex(&session.admin_token_hash),
                session_id: id.clone(),
            })
            .await;
        }
        tracing::info!(session = %id, tenant = %session.tenant, profile = ?session.profile_id, loaded = session.loaded, save = session.save, "session started");
    }
}
