//! The durable job queue on PostgreSQL: claim with `FOR UPDATE SKIP LOCKED`,
//! hold with a renewed lease, retry transient failures with backoff, never
//! retry bad media. Workers share nothing but the database and storage, so
//! any number of them on any machines can drain one queue.

use std::time::Duration;

use lectern_assets::JobKind;
use sqlx::PgPool;
use uuid::Uuid;

/// A claimed job: the claim's attempt number is unique for the job, so it
/// names this attempt's output prefix.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub asset_id: Uuid,
    pub attempts: i32,
    pub max_attempts: i32,
    /// See [`crate::chunked`] for parts.
    pub kind: JobKind,
    pub parent_id: Option<Uuid>,
    pub spec: Option<serde_json::Value>,
}

/// Claims the most urgent runnable job: queued and due, or running with an
/// expired lease (its worker died). Returns `None` when there is nothing to do.
pub async fn claim(db: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<ClaimedJob>> {
    sqlx::query_as(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
                lease_expires_at = now() + $2 * interval '1 millisecond', updated_at = now()
         WHERE id = (
             SELECT id FROM jobs
             WHERE (state = 'queued' AND run_after <= now())
                OR (state = 'running' AND lease_expires_at < now())
             -- Parts of an asset already under way before new assets: the
             -- first asset in finishes first.
             ORDER BY priority DESC, (kind = 'encode_part') DESC, run_after
             FOR UPDATE SKIP LOCKED
             LIMIT 1)
         RETURNING id, asset_id, attempts, max_attempts, kind, parent_id, spec",
    )
    .bind(worker)
    .bind(lease.as_millis() as f64)
    .fetch_optional(db)
    .await
}

/// Extends the lease. `false` means the lease was lost (it expired and
/// another worker claimed the job): the caller must stop and publish nothing.
pub async fn renew(
    db: &PgPool,
    job: &ClaimedJob,
    worker: &str,
    lease: Duration,
) -> sqlx::Result<bool> {
    let renewed = sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() + $4 * interval '1 millisecond', updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'running'",
    )
    .bind(job.id)
    .bind(worker)
    .bind(job.attempts)
    .bind(lease.as_millis() as f64)
    .execute(db)
    .await?
    .rows_affected();
    Ok(renewed == 1)
}

/// The condition under which this worker still owns the claim; used inside
/// the transactions that finish a job.
pub(crate) const STILL_OURS: &str =
    "id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'running'";

/// Delay before retry `attempt` (1-based) of a transient failure:
/// 5 s, 10 s, 20 s … capped at 10 minutes.
pub fn backoff(attempt: i32) -> Duration {
    let exp = attempt.clamp(1, 8) as u32 - 1;
    Duration::from_secs(5 * 2u64.pow(exp)).min(Duration::from_secs(600))
}

/// Puts a job this worker holds back in the queue at once without counting
/// the attempt (graceful drain: the work was interrupted, not failed).
pub async fn release(db: &PgPool, job: &ClaimedJob, worker: &str) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL,
                lease_expires_at = NULL, run_after = now(), updated_at = now()
         WHERE {STILL_OURS}"
    ))
    .bind(job.id)
    .bind(worker)
    .bind(job.attempts)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(600));
    }
}
