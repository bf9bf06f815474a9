//! A profile's head, lease and history under writers at once: what a save planned from is
//! still what it follows when others rewrote the head naming the same generation; writes
//! (a lease's, the head's, a data document's) whose answer was lost are recognised; a rekey,
//! a rollback and a delete against saves and sessions running meanwhile.

use std::sync::Arc;

use profile_vault::vault::{Base, Vault};

use crate::common::hooked::{Hooked, PutHook, RefuseDeletes};
use crate::common::*;

/// Runs, when the save starts uploading, `rollback` to 1 and back to 2 from another vault
/// on the same store (an operator), and waits for both.
struct AwayAndBack(std::path::PathBuf, std::sync::atomic::AtomicBool);

impl profile_vault::Progress for AwayAndBack {
    fn start(&self, label: &str, _: u64) {
        if label != "uploading" || self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let dir = self.0.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (operator, _) = fs_vault(&dir);
                assert_eq!(
                    operator
                        .rollback(&addr("t1", "p1"), 1)
                        .await
                        .unwrap()
                        .generation,
                    1
                );
                assert_eq!(
                    operator
                        .rollback(&addr("t1", "p1"), 2)
                        .await
                        .unwrap()
                        .generation,
                    2
                );
                // A rollback to where the head is changes nothing.
                operator.rollback(&addr("t1", "p1"), 2).await.unwrap();
            });
        })
        .join()
        .unwrap();
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A save based on generation 2, while an operator rolls the head to 1 and back to 2: the
/// head is where the save planned from, so the save moves it (it was a conflict, and a
/// session's work was left as a non-head generation, its directory removed).
#[tokio::test]
async fn a_save_follows_a_head_rolled_away_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _): (Vault, _) = fs_vault(dir.path());
    let at = addr("t1", "p1");
    for variant in ["a", "b"] {
        save_variant(&vault, &at, dir.path(), variant)
            .await
            .unwrap();
    }
    let src = dir.path().join("c");
    make_profile(&src, "c");
    let progress = Arc::new(AwayAndBack(dir.path().to_path_buf(), false.into()));
    let r = vault
        .save(&at, &src, Base::Expect(Some(2)), progress.clone())
        .await
        .unwrap();
    assert!(progress.1.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(r.generation, 3);
    let restored = vault
        .restore(
            &at,
            None,
            &dir.path().join("dst"),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(restored.generation, 3);
    // A rollback to the head does not rewrite it (a save planned from it would find another
    // version there).
    let store = profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap();
    let before = profile_vault::Store::head(&store, &at.head())
        .await
        .unwrap()
        .etag;
    vault.rollback(&at, 3).await.unwrap();
    let after = profile_vault::Store::head(&store, &at.head())
        .await
        .unwrap()
        .etag;
    assert_eq!(before, after);
}

/// The next write of a lease lands and then answers as a retry of it would once its first
/// attempt's answer was lost (`armed`: the version it was conditional on is gone), or as a
/// call whose retries ran out (`fail`).
#[derive(Debug, Default)]
struct LostLeaseAnswer {
    armed: std::sync::atomic::AtomicBool,
    fail: std::sync::atomic::AtomicBool,
}

impl PutHook for LostLeaseAnswer {
    fn after(&self, key: &str, etag: String) -> profile_vault::store::Result<String> {
        use std::sync::atomic::Ordering::SeqCst;
        if !key.ends_with("/lease.json") {
            return Ok(etag);
        }
        if self.armed.swap(false, SeqCst) {
            return Err(profile_vault::store::Error::Precondition { key: key.into() });
        }
        if self.fail.swap(false, SeqCst) {
            return Err(profile_vault::store::Error::Unavailable {
                op: "put",
                key: key.into(),
                message: "timed out".into(),
            });
        }
        Ok(etag)
    }
}

/// A renewal that landed with its answer lost keeps the lease (it was given up, and another
/// node took the profile 30 s later while this session ran on); one overtaken by another
/// holder still loses it.
#[tokio::test]
async fn a_lease_renewal_whose_answer_was_lost_keeps_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap());
    let store = Arc::new(Hooked {
        inner: inner.clone(),
        hook: LostLeaseAnswer::default(),
    });
    let vault = Vault::new(
        store.clone(),
        keyring("k1", 1),
        options(&dir.path().join("spool")),
    )
    .unwrap();
    let at = addr("t1", "p1");
    let ttl = std::time::Duration::from_secs(30);
    let mut lease = vault
        .acquire_lease(&at, "n1", "s1", ttl)
        .await
        .unwrap()
        .unwrap();
    store
        .hook
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        vault.renew_lease(&mut lease, ttl).await.unwrap(),
        "the renewal landed"
    );
    // Still ours at the version it wrote: the next renewal and the release go through.
    assert!(vault.renew_lease(&mut lease, ttl).await.unwrap());
    // A renewal that failed after its write landed: the next one finds the version it
    // wrote there, and renews from it.
    store
        .hook
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(vault.renew_lease(&mut lease, ttl).await.is_err());
    assert!(
        vault.renew_lease(&mut lease, ttl).await.unwrap(),
        "lost after a failed call"
    );
    // A first write of the lease whose answer was lost is ours too.
    let at2 = addr("t1", "p2");
    store
        .hook
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let first = vault.acquire_lease(&at2, "n1", "s9", ttl).await.unwrap();
    assert!(first.is_some(), "its own lease refused");
    assert!(vault
        .acquire_lease(&at, "n2", "s2", ttl)
        .await
        .unwrap()
        .is_none());
    // Another holder's write in between: lost, as before.
    let other = Vault::new(inner, keyring("k1", 1), options(&dir.path().join("spool2"))).unwrap();
    vault.release_lease(&lease).await.unwrap();
    let theirs = other.acquire_lease(&at, "n2", "s2", ttl).await.unwrap();
    assert!(theirs.is_some());
    assert!(!vault.renew_lease(&mut lease, ttl).await.unwrap());
}

