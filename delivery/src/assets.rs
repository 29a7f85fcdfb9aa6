//! Assets as partners and operators see them: status, progress, errors,
//! renditions, the URL a player opens, and the lifecycle events.
//!
//! An asset's id is the id of the tus upload that brought it (the last path
//! segment of the upload's `Location`), so a partner polls
//! `GET /api/v1/assets/{id}` straight after uploading. Until the upload is
//! complete there is no asset: the answer is 404 with a hint to finish it.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use lectern_web::ErrorCode;
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiPath, ApiQuery};

use crate::DeliveryState;

pub fn routes(api: ApiRouter<DeliveryState>) -> ApiRouter<DeliveryState> {
    let read = Access::Permission(Permission::ReadAssets);
    api.route(Method::GET, "/api/v1/assets", read, list)
        .route(Method::GET, "/api/v1/assets/{asset_id}", read, show)
        .route(
            Method::GET,
            "/api/v1/assets/{asset_id}/events",
            Access::Permission(Permission::ReadPipelineEvents),
            events,
        )
}

#[derive(sqlx::FromRow)]
struct AssetRow {
    id: Uuid,
    organisation_id: Uuid,
    status: String,
    title: Option<String>,
    profile: String,
    progress: f32,
    duration_s: Option<f64>,
    error_code: Option<String>,
    error_message: Option<String>,
    output_prefix: Option<String>,
    playable_prefix: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ready_at: Option<DateTime<Utc>>,
    first_playable_at: Option<DateTime<Utc>>,
}

const ASSET_COLUMNS: &str = "id, organisation_id, status, title, profile, progress, duration_s, \
     error_code, error_message, output_prefix, playable_prefix, created_at, updated_at, ready_at, \
     first_playable_at";

#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
struct RenditionRow {
    name: String,
    kind: String,
    width: Option<i32>,
    height: Option<i32>,
    codecs: Option<String>,
    bandwidth: Option<i64>,
    status: String,
    progress: f32,
}

impl AssetRow {
    /// `viewer` is the caller: a signed-in person's preview URL is bound to
    /// their session, so it plays encrypted assets too (the key is only
    /// given to a live session) and stops working when they sign out. An
    /// API key's is unbound: it plays clear assets, for the partner's tools.
    fn to_json(
        &self,
        state: &DeliveryState,
        viewer: &Principal,
        renditions: Vec<RenditionRow>,
    ) -> Value {
        // The finished ladder once ready; while encoding, the growing
        // lowest rung (fast first playback).
        let prefix = self
            .output_prefix
            .as_deref()
            .or(self.playable_prefix.as_deref());
        let master_url = prefix.map(|p| state.playback.master_url(self.id, p, viewer.session_id()));
        let error = self.error_code.as_ref().map(
            |code| json!({"code": code, "message": self.error_message.as_deref().unwrap_or("")}),
        );
        json!({
            "id": self.id,
            "organisation_id": self.organisation_id,
            "status": self.status,
            "title": self.title,
            "profile": self.profile,
            "progress": (f64::from(self.progress) * 10.0).round() / 10.0,
            "duration_s": self.duration_s,
            "error": error,
            "master_url": master_url,
            "renditions": renditions,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "first_playable_at": self.first_playable_at,
            "ready_at": self.ready_at,
        })
    }
}

async fn find(
    state: &DeliveryState,
    principal: &Principal,
    id: Uuid,
) -> Result<AssetRow, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {ASSET_COLUMNS} FROM assets
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)"
    ))
    .bind(id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| {
        ApiError::not_found(format!(
            "no asset {id}; if it is an upload, the asset appears once every byte has been \
             received (HEAD the upload to see its offset)"
        ))
    })
}

/// `GET /api/v1/assets/{id}`.
async fn show(
    State(state): State<DeliveryState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let asset = find(&state, &principal, id).await?;
    let renditions: Vec<RenditionRow> = sqlx::query_as(
        "SELECT name, kind, width, height, codecs, bandwidth, status, progress
         FROM asset_renditions WHERE asset_id = $1
         ORDER BY kind DESC, height DESC NULLS LAST, name",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(asset.to_json(&state, &principal, renditions)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    /// `created_at` of the last asset of the previous page (RFC 3339) and its id.
    before: Option<DateTime<Utc>>,
    before_id: Option<Uuid>,
    limit: Option<i64>,
}

const STATUSES: [&str; 7] = [
    "uploaded",
    "probing",
    "transcoding",
    "packaging",
    "ready",
    "failed",
    "cancelled",
];

/// `GET /api/v1/assets?status=&limit=&before=&before_id=`: newest first.
async fn list(
    State(state): State<DeliveryState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = query.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(ApiError::new(
                ErrorCode::InvalidStatus,
                format!(
                    "{status:?} is not a status; expected one of {}",
                    STATUSES.join(", ")
                ),
            ));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidLimit,
            "limit is between 1 and 200",
        ));
    }
    let rows: Vec<AssetRow> = sqlx::query_as(&format!(
        "SELECT {ASSET_COLUMNS} FROM assets
         WHERE ($1::uuid IS NULL OR organisation_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, coalesce($4, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    ))
    .bind(principal.org_scope())
    .bind(query.status.as_deref())
    .bind(query.before)
    .bind(query.before_id)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|a| json!({"before": a.created_at, "before_id": a.id}))
        })
        .flatten();
    let assets: Vec<Value> = rows
        .iter()
        .map(|a| a.to_json(&state, &principal, Vec::new()))
        .collect();
    Ok(Json(json!({"assets": assets, "next": next})))
}

#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
struct EventRow {
    at: DateTime<Utc>,
    from_status: Option<String>,
    to_status: String,
    worker: Option<String>,
    attempt: Option<i32>,
    detail: Option<Value>,
}

/// `GET /api/v1/assets/{id}/events`: every transition with its worker and
/// attempt, oldest first, for operators diagnosing a slow or failed asset.
async fn events(
    State(state): State<DeliveryState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &principal, id).await?;
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT at, from_status, to_status, worker, attempt, detail
         FROM asset_events WHERE asset_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(json!({"asset_id": id, "events": events})))
}
