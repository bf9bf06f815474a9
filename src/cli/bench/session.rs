//! `profile-vault bench --session`: what a session start and end cost, and what the browser
//! sandbox adds to them. Two in-process daemons on one store — browsers sandboxed, and
//! browsers unconfined (`browser.unsafe_no_sandbox`) — take turns in one run:
//! `POST /v0/vm` with a load of the profile until the browser answers on CDP, then
//! `DELETE` until the generation is saved, with the vault's part of each (the restore before
//! the browser launches, the save after it stops, from the daemon's metrics). Then each runs
//! 1 and 8 idle sessions and the memory of their browsers is measured (the PSS of every
//! process of each browser, sandbox processes included, so shared pages are counted once).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};

use super::args::Args;
use super::common::bench_addr;
use super::common::{bench_vault, median};
use super::daemon::{http, BenchDaemon};
use crate::cli::{human_bytes, Ctx};
use profile_vault::vault::Base;
use profile_vault::NoProgress;

#[derive(Debug, Default, serde::Serialize)]
struct Mode {
    load_to_cdp_seconds: Vec<f64>,
    delete_to_saved_seconds: Vec<f64>,
    /// The vault's part of each start: the restore before the browser launched.
    restore_seconds: Vec<f64>,
    /// The vault's part of each end: the save after the browser stopped.
    save_seconds: Vec<f64>,
    /// Median of `load_to_cdp_seconds`.
    load_to_cdp_median: f64,
    /// Median of `delete_to_saved_seconds`.
    delete_to_saved_median: f64,
    /// Medians of `restore_seconds` and `save_seconds`.
    restore_median: f64,
    save_median: f64,
    /// PSS of one idle session's browser, MiB.
    idle_session_mib: f64,
    /// PSS of 8 idle sessions' browsers together, MiB.
    idle_8_sessions_mib: f64,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    profile_bytes: u64,
    rounds: u32,
    sandboxed: Mode,
    unsandboxed: Mode,
    /// Sandboxed minus unsandboxed median start (`POST /v0/vm` -> CDP), ms.
    sandbox_adds_to_start_ms: f64,
    /// Sandboxed minus unsandboxed memory per idle session (of 8), MiB.
    sandbox_adds_per_session_mib: f64,
}

/// Runs `bench --session`.
pub(super) async fn run(ctx: &Ctx, a: &Args, src: &Path, bench_dir: &Path) -> anyhow::Result<()> {
    let data = bench_dir.join(format!("daemon-{}", uuid::Uuid::new_v4().simple()));
    let store_path = data.join("store");
    let url = a.bench_store.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            std::path::absolute(&store_path)
                .unwrap_or(store_path.clone())
                .display()
        )
    });
    let vault = bench_vault(ctx, &url, &data.join("spool")).await?;
    let profile = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let saved = vault
        .save(
            &bench_addr(&profile)?,
            src,
            Base::Current,
            Arc::new(NoProgress),
        )
        .await?;
    let daemons = [
        BenchDaemon::start_sandboxed(ctx, vault.clone(), &data.join("sandboxed"), true).await?,
        BenchDaemon::start_sandboxed(ctx, vault.clone(), &data.join("unsandboxed"), false).await?,
    ];
    let mut modes = [Mode::default(), Mode::default()];
    for _ in 0..a.rounds {
        for (d, m) in daemons.iter().zip(modes.iter_mut()) {
            let r = round(d, &profile).await?;
            m.load_to_cdp_seconds.push(r.start);
            m.delete_to_saved_seconds.push(r.end);
            m.restore_seconds.push(r.restore);
            m.save_seconds.push(r.save);
        }
    }
    for ((d, m), dir) in daemons
        .iter()
        .zip(modes.iter_mut())
        .zip(["sandboxed", "unsandboxed"])
    {
        m.load_to_cdp_median = median(&m.load_to_cdp_seconds);
        m.delete_to_saved_median = median(&m.delete_to_saved_seconds);
        m.restore_median = median(&m.restore_seconds);
        m.save_median = median(&m.save_seconds);
        m.idle_session_mib = idle_memory(d, &data.join(dir), 1).await?;
        m.idle_8_sessions_mib = idle_memory(d, &data.join(dir), 8).await?;
    }
    for d in daemons {
        d.stop().await?;
    }
    vault.delete(&bench_addr(&profile)?).await?;
    let _ = std::fs::remove_dir_all(&data);
    if !a.keep_profile {
        let _ = std::fs::remove_dir_all(src);
    }
    let [sandboxed, unsandboxed] = modes;
    let report = Report {
        profile_bytes: saved.bytes_in,
        rounds: a.rounds,
        sandbox_adds_to_start_ms: (sandboxed.load_to_cdp_median - unsandboxed.load_to_cdp_median)
            * 1000.0,
        sandbox_adds_per_session_mib: (sandboxed.idle_8_sessions_mib
            - unsandboxed.idle_8_sessions_mib)
            / 8.0,
        sandboxed,
        unsandboxed,
    };
    ctx.print(&report, || {
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
        let line = |name: &str, m: &Mode| {
            format!(
                "{name:<12} POST /v0/vm with load -> CDP: median {:.3} s ({}), of which the restore {:.3} s\n{:<12} DELETE -> saved: median {:.3} s ({}), of which the save {:.3} s\n{:<12} idle memory: {:.1} MiB for one session, {:.1} MiB for 8",
                m.load_to_cdp_median,
                fmt(&m.load_to_cdp_seconds),
                m.restore_median,
                "",
                m.delete_to_saved_median,
                fmt(&m.delete_to_saved_seconds),
                m.save_median,
                "",
                m.idle_session_mib,
                m.idle_8_sessions_mib
            )
        };
        format!(
            "session bench on a {} profile ({} rounds, alternating)\n{}\n{}\nthe sandbox adds {:.0} ms to a start and {:.1} MiB per idle session",
            human_bytes(report.profile_bytes),
            report.rounds,
            line("sandboxed", &report.sandboxed),
            line("unsandboxed", &report.unsandboxed),
            report.sandbox_adds_to_start_ms,
            report.sandbox_adds_per_session_mib
        )
    });
    Ok(())
}

