//! Several daemons sharing one bucket: never two saving sessions of one profile at once,
//! and a dead node's lease expires so another node takes over.

use std::time::Duration;

use serde_json::json;

use crate::common::daemon::*;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_leases_hold_across_nodes_and_expire_with_their_node() {
    let ls = endpoint("PV_TEST_LOCALSTACK");
    ensure_bucket(&s3_client(&ls, "test"), BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lease.toml");
    std::fs::write(&cfg, "[server]\nlease_ttl = 3\n").unwrap();
    let prefix = unique("nodes");
    let env = [("PV_CONFIG", cfg.to_str().unwrap())];
    let mut a = Daemon::start(
        &dir.path().join("a"),
        StoreKind::LocalStack(prefix.clone()),
        &env,
    );
    let b = Daemon::start(
        &dir.path().join("b"),
        StoreKind::LocalStack(prefix.clone()),
        &env,
    );
    let c = Daemon::start(
        &dir.path().join("c"),
        StoreKind::LocalStack(prefix.clone()),
        &env,
    );

    // A profile exists (saved on node A).
    let first = a.create(KEY_T1, json!({"profile": true})).await;
    let pid = first["session_id"].as_str().unwrap().to_string();
    a.end_and_wait(KEY_T1, &pid).await;

    // Node A continues it; B and C may not open a saving session of it, but may read it.
    let on_a = a.create(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(on_a["profile"]["id"], pid.as_str());
    for node in [&b, &c] {
        let (st, v) = node.post_vm(KEY_T1, json!({"profile": pid})).await;
        assert_eq!(
            (st, v["error"].as_str()),
            (409, Some("profile_in_use")),
            "{v}"
        );
        let ro = node.create(KEY_T1, json!({"profile": {"load": pid}})).await;
        node.end_and_wait(KEY_T1, ro["session_id"].as_str().unwrap())
            .await;
    }
    // A keeps renewing: still refused after more than one TTL.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (st, _) = b.post_vm(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(st, 409, "the holder renews its lease");

    // Node A dies; its lease expires; B takes the profile over, and C is then refused.
    a.kill9();
    let start = std::time::Instant::now();
    let on_b = loop {
        let (st, v) = b.post_vm(KEY_T1, json!({"profile": pid})).await;
        if st == 200 {
            break v;
        }
        assert_eq!(st, 409, "{v}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "taken over only after expiry"
    );
    let (st, _) = c.post_vm(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(st, 409);
    let ended = b
        .end_and_wait(KEY_T1, on_b["session_id"].as_str().unwrap())
        .await;
    assert_eq!(ended["save"]["state"], "saved", "{ended}");
    // Released after the save: C may continue it now.
    let on_c = c.create(KEY_T1, json!({"profile": pid})).await;
    c.end_and_wait(KEY_T1, on_c["session_id"].as_str().unwrap())
        .await;

    // A save that takes longer than the lease (its packs' uploads stall 8 s) keeps the
    // lease until it is done: no other node loads the generation before it meanwhile.
    let proxy = crate::common::faults::FaultProxy::start(&ls).await;
    let through = proxy.endpoint();
    let slow_env = [
        ("PV_CONFIG", cfg.to_str().unwrap()),
        ("AWS_ENDPOINT_URL", through.as_str()),
    ];
    let d = Daemon::start(
        &dir.path().join("d"),
        StoreKind::LocalStack(prefix.clone()),
        &slow_env,
    );
    let on_d = d.create(KEY_T1, json!({"profile": pid})).await;
    let on_d = on_d["session_id"].as_str().unwrap().to_string();
    proxy.set_rules(vec![crate::common::faults::Rule::new(
        "slow-packs",
        |q| q.is_put(".pvp"),
        &[1, 2, 3],
        crate::common::faults::Action::Stall(Duration::from_secs(8)),
    )]);
    let (st, v) = d
        .call("DELETE", &format!("/v0/vm/{on_d}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 200, "{v}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        proxy.applied("slow-packs") >= 1,
        "the save's uploads were slowed"
    );
    let (st, v) = c.post_vm(KEY_T1, json!({"profile": pid})).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (409, Some("profile_in_use")),
        "the lease lapsed while the save uploaded: {v}"
    );
    let ended = d
        .wait_for(KEY_T1, &on_d, 60, |v| {
            v["save"]["state"] != "saving" && v["save"]["state"] != "pending"
        })
        .await;
    assert_eq!(ended["save"]["state"], "saved", "{ended}");
    let on_c = c.create(KEY_T1, json!({"profile": pid})).await;
    c.end_and_wait(KEY_T1, on_c["session_id"].as_str().unwrap())
        .await;
    // Stop the browser node A left behind.
    for e in std::fs::read_dir(dir.path().join("a/sessions"))
        .unwrap()
        .flatten()
    {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        if let Some(pid) = rec["pid"].as_u64().filter(|p| *p > 1) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}
