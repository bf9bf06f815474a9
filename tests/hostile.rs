//! Hostile archives and damaged objects, end to end: through `profile-vault restore` and
//! through `POST /v0/vm`. Each is rejected with a clear error; nothing is written outside
//! the target, no staging is left, and no session starts. And a profile a restore would
//! refuse is not saved.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use profile_vault::crypt::DataKey;
use profile_vault::format::v1::zipw::{Method, ZipWriter};
use profile_vault::format::Sealer;
use profile_vault::keys::WrapContext;
use profile_vault::store::fs::LocalFileSystem;
use profile_vault::vault::{Base, GenerationRecord, Head};
use profile_vault::{PutBody, PutMode, Store};
use serde_json::json;

use crate::common::daemon::*;
use crate::common::*;

const MASTER: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// Stores `zip` as a correctly encrypted generation 1 of `profile` (so only the archive
/// checks can stop it), following docs/FORMAT.md.
async fn plant(store: &dyn Store, tenant: &str, profile: &str, zip: &[u8]) {
    let ring = keyring("k1", 1);
    let dek = DataKey::generate();
    let sealer = Sealer::new(&dek, 64 * 1024);
    let object_id = uuid::Uuid::new_v4().to_string();
    let mut payload = sealer.header_bytes(tenant, profile, 1, &object_id, 1_700_000_000);
    let mut w = sealer.body_writer(Vec::new());
    w.write_all(zip).unwrap();
    payload.extend_from_slice(&w.finish().unwrap().0);
    let base = format!("tenants/{tenant}/profiles/{profile}/");
    let object_size = payload.len() as u64;
    store
        .put(
            &format!("{base}gens/{:020}.pvo", 1),
            PutBody::Bytes(payload.into()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let wrapped = ring
        .wrap(
            "k1",
            &dek,
            &WrapContext {
                tenant,
                profile,
                generation: 1,
                object_id: &object_id,
            },
        )
        .await
        .unwrap();
    let rec = GenerationRecord {
        format: 1,
        tenant: tenant.into(),
        profile: profile.into(),
        generation: 1,
        object_id: object_id.clone(),
        created_at: 1_700_000_000,
        key_id: wrapped.key_id,
        wrapped_key: base64::engine::general_purpose::STANDARD.encode(&wrapped.blob),
        kms_key_arn: None,
        object_size,
        base: None,
        stats: Default::default(),
        packs: None,
        chunks: None,
    };
    store
        .put(
            &format!("{base}gens/{:020}.json", 1),
            PutBody::Bytes(serde_json::to_vec(&rec).unwrap().into()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let head = Head {
        format: 1,
        tenant: tenant.into(),
        profile: profile.into(),
        generation: 1,
        object_id,
        updated_at: 1_700_000_000,
    };
    store
        .put(
            &format!("{base}head.json"),
            PutBody::Bytes(serde_json::to_vec(&head).unwrap().into()),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
}

fn zip_of(entries: &[(&str, Vec<u8>)], mode_patch: Option<u32>) -> Vec<u8> {
    let mut z = ZipWriter::new(Vec::new());
    for (name, data) in entries {
        z.add_compressed(
            name,
            Method::Stored,
            crc32fast::hash(data),
            data.len() as u64,
            data,
        )
        .unwrap();
    }
    let mut out = z.finish().unwrap().0;
    if let Some(mode) = mode_patch {
        let pos = out
            .windows(4)
            .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
            .unwrap();
        out[pos + 38..pos + 42].copy_from_slice(&(mode << 16).to_le_bytes());
    }
    out
}

fn bomb() -> Vec<u8> {
    let zeros = vec![0u8; 64 << 20];
    let packed = zstd::bulk::compress(&zeros, 3).unwrap();
    let mut z = ZipWriter::new(Vec::new());
    z.add_compressed(
        "Default/bomb",
        Method::Zstd,
        crc32fast::hash(&zeros),
        zeros.len() as u64,
        &packed,
    )
    .unwrap();
    z.finish().unwrap().0
}

fn many_tiny(n: usize) -> Vec<u8> {
    let mut z = ZipWriter::new(Vec::new());
    for i in 0..n {
        z.add_compressed(
            &format!("Default/f{i}"),
            Method::Stored,
            crc32fast::hash(b"x"),
            1,
            b"x",
        )
        .unwrap();
    }
    z.finish().unwrap().0
}

fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        (
            "dotdot",
            zip_of(
                &[("Default/ok", b"1".to_vec()), ("../evil", b"x".to_vec())],
                None,
            ),
            "unsafe entry name",
        ),
        (
            "deep-dotdot",
            zip_of(&[("Default/../../evil", b"x".to_vec())], None),
            "unsafe entry name",
        ),
        (
            "absolute",
            zip_of(&[("/tmp/evil", b"x".to_vec())], None),
            "absolute path",
        ),
        (
            "backslash",
            zip_of(&[("..\\evil", b"x".to_vec())], None),
            "backslash",
        ),
        ("nul", zip_of(&[("a\0b", b"x".to_vec())], None), "NUL"),
        (
            "symlink",
            zip_of(
                &[("Default/link", b"/etc/passwd".to_vec())],
                Some(0o120_777),
            ),
            "symbolic link",
        ),
        (
            "device",
            zip_of(&[("Default/dev", Vec::new())], Some(0o020_644)),
            "special file",
        ),
        (
            "fifo",
            zip_of(&[("Default/fifo", Vec::new())], Some(0o010_644)),
            "special file",
        ),
        (
            "duplicate",
            zip_of(
                &[("Default/a", b"1".to_vec()), ("Default/a", b"2".to_vec())],
                None,
            ),
            "appears twice",
        ),
        ("bomb", bomb(), "zip bomb"),
        ("too-many", many_tiny(100_000), "max_files"),
        (
            "too-large",
            zip_of(&[("Default/big", vec![7u8; 2 << 20])], None),
            "max_file_size",
        ),
        ("garbage", b"not a zip at all".to_vec(), "corrupt"),
    ]
}

fn pv(data: &Path, cfg: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_profile-vault"));
    c.arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(cfg)
        .env("PV_MASTER_KEYS", MASTER)
        .env_remove("PV_STORE")
        .env_remove("PV_TENANT");
    c
}

fn staging_left(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".pv-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_rejected_by_restore_and_by_post_vm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[limits]\nmax_files = 50000\nmax_file_size = 1048576\n",
    )
    .unwrap();
    let store = LocalFileSystem::new(data.join("store")).unwrap();
    for (name, zip, _) in cases() {
        plant(&store, "default", &format!("h-{name}"), &zip).await;
        plant(&store, "t1", &format!("h-{name}"), &zip).await;
    }
    // Through the CLI restore.
    let out_dir = dir.path().join("restores");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (name, _, expect) in cases() {
        let target = out_dir.join(name);
        let out = pv(&data, &cfg)
            .args(["restore", &format!("h-{name}"), "--to"])
            .arg(&target)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!target.exists(), "{name}: target created");
        assert!(
            staging_left(&out_dir).is_empty(),
            "{name}: staging left: {:?}",
            staging_left(&out_dir)
        );
        assert!(
            !dir.path().join("evil").exists()
                && !Path::new("/tmp/evil").exists()
                && !out_dir.join("evil").exists(),
            "{name}: wrote outside the target"
        );
    }
    // Through POST /v0/vm: the session is not started.
    let d = Daemon::start(
        &data,
        StoreKind::Fs,
        &[("PV_CONFIG", cfg.to_str().unwrap())],
    );
    for (name, _, expect) in cases() {
        let (st, v) = d
            .post_vm(KEY_T1, json!({"profile": {"load": format!("h-{name}")}}))
            .await;
        assert_eq!(
            (st, v["error"].as_str()),
            (422, Some("profile_corrupt")),
            "{name}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap().contains(expect),
            "{name}: {v}"
        );
    }
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(list["sessions"], json!([]));
    assert_eq!(
        std::fs::read_dir(data.join("browsers")).unwrap().count(),
        0,
        "no browser dir left"
    );
    assert!(staging_left(&data.join("browsers")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_misplaced_objects_are_rejected_by_post_vm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, StoreKind::Fs, &[]);
    // A real profile saved by a session.
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &id).await;
    let gens = data.join(format!("store/tenants/t1/profiles/{id}/gens"));
    let pvo = gens.join(format!("{:020}.pvo", 1));
    let original = std::fs::read(&pvo).unwrap();
    let hl = profile_vault::format::header_len(&original).unwrap();
    let chunk = 64 * 1024 + 16;
    // A flipped bit in each region: prefix, header JSON, MAC, first chunk, last chunk;
    // truncation at a chunk boundary and inside a chunk; bytes appended.
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for (region, pos) in [
        ("prefix", 11usize), // the suite (a flipped version byte reads as a newer format: tests/upgrade.rs)
        ("header", 40),
        ("mac", hl - 3),
        ("first-chunk", hl + 5),
        ("last-chunk", original.len() - 5),
    ] {
        let mut b = original.clone();
        b[pos] ^= 0x10;
        variants.push((format!("flip-{region}"), b));
    }
    let body = original.len() - hl;
    if body > chunk {
        variants.push(("cut-at-boundary".into(), original[..hl + chunk].to_vec()));
    }
    variants.push((
        "cut-in-chunk".into(),
        original[..original.len() - 7].to_vec(),
    ));
    variants.push(("cut-in-header".into(), original[..hl / 2].to_vec()));
    let mut appended = original.clone();
    appended.extend_from_slice(b"trailing");
    variants.push(("appended".into(), appended));
    for (name, bytes) in variants {
        std::fs::write(&pvo, &bytes).unwrap();
        let (st, v) = d.post_vm(KEY_T1, json!({"profile": id})).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (422, Some("profile_corrupt")),
            "{name}: {v}"
        );
    }
    std::fs::write(&pvo, &original).unwrap();
    // Another tenant's valid object copied in place of this one.
    let s2 = d.create(KEY_T2, json!({"profile": true})).await;
    let id2 = s2["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T2, &id2).await;
    let other = data.join(format!(
        "store/tenants/t2/profiles/{id2}/gens/{:020}.pvo",
        1
    ));
    std::fs::copy(&other, &pvo).unwrap();
    let (st, v) = d.post_vm(KEY_T1, json!({"profile": id})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (422, Some("profile_corrupt")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("belongs elsewhere"),
        "{v}"
    );
    // The original loads again once restored.
    std::fs::write(&pvo, &original).unwrap();
    let ok = d.create(KEY_T1, json!({"profile": {"load": id}})).await;
    assert_eq!(ok["profile"]["loaded"], true);
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(
        list["sessions"].as_array().unwrap().len(),
        1,
        "only the good load started a session"
    );
}

#[tokio::test]
async fn a_profile_a_restore_would_refuse_is_not_saved_and_the_head_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = fs_vault(dir.path());
    let src = dir.path().join("src");
    make_profile(&src, "a");
    vault
        .save(
            &addr("t1", "p1"),
            &src,
            Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    // A page or the browser leaves a sparse file of 9 GiB (no block of it on disk, so no
    // disk quota sees it): over the 8 GiB a restore takes per file. It is not read, and the
    // profile's head stays on the generation that can be restored.
    let src2 = dir.path().join("src2");
    make_profile(&src2, "b");
    std::fs::File::create(src2.join("Default/huge"))
        .unwrap()
        .set_len(9 << 30)
        .unwrap();
    let t = std::time::Instant::now();
    let e = vault
        .save(
            &addr("t1", "p1"),
            &src2,
            Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"Default/huge\" is 9663676416 bytes, over the limit of 8589934592 (limits.max_file_size)")
            && e.contains("a restore would refuse it"),
        "{e}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(60),
        "the 9 GiB were read"
    );
    let gens = vault.versions(&addr("t1", "p1")).await.unwrap();
    assert_eq!(gens.len(), 1);
    let dst = dir.path().join("dst");
    let r = vault
        .restore(
            &addr("t1", "p1"),
            None,
            &dst,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(r.generation, 1);
}

/// A session whose profile holds what a restore would refuse ends with its save refused:
/// said so, not retried, its profile free at once on the last generation, its directory kept
/// for `sessions.keep_refused_saves` and then removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_a_restore_would_refuse_ends_refused_and_frees_its_profile() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::with_config(
        dir.path(),
        "[sessions]\nretry_failed_every = 1\nkeep_refused_saves = 10\n",
    );
    let first = d.create(KEY_T1, json!({"profile": true})).await;
    let pid = first["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &pid).await;
    let second = d.create(KEY_T1, json!({"profile": pid})).await;
    let sid = second["session_id"].as_str().unwrap().to_string();
    // What the page or the browser left: a sparse file over the 8 GiB a restore takes.
    let kept = d.data.join("browsers").join(&sid);
    std::fs::File::create(kept.join("Default/huge"))
        .unwrap()
        .set_len(9 << 30)
        .unwrap();
    let ended = d.end_and_wait(KEY_T1, &sid).await;
    assert_eq!(ended["save"]["state"], "refused", "{ended}");
    let why = ended["save"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("limits.max_file_size"), "{ended}");
    assert!(kept.is_dir(), "the directory is kept a while");
    let (_, v) = d.call("GET", "/v0/saves", Some(KEY_T1), None).await;
    assert_eq!(v["failed_saves"][0]["session_id"], sid.as_str(), "{v}");
    assert_eq!(v["failed_saves"][0]["state"], "refused", "{v}");
    // A retry says it was refused again.
    let (st, v) = d
        .call(
            "POST",
            &format!("/v0/saves/{sid}/retry"),
            Some(KEY_T1),
            None,
        )
        .await;
    assert_eq!(st, 503, "{v}");
    assert!(v["message"].as_str().unwrap().contains("refused"), "{v}");
    // The profile is not held: a saving load starts at once, on the last good generation.
    let third = d.create(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(third["profile"]["generation"], 1, "{third}");
    // Past `keep_refused_saves` the directory and its record go; the sweeper never retried
    // the save (refused at the end of the session and by the one retry asked for).
    let t = std::time::Instant::now();
    while kept.exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "the refused save's directory was not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let (_, v) = d.call("GET", "/v0/saves", Some(KEY_T1), None).await;
    assert_eq!(v["failed_saves"], json!([]), "{v}");
    let refusals = d
        .log_text()
        .matches("the save was refused for good")
        .count();
    assert_eq!(refusals, 2, "{}", d.log_text());
}

/// Grows a file of the profile when packing starts (after the walk listed it, before it is
/// read): what a browser or any late writer does to a profile being saved.
struct GrowOnPacking(std::path::PathBuf);

impl profile_vault::Progress for GrowOnPacking {
    fn start(&self, label: &str, _: u64) {
        if label == "packing" {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.0)
                .unwrap();
            f.write_all(&[b'x'; 5000]).unwrap();
        }
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A file that changes size while its profile is saved fails the save (the head stays): its
/// chunks would not add up to the size listed, and no restore would take the generation.
#[tokio::test]
async fn a_file_that_grows_while_it_is_saved_fails_the_save_and_the_head_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = fs_vault(dir.path());
    let src = dir.path().join("src");
    make_profile(&src, "a");
    vault
        .save(
            &addr("t1", "p1"),
            &src,
            Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    std::fs::write(src.join("Default/History"), vec![b'g'; 30_000]).unwrap();
    let e = vault
        .save(
            &addr("t1", "p1"),
            &src,
            Base::Current,
            Arc::new(GrowOnPacking(src.join("Default/History"))),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("changed size while the profile was saved"),
        "{e}"
    );
    assert_eq!(vault.versions(&addr("t1", "p1")).await.unwrap().len(), 1);
    let r = vault
        .restore(
            &addr("t1", "p1"),
            None,
            &dir.path().join("dst"),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(r.generation, 1);
}
