//! Playwright storageState in and out: `POST /v0/profiles` (a new profile from a state) and
//! `GET /v0/profiles/{id}/storage_state` (the state of a generation). API key only — an
//! export holds every cookie of the profile — and audited; bodies are never logged.

use crate::api::codes::ErrorCode;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::extract::{profile_addr, ApiTenant, Call, Params, RequestQuery};
use super::{auth, wire, AppState};
use crate::layout::ProfileAddr;
use crate::storage_state::{self, browser, Runner};

/// Query parameters of `GET /v0/profiles/{id}/storage_state`.
pub(super) const EXPORT_QUERY: &[wire::Param] = &[wire::Param {
    name: "generation",
    schema: wire::generation,
    description: "the generation to read (default: the head)",
}];

#[derive(Debug, Deserialize)]
pub(super) struct ExportQuery {
    generation: Option<u64>,
}

impl RequestQuery for ExportQuery {
    const PARAMS: &'static [wire::Param] = EXPORT_QUERY;
}

fn runner(state: &AppState) -> Runner {
    let cfg = state.manager.config();
    Runner {
        browser: cfg.browser.clone(),
        work_dir: storage_state::work_dir(&cfg.data_dir),
        deadline: cfg.start_deadline.max(std::time::Duration::from_secs(30)),
    }
}

fn actor(state: &AppState, headers: &HeaderMap, tenant: &str) -> String {
    auth::bearer(headers)
        .and_then(|k| state.keys.actor_of(k))
        .unwrap_or_else(|| format!("api-key:{tenant}"))
}

/// Runs a job to its end whether or not the client waits for it: dropped with a client that
/// hung up, the browser and the restore's blocking work would run on after its work
/// directory was removed, and leave a decrypted profile there. `slot` is held until then.
async fn to_the_end<T: Send + 'static>(
    slot: crate::session::JobSlot,
    job: impl std::future::Future<Output = Result<T, storage_state::Error>> + Send + 'static,
) -> Result<T, storage_state::Error> {
    tokio::spawn(async move {
        let _slot = slot;
        job.await
    })
    .await
    .map_err(|e| storage_state::Error::Io(format!("the job failed: {e}")))?
}

fn job_error(e: storage_state::Error) -> ApiError {
    use storage_state::Error as E;
    match e {
        E::Invalid(i) => ApiError::bad_request(ErrorCode::InvalidStorageState, i.to_string()),
        E::Browser(
            b @ (browser::Error::CookieRefused { .. } | browser::Error::OriginRefused { .. }),
        ) => ApiError::bad_request(ErrorCode::InvalidStorageState, b.to_string()),
        E::Browser(b @ browser::Error::TooLarge(_)) => {
            ApiError::new(ErrorCode::StateTooLarge, b.to_string())
        }
        E::Exists(id) => ApiError::new(
            ErrorCode::Conflict,
            format!("profile {id:?} exists already; import creates new profiles only"),
        ),
        E::Browser(b) => {
            tracing::warn!(error = %b, "storage state browser failed");
            ApiError::new(ErrorCode::BrowserFailed, b.to_string())
        }
        E::Vault(v) => v.into(),
        E::Io(m) => {
            tracing::error!(error = %m, "storage state work directory");
            ApiError::new(ErrorCode::Internal, "internal error; see the daemon log")
        }
    }
}

/// `POST /v0/profiles`.
pub(super) async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    Call {
        caller: ApiTenant(tenant),
        body: req,
    }: Call<ApiTenant, wire::ImportRequest>,
) -> Result<Json<Value>, ApiError> {
    let doc = storage_state::parse(&req.storage_state)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidStorageState, e.to_string()))?;
    let id = req.id.unwrap_or_else(storage_state::new_id);
    let slot = state.manager.begin_state_job(&tenant)?;
    let vault = state
        .manager
        .vault()
        .with_actor(&actor(&state, &headers, &tenant));
    let at = ProfileAddr::new(&tenant, &id).map_err(crate::vault::Error::from)?;
    let (runner, cookies, origins) = (runner(&state), doc.cookies.len(), doc.origins.len());
    let rep = to_the_end(slot, async move { runner.import(&vault, &at, &doc).await })
        .await
        .map_err(job_error)?;
    Ok(Json(
        json!({"id": id, "generation": rep.generation, "cookies": cookies, "origins": origins}),
    ))
}

/// `GET /v0/profiles/{id}/storage_state[?generation=N]`.
pub(super) async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiTenant(tenant): ApiTenant,
    Params(q): Params<ExportQuery>,
) -> Result<Json<Value>, ApiError> {
    let at = profile_addr(&tenant, &id)?;
    let slot = state.manager.begin_state_job(&tenant)?;
    let who = actor(&state, &headers, &tenant);
    let vault = state.manager.vault().with_actor(&who);
    let runner = runner(&state);
    let s = to_the_end(slot, async move {
        let r = runner.export(&vault, &at, q.generation).await;
        let err = r.as_ref().err().map(ToString::to_string);
        vault
            .audit()
            .record(
                crate::audit::Action::ExportState,
                &tenant,
                Some(&id),
                q.generation,
                &who,
                err,
            )
            .await;
        r
    })
    .await
    .map_err(job_error)?;
    Ok(Json(serde_json::to_value(s).expect("serializes")))
}
