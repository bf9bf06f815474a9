//! The vault on the filesystem store: generations, conflicts, integrity, rekey.

use std::sync::Arc;

use profile_vault::vault::{Base, Error};
use profile_vault::{NoProgress, Vault};

use crate::common::hooked::{Hooked, PutHook};
use crate::common::*;

fn np() -> Arc<dyn profile_vault::Progress> {
    Arc::new(NoProgress)
}

#[tokio::test]
async fn save_restore_round_trip_and_nothing_readable_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = fs_vault(dir.path());
    let src = dir.path().join("src");
    make_profile(&src, "a");
    let r = vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert_eq!(r.generation, 1);
    assert!(r.files >= 5);
    assert_eq!(r.stats.chromium_version.as_deref(), Some("156.0.8078.79"));

    let dst = dir.path().join("dst");
    let rr = vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    assert_eq!(rr.generation, 1);
    let mut expected = tree(&src);
    expected.retain(|(p, _)| !p.contains("Cache"));
    assert_eq!(tree(&dst), expected);

    // No stored byte carries a marker of the profile.
    assert_nothing_readable(&root);
}

#[tokio::test]
async fn generations_rollback_retention_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = fs_vault(dir.path());
    for i in 1..=7u64 {
        let src = dir.path().join(format!("src{i}"));
        make_profile(&src, &format!("v{i}"));
        let r = vault
            .save(&addr("t1", "p1"), &src, Base::Current, np())
            .await
            .unwrap();
        assert_eq!(r.generation, i);
    }
    let gens: Vec<u64> = vault
        .versions(&addr("t1", "p1"))
        .await
        .unwrap()
        .iter()
        .map(|g| g.generation)
        .collect();
    assert_eq!(gens, vec![3, 4, 5, 6, 7], "keeps the last 5");
    vault.rollback(&addr("t1", "p1"), 4).await.unwrap();
    let dst = dir.path().join("dst");
    let r = vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    assert_eq!(r.generation, 4);
    assert!(std::fs::read_to_string(dst.join("Local State"))
        .unwrap()
        .contains("v4"));
    // A payload without a record is a save still running when it is recent (it is left to
    // finish), and a leftover when it is older than a save may take (it goes).
    let gens_dir = dir.path().join("store/tenants/t1/profiles/p1/gens");
    let running = gens_dir.join(format!("{:020}.pvo", 1));
    let leftover = gens_dir.join(format!("{:020}.pvo", 2));
    std::fs::write(&running, b"in flight").unwrap();
    std::fs::write(&leftover, b"left over").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7 * 3600))
        .unwrap();
    // A save after a rollback gets a new number, and the old head survives pruning.
    let src = dir.path().join("src8");
    make_profile(&src, "v8");
    assert_eq!(
        vault
            .save(&addr("t1", "p1"), &src, Base::Current, np())
            .await
            .unwrap()
            .generation,
        8
    );
    assert!(running.exists(), "a running save's payload was pruned");
    assert!(!leftover.exists(), "a leftover payload was kept");
    assert!(matches!(
        vault.rollback(&addr("t1", "p1"), 1).await,
        Err(Error::GenerationNotFound { .. })
    ));
    let n = vault.delete(&addr("t1", "p1")).await.unwrap();
    assert!(n >= 10);
    assert!(matches!(
        vault
            .restore(&addr("t1", "p1"), None, &dir.path().join("d2"), np())
            .await,
        Err(Error::ProfileNotFound { .. })
    ));
    assert!(vault.list("t1").await.unwrap().is_empty());
}

