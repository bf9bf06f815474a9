//! Rolling upgrades: a profile saved by a newer Chromium is not opened by an older one, and
//! records and objects written by a newer profile-vault get "written by a newer
//! profile-vault; upgrade this node" from every command and route that reads them, with
//! nothing changed — gc and retention included.

use std::path::Path;

use serde_json::{json, Value};

use crate::api::cli_for;
use crate::common::daemon::*;

fn cli(d: &Daemon, args: &[&str]) -> (i32, String) {
    let out = cli_for(d).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A small profile directory; `last_version` goes into its `Last Version` file.
fn profile_dir(root: &Path, last_version: &str) -> std::path::PathBuf {
    let dir = root.join(format!("p-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("Default")).unwrap();
    std::fs::write(
        dir.join("Default/Preferences"),
        br#"{"profile":{"name":"x"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("Last Version"), last_version).unwrap();
    dir
}

fn save(d: &Daemon, root: &Path, id: &str, last_version: &str) {
    let dir = profile_dir(root, last_version);
    let (code, text) = cli(d, &["save", dir.to_str().unwrap(), "--profile", id]);
    assert_eq!(code, 0, "{text}");
}

fn set_format(path: &Path, format: u64) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["format"] = json!(format);
    v["written_by"] = json!("profile-vault 9.0");
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if !e.path().to_string_lossy().contains("/audit/") {
                out.push((
                    e.path().display().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_of_a_newer_chromium_is_not_opened_by_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let (_, ready) = d.call("GET", "/readyz", None, None).await;
    let browser = ready["checks"]["browser_version"]
        .as_str()
        .expect("readyz names the browser")
        .to_string();
    save(&d, dir.path(), "from-the-future", "999.0.1.2");
    let profile = dir
        .path()
        .join("data/store/tenants/t1/profiles/from-the-future");
    let before = snapshot(&profile);
    let (st, v) = d
        .post_vm(
            KEY_T1,
            json!({"profile": {"load": "from-the-future", "save": true}}),
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("browser_too_old")),
        "{v}"
    );
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("999.0.1.2") && msg.contains(&browser), "{msg}");
    // Nothing started, nothing changed.
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    assert_eq!(list["sessions"], json!([]));
    let browsers = dir.path().join("data/browsers");
    assert_eq!(
        std::fs::read_dir(&browsers).map(|r| r.count()).unwrap_or(0),
        0
    );
    assert_eq!(snapshot(&profile), before, "the profile was touched");
    // The CLI refuses to restore it for this machine's browser, unless told otherwise.
    let to = dir.path().join("restored");
    let (code, text) = cli(
        &d,
        &["restore", "from-the-future", "--to", to.to_str().unwrap()],
    );
    assert_eq!(code, 7, "{text}");
    assert!(
        text.contains("999.0.1.2") && text.contains(&browser),
        "{text}"
    );
    assert!(!to.exists(), "restore wrote something");
    let (code, text) = cli(
        &d,
        &[
            "restore",
            "from-the-future",
            "--to",
            to.to_str().unwrap(),
            "--allow-older-browser",
        ],
    );
    assert_eq!(code, 0, "{text}");
    // A profile of this browser's own version loads.
    let major: u64 = browser.split('.').next().unwrap().parse().unwrap();
    save(&d, dir.path(), "same-major", &format!("{major}.0.0.1"));
    let s = d
        .create(KEY_T1, json!({"profile": {"load": "same-major"}}))
        .await;
    d.end_and_wait(KEY_T1, s["session_id"].as_str().unwrap())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_and_objects_of_a_newer_profile_vault_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), StoreKind::Fs, &[]);
    let profiles = dir.path().join("data/store/tenants/t1/profiles");
    for id in ["new-head", "new-record", "new-object", "new-lease", "old"] {
        save(&d, dir.path(), id, "100.0.0.0");
    }
    set_format(&profiles.join("new-head/head.json"), 2);
    set_format(
        &profiles.join("new-record/gens/00000000000000000001.json"),
        4,
    );
    let obj = profiles.join("new-object/gens/00000000000000000001.pvo");
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[9] = 3; // payload format version (u16 BE at offset 8)
    std::fs::write(&obj, bytes).unwrap();
    std::fs::write(
        profiles.join("new-lease/lease.json"),
        br#"{"format": 2, "node": "node-x", "session": "s", "expires_at_ms": 1, "holders": []}"#,
    )
    .unwrap();
    let before: Vec<_> = ["new-head", "new-record", "new-object", "new-lease"]
        .iter()
        .map(|p| snapshot(&profiles.join(p)))
        .collect();
    let to = dir.path().join("restored");
    let to = to.to_str().unwrap();
    let newer = |what: &str, code: i32, text: &str| {
        assert_eq!(code, 7, "{what}: {text}");
        assert!(
            text.contains("newer profile-vault") && text.contains("upgrade this node"),
            "{what}: {text}"
        );
    };
    for p in ["new-head", "new-record", "new-object"] {
        let (code, text) = cli(&d, &["restore", p, "--to", to, "--allow-older-browser"]);
        newer(&format!("restore {p}"), code, &text);
        let (code, text) = cli(&d, &["verify", p]);
        newer(&format!("verify {p}"), code, &text);
    }
    for p in ["new-head", "new-record"] {
        let (code, text) = cli(&d, &["versions", p]);
        newer(&format!("versions {p}"), code, &text);
    }
    let (code, text) = cli(&d, &["rollback", "new-head", "--to", "1"]);
    newer("rollback", code, &text);
    let (code, text) = cli(&d, &["rekey", "--to", "k1"]);
    newer("rekey", code, &text);
    // The API says the same.
    for (body, what) in [
        (json!({"profile": {"load": "new-head"}}), "head"),
        (json!({"profile": {"load": "new-record"}}), "record"),
        (json!({"profile": {"load": "new-object"}}), "object"),
        (
            json!({"profile": {"load": "new-lease", "save": true}}),
            "lease",
        ),
    ] {
        let (st, v) = d.post_vm(KEY_T1, body).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (409, Some("newer_format")),
            "{what}: {v}"
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("newer profile-vault"),
            "{v}"
        );
    }
    for p in ["new-head", "new-record"] {
        let (st, v) = d
            .call("GET", &format!("/v0/profiles/{p}"), Some(KEY_T1), None)
            .await;
        assert_eq!(
            (st, v["error"].as_str()),
            (409, Some("newer_format")),
            "{p}: {v}"
        );
    }
    // Retention takes the old profile and leaves what it cannot read.
    let (code, text) = cli(&d, &["gc", "--older-than-days", "0"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        !profiles.join("old/head.json").exists(),
        "gc did not run: {text}"
    );
    for (p, b) in ["new-head", "new-record", "new-object", "new-lease"]
        .iter()
        .zip(&before)
    {
        assert_eq!(&snapshot(&profiles.join(p)), b, "{p} was changed");
    }
}
