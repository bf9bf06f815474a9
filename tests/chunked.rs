//! Format 2 (chunked, deduplicated generations) on the filesystem store: what a re-save
//! sends, skipping unchanged files, restores that are exact (bytes and times), profiles that
//! hold both formats, rekey leaving packs alone, damaged and hostile packs and manifests, and
//! pack garbage collection racing saves.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use profile_vault::format::v2::manifest::{self, Manifest};
use profile_vault::format::{Sealer, VERSION_CHUNKED};
use profile_vault::keys::{WrapContext, Wrapped};
use profile_vault::store::fs::LocalFileSystem;
use profile_vault::store::{PutBody, PutMode};
use profile_vault::vault::{Base, Error, GenerationRecord};
use profile_vault::{NoProgress, Store, Vault, VaultOptions};

use crate::common::*;

fn np() -> Arc<dyn profile_vault::Progress> {
    Arc::new(NoProgress)
}

fn vault_with(dir: &Path, edit: impl FnOnce(&mut VaultOptions)) -> (Vault, std::path::PathBuf) {
    let root = dir.join("store");
    let store: Arc<dyn Store> = Arc::new(LocalFileSystem::new(&root).unwrap());
    let mut o = options(&dir.join("spool"));
    edit(&mut o);
    (Vault::new(store, keyring("k1", 1), o).unwrap(), root)
}

/// A profile with a real SQLite database (4 KiB pages), JSON, a LevelDB-like table and a
/// large log; files are dated in the past so no save counts them as racy.
fn sqlite_profile(root: &Path) {
    make_profile(root, "sq");
    let db = root.join("Default/Web Data");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
        .unwrap();
    for i in 0..3000 {
        c.execute(
            "INSERT INTO t(v) VALUES (?1)",
            [format!("{i:06}-{}", "x".repeat(400))],
        )
        .unwrap();
    }
    drop(c);
    // Incompressible, as LevelDB tables and IndexedDB blobs mostly are.
    let mut noise = vec![0u8; 2 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut noise);
    write(root, "Default/Local Storage/leveldb/000005.ldb", &noise);
    write(
        root,
        "Default/IndexedDB/big.log",
        &[&noise[..], &noise[..], &noise[..]].concat(),
    );
    backdate(root);
}

/// Sets every file's modification time 60 s into the past.
fn backdate(root: &Path) {
    let t = std::time::SystemTime::now() - Duration::from_secs(60);
    for (rel, _) in tree(root) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(rel))
            .unwrap();
        f.set_modified(t).unwrap();
    }
}

fn mtimes(root: &Path) -> Vec<(String, std::time::SystemTime)> {
    tree(root)
        .into_iter()
        .map(|(rel, _)| {
            let m = std::fs::metadata(root.join(&rel))
                .unwrap()
                .modified()
                .unwrap();
            (rel, m)
        })
        .collect()
}

/// A vault on a fresh filesystem store holding generation 1 of `t1/p1`, saved from the
/// [`sqlite_profile`] at `src`.
async fn saved_once() -> (
    tempfile::TempDir,
    Vault,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = vault_with(dir.path(), |_| {});
    let src = dir.path().join("src");
    sqlite_profile(&src);
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    (dir, vault, root, src)
}

fn kept(src: &Path) -> Vec<(String, Vec<u8>)> {
    let mut t = tree(src);
    t.retain(|(p, _)| !p.contains("Cache") && !p.contains("Singleton"));
    t
}