#[tokio::test]
async fn racing_saves_one_head_every_generation_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = fs_vault(dir.path());
    let src = dir.path().join("src");
    make_profile(&src, "base");
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let vault = Vault::clone(&vault);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let v = vault.clone();
        let src = dir.path().join(format!("s{i}"));
        make_profile(&src, &format!("r{i}"));
        tasks.push(tokio::spawn(async move {
            v.save(&addr("t1", "p1"), &src, Base::Expect(Some(1)), np())
                .await
        }));
    }
    let mut wins = Vec::new();
    let mut kept = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => wins.push(r.generation),
            Err(Error::Conflict { kept: k, .. }) => kept.push(k),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one save moves the head");
    assert_eq!(kept.len(), 19);
    let mut all: Vec<u64> = wins.iter().chain(kept.iter()).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 20, "every save got its own generation");
    let (head, _) = vault.head(&addr("t1", "p1")).await.unwrap().unwrap();
    assert_eq!(head.generation, wins[0]);
    // Every kept generation still verifies (pruning never removes the newest ones).
    for g in kept.iter().filter(|g| **g > *all.iter().max().unwrap() - 5) {
        vault
            .verify(&addr("t1", "p1"), Some(*g), np())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn tampering_wrong_keys_and_copies_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = fs_vault(dir.path());
    let src = dir.path().join("src");
    make_profile(&src, "a");
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    vault
        .save(&addr("t1", "p2"), &src, Base::Current, np())
        .await
        .unwrap();
    let gen_dir = |t: &str, p: &str| root.join(format!("tenants/{t}/profiles/{p}/gens"));
    let pvo = gen_dir("t1", "p1").join(format!("{:020}.pvo", 1));
    let original = std::fs::read(&pvo).unwrap();

    // A flipped bit in the header, the MAC, the first and the last chunk.
    let hl = profile_vault::format::header_len(&original).unwrap();
    for pos in [20, hl - 5, hl + 3, original.len() - 2] {
        let mut bad = original.clone();
        bad[pos] ^= 0x08;
        std::fs::write(&pvo, &bad).unwrap();
        let target = dir.path().join(format!("t{pos}"));
        let err = vault
            .restore(&addr("t1", "p1"), None, &target, np())
            .await
            .unwrap_err();
        assert!(err.is_integrity(), "pos {pos}: {err}");
        assert!(!target.exists());
    }
    // Truncated.
    std::fs::write(&pvo, &original[..original.len() - 100]).unwrap();
    assert!(vault
        .verify(&addr("t1", "p1"), None, np())
        .await
        .unwrap_err()
        .is_integrity());
    std::fs::write(&pvo, &original).unwrap();
    vault.verify(&addr("t1", "p1"), None, np()).await.unwrap();

    // Another profile's object and record copied over this one.
    for ext in ["pvo", "json"] {
        let from = gen_dir("t1", "p2").join(format!("{:020}.{ext}", 1));
        std::fs::copy(&from, gen_dir("t1", "p1").join(format!("{:020}.{ext}", 1))).unwrap();
    }
    let err = vault
        .verify(&addr("t1", "p1"), None, np())
        .await
        .unwrap_err();
    assert!(err.is_integrity(), "{err}");
    // Only the payload copied: the commitment or header check catches it.
    std::fs::remove_dir_all(root.join("tenants/t1/profiles/p1")).unwrap();
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    std::fs::copy(
        gen_dir("t1", "p2").join(format!("{:020}.pvo", 1)),
        gen_dir("t1", "p1").join(format!("{:020}.pvo", 1)),
    )
    .unwrap();
    let err = vault
        .verify(&addr("t1", "p1"), None, np())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("profile"), "{err}");

    // Another tenant asking for p2 sees nothing.
    assert!(matches!(
        vault.verify(&addr("t2", "p2"), None, np()).await,
        Err(Error::ProfileNotFound { .. })
    ));

    // Wrong and unknown master keys.
    let store = vault.store().clone();
    let wrong = Vault::new(
        store.clone(),
        keyring("k1", 9),
        options(&dir.path().join("spool2")),
    )
    .unwrap();
    let err = wrong
        .verify(&addr("t1", "p2"), None, np())
        .await
        .unwrap_err();
    assert!(
        err.is_integrity() && err.to_string().contains("k1"),
        "{err}"
    );
    let unknown = Vault::new(store, keyring("k2", 1), options(&dir.path().join("spool3"))).unwrap();
    let err = unknown
        .verify(&addr("t1", "p2"), None, np())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown master key 'k1'"), "{err}");
}

