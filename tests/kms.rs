//! Master keys in KMS, against LocalStack's KMS (`SERVICES=s3,kms`), with the key the
//! LocalStack init hook (`localstack/init/ready.d/20-kms.sh`) creates: per-tenant keys,
//! the encryption context binding tenant, profile and generation, rekey between key
//! sources, KMS outages, and the daemon saving and loading through a KMS key.

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::*;

/// Created by the LocalStack ready hook that `scripts/test-servers.sh` runs.
const HOOK_ALIAS: &str = "alias/profile-vault";
const LOCAL_KEY: &str = "local:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

struct Env {
    data: std::path::PathBuf,
    prefix: String,
    kms_keys: String,
    kms_endpoint: String,
}

impl Env {
    /// The CLI on s3s-fs (the store) with KMS on LocalStack (another endpoint).
    fn pv(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_profile-vault"));
        c.arg("--data-dir")
            .arg(&self.data)
            .env("PV_STORE", format!("s3://{BUCKET}/{}", self.prefix))
            .env("AWS_ENDPOINT_URL", endpoint("PV_TEST_S3S"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "testtesttest")
            .env("AWS_REGION", "us-east-1")
            .env("PV_S3_PATH_STYLE", "true")
            .env("PV_MASTER_KEYS", LOCAL_KEY)
            .env("PV_ACTIVE_KEY", "local")
            .env("PV_KMS_KEYS", &self.kms_keys)
            .env("PV_KMS_ENDPOINT", &self.kms_endpoint)
            .env("PV_TENANT_KEYS", "acme=vault")
            .env_remove("PV_CONFIG")
            .env_remove("PV_TENANT")
            .env_remove("AWS_PROFILE")
            .args(args);
        c
    }
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!(
        "$ {:?}\nstdout: {}\nstderr: {}",
        c.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The generation records of a profile, as `versions --json` shows them.
fn records(env: &Env, tenant: &str, profile: &str) -> Vec<Value> {
    let v = ok_json(&run(
        &mut env.pv(&["versions", profile, "--tenant", tenant, "--json"])
    ));
    let mut gens: Vec<Value> = v
        .as_array()
        .unwrap_or_else(|| panic!("no generations in {v}"))
        .clone();
    gens.sort_by_key(|g| g["generation"].as_u64());
    gens.into_iter().map(|g| g["record"].clone()).collect()
}

fn restore_ok(env: &Env, tenant: &str, profile: &str, src: &Path, dst: &Path) {
    ok_json(&run(&mut env.pv(&[
        "restore",
        profile,
        "--tenant",
        tenant,
        "--json",
        "--to",
        dst.to_str().unwrap(),
    ])));
    let mut expected = tree(src);
    expected.retain(|(p, _)| !p.contains("Cache"));
    assert_eq!(tree(dst), expected, "{tenant}/{profile}");
}

/// Saves `src` as `tenant`/p1 and checks that the KMS request for its data key fails as
/// expected (GenerateDataKey for a new profile; Decrypt of the content key a format 2
/// profile carries from its head).
fn assert_save_fails(env: &Env, tenant: &str, src: &Path, code: i32, why: &str) {
    let out = run(&mut env.pv(&[
        "save",
        "--tenant",
        tenant,
        "--profile",
        "p1",
        src.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(
        (err.contains("KMS GenerateDataKey") || err.contains("KMS Decrypt")) && err.contains(why),
        "{err}"
    );
}

fn kms_client() -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint("PV_TEST_LOCALSTACK"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// The daemon's `pv_kms_requests_total` for one operation and outcome.
async fn kms_requests(d: &Daemon, op: &str, outcome: &str) -> u64 {
    let (st, m) = http_raw(&d.addr, "GET", "/metrics", None, None).await;
    assert_eq!(st, 200);
    let prefix = format!("pv_kms_requests_total{{op=\"{op}\",outcome=\"{outcome}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {m}"))
        .parse()
        .unwrap()
}

/// A new symmetric key in LocalStack's KMS; its ARN.
async fn new_kms_key(client: &aws_sdk_kms::Client) -> String {
    let out = client
        .create_key()
        .description("profile-vault test key")
        .send()
        .await
        .unwrap();
    out.key_metadata.unwrap().arn.unwrap()
}

/// Writes a generation record straight into the bucket.
async fn put_record(env: &Env, s3: &aws_sdk_s3::Client, at: (&str, &str, u64), rec: &Value) {
    let key = format!(
        "{}/tenants/{}/profiles/{}/gens/{:020}.json",
        env.prefix, at.0, at.1, at.2
    );
    s3.put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(serde_json::to_vec(rec).unwrap().into())
        .send()
        .await
        .unwrap();
}

/// Copies a generation record to another place (tenant/profile/generation edited to fit
/// it, so only the wrap's binding can stop it) and checks that KMS itself refuses it.
async fn assert_moved_record_is_refused(
    env: &Env,
    s3: &aws_sdk_s3::Client,
    rec: &Value,
    to: (&str, &str, u64),
) {
    let mut moved = rec.clone();
    moved["tenant"] = json!(to.0);
    moved["profile"] = json!(to.1);
    moved["generation"] = json!(to.2);
    put_record(env, s3, to, &moved).await;
    let out = run(&mut env.pv(&[
        "verify",
        to.1,
        "--tenant",
        to.0,
        "--generation",
        &to.2.to_string(),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "integrity exit code: {err}");
    assert!(
        err.contains("KMS Decrypt") && err.contains("ciphertext rejected"),
        "KMS refused it: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_keys_per_tenant_context_binding_and_rekey_between_sources() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = s3_client(&endpoint("PV_TEST_S3S"), "testtesttest");
    ensure_bucket(&s3, BUCKET).await;
    let mut env = Env {
        data: dir.path().join("data"),
        prefix: unique("kms"),
        kms_keys: format!("vault={HOOK_ALIAS}"),
        kms_endpoint: endpoint("PV_TEST_LOCALSTACK"),
    };

    // The keyring: one local key (active), one KMS key for tenant acme; the KMS key works.
    let keys = ok_json(&run(&mut env.pv(&["keys", "--check", "--json"])));
    assert_eq!(keys["check"]["ok"], true, "{keys}");
    let vault_key = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == "vault")
        .unwrap()
        .clone();
    assert_eq!(vault_key["source"], "kms");
    assert_eq!(vault_key["kms_key"], HOOK_ALIAS);
    assert_eq!(vault_key["tenants"], json!(["acme"]));

    // Tenant acme saves under KMS (record format 2), tenant other under the local key.
    let src = dir.path().join("src");
    make_profile(&src, "kms");
    let mut saved = Vec::new();
    for (tenant, profile) in [
        ("acme", "p1"),
        ("acme", "p1"),
        ("acme", "p2"),
        ("other", "p1"),
    ] {
        let v = ok_json(&run(&mut env.pv(&[
            "save",
            "--json",
            "--tenant",
            tenant,
            "--profile",
            profile,
            src.to_str().unwrap(),
        ])));
        saved.push(v);
    }
    assert_eq!(saved[0]["key_id"], "vault");
    assert_eq!(saved[3]["key_id"], "local");
    let acme = records(&env, "acme", "p1");
    assert_eq!(acme.len(), 2);
    let arn = acme[0]["kms_key_arn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:kms:"), "{arn}");
    for r in &acme {
        // Format 3 (a chunked generation) with the KMS key's ARN.
        assert_eq!(r["format"], 3, "{r}");
        assert!(r["kms_key_arn"].is_string(), "{r}");
        assert_eq!(r["key_id"], "vault");
        let blob = base64::engine::general_purpose::STANDARD
            .decode(r["wrapped_key"].as_str().unwrap())
            .unwrap();
        assert!(blob.len() > 60, "a KMS ciphertext blob, not a local wrap");
    }
    let other = records(&env, "other", "p1");
    assert_eq!(other[0]["format"], 3);
    assert!(other[0].get("kms_key_arn").is_none(), "{}", other[0]);
    let p2 = records(&env, "acme", "p2");
    assert_ne!(p2[0]["object_id"], acme[0]["object_id"]);
    restore_ok(&env, "acme", "p1", &src, &dir.path().join("r1"));

    // The encryption context binds tenant, profile and generation: a record moved anywhere
    // else is refused by KMS before any payload is read.
    assert_moved_record_is_refused(&env, &s3, &acme[0], ("acme", "p1", 2)).await;
    assert_moved_record_is_refused(&env, &s3, &acme[0], ("acme", "p2", 1)).await;
    assert_moved_record_is_refused(&env, &s3, &acme[0], ("other", "p1", 1)).await;
    // A record naming a KMS key of another account (one whose owner could let this role
    // decrypt a data key of their choosing) is refused before KMS is asked.
    let mut foreign = acme[0].clone();
    let arn_there = arn.replacen(":000000000000:", ":111111111111:", 1);
    assert_ne!(arn_there, arn, "LocalStack's account is in the ARN: {arn}");
    foreign["kms_key_arn"] = json!(arn_there);
    put_record(&env, &s3, ("acme", "p1", 1), &foreign).await;
    let out = run(&mut env.pv(&["verify", "p1", "--tenant", "acme", "--generation", "1"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "integrity exit code: {err}");
    assert!(err.contains("outside the account and region"), "{err}");
    put_record(&env, &s3, ("acme", "p1", 1), &acme[0]).await;
    // Put the originals back (the moved copies replaced them).
    for (t, p, g, rec) in [
        ("acme", "p1", 2, acme[1].clone()),
        ("acme", "p2", 1, p2[0].clone()),
        ("other", "p1", 1, other[0].clone()),
    ] {
        put_record(&env, &s3, (t, p, g), &rec).await;
    }
    for (t, p) in [("acme", "p1"), ("acme", "p2"), ("other", "p1")] {
        ok_json(&run(
            &mut env.pv(&["verify", p, "--tenant", t, "--all", "--json"])
        ));
    }

    // KMS down: a save for a KMS tenant fails cleanly (exit 6, retry later) and changes
    // nothing; the local-key tenant is unaffected.
    let good_endpoint = std::mem::replace(&mut env.kms_endpoint, "http://127.0.0.1:9".into());
    assert_save_fails(&env, "acme", &src, 6, "unavailable");
    assert_eq!(records(&env, "acme", "p1").len(), 2, "nothing was written");
    ok_json(&run(&mut env.pv(&[
        "save",
        "--json",
        "--tenant",
        "other",
        "--profile",
        "p3",
        src.to_str().unwrap(),
    ])));
    env.kms_endpoint = good_endpoint;

    // rekey local -> KMS: tenant other's records move under the KMS key (format 3 stays 3).
    let v = ok_json(&run(
        &mut env.pv(&["rekey", "--tenant", "other", "--to", "vault", "--json"])
    ));
    assert_eq!(v["rewrapped"], 2, "{v}");
    let other = records(&env, "other", "p1");
    assert_eq!(other[0]["format"], 3);
    assert_eq!(other[0]["kms_key_arn"], arn.as_str());
    assert_eq!(other[0]["key_id"], "vault");
    restore_ok(&env, "other", "p1", &src, &dir.path().join("r2"));

    // rekey KMS -> another KMS key (made here), then back to each tenant's configured key.
    let second = new_kms_key(&kms_client()).await;
    env.kms_keys = format!("vault={HOOK_ALIAS},second={second}");
    let v = ok_json(&run(
        &mut env.pv(&["rekey", "--tenant", "acme", "--to", "second", "--json"])
    ));
    assert_eq!(v["rewrapped"], 3, "{v}");
    for r in records(&env, "acme", "p1") {
        assert_eq!(r["key_id"], "second");
        assert_eq!(r["kms_key_arn"], second.as_str());
    }
    restore_ok(
        &env,
        "acme",
        "p1",
        &dir.path().join("src"),
        &dir.path().join("r3"),
    );
    // Without --to every tenant goes to its configured key: acme -> vault, other -> local.
    let v = ok_json(&run(&mut env.pv(&["rekey", "--all-tenants", "--json"])));
    assert_eq!(v["to"]["acme"], "vault", "{v}");
    assert_eq!(v["to"]["other"], "local", "{v}");
    assert_eq!(v["rewrapped"], 5, "{v}");
    let other = records(&env, "other", "p1");
    assert_eq!(other[0]["format"], 3);
    assert!(other[0].get("kms_key_arn").is_none(), "{}", other[0]);
    assert_eq!(other[0]["key_id"], "local");

    // Local records no longer need KMS: other/p1 restores with KMS unreachable...
    env.kms_endpoint = "http://127.0.0.1:9".into();
    restore_ok(&env, "other", "p1", &src, &dir.path().join("r4"));
    // ...while a KMS record cannot, and says why (exit 6: retry later).
    let out = run(&mut env.pv(&[
        "restore",
        "p1",
        "--tenant",
        "acme",
        "--to",
        dir.path().join("r5").to_str().unwrap(),
    ]));
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("r5").join("Default").exists(),
        "nothing restored"
    );
}

#[tokio::test]
async fn a_missing_or_disabled_kms_key_is_a_clear_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        data: dir.path().join("data"),
        prefix: unique("kms-bad"),
        kms_keys: "vault=alias/profile-vault-does-not-exist".into(),
        kms_endpoint: endpoint("PV_TEST_LOCALSTACK"),
    };
    let out = run(&mut env.pv(&["keys", "--check"]));
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing key is a configuration error"
    );
    assert!(
        text.contains("check: FAILED") && text.contains("DescribeKey"),
        "{text} {err}"
    );
    // The daemon refuses to start with a key in use that KMS does not have.
    let mut serve = env
        .pv(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = serve.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve kept running with a missing KMS key");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("DescribeKey") && err.contains("'vault'"),
        "{err}"
    );
    // A disabled key: refused (not "unavailable"), exit 2, nothing stored.
    ensure_bucket(&s3_client(&endpoint("PV_TEST_S3S"), "testtesttest"), BUCKET).await;
    let client = kms_client();
    let arn = new_kms_key(&client).await;
    client.disable_key().key_id(&arn).send().await.unwrap();
    let env = Env {
        kms_keys: format!("vault={arn}"),
        ..env
    };
    let src = dir.path().join("src");
    make_profile(&src, "bad");
    assert_save_fails(&env, "acme", &src, 2, "refused");
    let out = run(&mut env.pv(&["list", "--tenant", "acme", "--json"]));
    assert_eq!(ok_json(&out).as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_saves_and_loads_through_a_kms_key() {
    let dir = tempfile::tempdir().unwrap();
    let site = test_site().await;
    let data = dir.path().join("data");
    let prefix = unique("kms-e2e");
    let ls = endpoint("PV_TEST_LOCALSTACK");
    let kms_env = [
        ("PV_KMS_KEYS", format!("vault={HOOK_ALIAS}")),
        ("PV_TENANT_KEYS", "t1=vault".to_string()),
        ("PV_KMS_ENDPOINT", ls.clone()),
        ("PV_ACTIVE_KEY", "k1".to_string()),
    ];
    let env_ok: Vec<(&str, &str)> = kms_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut d = Daemon::start(&data, StoreKind::LocalStack(prefix.clone()), &env_ok);
    let (st, ready) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(ready["checks"]["keys"], true, "{st} {ready}");

    let marker = format!("k{}", uuid::Uuid::new_v4().simple());
    let s = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v={marker}")).await;
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;
    let (st, v) = d
        .call("GET", &format!("/v0/profiles/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["generation"], 1, "{v}");
    // The record says KMS (read straight from the bucket).
    let s3 = s3_client(&ls, "test");
    let rec = s3
        .get_object()
        .bucket(BUCKET)
        .key(format!(
            "{prefix}/tenants/t1/profiles/{id}/gens/{:020}.json",
            1
        ))
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let rec: Value = serde_json::from_slice(&rec).unwrap();
    assert_eq!(rec["format"], 3, "{rec}");
    assert!(rec["kms_key_arn"].is_string(), "{rec}");
    assert_eq!(rec["key_id"], "vault");

    // Loaded back (KMS Decrypt before Chromium starts): the cookie and storage are there.
    let s2 = d.create(KEY_T1, json!({"profile": {"load": id}})).await;
    let mut cdp = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let st = state(&cdp.eval(READ_STATE).await);
    assert_eq!(st["cookie"], format!("pv_cookie={marker}"), "{st}");
    assert_eq!(st["ls"], marker);
    cdp.close().await;
    d.end_and_wait(KEY_T1, s2["session_id"].as_str().unwrap())
        .await;
    for (op, outcome) in [
        ("GenerateDataKey", "ok"),
        ("Decrypt", "ok"),
        ("DescribeKey", "ok"),
    ] {
        assert!(kms_requests(&d, op, outcome).await >= 1, "{op} {outcome}");
    }
    assert!(d.stop().success());

    // With KMS unreachable the daemon still starts, says it is not ready, and a load of a
    // KMS-wrapped profile answers 503 (retry later), not "corrupt".
    let env: Vec<(&str, &str)> = vec![
        ("PV_KMS_KEYS", kms_env[0].1.as_str()),
        ("PV_TENANT_KEYS", "t1=vault"),
        ("PV_KMS_ENDPOINT", "http://127.0.0.1:9"),
        ("PV_ACTIVE_KEY", "k1"),
    ];
    let prefix2 = prefix.clone();
    let d = Daemon::start(&data, StoreKind::LocalStack(prefix), &env);
    let (st, ready) = d.call("GET", "/readyz", None, None).await;
    assert_eq!(st, 503, "{ready}");
    assert_eq!(ready["checks"]["keys"], false, "{ready}");
    // `/readyz` is open to anyone: a burst of it while KMS fails costs at most one more
    // KMS call, not one each.
    let before = kms_requests(&d, "DescribeKey", "unavailable").await;
    assert!(before >= 1, "the first readiness check asked KMS");
    let burst = (0..20).map(|_| d.call("GET", "/readyz", None, None));
    for (st, ready) in futures_util::future::join_all(burst).await {
        assert_eq!(
            (st, &ready["checks"]["keys"]),
            (503, &json!(false)),
            "{ready}"
        );
    }
    let after = kms_requests(&d, "DescribeKey", "unavailable").await;
    assert!(
        after <= before + 1,
        "20 readiness checks made {} KMS calls",
        after - before
    );
    let (st, v) = d.post_vm(KEY_T1, json!({"profile": {"load": id}})).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"], "keys_unavailable", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        !msg.contains("arn:") && !msg.contains("127.0.0.1:9") && msg.contains("retry later"),
        "clients get no KMS details: {msg}"
    );
    // The log is copied from the daemon's stderr as it comes: give the line a moment.
    let mut logged = false;
    for _ in 0..50 {
        logged = d.log_text().contains("master key failure");
        if logged {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged, "the log has them");
    assert!(kms_requests(&d, "Decrypt", "unavailable").await >= 1);
    // A session that ends while KMS is down loses nothing: its save fails, the profile
    // directory is kept and listed, and a retry once KMS is back stores it.
    let marker2 = format!("k{}", uuid::Uuid::new_v4().simple());
    let s3s = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    let id2 = s3s["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s3s["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v={marker2}")).await;
    cdp.close().await;
    let (st, v) = d
        .call(
            "DELETE",
            &format!("/v0/vm/{id2}?wait=true"),
            Some(KEY_T1),
            None,
        )
        .await;
    assert!(st == 200 || st == 503, "{st} {v}");
    let (_, v) = d.call("GET", "/v0/saves", Some(KEY_T1), None).await;
    assert_eq!(v["failed_saves"][0]["session_id"], id2.as_str(), "{v}");
    assert!(
        !d.log_text().contains(&marker) && !d.log_text().contains(&marker2),
        "profile content never logged"
    );
    let mut d = d;
    assert!(d.stop().success());
    let d = Daemon::start(&data, StoreKind::LocalStack(prefix2), &env_ok);
    let (st, v) = d
        .call(
            "POST",
            &format!("/v0/saves/{id2}/retry"),
            Some(KEY_T1),
            None,
        )
        .await;
    // Saved by this retry, or already by the start-up retry of kept saves.
    assert!(st == 200 && v["saved"] == true || st == 404, "{st} {v}");
    let (st, v) = d
        .call("GET", &format!("/v0/profiles/{id2}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let s4 = d.create(KEY_T1, json!({"profile": {"load": id2}})).await;
    let mut cdp = Cdp::connect(s4["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let st = state(&cdp.eval(READ_STATE).await);
    assert_eq!(st["cookie"], format!("pv_cookie={marker2}"), "{st}");
    cdp.close().await;
}

/// A vault on a filesystem store in `dir` whose tenant t1 saves under the KMS key `kms_key`
/// (keyring id `id`); other tenants use a local key.
fn kms_vault(
    dir: &Path,
    id: &str,
    kms_key: &str,
    client: aws_sdk_kms::Client,
    keep: usize,
) -> profile_vault::Vault {
    use profile_vault::keys::{kms::KmsKey, Keyring};
    let ring = Keyring::from_keys(vec![("k1".into(), [1u8; 32])], "k1")
        .unwrap()
        .with_kms_key(KmsKey::new(id, kms_key, client))
        .unwrap()
        .with_tenant_key("t1", id)
        .unwrap();
    let store: std::sync::Arc<dyn profile_vault::Store> = std::sync::Arc::new(
        profile_vault::store::fs::LocalFileSystem::new(dir.join("store")).unwrap(),
    );
    let mut opts = options(&dir.join("spool"));
    opts.keep = keep;
    profile_vault::Vault::new(store, std::sync::Arc::new(ring), opts).unwrap()
}

/// Racing saves of one profile under a KMS key: the losers of a generation number take the
/// next one, and their data keys are re-wrapped (KMS `Encrypt`) for the generation they
/// end up with, so every kept generation unwraps and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_saves_under_kms_rewrap_for_the_generation_they_get() {
    use profile_vault::vault::{Base, Error as VaultError};
    use profile_vault::NoProgress;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let vault = kms_vault(dir.path(), "vault", HOOK_ALIAS, kms_client(), 50);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let v = vault.clone();
        let src = dir.path().join(format!("s{i}"));
        make_profile(&src, &format!("r{i}"));
        tasks.push(tokio::spawn(async move {
            v.save(&addr("t1", "p1"), &src, Base::Current, Arc::new(NoProgress))
                .await
        }));
    }
    let mut gens = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.key_id, "vault");
                gens.push(r.generation);
            }
            Err(VaultError::Conflict { kept, .. }) => gens.push(kept),
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    gens.sort_unstable();
    assert_eq!(
        gens,
        (1..=8).collect::<Vec<u64>>(),
        "each save its own generation"
    );
    for g in gens {
        vault
            .verify(&addr("t1", "p1"), Some(g), Arc::new(NoProgress))
            .await
            .unwrap_or_else(|e| panic!("generation {g}: {e}"));
    }
}

/// An alias repointed to a new KMS key: `rekey --to` that alias moves the records still
/// wrapped under the old key (their recorded ARN differs), then finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_follows_an_alias_to_its_new_key() {
    use profile_vault::vault::Base;
    use profile_vault::NoProgress;
    use std::sync::Arc;

    let client = kms_client();
    let (old, new) = (new_kms_key(&client).await, new_kms_key(&client).await);
    let alias = format!("alias/{}", unique("pv-test"));
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&old)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vault = kms_vault(dir.path(), "moving", &alias, client.clone(), 5);
    let src = dir.path().join("src");
    make_profile(&src, "alias");
    for _ in 0..2 {
        vault
            .save(&addr("t1", "p1"), &src, Base::Current, Arc::new(NoProgress))
            .await
            .unwrap();
    }
    let arns = |v: Vec<profile_vault::vault::GenerationInfo>| -> Vec<String> {
        v.into_iter()
            .map(|g| g.record.unwrap().kms_key_arn.unwrap())
            .collect()
    };
    assert_eq!(
        arns(vault.versions(&addr("t1", "p1")).await.unwrap()),
        vec![old.clone(), old.clone()]
    );
    // The profile's data document is wrapped by the same KMS key, and moves with it.
    let doc = serde_json::json!({"open": ["https://example.com"]});
    let always = profile_vault::vault::DataCondition::Always;
    assert_eq!(
        vault
            .set_data(&addr("t1", "p1"), &doc, always)
            .await
            .unwrap(),
        1
    );
    let data_arn = || -> String {
        let rec: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("store/tenants/t1/profiles/p1/data.json")).unwrap(),
        )
        .unwrap();
        rec["kms_key_arn"].as_str().unwrap().to_string()
    };
    assert_eq!(data_arn(), old);
    assert_eq!(vault.rekey("t1", "moving", false).await.unwrap(), (0, 3));
    // By key id: LocalStack (2026.3) breaks an alias updated to a key ARN, which AWS accepts.
    client
        .update_alias()
        .alias_name(&alias)
        .target_key_id(new.rsplit('/').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(vault.rekey("t1", "moving", true).await.unwrap(), (3, 0));
    assert_eq!(vault.rekey("t1", "moving", false).await.unwrap(), (3, 0));
    assert_eq!(
        arns(vault.versions(&addr("t1", "p1")).await.unwrap()),
        vec![new.clone(), new.clone()]
    );
    assert_eq!(data_arn(), new);
    assert_eq!(vault.rekey("t1", "moving", false).await.unwrap(), (0, 3));
    // The old key can go: nothing needs it any more.
    client.disable_key().key_id(&old).send().await.unwrap();
    assert_eq!(vault.data(&addr("t1", "p1")).await.unwrap().data, doc);
    for g in [1, 2] {
        vault
            .verify(&addr("t1", "p1"), Some(g), Arc::new(NoProgress))
            .await
            .unwrap();
    }
}
