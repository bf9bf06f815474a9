//! One service behind one address: three real daemons on one store behind a real nginx
//! (round robin). Every call of a session's life made through the balancer succeeds, a full
//! node places sessions on the others, a node killed with -9 shows its sessions as
//! `node_lost` from the others, a node without (or with another) cluster secret is refused,
//! forged forwards are refused, and a restarted node rejoins.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::daemon::*;
use crate::common::nginx::Nginx;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ok(st: u16, v: &Value, what: &str) {
    assert_eq!(st, 200, "{what}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_one_address_answer_for_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("store").display());
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(
        &cfg,
        "[sessions]\nmax_sessions = 1\nlease_ttl = 3\n[cluster]\nheartbeat_secs = 1\nnode_ttl_secs = 4\n",
    )
    .unwrap();
    let lb_port = free_port();
    let lb = format!("127.0.0.1:{lb_port}");
    let public = format!("http://{lb}");
    let env = [
        ("PV_STORE", store.as_str()),
        ("PV_CONFIG", cfg.to_str().unwrap()),
        ("PV_PUBLIC_URL", public.as_str()),
    ];
    let mut nodes = [
        Daemon::start(&dir.path().join("a"), StoreKind::Fs, &env),
        Daemon::start(&dir.path().join("b"), StoreKind::Fs, &env),
        Daemon::start(&dir.path().join("c"), StoreKind::Fs, &env),
    ];
    let addrs: Vec<String> = nodes.iter().map(|d| d.addr.clone()).collect();
    let _nginx = Nginx::start(
        &dir.path().join("nginx"),
        lb_port,
        &addrs.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let site = test_site().await;

    // Create through the balancer, then every call of the session through it.
    let (st, s1) = http(
        &lb,
        "POST",
        "/v0/vm",
        Some(KEY_T1),
        Some(r#"{"profile":{"save":true}}"#),
    )
    .await;
    ok(st, &s1, "create");
    let id1 = s1["session_id"].as_str().unwrap().to_string();
    let admin1 = s1["admin_token"].as_str().unwrap().to_string();
    assert!(
        s1["cdp_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://{lb}/")),
        "{s1}"
    );
    let mut owner = None;
    for i in 0..6 {
        let (st, v) = http(&lb, "GET", &format!("/v0/vm/{id1}"), Some(KEY_T1), None).await;
        ok(st, &v, "get");
        assert!(v["end_reason"].is_null(), "{v}");
        let node = v["node"].as_str().unwrap().to_string();
        assert!(owner.get_or_insert(node.clone()) == &node, "one owner");
        let (st, v) = http(
            &lb,
            "POST",
            &format!("/v0/vm/{id1}/ping"),
            Some(&admin1),
            None,
        )
        .await;
        ok(st, &v, "ping with the admin token");
        let (st, v) = http(&lb, "GET", "/v0/vm", Some(KEY_T1), None).await;
        ok(st, &v, "list");
        let ids: Vec<&str> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["session_id"].as_str())
            .collect();
        assert_eq!(ids, vec![id1.as_str()], "the cluster's sessions: {v}");
        let (st, v) = http(
            &lb,
            "PUT",
            &format!("/v0/vm/{id1}/store/k{i}"),
            Some(&admin1),
            Some(&i.to_string()),
        )
        .await;
        ok(st, &v, "store put");
        let (st, v) = http(
            &lb,
            "GET",
            &format!("/v0/vm/{id1}/store/k{i}"),
            Some(KEY_T1),
            None,
        )
        .await;
        ok(st, &v, "store get");
        assert_eq!(v["value"], i, "{v}");
        // Another tenant's key: 404 from every node, as on one node.
        let (st, _) = http(&lb, "GET", &format!("/v0/vm/{id1}"), Some(KEY_T2), None).await;
        assert_eq!(st, 404);
    }
    let owner = owner.unwrap();

    // Whoever can write the store gives the session's record the hash of a token of their
    // own: the nodes that read it forward the call, and the owner, which holds the real
    // token, refuses it (on its own, on every other node, for the session and its data).
    {
        use sha2::Digest;
        let forged = "forged-admin-token-0123456789";
        let sha = profile_vault::crypt::hex(&sha2::Sha256::digest(forged.as_bytes()));
        let store_dir = dir.path().join("store");
        let rec_path = store_dir.join(format!("cluster/sessions/{id1}.json"));
        let original = std::fs::read(&rec_path).unwrap();
        let mut rec: Value = serde_json::from_slice(&original).unwrap();
        assert!(rec["admin_token_sha256"].is_string(), "{rec}");
        rec["admin_token_sha256"] = json!(sha);
        std::fs::write(&rec_path, rec.to_string()).unwrap();
        std::fs::write(store_dir.join(format!("cluster/admins/{sha}")), &id1).unwrap();
        for addr in &addrs {
            let (st, v) = http(
                addr,
                "POST",
                &format!("/v0/vm/{id1}/ping"),
                Some(forged),
                None,
            )
            .await;
            assert_eq!(st, 401, "a forged record opened the session on {addr}: {v}");
            let (st, v) = http(
                addr,
                "GET",
                &format!("/v0/profiles/{id1}/data"),
                Some(forged),
                None,
            )
            .await;
            assert_eq!(st, 401, "a forged record opened the data on {addr}: {v}");
        }
        // The real record back: the real token works through every node.
        std::fs::write(&rec_path, &original).unwrap();
        std::fs::remove_file(store_dir.join(format!("cluster/admins/{sha}"))).unwrap();
        for addr in &addrs {
            let (st, v) = http(
                addr,
                "POST",
                &format!("/v0/vm/{id1}/ping"),
                Some(&admin1),
                None,
            )
            .await;
            ok(
                st,
                &v,
                "ping with the real admin token beside a forged record",
            );
        }
    }

    // The profile data document with the admin token, asked of every node directly: the
    // others find the session through the admin-token index and forward to its owner.
    for (i, addr) in addrs.iter().enumerate() {
        let (st, v) = http(
            addr,
            "PUT",
            &format!("/v0/profiles/{id1}/data"),
            Some(&admin1),
            Some(&json!({"written_by": i}).to_string()),
        )
        .await;
        ok(st, &v, "data put with the admin token");
        assert_eq!(v["version"], i + 1, "{v}");
        let (st, v) = http(
            addr,
            "GET",
            &format!("/v0/profiles/{id1}/data"),
            Some(&admin1),
            None,
        )
        .await;
        ok(st, &v, "data get with the admin token");
        assert_eq!(v["data"]["written_by"], i, "{v}");
        // A token nobody issued is refused on every node, and another profile is not this
        // token's to reach.
        let (st, _) = http(
            addr,
            "GET",
            &format!("/v0/profiles/{id1}/data"),
            Some(&"f".repeat(43)),
            None,
        )
        .await;
        assert_eq!(st, 401);
        let (st, _) = http(
            addr,
            "GET",
            "/v0/profiles/other-profile/data",
            Some(&admin1),
            None,
        )
        .await;
        assert!(
            st == 404 || st == 401,
            "another profile with the admin token: {st}"
        );
    }

    // CDP through the balancer: Playwright and Puppeteer, then our own client writing state.
    let out = run_cdp_clients(s1["cdp_url"].as_str().unwrap()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("pw-ok") && text.contains("pp-ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cdp = Cdp::connect(s1["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/set?v=clustered")).await;
    cdp.close().await;

    // The viewer through the balancer: the embed page and its socket's first message.
    let embed = s1["embed_url"].as_str().unwrap();
    let path = embed.strip_prefix(&public).unwrap();
    let (st, page) = http_raw(&lb, "GET", path, None, None).await;
    assert!(st == 200 && page.contains("<html"), "{st} {page:.200}");
    let sock = format!("ws://{lb}{}", path.replacen("/embed?", "/embed/socket?", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(&sock)
        .await
        .expect("viewer socket through the balancer");
    let hello = crate::display::message(&mut ws, "hello").await;
    // The person's downloads and uploads, asked of each node: every node answers as the
    // owner does (the owner checks the viewer token and the connected user).
    let token = query_token(embed);
    let me = format!(
        "&user={}&resume={}",
        hello["user_id"].as_str().unwrap(),
        hello["resume"].as_str().unwrap()
    );
    let wrong = format!("&user={}&resume=x", hello["user_id"].as_str().unwrap());
    let (st, v) = http(
        &lb,
        "POST",
        &format!("/v0/vm/{id1}/embed/addRoles"),
        Some(&admin1),
        Some(&json!([[hello["user_id"]], ["file_upload"]]).to_string()),
    )
    .await;
    assert_eq!((st, v["changed"].as_u64()), (200, Some(1)), "{v}");
    for (method, route, user, want) in [
        ("GET", "downloads/none.txt", me.as_str(), 404),
        ("GET", "downloads/none.txt", wrong.as_str(), 403),
        ("POST", "uploads", me.as_str(), 400),
        ("POST", "uploads", wrong.as_str(), 403),
    ] {
        for addr in &addrs {
            let (st, v) = http(
                addr,
                method,
                &format!("/v0/vm/{id1}/embed/{route}?token={token}{user}"),
                None,
                (method == "POST").then_some("not a multipart body"),
            )
            .await;
            assert_eq!(st, want, "{method} {route} on {addr}: {v}");
        }
    }
    drop(ws);
    // The admin token does not open the live view on any node.
    let (st, _) = http(
        &lb,
        "GET",
        &format!("/v0/vm/{id1}/embed?token={admin1}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 403);

    // End with a save through the balancer.
    let (st, v) = http(
        &lb,
        "DELETE",
        &format!("/v0/vm/{id1}?wait=true"),
        Some(KEY_T1),
        None,
    )
    .await;
    ok(st, &v, "delete");
    assert_eq!(v["save"]["state"], "saved", "{v}");
    let (st, v) = http(&lb, "GET", &format!("/v0/vm/{id1}"), Some(KEY_T1), None).await;
    ok(st, &v, "get after the end");
    assert_eq!(v["end_reason"], "client", "{v}");
    // The ended session's admin token reaches its data document from no node.
    for addr in &addrs {
        let (st, _) = http(
            addr,
            "GET",
            &format!("/v0/profiles/{id1}/data"),
            Some(&admin1),
            None,
        )
        .await;
        assert_eq!(st, 401, "an ended session's admin token on {addr}");
    }

    // Load it on another node: its cookie is back.
    // (Asked of a node other than the first owner: the balancer's round robin is in step
    // with this test's calls.)
    let other = nodes
        .iter()
        .position(|d| {
            std::fs::read_to_string(d.data.join("node-id"))
                .unwrap()
                .trim()
                != owner
        })
        .unwrap();
    let (st, s2) = http(
        &addrs[other],
        "POST",
        "/v0/vm",
        Some(KEY_T1),
        Some(&json!({"profile": {"load": id1, "save": true}}).to_string()),
    )
    .await;
    ok(st, &s2, "load on another node");
    let (_, info) = http(
        &lb,
        "GET",
        &format!("/v0/vm/{}", s2["session_id"].as_str().unwrap()),
        Some(KEY_T1),
        None,
    )
    .await;
    assert_ne!(info["node"], owner.as_str(), "{info}");
    let id2 = s2["session_id"].as_str().unwrap().to_string();
    let mut cdp = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    cdp.goto(&format!("{site}/get")).await;
    let cookies = cdp.eval("document.cookie").await;
    assert!(
        cookies.as_str().unwrap().contains("pv_cookie=clustered"),
        "{cookies}"
    );
    cdp.close().await;
    // A saving session of it elsewhere: 409 from any node.
    for a in &addrs {
        let (st, v) = http(
            a,
            "POST",
            "/v0/vm",
            Some(KEY_T1),
            Some(&json!({"profile": {"load": id1, "save": true}}).to_string()),
        )
        .await;
        assert_eq!(
            (st, v["error"].as_str()),
            (409, Some("profile_in_use")),
            "{v}"
        );
    }

    // Placement: the node running id2 is full; two more sessions asked of it start on the
    // other two nodes; then every node is full.
    let (_, info2) = http(&lb, "GET", &format!("/v0/vm/{id2}"), Some(KEY_T1), None).await;
    let full = nodes
        .iter()
        .position(|d| {
            let id_file = std::fs::read_to_string(d.data.join("node-id")).unwrap();
            id_file.trim() == info2["node"].as_str().unwrap()
        })
        .unwrap();
    let mut placed = Vec::new();
    for _ in 0..2 {
        let (st, v) = http(&addrs[full], "POST", "/v0/vm", Some(KEY_T1), Some("{}")).await;
        ok(st, &v, "placed create");
        let id = v["session_id"].as_str().unwrap().to_string();
        let (_, info) = http(
            &addrs[full],
            "GET",
            &format!("/v0/vm/{id}"),
            Some(KEY_T1),
            None,
        )
        .await;
        placed.push((id, info["node"].as_str().unwrap().to_string()));
    }
    let mut on: Vec<&str> = placed.iter().map(|(_, n)| n.as_str()).collect();
    on.push(info2["node"].as_str().unwrap());
    on.sort();
    on.dedup();
    assert_eq!(on.len(), 3, "one session on each node: {placed:?}");
    let (st, v) = http(&lb, "POST", "/v0/vm", Some(KEY_T1), Some("{}")).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (429, Some("too_many_sessions")),
        "{v}"
    );

    // kill -9 of a node: its session shows node_lost from the others within the timeout.
    let (victim_id, victim_node) = placed[0].clone();
    let victim = nodes
        .iter()
        .position(|d| {
            std::fs::read_to_string(d.data.join("node-id"))
                .unwrap()
                .trim()
                == victim_node
        })
        .unwrap();
    nodes[victim].kill9();
    let start = std::time::Instant::now();
    let survivor = &addrs[(victim + 1) % 3];
    loop {
        let (st, v) = http(
            survivor,
            "GET",
            &format!("/v0/vm/{victim_id}"),
            Some(KEY_T1),
            None,
        )
        .await;
        if st == 200 && v["end_reason"] == "node_lost" {
            assert!(
                v["termination_date"].is_u64() && v["expires_at"].is_null(),
                "{v}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never node_lost: {st} {v}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (st, v) = http(survivor, "GET", "/v0/vm", Some(KEY_T1), None).await;
    ok(st, &v, "list after the loss");
    assert!(
        !v.to_string().contains(&victim_id),
        "a lost session is not listed: {v}"
    );
    let (st, v) = http(
        survivor,
        "DELETE",
        &format!("/v0/vm/{victim_id}"),
        Some(KEY_T1),
        None,
    )
    .await;
    assert_eq!(st, 410, "{v}");

    // A node without the secret, or with another one, is refused.
    for secret in ["", "another-cluster-secret-0123"] {
        let out = Command::new(env!("CARGO_BIN_EXE_profile-vault"))
            .arg("--data-dir")
            .arg(dir.path().join(format!("x{}", secret.len())))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("PV_API_KEYS", format!("t1:{KEY_T1}"))
            .env(
                "PV_MASTER_KEYS",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            )
            .env("PV_STORE", &store)
            .env("PV_CONFIG", &cfg)
            .env("PV_CLUSTER_SECRET", secret)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("cannot join the cluster")
                && err.contains("cluster.secret"),
            "{err}"
        );
    }
    // A forged forward (a made-up signature) is refused.
    let forged = {
        let mut s = tokio::net::TcpStream::connect(survivor.as_str())
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET /v0/vm HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-pv-cluster-node: n\r\nx-pv-cluster-target: n\r\nx-pv-cluster-time: 1\r\nx-pv-cluster-actor: api-key:t1#00000000\r\nx-pv-cluster-sig: {}\r\nx-pv-verified-actor: api-key:t1#0\r\n\r\n", "0".repeat(64));
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(
        forged.starts_with("HTTP/1.1 401") && forged.contains("cluster_auth_failed"),
        "{forged}"
    );
    // A header claiming an already checked caller, from outside, is ignored.
    let (st, _) = {
        let mut s = tokio::net::TcpStream::connect(survivor.as_str())
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /v0/vm HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-pv-verified-actor: api-key:t1#0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        (out.split_whitespace().nth(1).unwrap_or("").to_string(), ())
    };
    assert_eq!(st, "401");

    // The killed node restarts and rejoins: a session on it is reachable through the others.
    let data = nodes[victim].data.clone();
    let _old = std::mem::replace(
        &mut nodes[victim],
        Daemon::start(&data, StoreKind::Fs, &env),
    );
    let back = nodes[victim].addr.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, v) = http(&back, "POST", "/v0/vm", Some(KEY_T1), Some("{}")).await;
    ok(st, &v, "create on the restarted node");
    let id3 = v["session_id"].as_str().unwrap().to_string();
    let (st, v) = http(
        survivor,
        "GET",
        &format!("/v0/vm/{id3}"),
        Some(KEY_T1),
        None,
    )
    .await;
    ok(st, &v, "get through another node");
    assert_eq!(v["node"], victim_node.as_str());
    let (st, v) = http(
        survivor,
        "DELETE",
        &format!("/v0/vm/{id3}?wait=true"),
        Some(KEY_T1),
        None,
    )
    .await;
    ok(st, &v, "delete through another node");
}