#[tokio::test]
async fn record_formats_are_told_apart_and_unknown_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap());
    let mut o = options(&dir.path().join("spool"));
    o.write_format = 1;
    let vault = Vault::new(store.clone(), keyring("k1", 1), o).unwrap();
    let src = dir.path().join("src");
    make_profile(&src, "f");
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let rec_path = root.join(format!("tenants/t1/profiles/p1/gens/{:020}.json", 1));
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).unwrap()).unwrap();
    assert_eq!(original["format"], 1, "a local key writes format 1");
    assert!(original.get("kms_key_arn").is_none());
    let cases = [
        (serde_json::json!({"format": 2}), "needs kms_key_arn"),
        (
            serde_json::json!({"format": 1, "kms_key_arn": "arn:aws:kms:us-east-1:0:key/x"}),
            "must not have kms_key_arn",
        ),
        (
            serde_json::json!({"format": 1, "kms_key_arn": null}),
            "invalid type: null",
        ),
        (
            serde_json::json!({"format": 1, "packs": []}),
            "must not have packs",
        ),
        (serde_json::json!({"format": 3}), "needs packs and chunks"),
    ];
    for (patch, want) in cases {
        let mut rec = original.clone();
        for (k, v) in patch.as_object().unwrap() {
            rec[k] = v.clone();
        }
        std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
        let err = vault
            .verify(&addr("t1", "p1"), None, np())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(want), "{patch}: {err}");
        assert!(err.is_integrity(), "{err}");
    }
    // A later format is not damage: a newer profile-vault wrote it.
    let mut rec = original.clone();
    rec["format"] = serde_json::json!(4);
    rec["field_of_the_future"] = serde_json::json!(true);
    std::fs::write(&rec_path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let err = vault
        .verify(&addr("t1", "p1"), None, np())
        .await
        .unwrap_err();
    assert!(err.is_newer() && !err.is_integrity(), "{err}");
    assert!(
        err.to_string().contains("newer profile-vault (format 4)"),
        "{err}"
    );
    std::fs::write(&rec_path, serde_json::to_vec(&original).unwrap()).unwrap();
    vault.verify(&addr("t1", "p1"), None, np()).await.unwrap();
    // A format 3 record (format 2 payload) says what it is; put under a format 1 payload's
    // number it does not pass, nor does a format 1 record over a format 2 payload.
    let v2 = Vault::new(store, keyring("k1", 1), options(&dir.path().join("spool"))).unwrap();
    v2.save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let rec2_path = root.join(format!("tenants/t1/profiles/p1/gens/{:020}.json", 2));
    let rec2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec2_path).unwrap()).unwrap();
    assert_eq!(rec2["format"], 3, "format 2 saves write record format 3");
    assert!(
        rec2["packs"].is_array() && rec2["chunks"].is_object(),
        "{rec2}"
    );
    let mut as_v1 = rec2.clone();
    as_v1["format"] = serde_json::json!(1);
    as_v1.as_object_mut().unwrap().remove("packs");
    as_v1.as_object_mut().unwrap().remove("chunks");
    std::fs::write(&rec2_path, serde_json::to_vec(&as_v1).unwrap()).unwrap();
    let err = v2
        .verify(&addr("t1", "p1"), Some(2), np())
        .await
        .unwrap_err();
    assert!(
        err.is_integrity() && err.to_string().contains("does not go with"),
        "{err}"
    );
    std::fs::write(&rec2_path, serde_json::to_vec(&rec2).unwrap()).unwrap();
    v2.verify(&addr("t1", "p1"), Some(2), np()).await.unwrap();
}

