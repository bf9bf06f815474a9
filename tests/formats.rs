//! The at-rest formats as they were written: a store committed under
//! `tests/fixtures/formats/store` (written by profile-vault 0.1 on 2026-12-06 with the master
//! key `fixture` in `master-key.b64`) holds two generations of format 1 (`format1`: ZIP
//! objects) and two of format 2 (`format2`: chunks in packs, the second deduplicated against
//! the first), saved from the trees `gen1` and `gen2` beside it. Today's readers must restore
//! every one of them byte for byte, and verify them: FORMAT.md's promise that old generations
//! stay readable is tested against bytes an earlier writer made, not only today's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::addr;
use base64::Engine;
use profile_vault::config::FileConfig;
use profile_vault::{Keyring, NoProgress, Vault};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/formats")
}

/// Every file under `root` by relative path, with its bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A vault on a copy of the committed store (a restore writes its last-use mark and audit
/// record; the committed bytes stay as they are).
fn vault(dir: &Path) -> Vault {
    copy_dir(&fixtures().join("store"), &dir.join("store"));
    let b64 = std::fs::read_to_string(fixtures().join("master-key.b64")).unwrap();
    let key: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
        .try_into()
        .unwrap();
    let ring = Keyring::from_keys(vec![("fixture".into(), key)], "fixture").unwrap();
    let store = profile_vault::store::fs::LocalFileSystem::new(dir.join("store")).unwrap();
    Vault::new(
        Arc::new(store),
        Arc::new(ring),
        FileConfig::default().vault_options(dir),
    )
    .unwrap()
}

#[tokio::test]
async fn generations_written_by_an_earlier_release_restore_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    for (profile, generation, record_format, source) in [
        ("format1", 1, 1, "gen1"),
        ("format1", 2, 1, "gen2"),
        ("format2", 1, 3, "gen1"),
        ("format2", 2, 3, "gen2"),
    ] {
        let record = fixtures().join(format!(
            "store/tenants/fixtures/profiles/{profile}/gens/{generation:020}.json"
        ));
        let r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(
            r["format"], record_format,
            "{profile} {generation}: the fixture's kind"
        );
        let to = dir.path().join(format!("{profile}-{generation}"));
        let rep = v
            .restore(
                &addr("fixtures", profile),
                Some(generation),
                &to,
                Arc::new(NoProgress),
            )
            .await
            .unwrap_or_else(|e| panic!("{profile} generation {generation}: {e}"));
        assert_eq!(rep.generation, generation);
        let (got, want) = (tree(&to), tree(&fixtures().join(source)));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{profile} {generation}: the files"
        );
        for (path, bytes) in &want {
            assert!(
                got[path] == *bytes,
                "{profile} {generation}: {path} differs"
            );
        }
        v.verify(
            &addr("fixtures", profile),
            Some(generation),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_or_else(|e| panic!("verify {profile} {generation}: {e}"));
    }
}

#[tokio::test]
async fn a_committed_generation_changed_by_one_bit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = vault(dir.path());
    // Flip one bit in the middle of every object of format 2's packs and of format 1's
    // second object: each reader must notice.
    let store = dir.path().join("store/tenants/fixtures/profiles");
    let mut damaged = vec![store.join("format1/gens/00000000000000000002.pvo")];
    for e in std::fs::read_dir(store.join("format2/packs")).unwrap() {
        damaged.push(e.unwrap().path());
    }
    for p in &damaged {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x10;
        std::fs::write(p, b).unwrap();
    }
    for (profile, generation) in [("format1", 2), ("format2", 1)] {
        let to = dir.path().join(format!("bad-{profile}"));
        let e = v
            .restore(
                &addr("fixtures", profile),
                Some(generation),
                &to,
                Arc::new(NoProgress),
            )
            .await
            .expect_err("a damaged generation must not restore");
        assert!(e.is_integrity(), "{profile}: {e}");
        assert!(!to.exists(), "{profile}: nothing is left behind");
    }
}
