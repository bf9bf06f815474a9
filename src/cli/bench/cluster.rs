//! `profile-vault bench --cluster`: what a forwarding node costs. Two in-process nodes of one
//! cluster on one filesystem store, on loopback; a session (real Chromium) runs on node A.
//! Alternating in one run, `--calls` times each: API calls (`GET /v0/vm/{id}`, `POST
//! /v0/vm/{id}/ping`) sent to A directly and to B (which forwards them to A), each over one
//! keep-alive connection, and CDP round trips (`Browser.getVersion`) over a WebSocket to A and
//! one through B. Reported: median and p99 of each, and the median added by forwarding.

use std::path::Path;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::args::Args;
use super::common::bench_vault;
use super::daemon::{http, BenchDaemon, KeepAlive};
use crate::cli::Ctx;

#[derive(serde::Serialize)]
struct Path2 {
    direct_median_ms: f64,
    direct_p99_ms: f64,
    forwarded_median_ms: f64,
    forwarded_p99_ms: f64,
    added_median_ms: f64,
}

#[derive(serde::Serialize)]
struct Report {
    calls: usize,
    get: Path2,
    ping: Path2,
    cdp_round_trip: Path2,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summarize(mut direct: Vec<f64>, mut fwd: Vec<f64>) -> Path2 {
    direct.sort_by(f64::total_cmp);
    fwd.sort_by(f64::total_cmp);
    Path2 {
        direct_median_ms: pct(&direct, 0.5),
        direct_p99_ms: pct(&direct, 0.99),
        forwarded_median_ms: pct(&fwd, 0.5),
        forwarded_p99_ms: pct(&fwd, 0.99),
        added_median_ms: pct(&fwd, 0.5) - pct(&direct, 0.5),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One CDP round trip; returns milliseconds.
async fn round_trip(ws: &mut Ws, id: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    ws.send(Message::Text(
        format!(r#"{{"id":{id},"method":"Browser.getVersion"}}"#).into(),
    ))
    .await?;
    let want = format!("\"id\":{id},");
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.as_str().contains(&want) {
                break;
            }
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// Runs the bench.
pub async fn run(ctx: &Ctx, a: &Args, bench_dir: &Path) -> anyhow::Result<()> {
    let root = bench_dir.join(format!("cluster-{}", uuid::Uuid::new_v4().simple()));
    let store = std::path::absolute(root.join("store"))?;
    let vault = bench_vault(
        ctx,
        &format!("file://{}", store.display()),
        &root.join("spool"),
    )
    .await?;
    let secret = format!("bench-cluster-{}", uuid::Uuid::new_v4().simple());
    let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let na =
        BenchDaemon::start_node(ctx, vault.clone(), &root.join("a"), &token, Some(&secret)).await?;
    let nb = BenchDaemon::start_node(ctx, vault, &root.join("b"), &token, Some(&secret)).await?;
    let result = measure(a, &na, &nb, &token).await;
    let _ = nb.stop().await;
    let _ = na.stop().await;
    let _ = std::fs::remove_dir_all(&root);
    let report = result?;
    ctx.print(&report, || {
        let line = |name: &str, p: &Path2| {
            format!(
                "{name:<16} direct median {:.3} ms, p99 {:.3} ms | forwarded median {:.3} ms, p99 {:.3} ms | added {:.3} ms\n",
                p.direct_median_ms, p.direct_p99_ms, p.forwarded_median_ms, p.forwarded_p99_ms, p.added_median_ms
            )
        };
        format!(
            "cluster of two nodes on loopback, {} calls per path, alternating\n{}{}{}",
            report.calls,
            line("GET /v0/vm/{id}", &report.get),
            line("POST ping", &report.ping),
            line("CDP round trip", &report.cdp_round_trip)
        )
    });
    Ok(())
}

async fn measure(
    a: &Args,
    na: &BenchDaemon,
    nb: &BenchDaemon,
    token: &str,
) -> anyhow::Result<Report> {
    let (st, vm) = http(&na.addr, "POST", "/v0/vm", token, "{}").await?;
    anyhow::ensure!(st == 200, "POST /v0/vm answered {st}: {vm}");
    let id = vm["session_id"].as_str().unwrap_or_default().to_string();
    let cdp = vm["cdp_url"].as_str().unwrap_or_default().to_string();
    anyhow::ensure!(cdp.contains(&na.addr), "cdp_url {cdp} is not on node A");
    // Node B must see node A (its member record) before it can forward.
    let get = format!("/v0/vm/{id}");
    let mut to_b = KeepAlive::connect(&nb.addr).await?;
    let ready = Instant::now();
    loop {
        let (st, _) = to_b.call("GET", &get, token, "").await?;
        if st == 200 {
            break;
        }
        anyhow::ensure!(
            ready.elapsed().as_secs() < 15,
            "node B answers {st} for the session on node A"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut to_a = KeepAlive::connect(&na.addr).await?;
    let ping = format!("/v0/vm/{id}/ping");
    let (mut get_d, mut get_f, mut ping_d, mut ping_f) = (vec![], vec![], vec![], vec![]);
    for _ in 0..a.calls {
        for (i, out, method, path) in [
            (0, &mut get_d, "GET", &get),
            (1, &mut get_f, "GET", &get),
            (0, &mut ping_d, "POST", &ping),
            (1, &mut ping_f, "POST", &ping),
        ] {
            let conn = if i == 0 { &mut to_a } else { &mut to_b };
            let t = Instant::now();
            let (st, body) = conn.call(method, path, token, "").await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(
                (200..300).contains(&st),
                "{method} {path} answered {st}: {}",
                String::from_utf8_lossy(&body)
            );
            out.push(ms);
        }
    }
    let (mut ws_a, _) = tokio_tungstenite::connect_async(cdp.clone()).await?;
    let (mut ws_b, _) = tokio_tungstenite::connect_async(cdp.replace(&na.addr, &nb.addr)).await?;
    let (mut cdp_d, mut cdp_f) = (vec![], vec![]);
    for i in 0..a.calls as u64 {
        cdp_d.push(round_trip(&mut ws_a, 2 * i + 1).await?);
        cdp_f.push(round_trip(&mut ws_b, 2 * i + 2).await?);
    }
    let _ = ws_a.close(None).await;
    let _ = ws_b.close(None).await;
    let _ = http(
        &na.addr,
        "DELETE",
        &format!("/v0/vm/{id}?wait=true"),
        token,
        "",
    )
    .await;
    Ok(Report {
        calls: a.calls,
        get: summarize(get_d, get_f),
        ping: summarize(ping_d, ping_f),
        cdp_round_trip: summarize(cdp_d, cdp_f),
    })
}
