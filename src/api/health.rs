//! `/healthz` (alive), `/readyz` (store reachable, keys usable (KMS keys answer
//! `DescribeKey`), Chromium found, not
//! shutting down or recovering) and `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::AppState;

/// `GET /healthz`.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`.
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store_ok = state
        .manager
        .store_reachable(std::time::Duration::from_secs(2))
        .await;
    let rt = &state.manager.config().browser;
    let chromium_ok = rt.binary().is_file();
    let keys_ok = state.manager.vault().keys().ready().await;
    let recovering = state.manager.recovering();
    let (sandbox_ok, sandbox_detail) = match rt.status() {
        Ok(()) if rt.unsandboxed() => (
            true,
            "off: browser.unsafe_no_sandbox is set, browsers run unconfined".to_string(),
        ),
        Ok(()) => match rt.limits_note() {
            Some(why) => (true, format!("on, without per-browser limits: {why}")),
            None => (true, "on".to_string()),
        },
        Err(e) => (false, e.to_string()),
    };
    let ready = store_ok && chromium_ok && keys_ok && sandbox_ok && recovering == 0;
    let body = serde_json::json!({
        "ready": ready,
        "checks": {"store": store_ok, "chromium": chromium_ok, "keys": keys_ok, "recovering_sessions": recovering,
            "browser_version": state.manager.config().browser_version,
            "sandbox": sandbox_ok, "sandbox_detail": sandbox_detail,
            // Not readiness: without a display sessions run headless (the page-only view).
            "display": rt.display().is_ok(),
            "display_detail": rt.display().unwrap_or_else(|why| why),
            "sound": rt.audio().is_ok(),
            // Files left alone (forged or unusable): reported, never fatal.
            "session_records_rejected": crate::session::records_rejected(),
            "key_files_skipped": crate::keys::SKIPPED_KEY_FILES.load(Ordering::Relaxed)},
    });
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.manager;
    let c = &m.counters;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    metric(
        "pv_sessions_active",
        "gauge",
        "Sessions running now.",
        &[("", m.active_count() as u64)],
    );
    metric(
        "pv_sessions_started_total",
        "counter",
        "Sessions started.",
        &[("", c.started.load(Ordering::Relaxed))],
    );
    metric(
        "pv_sessions_ended_total",
        "counter",
        "Sessions ended (stop and save finished).",
        &[("", c.ended.load(Ordering::Relaxed))],
    );
    metric(
        "pv_saves_total",
        "counter",
        "Profile saves by outcome.",
        &[
            ("{outcome=\"ok\"}", c.saves_ok.load(Ordering::Relaxed)),
            (
                "{outcome=\"failed\"}",
                c.saves_failed.load(Ordering::Relaxed),
            ),
        ],
    );
    metric(
        "pv_restores_total",
        "counter",
        "Profile restores by outcome.",
        &[
            ("{outcome=\"ok\"}", c.restores_ok.load(Ordering::Relaxed)),
            (
                "{outcome=\"failed\"}",
                c.restores_failed.load(Ordering::Relaxed),
            ),
        ],
    );
    metric(
        "pv_saved_bytes_total",
        "counter",
        "Bytes stored by saves.",
        &[("", c.bytes_saved.load(Ordering::Relaxed))],
    );
    metric(
        "pv_save_milliseconds_total",
        "counter",
        "Time spent saving.",
        &[("", c.save_ms.load(Ordering::Relaxed))],
    );
    metric(
        "pv_restore_milliseconds_total",
        "counter",
        "Time spent restoring.",
        &[("", c.restore_ms.load(Ordering::Relaxed))],
    );
    metric(
        "pv_recovering_sessions",
        "gauge",
        "Sessions of a previous daemon still being saved.",
        &[("", m.recovering() as u64)],
    );
    let rt = &m.config().browser;
    metric(
        "pv_sandbox_enabled",
        "gauge",
        "1 when browsers run sandboxed, 0 when browser.unsafe_no_sandbox is set or the sandbox is unavailable.",
        &[("", u64::from(rt.status().is_ok() && !rt.unsandboxed()))],
    );
    metric(
        "pv_session_records_rejected_total",
        "counter",
        "Session records that failed authentication or named another directory (forged or tampered); left alone.",
        &[("", crate::session::records_rejected())],
    );
    metric(
        "pv_webhooks_refused_total",
        "counter",
        "Webhook deliveries refused because their host is not a public address.",
        &[("", crate::session::webhook::REFUSED.load(Ordering::Relaxed))],
    );
    metric(
        "pv_key_files_skipped_total",
        "counter",
        "Key files in the keys directory skipped at start because they could not be used.",
        &[("", crate::keys::SKIPPED_KEY_FILES.load(Ordering::Relaxed))],
    );
    let dc = &crate::display::COUNTERS;
    metric(
        "pv_live_pictures_total",
        "counter",
        "Pictures the displays' captures made (each sent to every viewer of its session), by kind.",
        &[
            ("{kind=\"tile\"}", dc.tiles.load(Ordering::Relaxed)),
            ("{kind=\"keyframe\"}", dc.keyframes.load(Ordering::Relaxed)),
        ],
    );
    metric(
        "pv_live_picture_bytes_total",
        "counter",
        "JPEG bytes of those pictures.",
        &[("", dc.picture_bytes.load(Ordering::Relaxed))],
    );
    metric(
        "pv_live_audio_bytes_total",
        "counter",
        "Sound bytes the sessions' browsers played (silence is not sent).",
        &[("", dc.audio_bytes.load(Ordering::Relaxed))],
    );
    let e = &crate::browser::egress::COUNTERS;
    metric(
        "pv_egress_connections_total",
        "counter",
        "Connections of sandboxed browsers through the egress proxy, by outcome.",
        &[
            ("{outcome=\"allowed\"}", e.allowed.load(Ordering::Relaxed)),
            ("{outcome=\"refused\"}", e.refused.load(Ordering::Relaxed)),
            ("{outcome=\"failed\"}", e.failed.load(Ordering::Relaxed)),
        ],
    );
    crate::metrics::METRICS.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
