//! The API contract under property-based testing: schemathesis (pinned, installed by
//! `.ci/install-deps`) runs every check and every phase, stateful included, with bounded case
//! counts (`tests/schemathesis.toml`) against a real daemon with real Chromium. Any finding —
//! a 5xx, a status, body or content type the OpenAPI document does not declare, invalid data
//! accepted or valid data refused, ignored auth, a broken link — fails the test.

use std::process::Command;

use serde_json::json;

use super::common::daemon::{Daemon, StoreKind, KEY_T1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_contract_violation() {
    let st = std::env::var("PV_TEST_SCHEMATHESIS")
        .expect("PV_TEST_SCHEMATHESIS (the st binary) is set by scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // Few browsers at once, and none outliving the run: generated requests may ask for no timeout.
    std::fs::write(
        &cfg,
        "[sessions]\nmax_sessions = 8\nmax_session_secs = 30\nclose_deadline = 5\n[room]\nwatch_max_secs = 2\n",
    )
    .unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        StoreKind::Fs,
        &[("PV_CONFIG", cfg.to_str().unwrap())],
    );
    // A saved profile, so profile routes have something real to find.
    let v = d.create(KEY_T1, json!({"profile": {"save": true}})).await;
    let id = v["session_id"].as_str().unwrap().to_string();
    d.end_and_wait(KEY_T1, &id).await;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let seed = std::env::var("PV_ST_SEED").unwrap_or_else(|_| "20261202".into());
    let url = format!("http://{}/v0/openapi.json", d.addr);
    let run = |phases: &'static str, examples: &'static str, seed: String| {
        let (st, url) = (st.clone(), url.clone());
        let report = dir.path().join(format!("report-{phases}-{seed}"));
        async move {
            let out = tokio::task::spawn_blocking(move || {
                Command::new(st)
                    .args([
                        "--config-file",
                        config,
                        "run",
                        &url,
                        "--seed",
                        &seed,
                        "--no-color",
                    ])
                    .args(["--phases", phases, "--max-examples", examples])
                    .args(["--report", "junit", "--report-dir"])
                    .arg(&report)
                    .env("PV_ST_TOKEN", KEY_T1)
                    // Its cache goes beside the report, not into the checkout.
                    .current_dir(report.parent().expect("report dir has a parent"))
                    .output()
                    .expect("run schemathesis")
            })
            .await
            .unwrap();
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status, text)
        }
    };
    let check = |phases: &str, status: std::process::ExitStatus, text: &str| {
        assert!(
            status.success(),
            "schemathesis ({phases}) found problems ({status}):\n{text}\ndaemon log tail:\n{}\n\
             the findings again (CI keeps a message's end):\n{}",
            tail(&d.log_text(), 60),
            findings(text)
        );
        println!("{text}");
    };
    let (status, text) = run("examples,coverage,fuzzing", "10", seed.clone()).await;
    check("stateless", status, &text);
    assert!(
        text.contains("Coverage") && text.contains("Fuzzing"),
        "{text}"
    );
    // More seeds, fewer examples each: other corners of the same space (PV_ST_SEEDS replaces
    // them, e.g. to hunt with random ones by hand).
    let more = std::env::var("PV_ST_SEEDS").unwrap_or_else(|_| "7,424242".into());
    for s in more.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (status, text) = run("fuzzing", "5", s.to_string()).await;
        check(&format!("fuzzing, seed {s}"), status, &text);
    }
    // Room for the stateful phase: end what the generated requests started.
    let (_, list) = d.call("GET", "/v0/vm", Some(KEY_T1), None).await;
    for s in list["sessions"].as_array().unwrap() {
        let id = s["session_id"].as_str().unwrap();
        d.call(
            "DELETE",
            &format!("/v0/vm/{id}?wait=true"),
            Some(KEY_T1),
            None,
        )
        .await;
    }
    let (status, text) = run("stateful", "60", seed.clone()).await;
    check("stateful", status, &text);
    // It really followed the links from created sessions to the operations on them.
    let covered: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("API Links:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no link summary in:\n{text}"));
    // How many depends on the answers (ids, a full daemon): 5 to 19 across seeds 1-13.
    assert!(covered >= 3, "only {covered} links were followed:\n{text}");
}

/// Schemathesis's FAILURES section (up to its SUMMARY), or its last lines.
fn findings(text: &str) -> String {
    match (text.find("= FAILURES ="), text.find("= SUMMARY =")) {
        (Some(a), Some(b)) if a < b => text[a..b].to_string(),
        _ => tail(text, 40),
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
