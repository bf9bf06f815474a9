//! `profile-vault bench --live-view`: the live view on loopback, measured as a viewer sees it,
//! for both pictures in one run: the whole browser on its virtual display (DAMAGE-driven JPEG
//! tiles, the default) and the page-only view (headless Chromium's CDP screencast), at
//! 1280x720. An in-process daemon starts real Chromiums on a local page; viewers connect to
//! the embed socket with the session's viewer token. Reported per mode: `POST /v0/vm` to CDP
//! ready; frames per second while the page animates (1 viewer, then `--viewers`) with the
//! bytes per second they cost; CPU of the daemon (capture and encoding) and of the browser's
//! process group; bytes per second of a still page; input-to-frame latency (a click until the
//! first frame showing its effect: the page flips from blank to noise, a jump in JPEG size),
//! median and p95; and the memory (PSS) of one idle session and of eight.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::args::Args;
use super::common::{median, percentile};
use super::daemon::{http, BenchDaemon};
use crate::cli::Ctx;

const ANIMATED: &str = r#"<!doctype html><title>anim</title><body style="margin:0;overflow:hidden">
<canvas id=c width=1280 height=720></canvas><script>
const g = c.getContext('2d'); let t = 0;
(function f() { t++; g.fillStyle = `hsl(${t % 360},70%,50%)`; g.fillRect(0, 0, 1280, 720);
  g.fillStyle = '#fff'; g.fillRect((t * 7) % 1100, 250, 100, 100); g.font = '48px sans-serif';
  g.fillText('frame ' + t, 20, 60); requestAnimationFrame(f); })();
</script>"#;

