//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the
//! database and object storage answer, the schema is migrated, and the
//! identity and playback signing keys are configured). Load
//! balancers route only to ready nodes, so readiness names what is missing.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use lectern_web::{Access, ApiRouter};

use crate::AppState;

pub fn routes(api: ApiRouter<AppState>) -> ApiRouter<AppState> {
    api.route(Method::GET, "/healthz", Access::Public, healthz)
        .route(Method::GET, "/readyz", Access::Public, readyz)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let database = check_database(&state).await;
    let storage = match tokio::time::timeout(state.probe_timeout, state.store.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{} storage did not answer within {:?}",
            state.store.backend_name(),
            state.probe_timeout
        )),
    };
    let status = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!({ "error": e }),
    };
    let identity = if state.identity.has_keys() {
        Ok(())
    } else {
        Err(format!(
            "{} (and the other identity keys) must be configured with an external database",
            lectern_secrets::FIELD_KEYS_VAR
        ))
    };
    // Without signing keys every /media request answers 503 and no
    // playback URL carries a token: not a node to send learners to.
    let playback = if state.delivery.playback.has_keys() {
        Ok(())
    } else {
        Err(format!(
            "{} must be configured with an external database",
            lectern_secrets::PLAYBACK_KEYS_VAR
        ))
    };
    let checks = json!({
        "database": status(&database),
        "storage": status(&storage),
        "identity": status(&identity),
        "playback": status(&playback),
    });
    let failed: Vec<String> = [
        ("database", &database),
        ("storage", &storage),
        ("identity", &identity),
        ("playback", &playback),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
    .collect();
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        let body = json!({
            "error": { "code": "not_ready", "message": failed.join("; ") },
            "checks": checks,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn check_database(state: &AppState) -> Result<(), String> {
    let ping = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db);
    match tokio::time::timeout(state.probe_timeout, ping).await {
        Err(_) => Err(format!(
            "database did not answer within {:?}",
            state.probe_timeout
        )),
        Ok(Err(e)) => Err(format!("database unreachable: {e}")),
        Ok(Ok(_)) if !state.schema_ready.load(Ordering::Acquire) => {
            Err("database reachable but migrations are not applied yet".into())
        }
        Ok(Ok(_)) => Ok(()),
    }
}