#[tokio::test]
async fn rekey_rewraps_without_touching_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(&root).unwrap());
    let both = Arc::new(
        profile_vault::Keyring::from_keys(
            vec![("old".into(), [1; 32]), ("new".into(), [2; 32])],
            "old",
        )
        .unwrap(),
    );
    let vault = Vault::new(store.clone(), both, options(&dir.path().join("spool"))).unwrap();
    let src = dir.path().join("src");
    make_profile(&src, "a");
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    // The data document moves with rekey too (its sealed body untouched).
    let doc = serde_json::json!({"open": ["https://example.com"]});
    let always = profile_vault::vault::DataCondition::Always;
    assert_eq!(
        vault
            .set_data(&addr("t1", "p1"), &doc, always)
            .await
            .unwrap(),
        1
    );
    let sealed = |root: &std::path::Path| -> serde_json::Value {
        let rec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join("tenants/t1/profiles/p1/data.json")).unwrap(),
        )
        .unwrap();
        rec["sealed"].clone()
    };
    let sealed_before = sealed(&root);
    let pvo = root
        .join("tenants/t1/profiles/p1/gens")
        .join(format!("{:020}.pvo", 1));
    let before = std::fs::read(&pvo).unwrap();
    assert_eq!(vault.rekey("t1", "new", true).await.unwrap(), (3, 0));
    assert_eq!(vault.rekey("t1", "new", false).await.unwrap(), (3, 0));
    assert_eq!(vault.rekey("t1", "new", false).await.unwrap(), (0, 3));
    assert_eq!(sealed(&root), sealed_before, "document untouched");
    assert_eq!(std::fs::read(&pvo).unwrap(), before, "payload untouched");
    let only_new = Vault::new(
        store,
        keyring("new", 2),
        options(&dir.path().join("spool2")),
    )
    .unwrap();
    only_new
        .verify(&addr("t1", "p1"), Some(1), np())
        .await
        .unwrap();
    let d = only_new.data(&addr("t1", "p1")).await.unwrap();
    assert_eq!((d.version, d.data), (1, doc));
    // The old key alone no longer opens it.
    let only_old = Vault::new(
        only_new.store().clone(),
        keyring("old", 1),
        options(&dir.path().join("spool3")),
    )
    .unwrap();
    assert!(only_old.data(&addr("t1", "p1")).await.is_err());
    only_new
        .restore(&addr("t1", "p1"), None, &dir.path().join("dst"), np())
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_ids_are_rejected_before_storage() {
    // A profile address is made once, at the edge: a bad id never reaches the vault.
    for id in ["../x", "a/b", "", ".x", "x y"] {
        assert!(
            matches!(
                profile_vault::layout::ProfileAddr::new("t1", id).map_err(Error::from),
                Err(Error::InvalidId { .. })
            ),
            "{id:?}"
        );
        assert!(
            matches!(
                profile_vault::layout::ProfileAddr::new(id, "p").map_err(Error::from),
                Err(Error::InvalidId { .. })
            ),
            "{id:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_profiles_ending_at_once_are_all_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = fs_vault(dir.path());
    let src = dir.path().join("src");
    make_profile(&src, "shared");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let v = vault.clone();
        let src = src.clone();
        tasks.push(tokio::spawn(async move {
            v.save(
                &addr("t1", &format!("p{i}")),
                &src,
                Base::Expect(None),
                np(),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().generation, 1);
    }
    assert_eq!(vault.list("t1").await.unwrap().len(), 50);
    for i in [0, 17, 49] {
        vault
            .verify(&addr("t1", &format!("p{i}")), None, np())
            .await
            .unwrap();
    }
}

/// A save's pruning removes `victim` just as a rollback moves the head.
#[derive(Debug)]
struct PrunedAsTheHeadMoves {
    victim: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl PutHook for PrunedAsTheHeadMoves {
    async fn before(
        &self,
        key: &str,
        inner: &dyn profile_vault::Store,
    ) -> profile_vault::store::Result<()> {
        let victim = if key.ends_with("/head.json") {
            self.victim.lock().unwrap().take()
        } else {
            None
        };
        match victim {
            Some(v) => inner.delete(&v).await,
            None => Ok(()),
        }
    }
}

#[tokio::test]
async fn a_rollback_to_a_generation_pruned_meanwhile_leaves_the_head_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn profile_vault::Store> =
        Arc::new(profile_vault::store::fs::LocalFileSystem::new(dir.path().join("store")).unwrap());
    let store = Arc::new(Hooked {
        inner,
        hook: PrunedAsTheHeadMoves {
            victim: std::sync::Mutex::new(None),
        },
    });
    let vault = Vault::new(
        store.clone(),
        keyring("k1", 1),
        options(&dir.path().join("spool")),
    )
    .unwrap();
    let at = addr("t1", "p1");
    for i in 1..=3u64 {
        let src = dir.path().join(format!("src{i}"));
        make_profile(&src, &format!("v{i}"));
        vault.save(&at, &src, Base::Current, np()).await.unwrap();
    }
    *store.hook.victim.lock().unwrap() =
        Some(at.generation(1, profile_vault::layout::GenFile::Record));
    let e = vault.rollback(&at, 1).await.unwrap_err();
    assert!(
        matches!(e, Error::GenerationNotFound { generation: 1, .. }),
        "{e}"
    );
    let head = vault.versions(&at).await.unwrap();
    assert!(
        head.iter().any(|g| g.generation == 3 && g.head),
        "the head is generation 3 again: {head:?}"
    );
}
