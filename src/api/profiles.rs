//! `/v0/profiles`: the tenant's saved profiles.

use crate::api::codes::ErrorCode;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{ApiTenant, TenantProfile};
use super::AppState;

/// `GET /v0/profiles`.
pub(super) async fn list(
    State(state): State<AppState>,
    ApiTenant(t): ApiTenant,
) -> Result<Json<Value>, ApiError> {
    let profiles = state.manager.vault().list(&t).await?;
    Ok(Json(serde_json::json!({"profiles": profiles})))
}

/// `GET /v0/profiles/{id}`: generations, sizes, last use.
pub(super) async fn get_one(
    State(state): State<AppState>,
    TenantProfile(at): TenantProfile,
) -> Result<Json<Value>, ApiError> {
    let vault = state.manager.vault();
    let Some((head, _)) = vault.head(&at).await? else {
        return Err(ApiError::not_found("profile"));
    };
    let gens = vault.versions(&at).await?;
    let gens: Vec<Value> = gens
        .iter()
        .map(|g| {
            serde_json::json!({
                "generation": g.generation,
                "head": g.head,
                "complete": g.payload && g.record.is_some(),
                "created_at": g.record.as_ref().map(|r| r.created_at),
                "bytes_stored": g.record.as_ref().map(|r| r.object_size),
                "files": g.record.as_ref().map(|r| r.stats.files),
                "bytes": g.record.as_ref().map(|r| r.stats.bytes_in),
                "chromium_version": g.record.as_ref().and_then(|r| r.stats.chromium_version.clone()),
                "clean_exit": g.record.as_ref().and_then(|r| r.stats.clean_exit),
            })
        })
        .collect();
    let last_used = vault.last_used_ms(&at).await?.map(|ms| ms / 1000);
    // The head generation's sidecar: the pinned identity and what it holds (sealed, so
    // this unwraps the head's data key).
    let meta = vault
        .meta(&at, Some(head.generation))
        .await?
        .map(|(_, m)| m);
    Ok(Json(
        serde_json::json!({"id": at.profile(), "generation": head.generation, "last_saved": head.updated_at, "last_used": last_used, "generations": gens,
            "identity": meta.as_ref().map(|m| &m.identity), "contents": meta.as_ref().and_then(|m| m.contents.as_ref())}),
    ))
}

/// `DELETE /v0/profiles/{id}`.
pub(super) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    TenantProfile(at): TenantProfile,
) -> Result<Json<Value>, ApiError> {
    let actor = super::auth::bearer(&headers)
        .and_then(|k| state.keys.actor_of(k))
        .unwrap_or_else(|| format!("api-key:{}", at.tenant()));
    // Not under a session that will save it (its save would find no head, and the work of
    // that session would be a generation of a profile nobody can list or load), and none
    // starts on it while it goes.
    let n = state.manager.delete_profile(&at, &actor).await?;
    Ok(Json(
        serde_json::json!({"id": at.profile(), "deleted_objects": n}),
    ))
}

/// `GET /v0/saves`: the tenant's sessions whose save failed (kept on disk, retried) or was
/// refused (kept a while, not retried).
pub(super) async fn failed_saves(
    State(state): State<AppState>,
    ApiTenant(t): ApiTenant,
) -> Result<Json<Value>, ApiError> {
    let list: Vec<Value> = state
        .manager
        .failed_saves(Some(&t))
        .into_iter()
        .map(|r| serde_json::json!({"session_id": r.id, "profile": r.profile_id, "base_generation": r.base_generation, "created_at": r.created_at, "state": r.state, "refused": r.refused}))
        .collect();
    Ok(Json(serde_json::json!({"failed_saves": list})))
}

/// `POST /v0/saves/{id}/retry`: retry one failed save now.
pub(super) async fn retry_save(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiTenant(t): ApiTenant,
) -> Result<Json<Value>, ApiError> {
    match state.manager.retry_save(Some(&t), &id).await {
        Ok(true) => Ok(Json(serde_json::json!({"session_id": id, "saved": true}))),
        Ok(false) => {
            let refused = state
                .manager
                .failed_saves(Some(&t))
                .into_iter()
                .find(|r| r.id == id)
                .and_then(|r| r.refused);
            Err(ApiError::new(
                ErrorCode::SaveFailed,
                match refused {
                    Some(why) => format!(
                        "the save was refused again ({}); its directory is kept for sessions.keep_refused_saves, not retried",
                        why.reason
                    ),
                    None => "the save failed again; it stays queued for retry".into(),
                },
            ))
        }
        Err(_) => Err(ApiError::not_found("failed save")),
    }
}
