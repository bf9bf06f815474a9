//! A profile's head, lease and history under writers at once and failed saves: what a save
//! planned from is still what it follows when others rewrote the head naming the same
//! generation, a lease renewal whose answer was lost keeps the lease, and retention keeps
//! generations a restore can use.

use std::sync::Arc;

use profile_vault::vault::{Base, Vault};

use crate::common::hooked::{Hooked, PutHook};
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
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
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

/// Retention keeps the newest `keep` generations a restore can use: saves that failed before
/// their record take none of their places (with 3 kept, two such failures left one good one).
#[tokio::test]
async fn failed_saves_take_no_place_of_the_generations_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap());
    let mut opts = options(&dir.path().join("spool"));
    opts.keep = 3;
    let vault = Vault::new(store.clone(), keyring("k1", 1), opts).unwrap();
    let at = addr("t1", "p1");
    for i in 1..=5 {
        let src = dir.path().join(format!("v{i}"));
        make_profile(&src, &format!("v{i}"));
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap();
    }
    // Generations 4 and 5 lost their records (what a save failing after its payload leaves).
    for g in [4, 5] {
        store
            .delete(&at.generation(g, profile_vault::layout::GenFile::Record))
            .await
            .unwrap();
    }
    let src = dir.path().join("v6");
    make_profile(&src, "v6");
    let r = vault
        .save(
            &at,
            &src,
            Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(r.generation, 6);
    // 1 and 2 went at the fifth save; 3 stays with 6 (it went, and only 6 was left).
    for g in [3, 6] {
        vault
            .restore(
                &at,
                Some(g),
                &dir.path().join(format!("dst{g}")),
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap_or_else(|e| panic!("generation {g}: {e}"));
    }
}

/// A save continuing a profile deleted meanwhile stores nothing (it was a generation nobody
/// could list or load) and says why.
#[tokio::test]
async fn a_save_of_a_profile_deleted_meanwhile_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = fs_vault(dir.path());
    let at = addr("t1", "p1");
    let src = dir.path().join("a");
    make_profile(&src, "a");
    vault
        .save(
            &at,
            &src,
            Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    vault.delete(&at).await.unwrap();
    let e = vault
        .save(
            &at,
            &src,
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

/// At the delete of generation 1's record by a save's pruning, an operator rolls the head
/// back to 1 (it was pruned after the rollback's own check, and the head named a generation
/// that no longer was: the profile loaded nothing).
#[derive(Debug)]
struct RollbackAtPrune {
    at: profile_vault::layout::ProfileAddr,
    root: std::path::PathBuf,
    spool: std::path::PathBuf,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PutHook for RollbackAtPrune {
    async fn before_delete(
        &self,
        key: &str,
        _: &dyn profile_vault::Store,
    ) -> profile_vault::store::Result<()> {
        let record = self
            .at
            .generation(1, profile_vault::layout::GenFile::Record);
        if key != record || self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let store = Arc::new(profile_vault::store::fs::LocalFileSystem::new(&self.root)?);
        let operator = Vault::new(store, keyring("k1", 1), options(&self.spool)).unwrap();
        assert_eq!(operator.rollback(&self.at, 1).await.unwrap().generation, 1);
        Ok(())
    }
}

/// A rollback to a generation a running save's pruning is removing: the generation stays
/// and the head names one a restore takes.
#[tokio::test]
async fn a_rollback_to_a_generation_being_pruned_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let at = addr("t1", "p1");
    let inner: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap());
    let store = Arc::new(Hooked {
        inner: inner.clone(),
        hook: RollbackAtPrune {
            at: at.clone(),
            root: root.clone(),
            spool: dir.path().join("spool2"),
            fired: false.into(),
        },
    });
    let mut opts = options(&dir.path().join("spool"));
    opts.keep = 2;
    let vault = Vault::new(store.clone(), keyring("k1", 1), opts).unwrap();
    for i in 1..=3 {
        let src = dir.path().join(format!("v{i}"));
        make_profile(&src, &format!("v{i}"));
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap();
    }
    assert!(store.hook.fired.load(std::sync::atomic::Ordering::SeqCst));
    let restored = vault
        .restore(
            &at,
            None,
            &dir.path().join("dst"),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(restored.generation, 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dst/Local State")).unwrap(),
        r#"{"variant":"v1"}"#
    );
}

/// Once armed, at the next write of the head, a whole save of the same profile by another
/// vault on the inner store (which moves the head first and prunes).
#[derive(Debug)]
struct SaveFirst {
    root: std::path::PathBuf,
    dir: std::path::PathBuf,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl PutHook for SaveFirst {
    async fn before(
        &self,
        key: &str,
        _: &dyn profile_vault::Store,
    ) -> profile_vault::store::Result<()> {
        if !key.ends_with("/head.json")
            || !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let (root, dir) = (self.root.clone(), self.dir.clone());
        // On a thread of its own: its future is not part of this hook's.
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let store =
                    Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap());
                let mut opts = options(&dir.join("spool2"));
                opts.keep = 1;
                let other = Vault::new(store, keyring("k1", 1), opts).unwrap();
                let src = dir.join("other");
                make_profile(&src, "other");
                other
                    .save(
                        &addr("t1", "p1"),
                        &src,
                        Base::Current,
                        Arc::new(profile_vault::NoProgress),
                    )
                    .await
                    .unwrap()
            })
        })
        .join()
        .unwrap();
        assert_eq!(r.generation, 3);
        Ok(())
    }
}

