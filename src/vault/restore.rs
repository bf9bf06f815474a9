//! Reading a generation back: fetch and authenticate the whole object, extract through a
//! re-authenticating reader into a staging directory renamed into place; verify.

use super::*;

impl Vault {
    /// Makes a generation's payload available as a local file and authenticates all of it.
    ///
    /// On a local store the stored file itself is read; otherwise the (encrypted) object is
    /// downloaded into a private temporary file first. Then every chunk is verified, before
    /// anything is extracted; extraction reads the plaintext through [`stream::RandomAccess`],
    /// which authenticates each chunk again. No plaintext copy is ever written.
    pub(super) async fn fetch(
        &self,
        at: &ProfileAddr,
        generation: u64,
        progress: Arc<dyn Progress>,
    ) -> Result<Fetched> {
        let rec = self.read_record(at, generation).await?;
        self.fetch_record(rec, progress).await
    }

    /// [`Vault::fetch`] of the generation of a record already read (and checked) with
    /// [`Vault::read_record`].
    pub(super) async fn fetch_record(
        &self,
        rec: GenerationRecord,
        progress: Arc<dyn Progress>,
    ) -> Result<Fetched> {
        let dek = self.unwrap_record(&rec).await?;
        let at = &ProfileAddr::new(&rec.tenant, &rec.profile)?;
        let (tenant, profile, generation) = (at.tenant(), at.profile(), rec.generation);
        let key = at.generation(generation, GenFile::Payload);
        let not_found = || Error::GenerationNotFound {
            profile: profile.into(),
            generation,
        };
        let (file, temp) = match self.store.local_path(&key) {
            Some(path) => match std::fs::File::open(&path) {
                Ok(f) => (f, None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) => return Err(Error::Io { path, source: e }),
            },
            None => {
                let got = match self.store.get(&key).await {
                    Ok(g) => g,
                    Err(store::Error::NotFound { .. }) => return Err(not_found()),
                    Err(e) => return Err(e.into()),
                };
                let temp = TempFile(self.spool_file("download"));
                progress.start("downloading", got.meta.size);
                // A body cut mid-way is retried from the start a few times.
                let mut got = Some(got);
                let mut attempt = 0u32;
                loop {
                    let g = match got.take() {
                        Some(g) => g,
                        None => self.store.get(&key).await?,
                    };
                    let _ = std::fs::remove_file(&temp.0);
                    match download(g, &temp.0, progress.as_ref()).await {
                        Ok(()) => break,
                        Err(Error::Store(e)) if e.is_transient() && attempt < 4 => {
                            attempt += 1;
                            tracing::info!(key, attempt, error = %e, "download interrupted; starting it again");
                            tokio::time::sleep(std::time::Duration::from_millis(
                                200 * u64::from(attempt),
                            ))
                            .await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                progress.finish();
                let f = std::fs::File::open(&temp.0).map_err(io_at(&temp.0))?;
                (f, Some(temp))
            }
        };
        let (tenant_s, profile_s, object_id) = (
            tenant.to_string(),
            profile.to_string(),
            rec.object_id.clone(),
        );
        progress.start("verifying", 0);
        let key2 = dek.clone();
        let (version, reader) = blocking(move || {
            let expected = Expected {
                tenant: &tenant_s,
                profile: &profile_s,
                generation: Some(generation),
                object_id: Some(&object_id),
            };
            let (_, version, reader) = format::verify_file(Arc::new(file), &key2, &expected)?;
            Ok((version, reader))
        })
        .await?;
        progress.finish();
        // The record and the payload must agree on what the payload is.
        let chunked = rec.format == RECORD_FORMAT_CHUNKED;
        if chunked != (version == format::VERSION_CHUNKED) {
            return Err(Error::BadRecord {
                key: at.generation(generation, GenFile::Record),
                reason: format!(
                    "record format {} does not go with payload version {version}",
                    rec.format
                ),
            });
        }
        Ok(Fetched {
            rec,
            dek,
            reader,
            temp,
        })
    }

    /// Restores a generation (the head when `None`) into `target`, which must be new or empty.
    ///
    /// # Errors
    /// Not found, integrity, hostile-archive, key and storage errors; on any error nothing is
    /// left at `target` or beside it.
    pub async fn restore(
        &self,
        at: &ProfileAddr,
        generation: Option<u64>,
        target: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let r = self.restore_inner(at, generation, target, progress).await;
        // The last-use mark and the audit record are written at once (each is a durable
        // write: on a local disk, two fsyncs one after the other were a tenth of a restore).
        let touch = async {
            if r.is_ok() {
                self.touch_last_used(at).await;
            }
        };
        let g = r.as_ref().ok().map(|rep| rep.generation).or(generation);
        let audit = async {
            if !matches!(r, Err(Error::InvalidId { .. })) {
                self.record(crate::audit::Action::Load, tenant, Some(profile), g, &r)
                    .await;
            }
        };
        tokio::join!(touch, audit);
        r
    }

    pub(super) async fn restore_inner(
        &self,
        at: &ProfileAddr,
        generation: Option<u64>,
        target: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let (tenant, profile) = (at.tenant(), at.profile());
        let generation = self.resolve(at, generation).await?;
        archive::check_target(target)?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::create_private_dir(parent).map_err(io_at(parent))?;
        }
        let fetched = self.fetch(at, generation, progress.clone()).await?;
        let r = self
            .unpack(at, generation, fetched, Some(target), progress)
            .await?;
        tracing::info!(
            tenant,
            profile,
            generation,
            files = r.unpacked.files,
            bytes = r.unpacked.bytes,
            "profile restored"
        );
        Ok(r)
    }

    /// Extracts a fetched generation into `target` (new or empty), or with `None` checks
    /// every entry (format 1) or chunk (format 2) and writes nothing.
    async fn unpack(
        &self,
        at: &ProfileAddr,
        generation: u64,
        fetched: Fetched,
        target: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let profile = at.profile();
        let chromium_version = fetched.rec.stats.chromium_version.clone();
        let _slot = self.work_slot().await;
        let unpacked = if fetched.rec.format == RECORD_FORMAT_CHUNKED {
            self.restore_chunked(at, generation, fetched, target, progress)
                .await?
        } else {
            let Fetched { reader, temp, .. } = fetched;
            let (target, limits) = (target.map(Path::to_path_buf), self.opts.limits.clone());
            let unpacked = blocking(move || {
                let open = || Ok(reader.clone());
                Ok(match &target {
                    Some(t) => archive::unpack_from(&open, t, &limits, progress.as_ref())?,
                    None => archive::check_from(&open, &limits)?,
                })
            })
            .await?;
            drop(temp);
            unpacked
        };
        Ok(RestoreReport {
            profile: profile.into(),
            generation,
            unpacked,
            chromium_version,
        })
    }

    /// Fully verifies a generation (the head when `None`): record, key, every chunk, and
    /// every archive entry (names, limits, sizes and CRCs), writing nothing.
    ///
    /// # Errors
    /// The first problem found.
    pub async fn verify(
        &self,
        at: &ProfileAddr,
        generation: Option<u64>,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let generation = self.resolve(at, generation).await?;
        let fetched = self.fetch(at, generation, progress.clone()).await?;
        self.unpack(at, generation, fetched, None, progress).await
    }
}

/// A generation's payload, authenticated, and what opened it.
pub(super) struct Fetched {
    /// Its record.
    pub rec: GenerationRecord,
    /// Its data key (format 2: the profile's content key).
    pub dek: DataKey,
    /// The verified plaintext.
    pub reader: stream::RandomAccess,
    /// The downloaded copy, removed when dropped.
    pub temp: Option<TempFile>,
}

/// Streams an object into a new private file.
async fn download(got: store::GetResult, path: &Path, progress: &dyn Progress) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = got.meta.key.clone();
    let mut body = got.body;
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io_at(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).await.map_err(|e| {
            Error::Store(store::Error::Unavailable {
                op: "get",
                key: key.clone(),
                message: e.to_string(),
            })
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await.map_err(io_at(path))?;
        progress.advance(n as u64);
    }
    out.flush().await.map_err(io_at(path))?;
    Ok(())
}