/// A save continuing a profile deleted meanwhile stores nothing (it was a generation nobody
/// could list or load) and says why.
#[tokio::test]
async fn a_save_of_a_profile_deleted_meanwhile_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = fs_vault(dir.path());
    let at = addr("t1", "p1");
    save_variant(&vault, &at, dir.path(), "a").await.unwrap();
    vault.delete(&at).await.unwrap();
    let e = vault
        .save(
            &at,
            &dir.path().join("a"),
            Base::Expect(Some(1)),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, profile_vault::vault::Error::ProfileDeleted { .. }) && e.is_refusal(),
        "{e}"
    );
    let left: Vec<String> = tree(&root).into_iter().map(|(p, _)| p).collect();
    // Only the audit trail and the filesystem store's lock files.
    assert!(
        left.iter()
            .all(|p| p.starts_with("audit/") || p.starts_with(".pv-locks/")),
        "stored: {left:?}"
    );
}

/// Once armed, the next write of generation 1's record is preceded by its removal (a save's
/// pruning between a rekey's read of it and its write).
#[derive(Debug)]
struct PruneBeforeRewrite {
    record: String,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PutHook for PruneBeforeRewrite {
    async fn before(
        &self,
        key: &str,
        inner: &dyn profile_vault::Store,
    ) -> profile_vault::store::Result<()> {
        if key == self.record && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            inner.delete(key).await?;
        }
        Ok(())
    }
}

