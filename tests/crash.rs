//! The daemon under storage faults and kill -9 at chosen points of a save, against
//! LocalStack through the fault-injecting proxy.

use std::time::Duration;

use serde_json::json;

use crate::common::daemon::*;
use crate::common::faults::*;
use crate::common::*;

async fn proxy() -> FaultProxy {
    let ls = endpoint("PV_TEST_LOCALSTACK");
    ensure_bucket(&s3_client(&ls, "test"), BUCKET).await;
    FaultProxy::start(&ls).await
}

/// Store deadlines short enough for a save to fail within a test; no retries by the sweeper.
const FAST: &str =
    "[s3]\nretry_deadline = 2\nattempt_timeout = 2\n[sessions]\nretry_failed_every = 3600\n";

/// A config file `name` in `dir` holding `toml`.
fn config(dir: &std::path::Path, name: &str, toml: &str) -> std::path::PathBuf {
    let cfg = dir.join(name);
    std::fs::write(&cfg, toml).unwrap();
    cfg
}

fn fast_config(dir: &std::path::Path) -> std::path::PathBuf {
    config(dir, "fast.toml", FAST)
}

/// A daemon with `data` on LocalStack under `prefix`, reached through the fault proxy `p`,
/// with the config file `cfg`.
fn through(p: &FaultProxy, data: &std::path::Path, prefix: &str, cfg: &std::path::Path) -> Daemon {
    Daemon::start(
        data,
        StoreKind::LocalStack(prefix.to_string()),
        &[
            ("AWS_ENDPOINT_URL", &p.endpoint()),
            ("PV_CONFIG", cfg.to_str().unwrap()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_keeps_the_profile_and_can_be_retried() {
    let p = proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let prefix = unique("failsave");
    let d = through(&p, &data, &prefix, &fast_config(dir.path()));
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    p.set_rules(vec![Rule::new(
        "payload-down",
        |q| q.is_put(".pvo"),
        &[],
        Action::Status(503, "SlowDown"),
    )]);
    let ended = d.end_and_wait(KEY_T1, &id).await;
    assert_eq!(ended["save"]["state"], "failed", "{ended}");
    assert!(
        data.join("browsers").join(&id).is_dir(),
        "the profile directory is kept"
    );
    let (_, v) = d.call("GET", "/v0/saves", Some(KEY_T1), None).await;
    assert_eq!(v["failed_saves"][0]["session_id"], id.as_str(), "{v}");
    let (_, v) = d.call("GET", "/v0/saves", Some(KEY_T2), None).await;
    assert_eq!(v["failed_saves"], json!([]), "other tenants do not see it");
    // The operator sees it from the CLI on the node as well.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profile-vault"))
        .arg("--data-dir")
        .arg(&data)
        .args(["saves", "--json"])
        .env("PV_STORE", format!("s3://{BUCKET}/x"))
        .env(
            "PV_MASTER_KEYS",
            "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["session_id"], id.as_str(), "{listed}");
    // Still failing: the retry says so and keeps it.
    let (st, _) = d
        .call("POST", &format!("/v0/saves/{id}/retry"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 503);
    // The operator's retry from the CLI (held up on its upload) and the daemon's at once:
    // one saves, the other waits for it and says saved (both ran: one made the generation,
    // the other a conflict, or failed reading the directory the first removed).
    p.set_rules(vec![Rule::new(
        "slow-payload",
        |q| q.is_put(".pvo"),
        &[1],
        Action::Stall(Duration::from_secs(3)),
    )]);
    let cli = {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_profile-vault"));
        c.arg("--data-dir")
            .arg(&data)
            .args(["saves", "--json", "--retry", &id])
            .env("PV_STORE", format!("s3://{BUCKET}/{prefix}"))
            .env("AWS_ENDPOINT_URL", p.endpoint())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("PV_S3_PATH_STYLE", "true")
            .env("PV_CONFIG", fast_config(dir.path()))
            .env(
                "PV_MASTER_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            );
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (st, v) = d
        .call("POST", &format!("/v0/saves/{id}/retry"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{v}");
    let out = cli.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["saved"], true, "{said}");
    p.set_rules(vec![]);
    let (_, v) = d
        .call("GET", &format!("/v0/vm/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(v["save"]["state"], "saved", "{v}");
    assert!(!data.join("browsers").join(&id).exists());
    let s2 = d.create(KEY_T1, json!({"profile": {"load": id}})).await;
    assert_eq!(s2["profile"]["generation"], 1);
    let (_, v) = d
        .call("GET", &format!("/v0/profiles/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(v["generations"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A profile saved once (generation 1), and a second session continuing it: (profile id,
/// second session's id).
async fn continued_profile(d: &Daemon) -> (String, String) {
    let first = d.create(KEY_T1, json!({"profile": true})).await;
    let pid = first["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &pid).await;
    let second = d.create(KEY_T1, json!({"profile": pid})).await;
    (pid, second["session_id"].as_str().unwrap().to_string())
}

/// A saving load of `pid` on `d` is refused because its last save failed and is held.
async fn assert_save_pending(d: &Daemon, pid: &str) {
    let (st, v) = d.post_vm(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("profile_in_use")),
        "{v}"
    );
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("queued for retry"), "{v}");
}

/// A failed save holds its profile until its retry lands: no node loads the generation
/// before it meanwhile, and a load on its node retries it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_holds_its_profile_until_its_retry_lands() {
    let p = proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "hold.toml", &format!("{FAST}lease_ttl = 6\n"));
    let prefix = unique("hold");
    let a = through(&p, &dir.path().join("a"), &prefix, &cfg);
    let b = Daemon::start(
        &dir.path().join("b"),
        StoreKind::LocalStack(prefix),
        &[("PV_CONFIG", cfg.to_str().unwrap())],
    );
    let (pid, sid) = continued_profile(&a).await;
    p.set_rules(vec![Rule::new(
        "payload-down",
        |q| q.is_put(".pvo"),
        &[],
        Action::Status(503, "SlowDown"),
    )]);
    let ended = a.end_and_wait(KEY_T1, &sid).await;
    assert_eq!(ended["save"]["state"], "failed", "{ended}");

    // Its node retries it first; still failing, a saving load is refused and says why.
    assert_save_pending(&a, &pid).await;
    // Other nodes are refused too, past the lease's lifetime (the hold renews it).
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (st, v) = b.post_vm(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("profile_in_use")),
        "{v}"
    );

    // The store is back: the next load on its node lands the save first and loads it.
    p.set_rules(vec![]);
    let third = a.create(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(third["profile"]["generation"], 2, "{third}");
    let (_, v) = a.call("GET", "/v0/saves", Some(KEY_T1), None).await;
    assert_eq!(v["failed_saves"], json!([]), "{v}");
    let (_, v) = a
        .call("GET", &format!("/v0/vm/{sid}"), Some(KEY_T1), None)
        .await;
    assert_eq!(v["save"]["state"], "saved", "{v}");
}

/// A load of a held profile whose retry stalls in the store is answered within a bound (the
/// retry goes on): a stalled store does not hold `POST /v0/vm` for a save's deadlines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_waits_a_bounded_time_for_a_held_save() {
    let p = proxy().await;
    let dir = tempfile::tempdir().unwrap();
    // Deadlines far past the test's: only the load's own bound can answer it.
    let slow = FAST.replace("= 2\n", "= 600\n");
    let cfg = config(dir.path(), "slow.toml", &slow);
    let d = through(&p, &dir.path().join("data"), &unique("heldwait"), &cfg);
    let (pid, sid) = continued_profile(&d).await;
    // Refused outright (not retried): the save fails at once and holds the profile.
    p.set_rules(vec![Rule::new(
        "denied",
        |q| q.is_put(".pvo"),
        &[],
        Action::Status(403, "AccessDenied"),
    )]);
    let ended = d.end_and_wait(KEY_T1, &sid).await;
    assert_eq!(ended["save"]["state"], "failed", "{ended}");
    p.set_rules(vec![Rule::new(
        "stall",
        |q| q.is_put(".pvo"),
        &[],
        Action::Stall(Duration::from_secs(900)),
    )]);
    tokio::time::timeout(Duration::from_secs(90), assert_save_pending(&d, &pid))
        .await
        .expect("the load waited 90 s for the stalled retry");
    assert!(p.applied("stall") > 0, "the load did not retry the save");
    // A read-only load gets the last good generation meanwhile.
    let ro = d
        .create(KEY_T1, json!({"profile": {"load": pid, "save": false}}))
        .await;
    assert_eq!(ro["profile"]["generation"], 1, "{ro}");
}

/// A save that fails again at the restart after a kill -9 is listed and retried as a failed
/// save, and holds its profile like one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_failing_after_a_crash_is_listed_and_holds_its_profile() {
    let p = proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = fast_config(dir.path());
    let (ep, prefix) = (p.endpoint(), unique("crashfail"));
    let env = [
        ("AWS_ENDPOINT_URL", ep.as_str()),
        ("PV_CONFIG", cfg.to_str().unwrap()),
    ];
    let mut d = Daemon::start(&data, StoreKind::LocalStack(prefix.clone()), &env);
    let (pid, sid) = continued_profile(&d).await;
    p.set_rules(vec![Rule::new(
        "stall",
        |q| q.is_put(".pvo"),
        &[],
        Action::Stall(Duration::from_secs(120)),
    )]);
    let (st, _) = d
        .call("DELETE", &format!("/v0/vm/{sid}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200);
    let start = std::time::Instant::now();
    while p.applied("stall") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no save reached the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.kill9();
    // The restart's save fails too.
    p.set_rules(vec![Rule::new(
        "down",
        |q| q.is_put(".pvo"),
        &[],
        Action::Status(503, "SlowDown"),
    )]);
    let d2 = Daemon::start(&data, StoreKind::LocalStack(prefix), &env);
    let start = std::time::Instant::now();
    loop {
        let (_, v) = d2.call("GET", "/v0/saves", Some(KEY_T1), None).await;
        if v["failed_saves"][0]["session_id"] == sid.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the failed recovery is not listed: {v}\n{}",
            d2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_save_pending(&d2, &pid).await;
    p.set_rules(vec![]);
    let third = d2.create(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(third["profile"]["generation"], 2, "{third}");
}

/// kill -9 of the daemon while a save is stuck at `rule`, then a restart without faults:
/// the session's profile is saved and loads.
async fn kill_during(rule: fn(&Req) -> bool, name: &'static str) {
    let p = proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let site = test_site().await;
    let prefix = unique("crash");
    let ep = p.endpoint();
    let mut d = Daemon::start(
        &data,
        StoreKind::LocalStack(prefix.clone()),
        &[("AWS_ENDPOINT_URL", &ep)],
    );
    let marker = format!("m{}", uuid::Uuid::new_v4().simple());
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v={marker}")).await;
    cdp.close().await;
    p.set_rules(vec![Rule::new(
        name,
        rule,
        &[],
        Action::Stall(Duration::from_secs(120)),
    )]);
    let (st, _) = d
        .call("DELETE", &format!("/v0/vm/{id}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200);
    let start = std::time::Instant::now();
    while p.applied(name) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name}: the save never reached the stalled request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.kill9();
    p.set_rules(vec![]);
    // Restart straight against LocalStack.
    let d2 = Daemon::start(&data, StoreKind::LocalStack(prefix), &[]);
    let v = d2.wait_saved(KEY_T1, &id, 60).await;
    assert!(v["generation"].as_u64().unwrap() >= 1, "{name}: {v}");
    let s2 = d2.create(KEY_T1, json!({"profile": {"load": id}})).await;
    let mut cdp = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let st = state(&cdp.eval(READ_STATE).await);
    assert_eq!(st["ls"], marker, "{name}: {st}");
    assert_eq!(st["cookie"], format!("pv_cookie={marker}"), "{name}: {st}");
    cdp.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_restart() {
    kill_during(|q| q.is_put(".pvo"), "stall-payload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pack_upload_then_restart() {
    // Format 2: packs go up while later ones are still being made.
    kill_during(|q| q.is_put(".pvp"), "stall-pack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_manifest_and_record_then_restart() {
    // Format 2: the manifest is stored (the generation number claimed), its sidecar and
    // record are not.
    kill_during(|q| q.is_put(".meta"), "stall-sidecar").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_generation_and_head_move_then_restart() {
    kill_during(|q| q.is_put("head.json"), "stall-head").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_as_archiving_starts_then_restart() {
    // The save lists the profile's generations right before it packs the directory.
    kill_during(
        |q| q.method == "GET" && q.target.contains("list-type=2") && q.target.contains("gens"),
        "stall-before-pack",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_its_lease_is_written_leaves_no_lease_behind() {
    let p = proxy().await;
    let dir = tempfile::tempdir().unwrap();
    // A lease lives 10 minutes: one left behind would hold the profile for the whole test.
    let cfg = config(dir.path(), "lease.toml", "[sessions]\nlease_ttl = 600\n");
    let d = through(&p, &dir.path().join("data"), &unique("leasegone"), &cfg);
    let s = d.create(KEY_T1, json!({"profile": true})).await;
    let profile = s["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &profile).await;
    // The lease's write reaches the store 2 s late; the client is gone after 0.5 s.
    p.set_rules(vec![Rule::new(
        "lease-late",
        |q| q.is_put("lease.json"),
        &[1],
        Action::Stall(Duration::from_secs(2)),
    )]);
    d.post_vm_and_leave(
        KEY_T1,
        json!({"profile": {"load": profile, "save": true}}),
        Duration::from_millis(500),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(p.applied("lease-late"), 1, "the lease's write was held");
    // The lease that landed after the client left was released: the profile is free.
    let again = d
        .create(KEY_T1, json!({"profile": {"load": profile, "save": true}}))
        .await;
    d.end_and_wait(KEY_T1, again["session_id"].as_str().unwrap())
        .await;
}

/// A node restarted after another took its dead session's profile over does not save that
/// session under the live one (whose save would then be the conflict): the recovered save
/// waits, listed, and the live session's save moves the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_save_waits_for_the_session_that_took_its_profile_over() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "lease.toml", &format!("{FAST}lease_ttl = 3\n"));
    let prefix = unique("takeover");
    let env = [("PV_CONFIG", cfg.to_str().unwrap())];
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Daemon::start(&a_data, StoreKind::LocalStack(prefix.clone()), &env);
    let (pid, sid) = continued_profile(&a).await;
    a.kill9();
    // Its lease expires; node B takes the profile over (generation 1).
    let b = Daemon::start(&b_data, StoreKind::LocalStack(prefix.clone()), &env);
    let start = std::time::Instant::now();
    let on_b = loop {
        let (st, v) = b.post_vm(KEY_T1, json!({"profile": pid})).await;
        if st == 200 {
            break v;
        }
        assert_eq!(st, 409, "{v}");
        assert!(start.elapsed() < Duration::from_secs(30), "{v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(on_b["profile"]["generation"], 1, "{on_b}");
    // A comes back: its orphan's save waits while B's session has the profile.
    let a2 = Daemon::start(&a_data, StoreKind::LocalStack(prefix), &env);
    let start = std::time::Instant::now();
    loop {
        let (_, v) = a2.call("GET", "/v0/saves", Some(KEY_T1), None).await;
        if v["failed_saves"][0]["session_id"] == sid.as_str() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the recovered save is not waiting: {v}\n{}",
            a2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended = b
        .end_and_wait(KEY_T1, on_b["session_id"].as_str().unwrap())
        .await;
    assert_eq!(ended["save"]["state"], "saved", "{ended}");
    assert_eq!(ended["save"]["generation"], 2, "{ended}");
    // Once B is done, A's save lands, kept beside the head (nothing lost either way).
    let (st, v) = a2
        .call(
            "POST",
            &format!("/v0/saves/{sid}/retry"),
            Some(KEY_T1),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (_, v) = a2
        .call("GET", &format!("/v0/profiles/{pid}"), Some(KEY_T1), None)
        .await;
    assert_eq!(v["generation"], 2, "{v}");
    assert_eq!(v["generations"].as_array().unwrap().len(), 3, "{v}");
}
