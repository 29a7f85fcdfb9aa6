//! The durable job queue on PostgreSQL: claim with `FOR UPDATE SKIP LOCKED`,
//! hold with a renewed lease, retry transient failures with backoff, never
//! retry bad media. Workers share nothing but the database and storage, so
//! any number of them on any machines can drain one queue.
//!
//! `attempts` counts claims, so every claim has its own attempt number (it
//! names the attempt's output prefix). A claim that ends in a hand-back
//! (graceful drain) also counts in `handbacks`; what counts towards
//! `max_attempts` is the difference. A claim whose worker died (its lease
//! expired) counts like a failed one: a source that kills every worker it
//! meets is not claimed again once its attempts are spent, and
//! `CRASHED_ON_LAST_ATTEMPT` finds it for the worker to fail with
//! `worker_crashed`.
//!
//! Jobs are born in the database: an `AFTER INSERT` trigger on `assets`
//! (`assets_enqueue_transcode`) enqueues the transcode in the asset's own
//! transaction, so ingest knows nothing of the queue and an asset never
//! exists without its job; the job keeps the `traceparent` of the span
//! that created the asset (`lectern_telemetry`), so the worker's span
//! continues the upload's trace. [`claim`] takes the most urgent runnable job —
//! by priority, parts of an asset already under way first, then due time —
//! queued and due, or running with an expired lease and an attempt left.
//! Ownership is `(lease_owner, attempts, state = 'running')`
//! (`STILL_OURS`): renewing, releasing and every transaction that
//! finishes a job checks it, so a worker whose lease was taken over can
//! change nothing. Transient failures wait [`backoff`] (5 s doubling, at
//! most 10 min) before the next claim.

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
    /// Claims of this job that ended in a hand-back; they do not count
    /// towards `max_attempts`.
    pub handbacks: i32,
    pub max_attempts: i32,
    /// See [`crate::chunked`] for parts.
    pub kind: JobKind,
    pub parent_id: Option<Uuid>,
    pub spec: Option<serde_json::Value>,
    /// The worker whose expired lease this claim took over: it died (or
    /// lost the database) while it held the job.
    pub taken_over_from: Option<String>,
    /// W3C trace context of the span that queued the job (the upload's
    /// request, or the parent job for parts); the job's span continues it.
    pub traceparent: Option<String>,
}

impl ClaimedJob {
    /// The attempts that count towards `max_attempts`, this one included.
    pub fn counted_attempts(&self) -> i32 {
        self.attempts - self.handbacks
    }

    /// Whether a failure of this attempt is the last one allowed.
    pub fn is_last_attempt(&self) -> bool {
        self.counted_attempts() >= self.max_attempts
    }
}

/// A job whose worker died on its last allowed attempt: its lease expired
/// and no attempt is left. [`claim`] never takes it; the worker fails it
/// with `worker_crashed` (see `crate::worker`).
pub(crate) const CRASHED_ON_LAST_ATTEMPT: &str =
    "state = 'running' AND lease_expires_at < now() AND attempts - handbacks >= max_attempts";

/// The columns of a [`ClaimedJob`], for `RETURNING`; `owner` is the
/// expression naming the worker whose lease was taken over.
pub(crate) fn claimed_columns(owner: &str) -> String {
    format!(
        "jobs.id, jobs.asset_id, jobs.attempts, jobs.handbacks, jobs.max_attempts, jobs.kind, \
         jobs.parent_id, jobs.spec, jobs.traceparent, {owner} AS taken_over_from"
    )
}

/// Claims the most urgent runnable job: queued and due, or running with an
/// expired lease (its worker died) and an attempt left. The takeover counts
/// as an attempt: the dead worker's claim is not refunded. Returns `None`
/// when there is nothing to do.
pub async fn claim(db: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<ClaimedJob>> {
    sqlx::query_as(&format!(
        "WITH candidate AS (
             SELECT id, CASE WHEN state = 'running' THEN lease_owner END AS expired_owner
             FROM jobs
             WHERE (state = 'queued' AND run_after <= now())
                OR (state = 'running' AND lease_expires_at < now()
                    AND attempts - handbacks < max_attempts)
             -- Parts of an asset already under way before new assets: the
             -- first asset in finishes first.
             ORDER BY priority DESC, (kind = 'encode_part') DESC, run_after
             FOR UPDATE SKIP LOCKED
             LIMIT 1)
         UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
                lease_expires_at = now() + $2 * interval '1 millisecond', updated_at = now()
         FROM candidate WHERE jobs.id = candidate.id
         RETURNING {}",
        claimed_columns("candidate.expired_owner")
    ))
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
/// the attempt against `max_attempts` (graceful drain: the work was
/// interrupted, not failed). The attempt number stays used, so the next
/// claim writes under a prefix of its own and never over this attempt's
/// outputs. `false`: the job was no longer ours.
pub async fn release(
    conn: &mut sqlx::PgConnection,
    job: &ClaimedJob,
    worker: &str,
) -> sqlx::Result<bool> {
    let released = sqlx::query(&format!(
        "UPDATE jobs SET state = 'queued', handbacks = handbacks + 1, lease_owner = NULL,
                lease_expires_at = NULL, run_after = now(), updated_at = now()
         WHERE {STILL_OURS}"
    ))
    .bind(job.id)
    .bind(worker)
    .bind(job.attempts)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(released == 1)
}

/// The asset's progress while parts run: the video chunks' progress
/// weighted by their durations (part 0 is cheap beside them).
pub(crate) async fn write_asset_progress(
    tx: &mut sqlx::PgConnection,
    asset_id: Uuid,
    parent: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE assets SET progress = LEAST(99, COALESCE((
             SELECT sum(progress * (spec->>'weight_s')::float8)
                    / nullif(sum((spec->>'weight_s')::float8), 0)
             FROM jobs WHERE parent_id = $2), 0)), updated_at = now()
         WHERE id = $1",
    )
    .bind(asset_id)
    .bind(parent)
    .execute(tx)
    .await?;
    Ok(())
}

/// Records a running part's own progress and the asset's.
pub(crate) async fn record_part_progress(
    db: &sqlx::PgPool,
    job: &ClaimedJob,
    parent: Uuid,
    pct: f64,
) -> sqlx::Result<()> {
    let mut conn = db.acquire().await?;
    sqlx::query("UPDATE jobs SET progress = $2 WHERE id = $1")
        .bind(job.id)
        .bind(pct.clamp(0.0, 100.0) as f32)
        .execute(&mut *conn)
        .await?;
    write_asset_progress(&mut conn, job.asset_id, parent).await
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
