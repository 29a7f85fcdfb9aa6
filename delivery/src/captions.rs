//! The caption tracks a lesson's master playlist lists: rows of
//! `lesson_captions` (written by `catalogue::captions`) of a lesson that
//! plays the token's asset, segmented against that asset. Read on every
//! master request (one indexed query per playback start). While
//! PostgreSQL cannot be read the master is served without captions
//! rather than not at all: a class keeps watching.

use uuid::Uuid;

use crate::playlist::SubtitleTrack;
use crate::DeliveryState;

pub async fn tracks(state: &DeliveryState, lesson: Uuid, asset: Uuid) -> Vec<SubtitleTrack> {
    let rows: Result<Vec<SubtitleTrack>, sqlx::Error> = sqlx::query_as(
        "SELECT c.language, c.label, c.is_default, c.prefix
         FROM lesson_captions c JOIN lessons l ON l.id = c.lesson_id
         WHERE c.lesson_id = $1 AND l.asset_id = $2 AND c.asset_id = $2
         ORDER BY c.is_default DESC, c.language",
    )
    .bind(lesson)
    .bind(asset)
    .fetch_all(&state.db)
    .await;
    match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(%lesson, error = %e, "cannot read the lesson's captions; master served without them");
            Vec::new()
        }
    }
}
