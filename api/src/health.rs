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
use lectern_web::doc::{DocOutput, Operation, Schemas};
use lectern_web::{Access, ApiRouter, ErrorCode};
use schemars::JsonSchema;
use serde::Serialize;

use crate::AppState;

pub fn routes(api: ApiRouter<AppState>) -> ApiRouter<AppState> {
    api.route(Method::GET, "/healthz", Access::Public, healthz)
        .describe(|op| op.summary = Some("liveness: the process answers"))
        .route(Method::GET, "/readyz", Access::Public, readyz)
        .describe(|op| {
            op.summary =
                Some("readiness: database, storage and keys answer; 503 names what is missing");
        })
}

/// `/healthz`'s answer.
#[derive(Serialize, JsonSchema)]
struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// One dependency's state: `"ok"`, or what is wrong with it.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
enum Check {
    Ok(&'static str),
    Failed { error: String },
}

impl From<&Result<(), String>> for Check {
    fn from(r: &Result<(), String>) -> Self {
        match r {
            Ok(()) => Check::Ok("ok"),
            Err(e) => Check::Failed { error: e.clone() },
        }
    }
}

/// What readiness checked.
#[derive(Serialize, JsonSchema)]
struct Checks {
    database: Check,
    storage: Check,
    /// The field keys (personal data, tokens).
    identity: Check,
    /// The playback signing keys.
    playback: Check,
}

/// `/readyz`'s answer when every check passes.
#[derive(Serialize, JsonSchema)]
struct Readiness {
    /// Always `ready`.
    status: &'static str,
    checks: Checks,
}

/// `/readyz`'s answer when a check fails: the error body, plus the checks.
#[derive(Serialize, JsonSchema)]
struct NotReady {
    error: ErrorDetail,
    checks: Checks,
}

#[derive(Serialize, JsonSchema)]
struct ErrorDetail {
    /// Always `not_ready`.
    code: ErrorCode,
    message: String,
}

/// 200 with [`Readiness`], or 503 `not_ready` with [`NotReady`].
enum Ready {
    Yes(Readiness),
    No(NotReady),
}

impl IntoResponse for Ready {
    fn into_response(self) -> Response {
        match self {
            Ready::Yes(r) => (StatusCode::OK, Json(r)).into_response(),
            Ready::No(r) => (StatusCode::SERVICE_UNAVAILABLE, Json(r)).into_response(),
        }
    }
}

impl DocOutput for Ready {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let yes = schemas.responses.subschema_for::<Readiness>();
        let no = schemas.responses.subschema_for::<NotReady>();
        op.response(200, "ready", Some(("application/json", yes)));
        op.response(
            503,
            "not ready: the message names what is missing",
            Some(("application/json", no)),
        );
    }
}

async fn readyz(State(state): State<AppState>) -> Ready {
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
    let failed: Vec<String> = [
        ("database", &database),
        ("storage", &storage),
        ("identity", &identity),
        ("playback", &playback),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
    .collect();
    let checks = Checks {
        database: (&database).into(),
        storage: (&storage).into(),
        identity: (&identity).into(),
        playback: (&playback).into(),
    };
    if failed.is_empty() {
        Ready::Yes(Readiness {
            status: "ready",
            checks,
        })
    } else {
        Ready::No(NotReady {
            error: ErrorDetail {
                code: ErrorCode::NotReady,
                message: failed.join("; "),
            },
            checks,
        })
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