/// A rekey meeting a record pruned between its read and its write skips it and goes on (it
/// stopped there, the rest of the tenant not rekeyed).
#[tokio::test]
async fn a_rekey_skips_a_record_pruned_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let at = addr("t1", "p1");
    let store = Arc::new(Hooked {
        inner: Arc::new(
            profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap(),
        ),
        hook: PruneBeforeRewrite {
            record: at.generation(1, profile_vault::layout::GenFile::Record),
            armed: false.into(),
        },
    });
    let keys = Arc::new(
        profile_vault::Keyring::from_keys(
            vec![("k1".into(), [1; 32]), ("k2".into(), [2; 32])],
            "k1",
        )
        .unwrap(),
    );
    let vault = Vault::new(store.clone(), keys, options(&dir.path().join("spool"))).unwrap();
    for variant in ["v1", "v2", "v3"] {
        save_variant(&vault, &at, dir.path(), variant)
            .await
            .unwrap();
    }
    store
        .hook
        .armed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(vault.rekey("t1", "k2", false).await.unwrap(), (2, 0));
    assert!(!store.hook.armed.load(std::sync::atomic::Ordering::SeqCst));
    // Under k2 alone, the rest still restores.
    let only_k2 = Vault::new(
        store.clone(),
        keyring("k2", 2),
        options(&dir.path().join("spool2")),
    )
    .unwrap();
    let r = only_k2
        .restore(
            &at,
            None,
            &dir.path().join("dst"),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(r.generation, 3);
}

/// Once armed, the next write of a key ending with `suffix` lands and its answer is lost:
/// the writer is told the store's retries ran out.
#[derive(Debug)]
struct LoseAnswer {
    suffix: &'static str,
    armed: std::sync::atomic::AtomicBool,
}

impl PutHook for LoseAnswer {
    fn after(&self, key: &str, etag: String) -> profile_vault::store::Result<String> {
        if key.ends_with(self.suffix) && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(profile_vault::store::Error::Unavailable {
                op: "put",
                key: key.into(),
                message: "timed out".into(),
            });
        }
        Ok(etag)
    }
}

/// A rollback, a data document's write and a save's head move whose write landed with its
/// answer lost succeed (they failed, or answered a conflict with their own write, while the
/// store held what they wrote).
#[tokio::test]
async fn writes_whose_answer_was_lost_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let at = addr("t1", "p1");
    let store = Arc::new(Hooked {
        inner: Arc::new(
            profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap(),
        ),
        hook: LoseAnswer {
            suffix: "/head.json",
            armed: false.into(),
        },
    });
    let vault = Vault::new(
        store.clone(),
        keyring("k1", 1),
        options(&dir.path().join("spool")),
    )
    .unwrap();
    let arm = || {
        store
            .hook
            .armed
            .store(true, std::sync::atomic::Ordering::SeqCst)
    };
    for (i, variant) in ["v1", "v2", "v3"].into_iter().enumerate() {
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        if i == 2 {
            arm();
        }
        let r = vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap_or_else(|e| panic!("save {variant}: {e}"));
        assert_eq!(r.generation, i as u64 + 1);
    }
    arm();
    assert_eq!(vault.rollback(&at, 1).await.unwrap().generation, 1);
    assert_eq!(vault.head(&at).await.unwrap().unwrap().0.generation, 1);
    let data = Vault::new(
        Arc::new(Hooked {
            inner: store.inner.clone(),
            hook: LoseAnswer {
                suffix: "/data.json",
                armed: true.into(),
            },
        }),
        keyring("k1", 1),
        options(&dir.path().join("spool2")),
    )
    .unwrap();
    let doc = serde_json::json!({"open": ["https://example.com"]});
    assert_eq!(
        data.set_data(&at, &doc, profile_vault::vault::DataCondition::Version(0))
            .await
            .unwrap(),
        1
    );
}

/// A rollback to a format 2 generation one of whose packs is gone is refused, the head left
/// where it was (it moved, and every load of the profile failed).
#[tokio::test]
async fn a_rollback_to_a_generation_missing_a_pack_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = fs_vault(dir.path());
    let at = addr("t1", "p1");
    for variant in ["v1", "v2"] {
        save_variant(&vault, &at, dir.path(), variant)
            .await
            .unwrap();
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(at.generation(1, profile_vault::layout::GenFile::Record)))
            .unwrap(),
    )
    .unwrap();
    let pack = record["packs"][0]
        .as_str()
        .expect("a format 2 record names its packs");
    std::fs::remove_file(root.join(at.pack(pack))).unwrap();
    let e = vault.rollback(&at, 1).await.unwrap_err();
    assert!(
        matches!(
            e,
            profile_vault::vault::Error::PackMissing { generation: 1, .. }
        ),
        "{e}"
    );
    assert_eq!(vault.head(&at).await.unwrap().unwrap().0.generation, 2);
}

