//! Retention of a profile's generations: pruning keeps the head's line and generations a
//! restore can use (failed saves take no place of theirs), a generation a conflict kept and
//! one a rollback moves to while it is pruned; retention of idle profiles goes on past one
//! it cannot delete.

use std::sync::Arc;

use profile_vault::vault::{Base, Vault};

use crate::common::hooked::{Hooked, PutHook, RefuseDeletes};
use crate::common::*;

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
        hook: RefuseDeletes::of(addr("t1", "a").prefix()),
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
        save_variant(&vault, &at, dir.path(), variant)
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

/// A generation no save continued (here a save refused as a conflict: it expected another
/// head) is kept `TIP_KEEP` (30 days) after it was made, then pruned like the rest.
#[tokio::test]
async fn a_generation_no_save_continued_is_kept_thirty_days() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut opts = options(&dir.path().join("spool"));
    opts.keep = 1;
    let vault = Vault::new(
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap()),
        keyring("k1", 1),
        opts,
    )
    .unwrap();
    for (profile, days) in [("p1", 29u64), ("p2", 31)] {
        let at = addr("t1", profile);
        let here = dir.path().join(profile);
        for variant in ["v1", "v2"] {
            save_variant(&vault, &at, &here, variant).await.unwrap();
        }
        let src = here.join("v3");
        make_profile(&src, "v3");
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
            matches!(e, profile_vault::vault::Error::Conflict { kept: 3, .. }),
            "{e}"
        );
        // Generation 3 was made `days` ago.
        let record = root.join(at.generation(3, profile_vault::layout::GenFile::Record));
        let mut r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        r["created_at"] = (r["created_at"].as_u64().unwrap() - days * 86_400).into();
        std::fs::write(&record, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        save_variant(&vault, &at, &here, "v4").await.unwrap();
        let versions: Vec<u64> = vault
            .versions(&at)
            .await
            .unwrap()
            .iter()
            .map(|v| v.generation)
            .collect();
        let want: &[u64] = if days < 30 { &[3, 4] } else { &[4] };
        assert_eq!(versions, want, "made {days} days ago");
    }
}
