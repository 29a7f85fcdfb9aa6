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
use lectern_assets::AssetStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use lectern_web::page::Limit;
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
    status: AssetStatus,
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
    loudness_integrated_lufs: Option<f64>,
    loudness_range_lu: Option<f64>,
    loudness_true_peak_dbtp: Option<f64>,
    loudness_target_lufs: Option<f64>,
    loudness_true_peak_max_dbtp: Option<f64>,
    loudness_gain_db: Option<f64>,
    loudness_outcome: Option<LoudnessOutcome>,
}

const ASSET_COLUMNS: &str = "id, organisation_id, status, title, profile, progress, duration_s, \
     error_code, error_message, output_prefix, playable_prefix, created_at, updated_at, ready_at, \
     first_playable_at, loudness_integrated_lufs, loudness_range_lu, loudness_true_peak_dbtp, \
     loudness_target_lufs, loudness_true_peak_max_dbtp, loudness_gain_db, loudness_outcome";

/// An asset: one source and everything encoded from it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Asset {
    /// The asset's id; for a tus upload, the upload's id.
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub status: AssetStatus,
    /// The title given at upload or pull, if any.
    pub title: Option<String>,
    /// The encoding profile (ladder) the asset is encoded with.
    pub profile: String,
    /// Progress of the current stage, 0–100, one decimal.
    pub progress: f64,
    /// The source's duration in seconds, once probed.
    pub duration_s: Option<f64>,
    /// Why the asset failed; `null` unless `status` is `failed`.
    pub error: Option<AssetError>,
    /// The master playlist a player opens, with a playback token in its
    /// query: the finished ladder once ready, the growing lowest rung while
    /// encoding (fast first playback), `null` before anything is playable.
    /// Asked for while signed in, it is bound to that sign-in and also plays
    /// encrypted assets; asked for with a partner key it plays clear assets
    /// only.
    pub master_url: Option<String>,
    /// The renditions, highest first (`GET /api/v1/assets/{id}` only; empty
    /// in lists).
    pub renditions: Vec<Rendition>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the first rung became playable while encoding.
    pub first_playable_at: Option<DateTime<Utc>>,
    /// When every rendition was published.
    pub ready_at: Option<DateTime<Utc>>,
    /// The audio's loudness (EBU R128) as the transcode measured it and
    /// the gain the audio rendition got; `null` without audio or before
    /// the transcode has measured it.
    pub loudness: Option<AssetLoudness>,
}

/// EBU R128 loudness of the source's audio, measured after the downmix to
/// the audio rendition's channels, and what normalisation did with it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AssetLoudness {
    /// Integrated loudness in LUFS; `null` when nothing is louder than
    /// the −70 LUFS gate (silence).
    pub integrated_lufs: Option<f64>,
    /// Loudness range in LU (EBU Tech 3342).
    pub range_lu: Option<f64>,
    /// True peak in dBTP; `null` for digital silence.
    pub true_peak_dbtp: Option<f64>,
    /// The profile's target; `null` when normalisation is off.
    pub target_lufs: Option<f64>,
    /// The ceiling the gain may not push the true peak over, dBTP.
    pub true_peak_max_dbtp: f64,
    /// The gain applied to the audio rendition, dB (0 when silent or off).
    pub gain_db: f64,
    pub outcome: LoudnessOutcome,
}

/// Why the applied gain is what it is.
#[derive(Debug, Clone, Copy, Serialize, sqlx::Type, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LoudnessOutcome {
    /// The rendition is at the target.
    Normalised,
    /// Below the target: more gain would push the true peak over the ceiling.
    PeakLimited,
    /// Below the target: it would need more than +20 dB.
    GainLimited,
    /// Nothing to measure (silence): no gain.
    Silent,
    /// The profile turns normalisation off: measured only.
    Off,
}

/// Why an asset failed.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AssetError {
    /// A stable code (e.g. `corrupt_media`, `unsupported_codec`).
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

/// One rung of the ladder, or the audio.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Rendition {
    /// The rendition's name, e.g. `720p` or `audio`.
    pub name: String,
    pub kind: RenditionKind,
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// RFC 6381 codecs string, e.g. `avc1.64001f`.
    pub codecs: Option<String>,
    /// Peak bits per second, as the master playlist declares it.
    pub bandwidth: Option<i64>,
    pub status: RenditionStatus,
    /// Encoding progress of this rendition, 0–100.
    pub progress: f32,
}

/// What a rendition carries.
#[derive(Debug, Clone, Copy, Serialize, sqlx::Type, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RenditionKind {
    Video,
    Audio,
}

/// Whether a rendition is complete.
#[derive(Debug, Clone, Copy, Serialize, sqlx::Type, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RenditionStatus {
    Encoding,
    Ready,
}

