//! URL pull over HTTP: `POST /api/v1/assets {"source_url"}` and the pull a
//! partner polls, `GET /api/v1/pulls/{id}`.
//!
//! **Accepted, then downloaded in the background (202), not synchronous.**
//! A lecture recording is gigabytes; downloading it inside the request
//! would hold the partner's connection (and every proxy and load balancer
//! between) for minutes, and a dropped connection would cancel a download
//! that was going well. Everything that can be decided without the download
//! is decided before answering — the scheme, the title and profile, the
//! host's resolution and the private-address check — so the common
//! mistakes still come back at once as 4xx with their code. The answer
//! names the pull (`Location: /api/v1/pulls/{id}`); its id is also the id
//! the asset will have, so once the pull is `completed` the partner polls
//! `GET /api/v1/assets/{id}` (or receives the webhook) like after a tus
//! upload, and a failed pull carries its stable code (`source_too_large`,
//! `source_timeout`, `not_media`, …).

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lectern_ingest::pull::{self, PullError, PullRecord, PullRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::authz::{Access, Permission, Principal};
use crate::error::{ApiJson, ApiPath};
use crate::{ApiError, ApiRouter, AppState};

pub fn routes(api: ApiRouter) -> ApiRouter {
    api.route(
        Method::POST,
        "/api/v1/assets",
        Access::Permission(Permission::UploadMedia),
        create,
    )
    .route(
        Method::GET,
        "/api/v1/pulls/{pull_id}",
        Access::Permission(Permission::ReadAssets),
        show,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPull {
    source_url: String,
    title: Option<String>,
    profile: Option<String>,
    /// Only a global super admin names the organisation.
    org_id: Option<Uuid>,
}

fn pull_error(e: PullError) -> ApiError {
    let status = match &e {
        PullError::Storage(_) | PullError::Database(_) => return ApiError::internal(e),
        PullError::Unreachable(_) | PullError::Timeout(_) | PullError::HttpError { .. } => {
            StatusCode::BAD_GATEWAY
        }
        PullError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.code(), e.to_string())
}

fn to_json(record: &PullRecord) -> Value {
    let completed = record.state == "completed";
    let error = record.error_code.as_ref().map(
        |code| json!({"code": code, "message": record.error_message.as_deref().unwrap_or("")}),
    );
    json!({
        "id": record.id,
        "organisation_id": record.organisation_id,
        "source_url": record.source_url,
        "title": record.title,
        "profile": record.profile,
        "state": record.state,
        "received_bytes": record.received_bytes,
        "error": error,
        "asset_id": completed.then_some(record.id),
        "asset_url": completed.then(|| format!("/api/v1/assets/{}", record.id)),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    })
}

/// `POST /api/v1/assets {"source_url", "title"?, "profile"?}` → 202 with
/// the pull; poll `Location`.
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewPull>,
) -> Result<Response, ApiError> {
    let org =
        match (principal.org_scope(), body.org_id) {
            (Some(own), None) => own,
            (Some(own), Some(named)) if named == own => own,
            // Naming another organisation is indistinguishable from a missing one.
            (Some(_), Some(named)) => {
                return Err(ApiError::not_found(format!("no organisation {named}")))
            }
            (None, Some(named)) => named,
            (None, None) => return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "org_required",
                "a global super admin must say which organisation the asset belongs to (org_id)",
            )),
        };
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1)")
            .bind(org)
            .fetch_one(&state.db)
            .await?;
    if !exists {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    let config = state.pulls.clone();
    let accepted = pull::begin(
        &state.db,
        &config,
        PullRequest {
            organisation_id: org,
            source_url: body.source_url,
            title: body.title,
            profile: body.profile,
        },
    )
    .await
    .map_err(pull_error)?;
    let record = accepted.record.clone();
    tokio::spawn({
        let db = state.db.clone();
        let store = state.store.clone();
        async move {
            // The outcome is recorded on the pull row; the log has the rest.
            let _ = pull::run(&db, store.as_ref(), &config, accepted).await;
        }
    });
    let location = format!("/api/v1/pulls/{}", record.id);
    let mut response = (StatusCode::ACCEPTED, Json(to_json(&record))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/v1/pulls/{id}`: `pulling`, `completed` (with `asset_url`) or
/// `failed` (with `error`).
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let record = pull::status(&state.db, id, principal.org_scope())
        .await
        .map_err(pull_error)?
        .ok_or_else(|| ApiError::not_found(format!("no pull {id}")))?;
    Ok(Json(to_json(&record)))
}