#[tokio::test]
async fn a_resave_sends_only_what_changed_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = vault_with(dir.path(), |_| {});
    let src = dir.path().join("src");
    sqlite_profile(&src);
    let first = vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let c1 = first.chunks.clone().expect("format 2 by default");
    assert!(c1.full_read && c1.base.is_none(), "{c1:?}");
    assert_eq!(c1.chunks_new, c1.chunks);
    // One row changes in place: its page and the header page (the change counter), so at
    // most two 64 KiB chunks.
    let c = rusqlite::Connection::open(src.join("Default/Web Data")).unwrap();
    c.execute("UPDATE t SET v = 'changed' WHERE id = 1500", [])
        .unwrap();
    drop(c);
    let second = vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let c2 = second.chunks.clone().unwrap();
    assert_eq!(c2.base, Some(1), "{c2:?}");
    assert!(!c2.full_read);
    assert!((1..=2).contains(&c2.chunks_new), "one row changed: {c2:?}");
    assert_eq!(c2.files_read, 1, "only the database was read: {c2:?}");
    assert!(c2.files_skipped >= 5, "{c2:?}");
    assert!(
        c2.bytes_uploaded * 50 < c1.bytes_uploaded,
        "a re-save sends a small part: {} of {}",
        c2.bytes_uploaded,
        c1.bytes_uploaded
    );
    // Both generations restore exactly: contents and modification times.
    let dst = dir.path().join("dst2");
    vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    assert_eq!(tree(&dst), kept(&src));
    let mut want = mtimes(&src);
    want.retain(|(p, _)| !p.contains("Cache") && !p.contains("Singleton"));
    assert_eq!(mtimes(&dst), want, "modification times come back");
    let dst1 = dir.path().join("dst1");
    vault
        .restore(&addr("t1", "p1"), Some(1), &dst1, np())
        .await
        .unwrap();
    let db1 = rusqlite::Connection::open(dst1.join("Default/Web Data")).unwrap();
    let v: String = db1
        .query_row("SELECT v FROM t WHERE id = 1500", [], |r| r.get(0))
        .unwrap();
    assert!(
        v.starts_with("001499-"),
        "generation 1 keeps the old row: {v}"
    );
    // A save of the restored copy (another node, say) sends nothing, and reads only the
    // database: it changed within 2 s of generation 2's walk, so its time cannot be trusted
    // (the racy rule).
    let third = vault
        .save(&addr("t1", "p1"), &dst, Base::Current, np())
        .await
        .unwrap();
    let c3 = third.chunks.unwrap();
    assert_eq!((c3.chunks_new, c3.files_read), (0, 1), "{c3:?}");
    for g in 1..=3 {
        vault
            .verify(&addr("t1", "p1"), Some(g), np())
            .await
            .unwrap();
    }
    // Nothing readable is stored: names, contents and cookie values.
    assert_nothing_readable(&root);
}

#[tokio::test]
async fn unchanged_size_and_time_skip_the_read_and_a_full_read_catches_everything() {
    let (dir, vault, _, src) = saved_once().await;
    // Same size, same time, other bytes: a save that trusts size and time keeps the old.
    let pref = src.join("Default/Preferences");
    let t = std::fs::metadata(&pref).unwrap().modified().unwrap();
    let old = std::fs::read(&pref).unwrap();
    let mut new = old.clone();
    new[2] = b'Q';
    std::fs::write(&pref, &new).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pref)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let r = vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert_eq!(r.chunks.unwrap().files_read, 0);
    let out = dir.path().join("a");
    vault
        .restore(&addr("t1", "p1"), None, &out, np())
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("Default/Preferences")).unwrap(), old);
    // --reread: every file is read.
    let (rv, _) = {
        let store: Arc<dyn Store> =
            Arc::new(LocalFileSystem::new(dir.path().join("store")).unwrap());
        let mut o = options(&dir.path().join("spool"));
        o.reread = true;
        (Vault::new(store, keyring("k1", 1), o).unwrap(), ())
    };
    let r = rv
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let c = r.chunks.unwrap();
    assert!(c.full_read && c.files_skipped == 0, "{c:?}");
    let out = dir.path().join("b");
    rv.restore(&addr("t1", "p1"), None, &out, np())
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("Default/Preferences")).unwrap(), new);
    // Every full_read_every-th save reads everything by itself.
    let (pv, _) = vault_with(dir.path(), |o| o.full_read_every = 1);
    let c = pv
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap()
        .chunks
        .unwrap();
    assert!(c.full_read && c.files_skipped == 0, "{c:?}");
}

