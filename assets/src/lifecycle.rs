//! The asset lifecycle in PostgreSQL: creation (its transcode job is
//! enqueued by a trigger in the same statement), and every status
//! transition recorded in `asset_events` with time, worker and attempt.

use serde_json::Value;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::AssetStatus;

/// A stored source object to turn into a ladder.
#[derive(Debug, Clone)]
pub struct NewAsset {
    /// Chosen by the intake (the tus upload id), so partners poll one URL.
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub source_key: String,
    pub title: Option<String>,
    /// Encoding profile name (`default`, `lecture`).
    pub profile: String,
    /// Higher runs first.
    pub priority: i32,
}

/// Inserts the asset in status `uploaded`; its transcode job is enqueued by
/// the database in the same statement. Takes any executor so intake can
/// record the asset in the same transaction that closes its upload.
///
/// The job carries the current span's trace context: the statement sets
/// `lectern.traceparent` for its transaction (empty when no trace is
/// exported, which also clears one an earlier insert of the same
/// transaction set) and the trigger copies it into `jobs.traceparent`.
pub async fn create<'e>(db: impl PgExecutor<'e>, asset: &NewAsset) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, source_key, title, profile, priority)
         SELECT $1, $2, $3, $4, $5, $6 FROM (SELECT set_config($7, $8, true)) AS trace",
    )
    .bind(asset.id)
    .bind(asset.organisation_id)
    .bind(&asset.source_key)
    .bind(&asset.title)
    .bind(&asset.profile)
    .bind(asset.priority)
    .bind(lectern_telemetry::SETTING)
    .bind(lectern_telemetry::current_traceparent().unwrap_or_default())
    .execute(db)
    .await?;
    Ok(())
}

/// Moves an asset to `to`, recording the event with the previous status.
pub async fn transition(
    db: &PgPool,
    asset_id: Uuid,
    to: AssetStatus,
    worker: &str,
    attempt: i32,
    detail: Option<Value>,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    transition_in(&mut tx, asset_id, to, worker, attempt, detail).await?;
    tx.commit().await
}

pub async fn transition_in(
    tx: &mut Transaction<'_, Postgres>,
    asset_id: Uuid,
    to: AssetStatus,
    worker: &str,
    attempt: i32,
    detail: Option<Value>,
) -> sqlx::Result<()> {
    let from: Option<AssetStatus> =
        sqlx::query_scalar("SELECT status FROM assets WHERE id = $1 FOR UPDATE")
            .bind(asset_id)
            .fetch_optional(&mut **tx)
            .await?;
    sqlx::query("UPDATE assets SET status = $2, updated_at = now() WHERE id = $1")
        .bind(asset_id)
        .bind(to)
        .execute(&mut **tx)
        .await?;
    record_event(tx, asset_id, from, to, Some(worker), Some(attempt), detail).await
}

async fn record_event(
    tx: &mut Transaction<'_, Postgres>,
    asset_id: Uuid,
    from: Option<AssetStatus>,
    to: AssetStatus,
    worker: Option<&str>,
    attempt: Option<i32>,
    detail: Option<Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO asset_events (asset_id, from_status, to_status, worker, attempt, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(asset_id)
    .bind(from)
    .bind(to)
    .bind(worker)
    .bind(attempt)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Progress of the running encode, 0–100; written a few times a minute.
pub async fn set_progress(db: &PgPool, asset_id: Uuid, progress: f64) -> sqlx::Result<()> {
    sqlx::query("UPDATE assets SET progress = $2, updated_at = now() WHERE id = $1")
        .bind(asset_id)
        .bind(progress.clamp(0.0, 100.0) as f32)
        .execute(db)
        .await?;
    Ok(())
}
