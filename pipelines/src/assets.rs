//! The asset lifecycle in PostgreSQL: creation with its job, and every
//! status transition recorded in `asset_events` with time, worker and attempt.

use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// Lifecycle states, as stored and as shown to partners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetStatus {
    Uploaded,
    Probing,
    Transcoding,
    Packaging,
    Ready,
    Failed,
    Cancelled,
}

impl AssetStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Probing => "probing",
            Self::Transcoding => "transcoding",
            Self::Packaging => "packaging",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
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

pub(crate) async fn transition_in(
    tx: &mut Transaction<'_, Postgres>,
    asset_id: Uuid,
    to: AssetStatus,
    worker: &str,
    attempt: i32,
    detail: Option<Value>,
) -> sqlx::Result<()> {
    let from: Option<String> =
        sqlx::query_scalar("SELECT status FROM assets WHERE id = $1 FOR UPDATE")
            .bind(asset_id)
            .fetch_optional(&mut **tx)
            .await?;
    sqlx::query("UPDATE assets SET status = $2, updated_at = now() WHERE id = $1")
        .bind(asset_id)
        .bind(to.as_str())
        .execute(&mut **tx)
        .await?;
    record_event(
        tx,
        asset_id,
        from.as_deref(),
        to,
        Some(worker),
        Some(attempt),
        detail,
    )
    .await
}

async fn record_event(
    tx: &mut Transaction<'_, Postgres>,
    asset_id: Uuid,
    from: Option<&str>,
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
    .bind(to.as_str())
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

/// The prefix under which every attempt of an asset writes its outputs;
/// each attempt gets `attempt-N/` below it.
pub fn output_root(asset_id: Uuid) -> String {
    format!("assets/{asset_id}/out/")
}

pub fn attempt_prefix(asset_id: Uuid, attempt: i32) -> String {
    format!("{}attempt-{attempt}/", output_root(asset_id))
}
