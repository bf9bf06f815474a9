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
    // The probes run to their end even when the caller hangs up, so that their answers are
    // kept for the next callers: dropped half way, each caller would probe again.
    let probes = {
        let m = state.manager.clone();
        tokio::spawn(async move {
            let store = m.store_reachable(std::time::Duration::from_secs(2)).await;
            (store, m.vault().keys().ready().await)
        })
    };
    let (store_ok, keys_ok) = probes.await.unwrap_or((false, false));
    let rt = &state.manager.config().browser;
    let chromium_ok = rt.binary().is_file();
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

/// One metric family: name, type, help, and its samples (labels, value).
type Family = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, u64)>,
);

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    for (name, kind, help, samples) in sessions(&state.manager)
        .into_iter()
        .chain(protections(&state.manager))
        .chain(live())
    {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    crate::metrics::METRICS.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Sessions, saves and restores.
fn sessions(m: &crate::session::Manager) -> Vec<Family> {
    let c = &m.counters;
    vec![
        (
            "pv_sessions_active",
            "gauge",
            "Sessions running now.",
            vec![("", m.active_count() as u64)],
        ),
        (
            "pv_sessions_started_total",
            "counter",
            "Sessions started.",
            vec![("", c.started.load(Ordering::Relaxed))],
        ),
        (
            "pv_sessions_ended_total",
            "counter",
            "Sessions ended (stop and save finished).",
            vec![("", c.ended.load(Ordering::Relaxed))],
        ),
        (
            "pv_saves_total",
            "counter",
            "Profile saves by outcome.",
            vec![
                ("{outcome=\"ok\"}", c.saves_ok.load(Ordering::Relaxed)),
                (
                    "{outcome=\"failed\"}",
                    c.saves_failed.load(Ordering::Relaxed),
                ),
            ],
        ),
        (
            "pv_restores_total",
            "counter",
            "Profile restores by outcome.",
            vec![
                ("{outcome=\"ok\"}", c.restores_ok.load(Ordering::Relaxed)),
                (
                    "{outcome=\"failed\"}",
                    c.restores_failed.load(Ordering::Relaxed),
                ),
            ],
        ),
        (
            "pv_saved_bytes_total",
            "counter",
            "Bytes stored by saves.",
            vec![("", c.bytes_saved.load(Ordering::Relaxed))],
        ),
        (
            "pv_save_milliseconds_total",
            "counter",
            "Time spent saving.",
            vec![("", c.save_ms.load(Ordering::Relaxed))],
        ),
        (
            "pv_restore_milliseconds_total",
            "counter",
            "Time spent restoring.",
            vec![("", c.restore_ms.load(Ordering::Relaxed))],
        ),
        (
            "pv_recovering_sessions",
            "gauge",
            "Sessions of a previous daemon still being saved.",
            vec![("", m.recovering() as u64)],
        ),
    ]
}

/// The walls around browsers and what they refused.
fn protections(m: &crate::session::Manager) -> Vec<Family> {
    let rt = &m.config().browser;
    vec![
        (
            "pv_sandbox_enabled",
            "gauge",
            "1 when browsers run sandboxed, 0 when browser.unsafe_no_sandbox is set or the sandbox is unavailable.",
            vec![("", u64::from(rt.status().is_ok() && !rt.unsandboxed()))],
        ),
        (
            "pv_session_records_rejected_total",
            "counter",
            "Session records that failed authentication or named another directory (forged or tampered); left alone.",
            vec![("", crate::session::records_rejected())],
        ),
        (
            "pv_webhooks_refused_total",
            "counter",
            "Webhook deliveries refused because their host is not a public address.",
            vec![("", crate::session::webhook::REFUSED.load(Ordering::Relaxed))],
        ),
        (
            "pv_key_files_skipped_total",
            "counter",
            "Key files in the keys directory skipped at start because they could not be used.",
            vec![("", crate::keys::SKIPPED_KEY_FILES.load(Ordering::Relaxed))],
        ),
    ]
}

/// The live view's pictures and sound, and the browsers' way out.
fn live() -> Vec<Family> {
    let dc = &crate::display::COUNTERS;
    let e = &crate::browser::egress::COUNTERS;
    vec![
        (
            "pv_live_pictures_total",
            "counter",
            "Pictures the displays' captures made (each sent to every viewer of its session), by kind.",
            vec![
                ("{kind=\"tile\"}", dc.tiles.load(Ordering::Relaxed)),
                ("{kind=\"keyframe\"}", dc.keyframes.load(Ordering::Relaxed)),
            ],
        ),
        (
            "pv_live_picture_bytes_total",
            "counter",
            "JPEG bytes of those pictures.",
            vec![("", dc.picture_bytes.load(Ordering::Relaxed))],
        ),
        (
            "pv_live_audio_bytes_total",
            "counter",
            "Sound bytes the sessions' browsers played (silence is not sent).",
            vec![("", dc.audio_bytes.load(Ordering::Relaxed))],
        ),
        (
            "pv_egress_connections_total",
            "counter",
            "Connections of sandboxed browsers through the egress proxy, by outcome.",
            vec![
                ("{outcome=\"allowed\"}", e.allowed.load(Ordering::Relaxed)),
                ("{outcome=\"refused\"}", e.refused.load(Ordering::Relaxed)),
                ("{outcome=\"failed\"}", e.failed.load(Ordering::Relaxed)),
            ],
        ),
    ]
}
