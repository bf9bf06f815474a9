//! `profile-vault bench --live-view`: the live view on loopback, measured as a viewer sees it.
//! An in-process daemon starts a real Chromium on a local page; viewers connect to the embed
//! socket with the session's viewer token. Reported: frames per second while the page
//! animates (1 viewer, then `--viewers`), CPU of the daemon and of the browser's process group
//! in each case (and the daemon's cost per extra viewer), and input-to-frame latency: a click
//! until the first frame showing its effect (the page flips between a blank and a noisy canvas,
//! so the effect shows as a jump in JPEG size), median and p95.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::bench::{http, Args, BenchDaemon};
use super::Ctx;

const ANIMATED: &str = r#"<!doctype html><title>anim</title><body style="margin:0">
<canvas id=c width=800 height=600></canvas><script>
const g = c.getContext('2d'); let t = 0;
(function f() { t++; g.fillStyle = `hsl(${t % 360},70%,50%)`; g.fillRect(0, 0, 800, 600);
  g.fillStyle = '#fff'; g.fillRect((t * 7) % 700, 250, 100, 100); g.font = '48px sans-serif';
  g.fillText('frame ' + t, 20, 60); requestAnimationFrame(f); })();
</script>"#;

const FLIP: &str = r#"<!doctype html><title>flip</title><body style="margin:0">
<canvas id=c width=800 height=600></canvas><script>
const g = c.getContext('2d'); let noisy = false;
function draw() {
  if (!noisy) { g.fillStyle = '#fff'; g.fillRect(0, 0, 800, 600); return; }
  const img = g.createImageData(800, 600);
  for (let i = 0; i < img.data.length; i++) img.data[i] = (i & 3) === 3 ? 255 : Math.random() * 256;
  g.putImageData(img, 0, 0);
}
draw(); addEventListener('mousedown', () => { noisy = !noisy; draw(); });
</script>"#;

/// CPU ticks (user + system) of one process.
fn ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(0) ppid(1) pgrp(2) ... utime(11) stime(12).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of every process in process group `pgid` (the browser and its helpers).
fn group_ticks(pgid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.get(s.rfind(')')? + 2..)?.to_string();
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        })
        .filter_map(ticks)
        .sum()
}

fn clk_tck() -> f64 {
    // SAFETY-free: sysconf has no preconditions.
    #[allow(unsafe_code)]
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

struct Viewer {
    frames: Arc<AtomicU64>,
    tx: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    sizes: tokio::sync::mpsc::UnboundedReceiver<(Instant, usize)>,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(socket_url: &str) -> anyhow::Result<Viewer> {
    let (ws, _) = tokio_tungstenite::connect_async(socket_url).await?;
    let (tx, mut rx) = ws.split();
    let frames = Arc::new(AtomicU64::new(0));
    let (size_tx, sizes) = tokio::sync::mpsc::unbounded_channel();
    let counter = frames.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Binary(b) = m {
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = size_tx.send((Instant::now(), b.len()));
            }
        }
    });
    Ok(Viewer {
        frames,
        tx,
        sizes,
        task,
    })
}

#[derive(serde::Serialize)]
struct Phase {
    viewers: usize,
    fps_per_viewer_min: f64,
    fps_per_viewer_mean: f64,
    daemon_cpu_percent: f64,
    browser_cpu_percent: f64,
}

#[derive(serde::Serialize)]
struct Report {
    seconds: u64,
    phases: Vec<Phase>,
    daemon_cpu_percent_per_extra_viewer: f64,
    input_to_frame_ms: Vec<f64>,
    input_to_frame_median_ms: f64,
    input_to_frame_p95_ms: f64,
}