#[tokio::test]
async fn one_profile_holds_both_formats_and_rekey_leaves_packs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, root) = vault_with(dir.path(), |o| o.write_format = 1);
    let src = dir.path().join("src");
    sqlite_profile(&src);
    let g1 = v1
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert!(g1.chunks.is_none(), "format 1 when asked");
    let (v2, _) = vault_with(dir.path(), |_| {});
    write(&src, "Default/Bookmarks", b"{\"roots\":{}}");
    let g2 = v2
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let c2 = g2.chunks.unwrap();
    assert_eq!(c2.base, None, "a format 1 base gives nothing to reuse");
    write(&src, "Default/Bookmarks", b"{\"roots\":{\"x\":1}}");
    let g3 = v2
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert_eq!(g3.chunks.unwrap().base, Some(2));
    let list = v2.versions(&addr("t1", "p1")).await.unwrap();
    let formats: Vec<u32> = list
        .iter()
        .map(|g| g.record.as_ref().unwrap().format)
        .collect();
    assert_eq!(formats, vec![1, 3, 3]);
    // Each restores and verifies; rollback to the format 1 generation works.
    for g in 1..=3 {
        let out = dir.path().join(format!("r{g}"));
        v2.restore(&addr("t1", "p1"), Some(g), &out, np())
            .await
            .unwrap();
        v2.verify(&addr("t1", "p1"), Some(g), np()).await.unwrap();
    }
    v2.rollback(&addr("t1", "p1"), 1).await.unwrap();
    let out = dir.path().join("after-rollback");
    v2.restore(&addr("t1", "p1"), None, &out, np())
        .await
        .unwrap();
    assert!(!out.join("Default/Bookmarks").exists());
    // Rekey to a new master key: records re-wrapped, packs byte for byte the same.
    let packs_before: Vec<_> = tree(&root)
        .into_iter()
        .filter(|(p, _)| p.contains("/packs/"))
        .collect();
    assert!(!packs_before.is_empty());
    let store: Arc<dyn Store> = Arc::new(LocalFileSystem::new(&root).unwrap());
    let ring = Arc::new(
        profile_vault::Keyring::from_keys(
            vec![("k1".into(), [1; 32]), ("k2".into(), [2; 32])],
            "k2",
        )
        .unwrap(),
    );
    let rk = Vault::new(store.clone(), ring, options(&dir.path().join("spool"))).unwrap();
    let (moved, _) = rk.rekey("t1", "k2", false).await.unwrap();
    assert_eq!(moved, 3);
    let packs_after: Vec<_> = tree(&root)
        .into_iter()
        .filter(|(p, _)| p.contains("/packs/"))
        .collect();
    assert_eq!(packs_before, packs_after, "rekey does not touch packs");
    let only_k2 = Vault::new(store, keyring("k2", 2), options(&dir.path().join("spool"))).unwrap();
    for g in 1..=3 {
        only_k2
            .verify(&addr("t1", "p1"), Some(g), np())
            .await
            .unwrap();
        let rec = &only_k2.versions(&addr("t1", "p1")).await.unwrap()[g as usize - 1];
        let r = rec.record.as_ref().unwrap();
        assert_eq!(r.key_id, "k2");
        assert_eq!(r.format, if g == 1 { 1 } else { 3 }, "format kept");
    }
}