impl AssetRow {
    /// `viewer` is the caller: a signed-in person's preview URL is bound to
    /// their session, so it plays encrypted assets too (the key is only
    /// given to a live session) and stops working when they sign out. An
    /// API key's is unbound: it plays clear assets, for the partner's tools.
    fn into_asset(
        self,
        state: &DeliveryState,
        viewer: &Principal,
        renditions: Vec<Rendition>,
    ) -> Asset {
        // The finished ladder once ready; while encoding, the growing
        // lowest rung (fast first playback).
        let prefix = self
            .output_prefix
            .as_deref()
            .or(self.playable_prefix.as_deref());
        let master_url = prefix.map(|p| state.playback.master_url(self.id, p, viewer.session_id()));
        let loudness = self.loudness_outcome.map(|outcome| AssetLoudness {
            integrated_lufs: self.loudness_integrated_lufs,
            range_lu: self.loudness_range_lu,
            true_peak_dbtp: self.loudness_true_peak_dbtp,
            target_lufs: self.loudness_target_lufs,
            true_peak_max_dbtp: self.loudness_true_peak_max_dbtp.unwrap_or_default(),
            gain_db: self.loudness_gain_db.unwrap_or_default(),
            outcome,
        });
        let error = self.error_code.map(|code| AssetError {
            code,
            message: self.error_message.unwrap_or_default(),
        });
        Asset {
            id: self.id,
            organisation_id: self.organisation_id,
            status: self.status,
            title: self.title,
            profile: self.profile,
            progress: (f64::from(self.progress) * 10.0).round() / 10.0,
            duration_s: self.duration_s,
            error,
            master_url,
            renditions,
            created_at: self.created_at,
            updated_at: self.updated_at,
            first_playable_at: self.first_playable_at,
            ready_at: self.ready_at,
            loudness,
        }
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
) -> Result<Json<Asset>, ApiError> {
    let asset = find(&state, &principal, id).await?;
    let renditions: Vec<Rendition> = sqlx::query_as(
        "SELECT name, kind, width, height, codecs, bandwidth, status, progress
         FROM asset_renditions WHERE asset_id = $1
         ORDER BY kind DESC, height DESC NULLS LAST, name",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(asset.into_asset(&state, &principal, renditions)))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only assets in this status.
    #[schemars(with = "Option<AssetStatus>")]
    status: Option<String>,
    /// `created_at` of the last asset of the previous page (RFC 3339):
    /// `next.before` of that page.
    before: Option<DateTime<Utc>>,
    /// The id of the last asset of the previous page: `next.before_id`.
    before_id: Option<Uuid>,
    /// Assets per page, 1–200 (default 50).
    limit: Option<i64>,
}

/// A page of assets, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AssetPage {
    pub assets: Vec<Asset>,
    /// Where the next page starts (pass both as query parameters); `null`
    /// on the last page.
    pub next: Option<AssetPageNext>,
}

/// The position after the last asset of a page.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AssetPageNext {
    pub before: DateTime<Utc>,
    pub before_id: Uuid,
}

const PAGE: Limit = Limit::new(50, 200);

/// `GET /api/v1/assets?status=&limit=&before=&before_id=`: newest first.
async fn list(
    State(state): State<DeliveryState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AssetPage>, ApiError> {
    // Read as text and checked here, so a wrong status is `invalid_status`
    // naming the valid ones rather than a generic query error.
    let status = match query.status.as_deref() {
        Some(s) => Some(
            s.parse::<AssetStatus>()
                .map_err(|message| ApiError::new(ErrorCode::InvalidStatus, message))?,
        ),
        None => None,
    };
    let limit = PAGE.of(query.limit)?;
    let rows: Vec<AssetRow> = sqlx::query_as(&format!(
        "SELECT {ASSET_COLUMNS} FROM assets
         WHERE ($1::uuid IS NULL OR organisation_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, coalesce($4, 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)))
         ORDER BY created_at DESC, id DESC
         LIMIT $5"
    ))
    .bind(principal.org_scope())
    .bind(status)
    .bind(query.before)
    .bind(query.before_id)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last().map(|a| AssetPageNext {
                before: a.created_at,
                before_id: a.id,
            })
        })
        .flatten();
    let assets = rows
        .into_iter()
        .map(|a| a.into_asset(&state, &principal, Vec::new()))
        .collect();
    Ok(Json(AssetPage { assets, next }))
}

/// One lifecycle transition.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct AssetEvent {
    pub at: DateTime<Utc>,
    /// `null` for the asset's creation.
    pub from_status: Option<AssetStatus>,
    pub to_status: AssetStatus,
    /// The worker that made the transition, if a worker did.
    pub worker: Option<String>,
    /// The job attempt (claim) that made it; it names the attempt's output
    /// prefix (`attempt-N/`).
    pub attempt: Option<i32>,
    /// What the worker recorded with it (timings, error details).
    pub detail: Option<Value>,
}

/// An asset's lifecycle, oldest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AssetEvents {
    pub asset_id: Uuid,
    pub events: Vec<AssetEvent>,
}

/// `GET /api/v1/assets/{id}/events`: every transition with its worker and
/// attempt, oldest first, for operators diagnosing a slow or failed asset.
async fn events(
    State(state): State<DeliveryState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<AssetEvents>, ApiError> {
    find(&state, &principal, id).await?;
    let events: Vec<AssetEvent> = sqlx::query_as(
        "SELECT at, from_status, to_status, worker, attempt, detail
         FROM asset_events WHERE asset_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(AssetEvents {
        asset_id: id,
        events,
    }))
}
