//! Escape probes against the browser sandbox, each played as the real actor: a tenant over
//! `cdp_url`, an end user through the live-view socket only, page JavaScript, and another
//! tenant beside them. Every probe must be held. Then a page that eats memory, one that
//! spawns threads without end and one that fills the disk: each ends its own session only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};

use crate::common::daemon::*;

/// A service on loopback the browsers must never reach (a stand-in for the cloud metadata
/// service, or any internal HTTP service): it counts every request it gets.
struct Internal {
    addr: String,
    hits: Arc<AtomicUsize>,
}

async fn internal() -> Internal {
    // Not in the test daemons' egress allow-list (127.0.0.2/32).
    let (addr, hits) = counting_server("127.0.0.3:0", "AKIA-fake-credentials").await;
    Internal { addr, hits }
}

/// The page's text, or "" when it cannot be read.
async fn page_text(cdp: &mut Cdp) -> String {
    cdp.eval("document.documentElement ? document.documentElement.innerText : ''")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Navigates and returns the browser's answer to `Page.navigate` (its `errorText` when the
/// navigation was refused).
async fn navigate(cdp: &mut Cdp, url: &str) -> Value {
    let r = cdp.raw("Page.navigate", json!({"url": url})).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    r
}

/// Every process of the sandboxed browsers, seen from the host: (pid, status, environ, cmdline).
fn sandboxed_browser_processes(d: &Daemon) -> Vec<(u32, String, Vec<u8>, String)> {
    let mut out = Vec::new();
    // The daemon's own browsers only: other tests' viewers run Chromium on this host too.
    let daemon = d.child.as_ref().expect("the daemon runs").id();
    for pid in descendants(daemon) {
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !cmd.contains("chromium") || cmd.contains("sandbox-init") {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        out.push((pid, status, environ, cmd));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tenant_viewer_or_page_reaches_outside_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let site = test_site().await;
    let inside = internal().await;
    // Opened by egress_allow and closed by egress_deny: closed (deny wins).
    let (denied, denied_hits) = counting_server("127.0.0.5:0", "AKIA-denied").await;
    let d = Daemon::start(
        &data,
        StoreKind::Fs,
        &[
            ("PV_EGRESS_ALLOW", &format!("{SITE_ALLOW},127.0.0.5/32")),
            ("PV_EGRESS_DENY", "127.0.0.5/32"),
        ],
    );
    let s1 = d.create(KEY_T1, json!({"profile": true})).await;
    let s2 = d.create(KEY_T2, json!({"profile": true})).await;
    let (id1, id2) = (
        s1["session_id"].as_str().unwrap().to_string(),
        s2["session_id"].as_str().unwrap().to_string(),
    );
    let mut cdp = Cdp::connect(s1["cdp_url"].as_str().unwrap()).await;
    let mut other = Cdp::connect(s2["cdp_url"].as_str().unwrap()).await;
    // The allowed site works: the wall is not a dead network.
    cdp.goto(&format!("{site}/set?v=tenant-one")).await;
    other.goto(&format!("{site}/page-of-two")).await;

    // --- A tenant over cdp_url ---
    // file://, chrome:// (but for a few pages: not the password manager) and devtools://
    // pages are refused by policy.
    for url in [
        format!("file://{}/sessions/", data.display()),
        "file:///etc/passwd".to_string(),
        "chrome://version".to_string(),
        // Saved passwords are not shown to whoever drives the browser.
        "chrome://password-manager/passwords".to_string(),
        "chrome://settings/passwords".to_string(),
        "devtools://devtools/bundled/inspector.html".to_string(),
        "view-source:http://example.com/".to_string(),
    ] {
        let r = navigate(&mut cdp, &url).await;
        let err = r["result"]["errorText"].as_str().unwrap_or_default();
        assert!(
            err.contains("BLOCKED") || r.get("error").is_some(),
            "{url} was opened: {r}"
        );
        let text = page_text(&mut cdp).await;
        assert!(
            !text.contains(&id2) && !text.contains("root:"),
            "{url}: {text}"
        );
    }
    // File inputs read only what the sandbox holds: the host's data dir is not there.
    cdp.goto(&format!("{site}/files")).await;
    cdp.eval("document.body.innerHTML = '<input type=file id=f>'; 1")
        .await;
    let doc = cdp.send("DOM.getDocument", json!({})).await;
    let node = cdp
        .send(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": "#f"}),
        )
        .await["nodeId"]
        .clone();
    let other_record = data.join(format!("sessions/{id2}.json"));
    let other_profile = data.join(format!("browsers/{id2}/Local State"));
    assert!(
        other_record.is_file(),
        "the probe's target exists on the host"
    );
    for path in [&other_record, &other_profile] {
        let _ = cdp
            .raw(
                "DOM.setFileInputFiles",
                json!({"files": [path], "nodeId": node}),
            )
            .await;
        let got = cdp
            .eval(
                "f.files.length ? f.files[0].text().then(t => t, e => 'ERR:' + e.name) : 'NOFILE'",
            )
            .await;
        let got = got.as_str().unwrap_or_default();
        assert!(
            got == "NOFILE" || got.starts_with("ERR:"),
            "{} was read through a file input: {got:.200}",
            path.display()
        );
    }
    // Downloads cannot be aimed at the daemon's directories.
    let _ = cdp
        .raw(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": data.join("sessions")}),
        )
        .await;
    cdp.eval(
        r#"(() => { const a = document.createElement('a');
            a.href = 'data:application/json,{"state":"failed","dir":"/"}';
            a.download = 'forged.json'; document.body.appendChild(a); a.click(); return 1; })()"#,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !data.join("sessions/forged.json").exists(),
        "a download landed in the daemon's session records"
    );
    // Internal addresses, as navigations and as new targets.
    for url in [
        format!("http://{}/metrics", d.addr),
        format!("http://{}/latest/meta-data/", inside.addr),
        format!("http://{denied}/denied"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://localhost:9222/json/list".to_string(),
    ] {
        let r = navigate(&mut cdp, &url).await;
        assert!(
            r["result"]["errorText"].as_str().is_some(),
            "{url} answered: {r}"
        );
        let text = page_text(&mut cdp).await;
        assert!(
            !text.contains("pv_sessions_active") && !text.contains("AKIA"),
            "{url}: {text}"
        );
    }
    let _ = cdp
        .raw(
            "Target.createTarget",
            json!({"url": format!("http://{}/from-a-new-target", inside.addr)}),
        )
        .await;

    // --- Page JavaScript ---
    cdp.goto(&format!("{site}/js")).await;
    let r = cdp
        .eval(&format!(
            r#"(async () => {{
                const out = [];
                for (const u of ["http://{daemon}/metrics", "http://{inside}/fetch", "http://127.0.0.1:9222/json"]) {{
                    try {{ const r = await fetch(u, {{mode: "no-cors"}}); out.push("reached " + u + " " + r.type); }}
                    catch (e) {{ out.push("refused"); }}
                }}
                out.push(await new Promise((res) => {{
                    const ws = new WebSocket("ws://{daemon}/v0/vm/{id2}/cdp");
                    ws.onopen = () => res("ws open"); ws.onerror = () => res("refused");
                    setTimeout(() => res("refused"), 5000);
                }}));
                const f = document.createElement("iframe");
                f.src = "http://{inside}/iframe"; document.body.appendChild(f);
                await new Promise((r) => setTimeout(r, 1500));
                return out.join(",");
            }})()"#,
            daemon = d.addr,
            inside = inside.addr,
        ))
        .await;
    assert_eq!(
        r,
        json!("refused,refused,refused,refused"),
        "page JavaScript reached inside"
    );

    // --- An end user holding only embed_url ---
    let (mut ws, _) = tokio_tungstenite::connect_async(viewer_socket(&d, &s1))
        .await
        .unwrap();
    for url in [
        format!("http://{}/metrics", d.addr),
        format!("http://{}/viewer", inside.addr),
        "http://127.0.0.1:9222/json/list".to_string(),
        "http://[::1]:9222/json/version".to_string(),
    ] {
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"t": "goto", "url": url}).to_string().into(),
        ))
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let text = page_text(&mut cdp).await;
        assert!(
            !text.contains("pv_sessions_active")
                && !text.contains("AKIA")
                && !text.contains("webSocketDebuggerUrl"),
            "the viewer opened {url}: {text}"
        );
    }
    let _ = ws.close(None).await;
    assert_eq!(
        inside.hits.load(Ordering::SeqCst),
        0,
        "an internal service was reached"
    );
    assert_eq!(
        denied_hits.load(Ordering::SeqCst),
        0,
        "a range egress_deny closes was reached"
    );

    // --- Seen from the host: who the browsers are and what they hold ---
    let procs = sandboxed_browser_processes(&d);
    let ours: Vec<_> = procs
        .iter()
        .filter(|p| p.3.contains("--user-data-dir=/profile"))
        .collect();
    assert!(
        ours.len() >= 2,
        "the browsers run on their sandbox's /profile: {:?}",
        procs.iter().map(|p| &p.3).collect::<Vec<_>>()
    );
    let my_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    for (pid, status, environ, cmd) in &procs {
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or("0");
        assert_ne!(uid, "0", "browser process {pid} runs as root: {cmd}");
        let env = String::from_utf8_lossy(environ);
        assert!(
            !env.contains("PV_") && !env.contains("AWS_"),
            "process {pid} inherited the daemon's environment"
        );
        assert!(!cmd.contains("--no-sandbox"), "{cmd}");
        assert!(!cmd.contains("--remote-debugging-port"), "{cmd}");
        let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap_or_default();
        assert_ne!(net, my_net, "process {pid} shares the host's network");
    }
    let renderers: Vec<_> = procs
        .iter()
        .filter(|p| p.3.contains("--type=renderer"))
        .collect();
    assert!(!renderers.is_empty());
    for r in renderers {
        assert!(
            r.1.contains("Seccomp:\t2"),
            "renderer {} has no seccomp filter",
            r.0
        );
    }

    // --- The neighbour is untouched ---
    assert_eq!(other.eval("1 + 1").await, json!(2));
    let (_, v) = d
        .call("GET", &format!("/v0/vm/{id2}"), Some(KEY_T2), None)
        .await;
    assert!(v["termination_date"].is_null(), "{v}");
    let (st, _) = d
        .call("GET", &format!("/v0/vm/{id2}"), Some(KEY_T1), None)
        .await;
    assert_eq!(st, 404, "another tenant's session is not found");
    cdp.close().await;
    other.close().await;
    d.end_and_wait(KEY_T1, &id1).await;
    d.end_and_wait(KEY_T2, &id2).await;
    // Nothing of the sandboxes is left behind.
    assert_eq!(
        std::fs::read_dir(data.join("run")).unwrap().count(),
        0,
        "run directories left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_eats_memory_threads_or_disk_ends_only_its_own_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::with_config(
        dir.path(),
        "[browser]\nsandbox_memory_mb = 700\nsandbox_pids = 600\nsandbox_disk_mb = 48\n",
    );
    let site = test_site().await;
    let neighbour = d.create(KEY_T2, json!({"profile": true})).await;
    let mut n = Cdp::connect(neighbour["cdp_url"].as_str().unwrap()).await;
    n.goto(&format!("{site}/set?v=neighbour")).await;
    for (what, script) in [
        (
            "memory",
            "window.__b = []; setInterval(() => { for (let i = 0; i < 4; i++) window.__b.push(new Uint8Array(32 << 20).fill(7)); }, 50); 1",
        ),
        (
            "threads",
            "(() => { const src = URL.createObjectURL(new Blob(['setInterval(() => {}, 100000)'])); window.__w = []; for (let i = 0; i < 2000; i++) { try { window.__w.push(new Worker(src)); } catch (e) { break; } } return 1; })()",
        ),
        (
            // What a taken-over browser writes where its uid may: its X socket directory.
            "disk-display",
            "1",
        ),
        (
            "disk",
            "(() => { const a = document.createElement('a'); a.href = URL.createObjectURL(new Blob([new Uint8Array(96 << 20).fill(1)])); a.download = 'big.bin'; document.body.appendChild(a); a.click(); return 1; })()",
        ),
    ] {
        let s = d.create(KEY_T1, json!({"profile": true})).await;
        let id = s["session_id"].as_str().unwrap().to_string();
        let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
        cdp.goto(&format!("{site}/{what}")).await;
        if what == "disk" {
            // Downloads go to the session's own home (whatever path a tenant asks for).
            cdp.send(
                "Browser.setDownloadBehavior",
                json!({"behavior": "allow", "downloadPath": "/home/browser/Downloads"}),
            )
            .await;
        }
        if what == "disk-display" {
            let x11 = d.data.join("run").join(&id).join("x11");
            assert!(x11.is_dir(), "the session has a display");
            std::fs::write(x11.join("fill"), vec![1u8; 64 << 20]).unwrap();
        }
        let _ = cdp
            .raw(
                "Runtime.evaluate",
                json!({"expression": script, "returnByValue": true}),
            )
            .await;
        let v = d
            .wait_for(KEY_T1, &id, 90, |v| v["save"]["state"] == "saved")
            .await;
        assert_eq!(v["end_reason"], "resource_limit", "{what}: {v}");
        // The neighbour keeps running and answering.
        assert_eq!(n.eval("1 + 1").await, json!(2), "after {what}");
        let (_, nv) = d
            .call(
                "GET",
                &format!("/v0/vm/{}", neighbour["session_id"].as_str().unwrap()),
                Some(KEY_T2),
                None,
            )
            .await;
        assert!(nv["termination_date"].is_null(), "{nv}");
    }
    n.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_process_itself_runs_under_the_seccomp_filter_on_a_nameless_host() {
    // A "browser" that is the real one after a probe, as a taken-over browser process would
    // run it: ptrace (the X server holds the daemon's connections) and io_uring (a kernel
    // interface behind many escalations) must both be refused. The probe runs inside the
    // sandbox only (its home), never at the daemon's version check.
    let probe = format!(
        r#"if [ ! -e "$HOME/probe.txt" ]; then
  /usr/bin/perl -e '$!=0; my $r = syscall({ptrace}, 0, 0, 0, 0); print "ptrace $r ", $!+0, "\n"; $!=0; my $p = "\0" x 120; $r = syscall({uring}, 1, $p); print "io_uring $r ", $!+0, "\n";' > "$HOME/probe.tmp" 2>&1
  echo "hostname $(cat /proc/sys/kernel/hostname)" >> "$HOME/probe.tmp"
  mv "$HOME/probe.tmp" "$HOME/probe.txt"
fi"#,
        ptrace = libc::SYS_ptrace,
        uring = libc::SYS_io_uring_setup,
    );
    let (bin, script) = chromium_after("pv-probe", &probe);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start(
        &data,
        StoreKind::Fs,
        &[("PV_CHROMIUM", script.to_str().unwrap())],
    );
    let s = d.create(KEY_T1, json!({"profile": {"save": false}})).await;
    let id = s["session_id"].as_str().unwrap().to_string();
    let probe = data.join("run").join(&id).join("home/probe.txt");
    let mut text = String::new();
    for _ in 0..100 {
        if let Ok(t) = std::fs::read_to_string(&probe) {
            text = t;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The browser started and answers all the same.
    let mut cdp = Cdp::connect(s["cdp_url"].as_str().unwrap()).await;
    assert_eq!(cdp.eval("1 + 1").await, json!(2));
    cdp.close().await;
    d.end_and_wait(KEY_T1, &id).await;
    let _ = std::fs::remove_dir_all(&bin);
    let eperm = libc::EPERM;
    assert!(
        text.contains(&format!("ptrace -1 {eperm}\n"))
            && text.contains(&format!("io_uring -1 {eperm}\n")),
        "the probe in the sandbox got: {text:?}"
    );
    // Nor does a page's browser learn which node it runs on.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        text.contains("hostname localhost\n") && !text.contains(&format!("hostname {host}")),
        "the sandbox's hostname: {text:?} (the node's is {host:?})"
    );
}

#[tokio::test]
async fn a_browser_that_does_not_start_is_explained_in_the_log() {
    // What the sandbox wrote last (bubblewrap's, the init's or the browser's own error)
    // reaches the daemon's log; the tenant gets the plain 503.
    let (bin, script) = chromium_after(
        "pv-broken",
        "echo 'pv-broken-browser: error while loading libpv.so' >&2\nexit 3",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[("PV_CHROMIUM", script.to_str().unwrap())],
    );
    let (st, v) = d.post_vm(KEY_T1, json!({})).await;
    let _ = std::fs::remove_dir_all(&bin);
    assert_eq!(
        (st, v["error"].as_str()),
        (503, Some("browser_failed")),
        "{v}"
    );
    assert!(
        !v.to_string().contains("libpv"),
        "the host's detail stays in the log: {v}"
    );
    let mut logged = false;
    for _ in 0..50 {
        logged = d
            .log_text()
            .contains("pv-broken-browser: error while loading libpv.so");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "{}", d.log_text());
}

/// A "browser" that runs `first` (shell) inside the sandbox only (its home is the browser's),
/// never at the daemon's version check, then the real Chromium: its directory (to remove)
/// and the script (for `PV_CHROMIUM`).
fn chromium_after(prefix: &str, first: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = std::path::PathBuf::from(format!("/tmp/{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&bin).unwrap();
    let chromium = profile_vault::browser::find_binary(None).unwrap();
    let script = bin.join("chromium");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$HOME\" = /home/browser ]; then\n{first}\nfi\nexec {} \"$@\"\n",
            chromium.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (p, m) in [(&bin, 0o755), (&script, 0o755)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    (bin, script)
}