async fn measure(viewers: &[Viewer], secs: u64, browser_pid: u32) -> Phase {
    let hz = clk_tck();
    let me = std::process::id();
    let before: Vec<u64> = viewers
        .iter()
        .map(|v| v.frames.load(Ordering::Relaxed))
        .collect();
    let (d0, b0, t0) = (
        ticks(me).unwrap_or(0),
        group_ticks(browser_pid),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let el = t0.elapsed().as_secs_f64();
    let (d1, b1) = (ticks(me).unwrap_or(0), group_ticks(browser_pid));
    let fps: Vec<f64> = viewers
        .iter()
        .zip(before)
        .map(|(v, b)| (v.frames.load(Ordering::Relaxed) - b) as f64 / el)
        .collect();
    Phase {
        viewers: viewers.len(),
        fps_per_viewer_min: fps.iter().copied().fold(f64::INFINITY, f64::min),
        fps_per_viewer_mean: fps.iter().sum::<f64>() / fps.len() as f64,
        daemon_cpu_percent: (d1 - d0) as f64 / hz / el * 100.0,
        browser_cpu_percent: b1.saturating_sub(b0) as f64 / hz / el * 100.0,
    }
}

async fn send(v: &mut Viewer, m: serde_json::Value) -> anyhow::Result<()> {
    v.tx.send(Message::Text(m.to_string().into())).await?;
    Ok(())
}

/// Runs the bench.
pub async fn run(ctx: &Ctx, a: &Args, bench_dir: &Path) -> anyhow::Result<()> {
    let data = bench_dir.join(format!("live-{}", uuid::Uuid::new_v4().simple()));
    let daemon = BenchDaemon::on_local_store(ctx, &data).await?;
    let site = axum::Router::new()
        .route(
            "/anim",
            axum::routing::get(|| async { axum::response::Html(ANIMATED) }),
        )
        .route(
            "/flip",
            axum::routing::get(|| async { axum::response::Html(FLIP) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let site_addr = listener.local_addr()?;
    let site_task = tokio::spawn(async move {
        let _ = axum::serve(listener, site).await;
    });
    let body = json!({"start_url": format!("http://{site_addr}/anim"), "width": 800, "height": 600,
        "default_roles": ["control"]});
    let (st, vm) = http(
        &daemon.addr,
        "POST",
        "/v0/vm",
        &daemon.token,
        &body.to_string(),
    )
    .await?;
    anyhow::ensure!(st == 200, "POST /v0/vm answered {st}: {vm}");
    let id = vm["session_id"].as_str().unwrap_or_default().to_string();
    let socket = vm["embed_url"]
        .as_str()
        .unwrap_or_default()
        .replacen("http://", "ws://", 1)
        .replacen("/embed?", "/embed/socket?", 1);
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(
        data.join("sessions").join(format!("{id}.json")),
    )?)?;
    let browser_pid = rec["pid"].as_u64().unwrap_or(0) as u32;

    let mut viewers = vec![connect(&socket).await?];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut phases = vec![measure(&viewers, a.seconds, browser_pid).await];
    for _ in 1..a.viewers.max(2) {
        viewers.push(connect(&socket).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    phases.push(measure(&viewers, a.seconds, browser_pid).await);
    for v in viewers.drain(1..) {
        v.task.abort();
    }

    // Latency: a click flips the page between blank (a small JPEG) and noise (a large one).
    let v = &mut viewers[0];
    send(
        v,
        json!({"t": "goto", "url": format!("http://{site_addr}/flip")}),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut last = 0;
    while let Ok(f) = v.sizes.try_recv() {
        last = f.1;
    }
    let mut lat = Vec::new();
    for _ in 0..20 {
        let was_small = last < 100_000;
        let t0 = Instant::now();
        for ty in ["mousePressed", "mouseReleased"] {
            send(v, json!({"t": "mouse", "type": ty, "x": 400, "y": 300, "button": "left", "clickCount": 1})).await?;
        }
        let deadline = t0 + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline.into(), v.sizes.recv()).await {
                Ok(Some((at, size))) => {
                    last = size;
                    if (size >= 100_000) == was_small && at >= t0 {
                        lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                        break;
                    }
                }
                _ => anyhow::bail!("no frame showed the click within 5 s"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        while let Ok(f) = v.sizes.try_recv() {
            last = f.1;
        }
    }
    let _ = http(
        &daemon.addr,
        "DELETE",
        &format!("/v0/vm/{id}?wait=true"),
        &daemon.token,
        "",
    )
    .await;
    daemon.stop().await?;
    site_task.abort();
    let _ = std::fs::remove_dir_all(&data);

    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
    let extra = (phases[1].daemon_cpu_percent - phases[0].daemon_cpu_percent)
        / (phases[1].viewers - 1) as f64;
    let report = Report {
        seconds: a.seconds,
        daemon_cpu_percent_per_extra_viewer: extra,
        input_to_frame_median_ms: pct(0.5),
        input_to_frame_p95_ms: pct(0.95),
        input_to_frame_ms: lat,
        phases,
    };
    ctx.print(&report, || {
        let mut out = String::from("live view on loopback (800x600, JPEG screencast)\n");
        for p in &report.phases {
            out.push_str(&format!(
                "{} viewer(s): {:.1} fps per viewer (min {:.1}); CPU daemon {:.1} %, browser {:.1} % of a core\n",
                p.viewers, p.fps_per_viewer_mean, p.fps_per_viewer_min, p.daemon_cpu_percent, p.browser_cpu_percent
            ));
        }
        out.push_str(&format!(
            "each viewer beyond the first: {:.2} % of a core in the daemon\ninput to frame: median {:.0} ms, p95 {:.0} ms ({} clicks)",
            report.daemon_cpu_percent_per_extra_viewer,
            report.input_to_frame_median_ms,
            report.input_to_frame_p95_ms,
            report.input_to_frame_ms.len()
        ));
        out
    });
    Ok(())
}