/// A save that loses a conflict to one that pruned meanwhile: its generation is kept, as its
/// report says (with one generation kept, the winner's pruning deleted it before the loser
/// learned it lost), and by later saves too (for `TIP_KEEP`).
#[tokio::test]
async fn a_generation_kept_by_a_conflict_is_not_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let at = addr("t1", "p1");
    let store = Arc::new(Hooked {
        inner: Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap()),
        hook: SaveFirst {
            root: root.clone(),
            dir: dir.path().to_path_buf(),
            armed: false.into(),
        },
    });
    let mut opts = options(&dir.path().join("spool"));
    opts.keep = 1;
    let vault = Vault::new(store.clone(), keyring("k1", 1), opts).unwrap();
    let mut errors = Vec::new();
    for variant in ["v1", "v2", "v4", "v5"] {
        store
            .hook
            .armed
            .store(variant == "v2", std::sync::atomic::Ordering::SeqCst);
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        if let Err(e) = vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
        {
            errors.push((variant, e));
        }
    }
    let [("v2", profile_vault::vault::Error::Conflict { kept, .. })] = &errors[..] else {
        panic!("{errors:?}");
    };
    assert_eq!(*kept, 2);
    let restored = vault
        .restore(
            &at,
            Some(2),
            &dir.path().join("dst"),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(restored.generation, 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dst/Local State")).unwrap(),
        r#"{"variant":"v2"}"#
    );
    // The line it lost to is pruned as before: one generation and the conflict's.
    let versions: Vec<u64> = vault
        .versions(&at)
        .await
        .unwrap()
        .iter()
        .map(|v| v.generation)
        .collect();
    assert_eq!(versions, [2, 5]);
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
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
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

/// Every delete under `prefix` fails (a store that refuses them, for one profile).
#[derive(Debug)]
struct RefuseDeletes {
    prefix: String,
}

#[async_trait::async_trait]
impl PutHook for RefuseDeletes {
    async fn before_delete(
        &self,
        key: &str,
        _: &dyn profile_vault::Store,
    ) -> profile_vault::store::Result<()> {
        if key.starts_with(&self.prefix) {
            return Err(profile_vault::store::Error::Unavailable {
                op: "delete",
                key: key.into(),
                message: "refused by the test".into(),
            });
        }
        Ok(())
    }
}

/// Retention goes on past a profile it cannot delete, and says which (the first failure
/// ended the tenant's pass: the profiles after it were never collected, and the CLI printed
/// nothing of what it had deleted).
#[tokio::test]
async fn retention_goes_on_past_a_profile_it_cannot_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Hooked {
        inner: Arc::new(
            profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap(),
        ),
        hook: RefuseDeletes {
            prefix: addr("t1", "a").prefix().to_string(),
        },
    });
    let vault = Vault::new(store, keyring("k1", 1), options(&dir.path().join("spool"))).unwrap();
    for p in ["a", "b"] {
        let src = dir.path().join(p);
        make_profile(&src, p);
        vault
            .save(
                &addr("t1", p),
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap();
    }
    // Idle for a second (times are kept in whole seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = vault
        .gc("t1", std::time::Duration::from_millis(1), false, &[])
        .await
        .unwrap();
    assert_eq!(r.deleted, ["b"]);
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].0, "a");
    let left: Vec<String> = vault
        .list("t1")
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.profile)
        .collect();
    assert_eq!(left, ["a"]);
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
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
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
    let src = dir.path().join("v1");
    make_profile(&src, "v1");
    vault
        .save(
            &at,
            &src,
            Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
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

/// Pruning keeps the head's line: after a rollback from 4 to 2 and a save continuing 2, with
/// three kept, 2 (the head's base) stays, and so does 4 (rolled away from, kept a while); 3
/// goes (the newest three, 3, 4 and 5, were kept, and the head's base went).
#[tokio::test]
async fn pruning_keeps_the_heads_line() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap());
    let mut opts = options(&dir.path().join("spool"));
    opts.keep = 3;
    let vault = Vault::new(store, keyring("k1", 1), opts).unwrap();
    let at = addr("t1", "p1");
    for (i, variant) in ["v1", "v2", "v3", "v4", "v5"].into_iter().enumerate() {
        if i == 4 {
            vault.rollback(&at, 2).await.unwrap();
        }
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap();
    }
    let versions: Vec<u64> = vault
        .versions(&at)
        .await
        .unwrap()
        .iter()
        .map(|v| v.generation)
        .collect();
    assert_eq!(versions, [2, 4, 5]);
}