/// The packs of a profile in the store, by id.
fn pack_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = tree(root)
        .into_iter()
        .filter(|(p, _)| p.ends_with(".pvp"))
        .map(|(p, _)| root.join(p))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn damaged_or_missing_packs_fail_the_restore_and_leave_nothing() {
    let (dir, vault, root, _src) = saved_once().await;
    let packs = pack_files(&root);
    let target = dir.path().join("out");
    let nothing_left = |what: &str| {
        assert!(!target.exists(), "{what}: target created");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".pv-"))
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
    };
    // A flipped byte inside a blob.
    let original = std::fs::read(&packs[0]).unwrap();
    let mut bad = original.clone();
    bad[100] ^= 1;
    std::fs::write(&packs[0], &bad).unwrap();
    let e = vault
        .restore(&addr("t1", "p1"), None, &target, np())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Blob { .. }) && e.is_integrity(), "{e}");
    nothing_left("flipped byte");
    let e = vault
        .verify(&addr("t1", "p1"), None, np())
        .await
        .unwrap_err();
    assert!(e.is_integrity(), "{e}");
    // Truncated, then gone.
    std::fs::write(&packs[0], &original[..original.len() / 2]).unwrap();
    let e = vault
        .restore(&addr("t1", "p1"), None, &target, np())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PackMissing { .. }), "{e}");
    nothing_left("truncated");
    std::fs::remove_file(&packs[0]).unwrap();
    let e = vault
        .restore(&addr("t1", "p1"), None, &target, np())
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::PackMissing { .. }) && e.is_integrity(),
        "{e}"
    );
    nothing_left("missing");
    // A pack whose prefix says a newer profile-vault wrote it: verify says "newer".
    let mut newer = original.clone();
    newer[9] = 3;
    std::fs::write(&packs[0], &newer).unwrap();
    let e = vault
        .verify(&addr("t1", "p1"), None, np())
        .await
        .unwrap_err();
    assert!(e.is_newer(), "{e}");
    std::fs::write(&packs[0], &original).unwrap();
    vault.verify(&addr("t1", "p1"), None, np()).await.unwrap();
}

/// Writes generation 2 of `p1` with a manifest the test chose, sealed with the profile's
/// real content key (a key holder turned hostile), over generation 1.
async fn plant_manifest(vault: &Vault, root: &Path, edit: impl FnOnce(&mut Manifest)) {
    let store = LocalFileSystem::new(root).unwrap();
    let base = "tenants/t1/profiles/p1/";
    let rec: GenerationRecord = serde_json::from_slice(
        &std::fs::read(root.join(format!("{base}gens/{:020}.json", 1))).unwrap(),
    )
    .unwrap();
    let wrapped = Wrapped {
        key_id: rec.key_id.clone(),
        blob: base64::engine::general_purpose::STANDARD
            .decode(&rec.wrapped_key)
            .unwrap(),
        kms_key_arn: None,
    };
    fn ctx(g: u64, o: &str) -> WrapContext<'_> {
        WrapContext {
            tenant: "t1",
            profile: "p1",
            generation: g,
            object_id: o,
        }
    }
    let pk = vault
        .keys()
        .unwrap(&wrapped, &ctx(1, &rec.object_id))
        .await
        .unwrap();
    // The real manifest of generation 1, edited.
    let obj = std::fs::read(root.join(format!("{base}gens/{:020}.pvo", 1))).unwrap();
    let expected = profile_vault::format::Expected {
        tenant: "t1",
        profile: "p1",
        generation: Some(1),
        object_id: Some(&rec.object_id),
    };
    let (_, mut body) = profile_vault::format::open(&obj[..], &pk, &expected).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut body, &mut plain).unwrap();
    let mut m: Manifest = serde_json::from_slice(&zstd::decode_all(&plain[..]).unwrap()).unwrap();
    edit(&mut m);
    let object_id = uuid::Uuid::new_v4().to_string();
    let sealer = Sealer::with_version(&pk, 65536, VERSION_CHUNKED);
    let mut out = sealer.header_bytes("t1", "p1", 2, &object_id, 1);
    let mut w = sealer.body_writer(Vec::new());
    std::io::Write::write_all(&mut w, &manifest::encode(&m)).unwrap();
    out.extend_from_slice(&w.finish().unwrap().0);
    let w2 = vault
        .keys()
        .wrap("k1", &pk, &ctx(2, &object_id))
        .await
        .unwrap();
    let mut rec2 = rec.clone();
    rec2.generation = 2;
    rec2.object_id = object_id;
    rec2.object_size = out.len() as u64;
    rec2.wrapped_key = base64::engine::general_purpose::STANDARD.encode(&w2.blob);
    for (name, bytes) in [
        (format!("{base}gens/{:020}.pvo", 2), out),
        (
            format!("{base}gens/{:020}.json", 2),
            serde_json::to_vec(&rec2).unwrap(),
        ),
    ] {
        store
            .put(&name, PutBody::Bytes(bytes.into()), PutMode::Overwrite)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn hostile_manifests_are_refused_before_anything_is_written() {
    let (dir, vault, root, _src) = saved_once().await;
    type Edit = Box<dyn FnOnce(&mut Manifest)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "escape",
            Box::new(|m| m.files[0].path = "../../escaped".into()),
        ),
        (
            "dup",
            Box::new(|m| m.files[1].path = m.files[0].path.clone()),
        ),
        ("size", Box::new(|m| m.files[0].size += 1)),
        (
            "swap",
            Box::new(|m| {
                // Another chunk's place for the first chunk: it no longer authenticates.
                let (a, b) = (m.chunks[0].clone(), m.chunks[1].clone());
                m.chunks[0].offset = b.offset;
                m.chunks[0].len = b.len;
                m.chunks[1].offset = a.offset;
                m.chunks[1].len = a.len;
            }),
        ),
    ];
    for (what, edit) in cases {
        plant_manifest(&vault, &root, edit).await;
        let target = dir.path().join(format!("out-{what}"));
        let e = vault
            .restore(&addr("t1", "p1"), Some(2), &target, np())
            .await
            .unwrap_err();
        assert!(e.is_integrity(), "{what}: {e}");
        assert!(!target.exists(), "{what}");
        assert!(!dir.path().join("escaped").exists() && !root.join("escaped").exists());
    }
    // An honest copy of the manifest restores (the planting itself is sound).
    plant_manifest(&vault, &root, |_| {}).await;
    vault
        .restore(&addr("t1", "p1"), Some(2), &dir.path().join("honest"), np())
        .await
        .unwrap();
}