const STILL: &str = r#"<!doctype html><title>still</title><body style="margin:20px;font:20px sans-serif">
<h1>A still page</h1><p>Nothing moves here; a caret blinks in the field below.</p>
<input autofocus style="font-size:20px">"#;

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
    bytes: Arc<AtomicU64>,
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
    let bytes = Arc::new(AtomicU64::new(0));
    let (size_tx, sizes) = tokio::sync::mpsc::unbounded_channel();
    let (counter, total) = (frames.clone(), bytes.clone());
    let task = tokio::spawn(async move {
        while let Some(Ok(m)) = rx.next().await {
            // Pictures only (a bare JPEG, or a display tile), not sound.
            if let Message::Binary(b) = m {
                if b.first().is_some_and(|h| *h == 0xff || *h == 1) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    total.fetch_add(b.len() as u64, Ordering::Relaxed);
                    let _ = size_tx.send((Instant::now(), b.len()));
                }
            }
        }
    });
    Ok(Viewer {
        frames,
        bytes,
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
    kbit_per_s_per_viewer: f64,
    daemon_cpu_percent: f64,
    browser_cpu_percent: f64,
}

#[derive(serde::Serialize)]
struct Mode {
    picture: &'static str,
    start_to_cdp_ready_ms: Vec<f64>,
    start_to_cdp_ready_median_ms: f64,
    phases: Vec<Phase>,
    daemon_cpu_percent_per_extra_viewer: f64,
    still_page_kbit_per_s: f64,
    input_to_frame_ms: Vec<f64>,
    input_to_frame_median_ms: f64,
    input_to_frame_p95_ms: f64,
    idle_session_mib: f64,
    eight_idle_sessions_mib: f64,
}

#[derive(serde::Serialize)]
struct Report {
    seconds: u64,
    width: u32,
    height: u32,
    modes: Vec<Mode>,
}

async fn measure(viewers: &[Viewer], secs: u64, browser_pid: u32) -> Phase {
    let hz = clk_tck();
    let me = std::process::id();
    let before: Vec<(u64, u64)> = viewers
        .iter()
        .map(|v| {
            (
                v.frames.load(Ordering::Relaxed),
                v.bytes.load(Ordering::Relaxed),
            )
        })
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
        .zip(&before)
        .map(|(v, b)| (v.frames.load(Ordering::Relaxed) - b.0) as f64 / el)
        .collect();
    let bytes: u64 = viewers
        .iter()
        .zip(&before)
        .map(|(v, b)| v.bytes.load(Ordering::Relaxed) - b.1)
        .sum();
    Phase {
        viewers: viewers.len(),
        fps_per_viewer_min: fps.iter().copied().fold(f64::INFINITY, f64::min),
        fps_per_viewer_mean: fps.iter().sum::<f64>() / fps.len() as f64,
        kbit_per_s_per_viewer: bytes as f64 * 8.0 / 1000.0 / el / viewers.len() as f64,
        daemon_cpu_percent: (d1 - d0) as f64 / hz / el * 100.0,
        browser_cpu_percent: b1.saturating_sub(b0) as f64 / hz / el * 100.0,
    }
}

async fn send(v: &mut Viewer, m: serde_json::Value) -> anyhow::Result<()> {
    v.tx.send(Message::Text(m.to_string().into())).await?;
    Ok(())
}

/// PSS of every process in the cgroup of session `id` (its browser, display, sound), MiB.
fn session_pss_mib(id: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut kib = 0u64;
    for pid in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !cg.lines().any(|l| l.ends_with(&format!("/{id}"))) {
            continue;
        }
        let smaps =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        kib += smaps
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    kib as f64 / 1024.0
}

struct Session {
    id: String,
    socket: String,
    browser_pid: u32,
}

async fn start_session(
    daemon: &BenchDaemon,
    data: &Path,
    url: &str,
) -> anyhow::Result<(Session, f64)> {
    let body =
        json!({"start_url": url, "width": WIDTH, "height": HEIGHT, "default_roles": ["control"]});
    let t0 = Instant::now();
    let (st, vm) = http(
        &daemon.addr,
        "POST",
        "/v0/vm",
        &daemon.token,
        &body.to_string(),
    )
    .await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
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
    Ok((
        Session {
            id,
            socket,
            browser_pid,
        },
        ms,
    ))
}

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

async fn click(v: &mut Viewer) -> anyhow::Result<()> {
    for ty in ["mousePressed", "mouseReleased"] {
        send(v, json!({"t": "mouse", "type": ty, "x": 400, "y": 300, "button": "left", "clickCount": 1})).await?;
    }
    Ok(())
}

/// Clicks that flip the page from blank to noise; milliseconds until a frame shows it.
async fn latencies(v: &mut Viewer) -> anyhow::Result<Vec<f64>> {
    let mut lat = Vec::new();
    for _ in 0..20 {
        while v.sizes.try_recv().is_ok() {}
        let t0 = Instant::now();
        click(v).await?;
        let deadline = t0 + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline.into(), v.sizes.recv()).await {
                Ok(Some((at, size))) if size >= 100_000 => {
                    lat.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                    break;
                }
                Ok(Some(_)) => {}
                _ => anyhow::bail!("no frame showed the click within 5 s"),
            }
        }
        // Back to blank, unmeasured.
        tokio::time::sleep(Duration::from_millis(150)).await;
        click(v).await?;
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    Ok(lat)
}

