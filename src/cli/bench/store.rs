//! `profile-vault bench --session-store`: one writer and `--watchers` SSE watchers on one session's
//! store, on loopback with an in-process daemon. Reported: changes per second delivered to
//! every watcher, change-to-watcher latency (median, p99), and the process's RSS before and
//! after, with one more watcher that never reads (memory must stay bounded).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::args::Args;
use super::daemon::{http, BenchDaemon, KeepAlive};
use crate::cli::Ctx;

const BUCKETS: usize = 20_000;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

async fn open_watch(addr: &str, path: &str, token: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    Ok(s)
}

#[derive(serde::Serialize)]
struct Report {
    watchers: usize,
    changes: u64,
    seconds: f64,
    changes_per_second: f64,
    delivered_to_all: bool,
    latency_median_ms: f64,
    latency_p99_ms: f64,
    rss_mib_before: f64,
    rss_mib_after: f64,
}

/// Runs the bench.
pub async fn run(ctx: &Ctx, a: &Args, bench_dir: &Path) -> anyhow::Result<()> {
    let data = bench_dir.join(format!("store-{}", uuid::Uuid::new_v4().simple()));
    let daemon = BenchDaemon::on_local_store(ctx, &data).await?;
    let (st, vm) = http(&daemon.addr, "POST", "/v0/vm", &daemon.token, "{}").await?;
    anyhow::ensure!(st == 200, "POST /v0/vm answered {st}: {vm}");
    let id = vm["session_id"].as_str().unwrap_or_default().to_string();
    let watch = format!("/v0/vm/{id}/store?watch=true");
    let t0 = Instant::now();
    // A histogram of 10 µs buckets up to 200 ms (the last one holds the rest), so measuring
    // takes no memory that grows with the run.
    let latencies = Arc::new(Mutex::new(vec![0u64; BUCKETS]));
    let counts: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..a.watchers).map(|_| Default::default()).collect());
    let mut tasks = Vec::new();
    for w in 0..a.watchers {
        let s = open_watch(&daemon.addr, &watch, &daemon.token).await?;
        let (lat, counts) = (latencies.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let Some(d) = l.strip_prefix("data: ") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(d) else {
                    continue;
                };
                if let Some(sent_us) = v["value"].as_u64() {
                    let now = t0.elapsed().as_micros() as u64;
                    let b = (now.saturating_sub(sent_us) / 10).min(BUCKETS as u64 - 1) as usize;
                    lat.lock().expect("latencies")[b] += 1;
                    counts[w].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // One watcher that never reads: its backlog must not grow the daemon.
    let _stalled = open_watch(&daemon.addr, &watch, &daemon.token).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib();
    // The writer: one keep-alive connection, one PUT after another, each value its send time.
    let mut conn = KeepAlive::connect(&daemon.addr).await?;
    let path = format!("/v0/vm/{id}/store/counter");
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(a.seconds) {
        let body = t0.elapsed().as_micros().to_string();
        let (status, b) = conn.call("PUT", &path, &daemon.token, &body).await?;
        if status == 200 {
            sent += 1;
        } else if status == 429 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            anyhow::bail!("PUT answered {status}: {}", String::from_utf8_lossy(&b));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_mib();
    let delivered: Vec<u64> = counts
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    for t in tasks {
        t.abort();
    }
    daemon.end(&id).await;
    daemon.stop().await?;
    let _ = std::fs::remove_dir_all(&data);
    let hist = latencies.lock().expect("latencies").clone();
    let total: u64 = hist.iter().sum();
    let pct = |p: f64| {
        let want = (total as f64 * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (i as f64 + 0.5) * 0.01;
            }
        }
        f64::NAN
    };
    let report = Report {
        watchers: a.watchers,
        changes: sent,
        seconds,
        changes_per_second: sent as f64 / seconds,
        delivered_to_all: delivered.iter().all(|d| *d == sent),
        latency_median_ms: pct(0.5),
        latency_p99_ms: pct(0.99),
        rss_mib_before: rss_before,
        rss_mib_after: rss_after,
    };
    ctx.print(&report, || {
        format!(
            "session store on loopback: 1 writer, {} watchers (+1 that never reads)\n{} changes in {:.1} s: {:.0} changes/s, delivered to every watcher: {}\nchange to watcher: median {:.2} ms, p99 {:.2} ms\nRSS {:.1} MiB before, {:.1} MiB after",
            report.watchers, report.changes, report.seconds, report.changes_per_second,
            report.delivered_to_all, report.latency_median_ms, report.latency_p99_ms,
            report.rss_mib_before, report.rss_mib_after
        )
    });
    Ok(())
}