#[tokio::test]
async fn unused_packs_are_collected_and_used_ones_never() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, root) = vault_with(dir.path(), |o| {
        o.keep = 2;
        o.pack_grace = Duration::ZERO;
    });
    let src = dir.path().join("src");
    sqlite_profile(&src);
    for i in 0..4 {
        // Each save changes the large log (a new last chunk) and the database.
        write(
            &src,
            "Default/IndexedDB/big.log",
            &vec![i as u8; (6 << 20) + i],
        );
        let c = rusqlite::Connection::open(src.join("Default/Web Data")).unwrap();
        c.execute("UPDATE t SET v = ?1 WHERE id = 7", [format!("v{i}")])
            .unwrap();
        drop(c);
        vault
            .save(&addr("t1", "p1"), &src, Base::Current, np())
            .await
            .unwrap();
    }
    // A crashed save's pack: never used by any generation.
    let orphan = root.join("tenants/t1/profiles/p1/packs/0123456789abcdef0123456789abcdef.pvp");
    std::fs::write(&orphan, profile_vault::format::v2::pack::prefix()).unwrap();
    let before = pack_files(&root);
    let dry = vault.gc_packs(&addr("t1", "p1"), true).await.unwrap();
    assert_eq!(pack_files(&root), before, "a dry run deletes nothing");
    // The first pass that sees the orphan only marks it; the next deletes it.
    let r1 = vault.gc_packs(&addr("t1", "p1"), false).await.unwrap();
    assert!(orphan.exists(), "{r1:?}");
    let r2 = vault.gc_packs(&addr("t1", "p1"), false).await.unwrap();
    assert!(
        r2.deleted
            .contains(&"0123456789abcdef0123456789abcdef".to_string()),
        "{dry:?} {r1:?} {r2:?}"
    );
    // Packs only the pruned generations 1 and 2 used went too (by now, or already with the
    // collections after each pruning save).
    assert!(pack_files(&root).len() < before.len() - 1, "{r1:?} {r2:?}");
    assert!(!orphan.exists());
    assert_eq!(r2.used, pack_files(&root).len() as u64, "{r2:?}");
    for g in [3, 4] {
        vault
            .verify(&addr("t1", "p1"), Some(g), np())
            .await
            .unwrap();
    }
    // A third pass finds nothing more.
    assert!(vault
        .gc_packs(&addr("t1", "p1"), false)
        .await
        .unwrap()
        .deleted
        .is_empty());
}