/// At the delete of the head, a session starting on another node tries to take the
/// profile's lease; what it got is kept.
#[derive(Debug)]
struct StartDuringDelete {
    root: std::path::PathBuf,
    spool: std::path::PathBuf,
    got: std::sync::Mutex<Option<bool>>,
}

#[async_trait::async_trait]
impl PutHook for StartDuringDelete {
    async fn before_delete(
        &self,
        key: &str,
        _: &dyn profile_vault::Store,
    ) -> profile_vault::store::Result<()> {
        if key.ends_with("/head.json") {
            let store = Arc::new(profile_vault::store::fs::LocalFileSystem::new(&self.root)?);
            let other = Vault::new(store, keyring("k1", 1), options(&self.spool)).unwrap();
            let lease = other
                .acquire_lease(
                    &addr("t1", "p1"),
                    "n2",
                    "s2",
                    std::time::Duration::from_secs(30),
                )
                .await
                .unwrap();
            *self.got.lock().unwrap() = Some(lease.is_some());
        }
        Ok(())
    }
}

/// A delete holds the profile while it goes: a session starting meanwhile on any node finds
/// it held (it took the profile, and lost its lease and its work to the delete); a profile a
/// session holds is not deleted.
#[tokio::test]
async fn a_delete_holds_the_profile_while_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let at = addr("t1", "p1");
    let store = Arc::new(Hooked {
        inner: Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap()),
        hook: StartDuringDelete {
            root: root.clone(),
            spool: dir.path().join("spool2"),
            got: std::sync::Mutex::new(None),
        },
    });
    let vault = Vault::new(
        store.clone(),
        keyring("k1", 1),
        options(&dir.path().join("spool")),
    )
    .unwrap();
    save_variant(&vault, &at, dir.path(), "v1").await.unwrap();
    let ttl = std::time::Duration::from_secs(30);
    // Held by a session: refused, nothing deleted.
    let session = vault
        .acquire_lease(&at, "n1", "s1", ttl)
        .await
        .unwrap()
        .unwrap();
    let e = vault
        .delete_unleased(&at, "n3", "delete", ttl)
        .await
        .unwrap_err();
    assert!(
        matches!(e, profile_vault::vault::Error::Leased { .. }),
        "{e}"
    );
    assert!(vault.head(&at).await.unwrap().is_some());
    vault.release_lease(&session).await.unwrap();
    // Free: deleted, and a start in the middle of it was refused the profile.
    assert!(
        vault
            .delete_unleased(&at, "n3", "delete", ttl)
            .await
            .unwrap()
            > 0
    );
    assert_eq!(*store.hook.got.lock().unwrap(), Some(false));
    assert!(vault.list("t1").await.unwrap().is_empty());
    let e = vault
        .delete_unleased(&at, "n3", "delete", ttl)
        .await
        .unwrap_err();
    assert!(
        matches!(e, profile_vault::vault::Error::ProfileNotFound { .. }),
        "{e}"
    );
}

/// A delete that fails on one object still deletes the others (the profile, headless, is
/// listed nowhere: what a failure left stayed for good), and a delete of the same id again
/// takes what is left.
#[tokio::test]
async fn a_delete_that_fails_half_way_is_finished_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let at = addr("t1", "p1");
    let store = Arc::new(Hooked {
        inner: Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap()),
        hook: RefuseDeletes::of(&at.generation(1, profile_vault::layout::GenFile::Record)),
    });
    let vault = Vault::new(
        store.clone(),
        keyring("k1", 1),
        options(&dir.path().join("spool")),
    )
    .unwrap();
    save_variant(&vault, &at, dir.path(), "v1").await.unwrap();
    vault.delete(&at).await.unwrap_err();
    let left = store.inner.list(at.prefix()).await.unwrap();
    let keys: Vec<&str> = left.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, [store.hook.prefix.as_str()]);
    store
        .hook
        .armed
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(vault.delete(&at).await.unwrap(), 1);
    assert!(store.inner.list(at.prefix()).await.unwrap().is_empty());
}