/// One session's figures, seconds.
struct Round {
    /// `POST /v0/vm` with a load until CDP answers.
    start: f64,
    /// The restore inside it.
    restore: f64,
    /// `DELETE` until the generation is saved.
    end: f64,
    /// The save inside it.
    save: f64,
}

/// Seconds the daemon's restores (or saves) took since `before`, by its metrics.
fn since(h: &profile_vault::metrics::Histogram, before: (u64, std::time::Duration)) -> f64 {
    let (n, sum) = h.total();
    if n == before.0 {
        return 0.0;
    }
    sum.saturating_sub(before.1).as_secs_f64()
}

/// One session: load -> CDP answers, then DELETE -> saved.
async fn round(d: &BenchDaemon, profile: &str) -> anyhow::Result<Round> {
    let m = &profile_vault::metrics::METRICS;
    let (restores, saves) = (m.restore_seconds.total(), m.save_seconds.total());
    let t = Instant::now();
    let body = serde_json::json!({"profile": {"load": profile, "save": true}}).to_string();
    let (st, vm) = http(&d.addr, "POST", "/v0/vm", &d.token, &body).await?;
    anyhow::ensure!(st == 200, "POST /v0/vm answered {st}: {vm}");
    let cdp_url = vm["cdp_url"].as_str().unwrap_or_default().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(cdp_url).await?;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"id":1,"method":"Browser.getVersion"}"#.into(),
    ))
    .await?;
    while let Some(m) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m? {
            if t.as_str().contains("\"id\":1") {
                break;
            }
        }
    }
    let start = t.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    let id = vm["session_id"].as_str().unwrap_or_default().to_string();
    let t = Instant::now();
    let ended = end(d, &id).await?;
    anyhow::ensure!(
        ended["save"]["state"] == "saved",
        "DELETE did not save: {ended}"
    );
    Ok(Round {
        start,
        restore: since(&m.restore_seconds, restores),
        end: t.elapsed().as_secs_f64(),
        save: since(&m.save_seconds, saves),
    })
}

/// `DELETE /v0/vm/{id}?wait=true`: the session's final view.
async fn end(d: &BenchDaemon, id: &str) -> anyhow::Result<serde_json::Value> {
    let path = format!("/v0/vm/{id}?wait=true");
    let (st, ended) = http(&d.addr, "DELETE", &path, &d.token, "").await?;
    anyhow::ensure!(st == 200, "DELETE answered {st}: {ended}");
    Ok(ended)
}

/// Starts `n` idle sessions (about:blank), lets them settle, and returns the PSS of their
/// browsers together, in MiB.
async fn idle_memory(d: &BenchDaemon, data: &Path, n: usize) -> anyhow::Result<f64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (st, vm) = http(&d.addr, "POST", "/v0/vm", &d.token, "{}").await?;
        anyhow::ensure!(st == 200, "POST /v0/vm answered {st}: {vm}");
        ids.push(vm["session_id"].as_str().unwrap_or_default().to_string());
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut kib = 0;
    for id in &ids {
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join(format!("sessions/{id}.json")))?)?;
        let pid = rec["pid"].as_u64().unwrap_or(0) as u32;
        kib += tree_pss_kib(pid);
    }
    for id in &ids {
        end(d, id).await?;
    }
    Ok(kib as f64 / 1024.0)
}

/// PSS of `root`, its parent when that is the sandbox's bubblewrap, and every descendant.
fn tree_pss_kib(root: u32) -> u64 {
    let mut parent = std::collections::HashMap::<u32, u32>::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        parent.insert(pid, ppid);
    }
    let in_tree = |mut p: u32| {
        while p > 1 {
            if p == root {
                return true;
            }
            p = parent.get(&p).copied().unwrap_or(0);
        }
        false
    };
    let mut pids: Vec<u32> = parent.keys().copied().filter(|p| in_tree(*p)).collect();
    if let Some(pp) = parent.get(&root) {
        let cmd = std::fs::read(format!("/proc/{pp}/cmdline")).unwrap_or_default();
        if cmd.starts_with(b"bwrap") {
            pids.push(*pp);
        }
    }
    pids.iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}