#[tokio::test]
async fn a_save_claims_marked_packs_and_stops_on_collected_ones() {
    let (_dir, vault, root, src) = saved_once().await;
    let ids: Vec<String> = pack_files(&root)
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let gc = root.join("tenants/t1/profiles/p1/gc.json");
    let state = |marked: &[String], deleted: &[String]| {
        serde_json::json!({
            "format": 1, "tenant": "t1", "profile": "p1",
            "marked": marked.iter().map(|p| (p.clone(), serde_json::json!(1))).collect::<serde_json::Map<_, _>>(),
            "deleted": deleted.iter().map(|p| (p.clone(), serde_json::json!(u64::MAX / 2))).collect::<serde_json::Map<_, _>>(),
        })
    };
    // Marked long ago (a collection that saw them unused): the next save unmarks them.
    std::fs::write(&gc, serde_json::to_vec(&state(&ids, &[])).unwrap()).unwrap();
    write(&src, "Default/Bookmarks", b"{}");
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let after: serde_json::Value = serde_json::from_slice(&std::fs::read(&gc).unwrap()).unwrap();
    for p in &ids {
        assert!(
            after["marked"].get(p).is_none(),
            "{p} still marked: {after}"
        );
    }
    // Committed as deleted while a save meant to reuse them: the save stops, nothing moves.
    std::fs::write(&gc, serde_json::to_vec(&state(&[], &ids)).unwrap()).unwrap();
    write(&src, "Default/Bookmarks", b"{\"x\":2}");
    let e = vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PacksCollected { .. }), "{e}");
    let (head, _) = vault.head(&addr("t1", "p1")).await.unwrap().unwrap();
    assert_eq!(head.generation, 2);
    assert_eq!(
        pack_files(&root).len(),
        ids.len() + 1,
        "the stopped save removed the packs it uploaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_saves_with_collections_running_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = vault_with(dir.path(), |o| {
        o.keep = 3;
        o.pack_grace = Duration::ZERO;
    });
    race_with_collections(&vault, dir.path()).await;
}

/// 20 saves of one profile at once while collections (no grace) run in a loop: every save
/// lands, loses the head race, or stops because packs it reused were collected; every
/// generation kept afterwards verifies.
pub async fn race_with_collections(vault: &Vault, dir: &Path) {
    let prepare = |d: &Path, i: usize| {
        make_profile(d, "race");
        write(d, "Default/Bookmarks", format!("{{\"n\":{i}}}").as_bytes());
    };
    let src = dir.join("src");
    prepare(&src, 99);
    vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (v, stop) = (vault.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                v.gc_packs(&addr("t1", "p1"), false).await.unwrap();
                runs += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            runs
        })
    };
    let mut tasks = Vec::new();
    for i in 0..20 {
        let v = vault.clone();
        let s = dir.join(format!("s{i}"));
        prepare(&s, i);
        tasks.push(tokio::spawn(async move {
            v.save(&addr("t1", "p1"), &s, Base::Current, np()).await
        }));
    }
    let mut saved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => saved += 1,
            Err(Error::Conflict { .. } | Error::PacksCollected { .. }) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let runs = collector.await.unwrap();
    assert!(saved >= 1 && runs >= 2, "saved {saved}, collections {runs}");
    // Whatever was kept is whole: every generation still listed verifies.
    vault.gc_packs(&addr("t1", "p1"), false).await.unwrap();
    vault.gc_packs(&addr("t1", "p1"), false).await.unwrap();
    for g in vault.versions(&addr("t1", "p1")).await.unwrap() {
        if g.record.is_some() {
            vault
                .verify(&addr("t1", "p1"), Some(g.generation), np())
                .await
                .unwrap_or_else(|e| panic!("generation {}: {e}", g.generation));
        }
    }
}
