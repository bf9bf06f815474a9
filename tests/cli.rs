//! The `profile-vault` binary as operators run it: exit codes, JSON output, embedded default,
//! and the S3 path configured through the standard AWS environment.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::*;

fn pv(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_profile-vault"));
    c.arg("--data-dir")
        .arg(data)
        .env_remove("PV_STORE")
        .env_remove("PV_CONFIG")
        .env_remove("PV_MASTER_KEYS")
        .env_remove("PV_TENANT");
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn embedded_default_full_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    make_profile(&src, "cli");
    let out = run(pv(&data)
        .args(["save", "--json", "--profile", "p1"])
        .arg(&src));
    let v = json(&out);
    assert_eq!(v["profile"], "p1");
    assert_eq!(v["generation"], 1);
    assert!(v["files"].as_u64().unwrap() >= 5);
    assert!(v["bytes_in"].as_u64().unwrap() > 0 && v["bytes_stored"].as_u64().unwrap() > 0);
    // The dev key was generated owner-only, with a warning.
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEV key"));
    let key = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().extension().is_some_and(|x| x == "key"))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);

    json(&run(pv(&data)
        .args(["save", "--json", "--profile", "p1"])
        .arg(&src)));
    let list = json(&run(pv(&data).args(["list", "--json"])));
    assert_eq!(list[0]["profile"], "p1");
    assert_eq!(list[0]["generation"], 2);
    let versions = json(&run(pv(&data).args(["versions", "p1", "--json"])));
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let verify = json(&run(pv(&data).args(["verify", "p1", "--all", "--json"])));
    assert!(verify.as_array().unwrap().iter().all(|o| o["ok"] == true));

    let dst = dir.path().join("dst");
    let r = json(&run(pv(&data)
        .args(["restore", "p1", "--generation", "1", "--json", "--to"])
        .arg(&dst)));
    assert_eq!(r["generation"], 1);
    assert!(dst.join("Default/Cookies").exists());

    // Restoring onto a non-empty directory: usage error 2, nothing touched.
    let out = run(pv(&data).args(["restore", "p1", "--to"]).arg(&dst));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an empty directory"));

    json(&run(
        pv(&data).args(["rollback", "p1", "--to", "1", "--json"])
    ));
    assert_eq!(
        json(&run(pv(&data).args(["list", "--json"])))[0]["generation"],
        1
    );

    // Unknown profile: 3. Another tenant: 3 as well.
    assert_eq!(
        run(pv(&data)
            .args(["restore", "nope", "--to"])
            .arg(dir.path().join("x")))
        .status
        .code(),
        Some(3)
    );
    assert_eq!(
        run(pv(&data).args(["--tenant", "other", "verify", "p1"]))
            .status
            .code(),
        Some(3)
    );
    // Bad id: 2.
    assert_eq!(
        run(pv(&data).args(["verify", "../etc"])).status.code(),
        Some(2)
    );

    // Tampered object: 5.
    let pvo = data
        .join("store/tenants/default/profiles/p1/gens")
        .join(format!("{:020}.pvo", 1));
    let mut bytes = std::fs::read(&pvo).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&pvo, bytes).unwrap();
    let out = run(pv(&data).args(["verify", "p1", "--generation", "1"]));
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed authentication"));

    // keygen + rekey, then only the new key is needed.
    let k = json(&run(pv(&data).args([
        "keygen",
        "--id",
        "second",
        "--activate",
        "--json",
    ])));
    assert_eq!(k["key_id"], "second");
    let rk = json(&run(pv(&data).args(["rekey", "--to", "second", "--json"])));
    assert_eq!(rk["rewrapped"], 2);
    for e in std::fs::read_dir(data.join("keys")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("dev-") {
            std::fs::remove_file(p).unwrap();
        }
    }
    json(&run(pv(&data).args([
        "verify",
        "p1",
        "--generation",
        "2",
        "--json",
    ])));

    // Delete, and the audit trail of all of it.
    json(&run(pv(&data).args(["delete", "p1", "--json"])));
    let audit = json(&run(pv(&data).args(["audit", "--json"])));
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in ["save", "load", "rollback", "rekey", "delete"] {
        assert!(actions.contains(&want), "{want} not audited: {actions:?}");
    }
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"].as_str().unwrap().starts_with("cli:")));
    assert_eq!(
        run(pv(&data).args(["versions", "p1"])).status.code(),
        Some(3)
    );
}

#[test]
fn insecure_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    json(&run(pv(&data).args(["keygen", "--id", "k1", "--json"])));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("keys/k1.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(pv(&data).args(["list"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn config_file_with_unknown_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[retention]\nkeep_generatoins = 3\n").unwrap();
    let out = run(pv(&dir.path().join("d"))
        .arg("--config")
        .arg(&cfg)
        .arg("list"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keep_generatoins"));
}

#[test]
fn s3_through_the_standard_aws_environment() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, ep, secret) in servers() {
        rt.block_on(ensure_bucket(&s3_client(&ep, secret), BUCKET));
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let src = dir.path().join("src");
        make_profile(&src, name);
        let store = format!("s3://{BUCKET}/{}", unique("cli"));
        let cmd = |args: &[&str]| {
            let mut c = pv(&data);
            c.env("PV_STORE", &store)
                .env("AWS_ENDPOINT_URL", &ep)
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", secret)
                .env("AWS_REGION", "us-east-1")
                .env("PV_S3_PATH_STYLE", "true")
                .env(
                    "PV_MASTER_KEYS",
                    "prod:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
                )
                .env_remove("AWS_PROFILE")
                .args(args);
            c
        };
        let v = json(&run(cmd(&[
            "save",
            "--json",
            "--profile",
            "p1",
            src.to_str().unwrap(),
        ])
        .env_remove("PV_STORE")
        .env("PV_STORE", &store)));
        assert_eq!(v["generation"], 1, "{name}");
        let dst = dir.path().join("dst");
        json(&run(&mut cmd(&[
            "restore",
            "p1",
            "--json",
            "--to",
            dst.to_str().unwrap(),
        ])));
        assert!(dst.join(format!("Default/{FILE_NAME_MARKER}")).exists());
        // No key configured and a non-default store: refuse rather than invent a dev key.
        let out = run(cmd(&["list"])
            .env_remove("PV_MASTER_KEYS")
            .env("PV_DATA_DIR", dir.path().join("fresh"))
            .arg("--data-dir")
            .arg(dir.path().join("fresh")));
        assert_eq!(out.status.code(), Some(2), "{name}");
        // A wrong secret on the signature-checking server fails cleanly (non-zero, no panic).
        if name == "s3s-fs" {
            let out = run(cmd(&["list"]).env("AWS_SECRET_ACCESS_KEY", "wrong"));
            assert!(!out.status.success());
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        }
    }
}

