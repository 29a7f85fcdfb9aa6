//! Recording a new asset once its source object is stored.

use sqlx::PgExecutor;
use uuid::Uuid;

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

/// Where an asset's source object lives.
pub fn source_key(asset_id: Uuid) -> String {
    format!("assets/{asset_id}/source")
}

/// Inserts the asset in status `uploaded`; its transcode job is enqueued by
/// the database in the same statement. Takes any executor so intake can
/// record the asset in the same transaction that closes its upload.
pub async fn create<'e>(db: impl PgExecutor<'e>, asset: &NewAsset) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, source_key, title, profile, priority)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(asset.id)
    .bind(asset.organisation_id)
    .bind(&asset.source_key)
    .bind(&asset.title)
    .bind(&asset.profile)
    .bind(asset.priority)
    .execute(db)
    .await?;
    Ok(())
}