async fn measure_mode(
    ctx: &Ctx,
    a: &Args,
    bench_dir: &Path,
    display: bool,
    site: &str,
) -> anyhow::Result<Mode> {
    let data = bench_dir.join(format!("live-{}", uuid::Uuid::new_v4().simple()));
    let allow = SITE_HOST.parse().map_err(anyhow::Error::msg)?;
    let daemon = BenchDaemon::for_live_view(ctx, &data, display, allow).await?;
    if display {
        anyhow::ensure!(
            profile_vault::browser::init::display_server().is_some(),
            "no X server (Xvnc or Xvfb) is installed: the display's figures cannot be measured"
        );
    }
    // Start time: five starts, each ended before the next.
    let mut starts = Vec::new();
    for _ in 0..5 {
        let (s, ms) = start_session(&daemon, &data, &format!("{site}/still")).await?;
        starts.push(ms);
        daemon.end(&s.id).await;
    }
    // A still page: what a viewer receives when nothing moves (a caret blinks).
    let (s, _) = start_session(&daemon, &data, &format!("{site}/still")).await?;
    let still_viewer = connect(&s.socket).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b0 = still_viewer.bytes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    let still =
        (still_viewer.bytes.load(Ordering::Relaxed) - b0) as f64 * 8.0 / 1000.0 / a.seconds as f64;
    still_viewer.task.abort();
    daemon.end(&s.id).await;

    // Animation: 1 viewer, then several.
    let (s, _) = start_session(&daemon, &data, &format!("{site}/anim")).await?;
    let mut viewers = vec![connect(&s.socket).await?];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut phases = vec![measure(&viewers, a.seconds, s.browser_pid).await];
    for _ in 1..a.viewers.max(2) {
        viewers.push(connect(&s.socket).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    phases.push(measure(&viewers, a.seconds, s.browser_pid).await);
    for v in viewers.drain(1..) {
        v.task.abort();
    }
    let v = &mut viewers[0];
    send(v, json!({"t": "goto", "url": format!("{site}/flip")})).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lat = latencies(v).await?;
    daemon.end(&s.id).await;

    // Memory of idle sessions (blank pages), one and eight.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(start_session(&daemon, &data, "about:blank").await?.0);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per: Vec<f64> = idle.iter().map(|s| session_pss_mib(&s.id)).collect();
    for s in &idle {
        daemon.end(&s.id).await;
    }
    daemon.stop().await?;
    let _ = std::fs::remove_dir_all(&data);
    let extra = (phases[1].daemon_cpu_percent - phases[0].daemon_cpu_percent)
        / (phases[1].viewers - 1) as f64;
    Ok(Mode {
        picture: if display { "display" } else { "page-only" },
        start_to_cdp_ready_median_ms: median(&starts),
        start_to_cdp_ready_ms: starts,
        daemon_cpu_percent_per_extra_viewer: extra,
        phases,
        still_page_kbit_per_s: still,
        input_to_frame_median_ms: median(&lat),
        input_to_frame_p95_ms: percentile(&lat, 0.95),
        input_to_frame_ms: lat,
        idle_session_mib: median(&per),
        eight_idle_sessions_mib: per.iter().sum(),
    })
}

/// Where the bench's site listens: an address the sandboxes are allowed to reach.
const SITE_HOST: &str = "127.0.0.2/32";

/// Runs the bench.
pub async fn run(ctx: &Ctx, a: &Args, bench_dir: &Path) -> anyhow::Result<()> {
    let site = axum::Router::new()
        .route(
            "/anim",
            axum::routing::get(|| async { axum::response::Html(ANIMATED) }),
        )
        .route(
            "/still",
            axum::routing::get(|| async { axum::response::Html(STILL) }),
        )
        .route(
            "/flip",
            axum::routing::get(|| async { axum::response::Html(FLIP) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await?;
    let site_addr = format!("http://{}", listener.local_addr()?);
    let site_task = tokio::spawn(async move {
        let _ = axum::serve(listener, site).await;
    });
    let mut modes = Vec::new();
    for display in [true, false] {
        modes.push(measure_mode(ctx, a, bench_dir, display, &site_addr).await?);
    }
    site_task.abort();
    let report = Report {
        seconds: a.seconds,
        width: WIDTH,
        height: HEIGHT,
        modes,
    };
    ctx.print(&report, || {
        let mut out = format!("live view on loopback, {WIDTH}x{HEIGHT}\n");
        for m in &report.modes {
            out.push_str(&format!(
                "{}:\n  POST /v0/vm -> CDP ready: median {:.0} ms\n",
                m.picture, m.start_to_cdp_ready_median_ms
            ));
            for p in &m.phases {
                out.push_str(&format!(
                    "  animating, {} viewer(s): {:.1} fps per viewer (min {:.1}), {:.0} kbit/s per viewer; CPU daemon {:.1} %, browser {:.1} % of a core\n",
                    p.viewers, p.fps_per_viewer_mean, p.fps_per_viewer_min, p.kbit_per_s_per_viewer, p.daemon_cpu_percent, p.browser_cpu_percent
                ));
            }
            out.push_str(&format!(
                "  each viewer beyond the first: {:.2} % of a core in the daemon\n  still page: {:.1} kbit/s\n  input to frame: median {:.0} ms, p95 {:.0} ms ({} clicks)\n  memory: {:.0} MiB an idle session, {:.0} MiB for eight\n",
                m.daemon_cpu_percent_per_extra_viewer,
                m.still_page_kbit_per_s,
                m.input_to_frame_median_ms,
                m.input_to_frame_p95_ms,
                m.input_to_frame_ms.len(),
                m.idle_session_mib,
                m.eight_idle_sessions_mib,
            ));
        }
        out
    });
    Ok(())
}