#[test]
fn gc_deletes_idle_profiles_and_dry_run_only_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    make_profile(&src, "gc");
    for p in ["old", "fresh"] {
        json(&run(pv(&data)
            .args(["save", "--json", "--profile", p])
            .arg(&src)));
    }
    // "old" was last saved two hours ago (its head record says so; no load since).
    let head = data.join("store/tenants/default/profiles/old/head.json");
    let mut h: serde_json::Value = serde_json::from_slice(&std::fs::read(&head).unwrap()).unwrap();
    h["updated_at"] = (h["updated_at"].as_u64().unwrap() - 7200).into();
    std::fs::write(&head, h.to_string()).unwrap();
    // 0.04 days = 57.6 minutes: "old" is idle for longer, "fresh" is not. While a session
    // of some node holds its lease, "old" is in use and kept all the same.
    let lease = head.with_file_name("lease.json");
    let until = (std::time::SystemTime::now() + std::time::Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(
        &lease,
        serde_json::json!({"node": "elsewhere", "session": "s", "expires_at_ms": until as u64})
            .to_string(),
    )
    .unwrap();
    let leased = json(&run(pv(&data).args([
        "gc",
        "--older-than-days",
        "0.04",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(leased["profiles"], serde_json::json!([]), "{leased}");
    std::fs::remove_file(&lease).unwrap();
    let dry = json(&run(pv(&data).args([
        "gc",
        "--older-than-days",
        "0.04",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(
        dry["profiles"],
        serde_json::json!([{"tenant": "default", "profile": "old"}])
    );
    assert_eq!(
        json(&run(pv(&data).args(["list", "--json"])))
            .as_array()
            .unwrap()
            .len(),
        2,
        "dry run deletes nothing"
    );
    json(&run(pv(&data).args([
        "gc",
        "--older-than-days",
        "0.04",
        "--json",
    ])));
    let left = json(&run(pv(&data).args(["list", "--json"])));
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["profile"], "fresh");
}

#[test]
fn gc_collects_unused_packs_and_save_reports_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let src = dir.path().join("src");
    make_profile(&src, "packs");
    // Saves mark what pruning left unused (an hour's grace); the collections below run
    // with no grace.
    let pvg = |grace: &str, args: &[&str]| {
        let mut c = pv(&data);
        c.env("PV_KEEP_GENERATIONS", "1")
            .env("PV_PACK_GRACE_SECS", grace)
            .args(args);
        c
    };
    let pvk = |args: &[&str]| pvg("3600", args);
    let now = |args: &[&str]| pvg("0", args);
    let mut sent = Vec::new();
    for i in 0..3 {
        write(&src, "Default/Bookmarks", &vec![b'a' + i; 300_000]);
        let v = json(&run(pvk(&["save", "--json", "--profile", "p1"]).arg(&src)));
        sent.push(v["chunks"]["bytes_uploaded"].as_u64().unwrap());
        assert_eq!(
            v["chunks"]["chunks_new"],
            if i == 0 {
                v["chunks"]["chunks"].clone()
            } else {
                1.into()
            },
            "{v}"
        );
    }
    assert!(sent[1] < sent[0] && sent[2] < sent[0], "{sent:?}");
    // The human output says what a re-save sent; --reread reads every file.
    let out = run(pvk(&["save", "--profile", "p1", "--reread"]).arg(&src));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("format 2: 0 of"),
        "{text}"
    );
    let dry = json(&run(&mut now(&["gc", "--dry-run", "--json"])));
    let packs = dry["packs"].as_array().unwrap();
    assert_eq!(packs.len(), 1, "{dry}");
    let doomed = packs[0]["deleted"].as_array().unwrap().len();
    assert!(doomed >= 1, "packs only pruned generations used: {dry}");
    let again = json(&run(&mut now(&["gc", "--dry-run", "--json"])));
    assert_eq!(
        again["packs"][0]["packs"], dry["packs"][0]["packs"],
        "a dry run deletes nothing"
    );
    let done = json(&run(&mut now(&["gc", "--json"])));
    assert_eq!(
        done["packs"][0]["deleted"], dry["packs"][0]["deleted"],
        "{done}"
    );
    let after = json(&run(&mut now(&["gc", "--json"])));
    assert_eq!(after["packs"][0]["marked"], 0, "{after}");
    assert_eq!(
        after["packs"][0]["packs"], after["packs"][0]["used"],
        "only used packs are left: {after}"
    );
    json(&run(&mut pvk(&["verify", "p1", "--all", "--json"])));
    let out = run(&mut pvk(&["versions", "p1"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("format 2:"),
        "versions names the format"
    );
}
