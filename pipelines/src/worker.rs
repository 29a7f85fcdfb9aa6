//! A pipeline worker: claims transcode jobs and runs each one
//! fetch source → probe → transcode → package → publish → mark ready.
//!
//! Durability rules:
//! - A job is held by a lease renewed every third of its length; a worker
//!   that dies simply stops renewing and another worker takes the job over.
//! - Outputs go under a per-attempt prefix; the asset is pointed at it in the
//!   same transaction that checks this worker still owns the job. A stale or
//!   duplicate attempt can therefore never become visible, and superseded
//!   attempts are garbage-collected afterwards.
//! - Bad media fails the asset at once with its stable code; only transient
//!   failures (storage, database, I/O) are retried, with backoff. Sources
//!   over the [`SourceLimits`] fail at probe (`frame_too_large`,
//!   `duration_too_long`), before anything decodes them.
//! - A claim whose worker died counts as an attempt. When a job's last
//!   allowed attempt dies, no worker claims it again: the next worker to
//!   look for work fails it with `worker_crashed` (for a part, its whole
//!   asset, like any part that fails for good), so a source that kills its
//!   workers cannot loop for ever.
//! - On shutdown the worker stops claiming, lets running jobs finish for a
//!   drain period, then cancels them and hands them straight back to the
//!   queue. The attempt is not counted against the limit, but its number
//!   stays used: the next attempt writes under a prefix of its own.
//! - An attempt that ends without publishing deletes its outputs unless the
//!   asset still points at them (a preview learners may be watching, left
//!   by a drained attempt or one that lost its lease): those stay until the
//!   next attempt's preview replaces them and its switch to ready collects
//!   them. An asset that fails for good loses every attempt's outputs and
//!   its preview together.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lectern_storage::Store;
use lectern_transcoder::encode::CancelFlag;
use lectern_transcoder::ladder::SourceLimits;
use lectern_transcoder::loudness::LoudnessReport;
use lectern_transcoder::{probe, MediaErrorCode};
use serde_json::json;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use crate::failure::JobFailure;
use crate::jobs::{self, ClaimedJob, CRASHED_ON_LAST_ATTEMPT, STILL_OURS};
use crate::stage::{ChunkingConfig, Stage};
use crate::{profiles, progressive, transcode};
use lectern_assets::{self as assets, keys, AssetStatus};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique among live workers: recorded as lease owner and in events.
    pub name: String,
    pub lease: Duration,
    /// Jobs run at once by this worker.
    pub concurrency: usize,
    /// Local scratch space for sources and encodes.
    pub work_dir: PathBuf,
    /// How often an idle worker looks for work.
    pub poll_interval: Duration,
    /// How long running jobs may finish after a shutdown request.
    pub drain_timeout: Duration,
    /// Long sources are split and encoded as parallel parts; `None` never splits.
    pub chunking: Option<ChunkingConfig>,
}

impl WorkerConfig {
    /// Jobs to run at once on this machine: x264 already spreads one ladder
    /// over about four cores, so more jobs than that only add contention.
    pub fn default_concurrency() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 4).max(1)
    }
}

#[derive(Clone)]
pub struct Worker {
    pub(crate) db: PgPool,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Arc<WorkerConfig>,
}

impl Worker {
    pub fn new(db: PgPool, store: Arc<dyn Store>, config: WorkerConfig) -> Self {
        Self {
            db,
            store,
            config: Arc::new(config),
        }
    }

    /// Runs until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut running: JoinSet<()> = JoinSet::new();
        let mut cancels: Vec<(Uuid, CancelFlag)> = Vec::new();
        tracing::info!(worker = %self.config.name, concurrency = self.config.concurrency, "worker started");
        tokio::pin!(shutdown);
        loop {
            while running.try_join_next().is_some() {}
            cancels.retain(|(_, flag)| !flag.is_cancelled());
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = slots.clone().acquire_owned() => p.expect("semaphore never closes"),
            };
            // Before claiming: a job whose last attempt died is never
            // claimable, so without this its asset would wait for ever.
            if let Err(e) = self.fail_crashed_jobs().await {
                tracing::warn!(error = %e, "cannot fail jobs whose workers died; retrying");
            }
            let claimed = match jobs::claim(&self.db, &self.config.name, self.config.lease).await {
                Ok(job) => job,
                Err(e) => {
                    // The database may be restarting: keep polling, never exit.
                    tracing::warn!(error = %e, "cannot claim jobs; retrying");
                    None
                }
            };
            let Some(job) = claimed else {
                drop(permit);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(self.config.poll_interval) => continue,
                }
            };
            let cancel = CancelFlag::new();
            cancels.push((job.id, cancel.clone()));
            let worker = self.clone();
            // Everything the job logs, its spawned encoders included,
            // carries the asset it works on.
            let span = tracing::info_span!(
                "job",
                otel.kind = "consumer",
                job = %job.id,
                asset = %job.asset_id,
                kind = job.kind.as_str(),
                attempt = job.attempts
            );
            // One trace from the request that queued the job to its end.
            lectern_telemetry::continue_trace(&span, job.traceparent.as_deref());
            running.spawn(
                async move {
                    worker.process(job, cancel).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tracing::info!(worker = %self.config.name, running = running.len(), "draining");
        let drained = tokio::time::timeout(self.config.drain_timeout, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            for (_, flag) in &cancels {
                flag.cancel();
            }
            while running.join_next().await.is_some() {}
        }
        tracing::info!(worker = %self.config.name, "worker stopped");
    }

    async fn process(&self, job: ClaimedJob, cancel: CancelFlag) {
        let name = &self.config.name;
        tracing::info!(worker = %name, job = %job.id, asset = %job.asset_id, attempt = job.attempts, "job claimed");
        if let Some(dead) = &job.taken_over_from {
            tracing::warn!(
                job = %job.id,
                asset = %job.asset_id,
                previous_worker = %dead,
                attempt = job.counted_attempts(),
                max_attempts = job.max_attempts,
                "taking over a job whose worker died"
            );
        }
        let scratch = self
            .config
            .work_dir
            .join(format!("{}-{}", job.id, job.attempts));
        let stage = match Stage::of(&job) {
            Ok(stage) => stage,
            Err(failure) => {
                match self.record_failure(&job, None, failure).await {
                    Ok(true) => self.remove_all_outputs(job.asset_id).await,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(job = %job.id, error = %e, "cannot record job failure")
                    }
                }
                return;
            }
        };
        let prefix = stage.prefix(&job);
        let (progress_tx, progress_rx) = watch::channel(0.0_f64);
        let lease_lost = CancelFlag::new();
        let keeper = tokio::spawn(
            keep_lease(
                self.db.clone(),
                job.clone(),
                name.clone(),
                self.config.lease,
                progress_rx,
                cancel.clone(),
                lease_lost.clone(),
            )
            .in_current_span(),
        );
        let outcome = match &stage {
            Stage::Whole => {
                self.run_job(&job, &scratch, &prefix, &progress_tx, &cancel)
                    .await
            }
            Stage::Part(part) => {
                self.run_part(&job, part, &scratch, &progress_tx, &cancel)
                    .await
            }
            Stage::Stitch(stitch) => self.run_stitch(&job, stitch, &scratch).await,
        };
        keeper.abort();
        let outcome = match outcome {
            Err(_) if lease_lost.is_cancelled() => Err(JobFailure::LeaseLost),
            Err(JobFailure::Media(e)) if e.code == MediaErrorCode::Cancelled => {
                Err(JobFailure::Interrupted)
            }
            other => other,
        };
        if let Err(e) = tokio::fs::remove_dir_all(&scratch).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %scratch.display(), error = %e, "cannot clean scratch directory");
            }
        }
        match outcome {
            Ok(()) if matches!(stage, Stage::Part(_)) => {}
            Ok(()) => self.collect_garbage(job.asset_id, &prefix).await,
            Err(failure) => {
                let preview = matches!(stage, Stage::Whole).then_some(prefix.as_str());
                match self.record_failure(&job, preview, failure).await {
                    // Nothing of the asset can be used any more: not this
                    // attempt's outputs, not the other parts' or the chunk
                    // sources, not what earlier attempts whose workers died
                    // left behind.
                    Ok(true) => self.remove_all_outputs(job.asset_id).await,
                    Ok(false) => self.discard_attempt(&job, &stage, &prefix).await,
                    // The lease will expire and another worker retries;
                    // what this attempt wrote is collected when the asset
                    // is ready or fails.
                    Err(e) => {
                        tracing::error!(job = %job.id, error = %e, "cannot record job failure")
                    }
                }
            }
        }
    }

    /// Removes what an attempt that will not publish wrote, except what
    /// the asset still points at: a preview learners may be watching (left
    /// by a drained attempt, or by one that lost its lease) stays until a
    /// later attempt's preview or ladder replaces it and collects it.
    async fn discard_attempt(&self, job: &ClaimedJob, stage: &Stage, prefix: &str) {
        match stage {
            Stage::Whole => {
                let pointed_at: sqlx::Result<bool> = sqlx::query_scalar(
                    "SELECT $2 IN (coalesce(playable_prefix, ''), coalesce(output_prefix, ''))
                     FROM assets WHERE id = $1",
                )
                .bind(job.asset_id)
                .bind(prefix)
                .fetch_one(&self.db)
                .await;
                match pointed_at {
                    Ok(false) => self.remove_prefix(prefix).await,
                    Ok(true) => {
                        tracing::info!(asset = %job.asset_id, %prefix, "keeping the preview learners are sent to")
                    }
                    Err(e) => {
                        tracing::warn!(asset = %job.asset_id, %prefix, error = %e, "cannot tell whether the preview is in use; keeping it")
                    }
                }
            }
            // Nothing points at a part's files before its attempt succeeds.
            Stage::Part(part) => self.remove_part_attempt(part, job.attempts).await,
            // The parts' outputs stay for the stitch's retry.
            Stage::Stitch(_) => {}
        }
    }

    async fn run_job(
        &self,
        job: &ClaimedJob,
        scratch: &Path,
        prefix: &str,
        progress: &watch::Sender<f64>,
        cancel: &CancelFlag,
    ) -> Result<(), JobFailure> {
        let name = &self.config.name;
        let (source_key, profile_name): (String, String) =
            sqlx::query_as("SELECT source_key, profile FROM assets WHERE id = $1")
                .bind(job.asset_id)
                .fetch_one(&self.db)
                .await?;
        assets::transition(
            &self.db,
            job.asset_id,
            AssetStatus::Probing,
            name,
            job.attempts,
            None,
        )
        .await?;
        tokio::fs::create_dir_all(scratch).await?;
        let source = scratch.join("source");
        self.download(&source_key, &source).await?;

        let probe_path = source.clone();
        let info = tokio::task::spawn_blocking(move || probe::probe(&probe_path))
            .await
            .map_err(|e| JobFailure::Infrastructure(format!("probe thread: {e}")))?
            .map_err(JobFailure::Media)?;
        sqlx::query("UPDATE assets SET media_info = $2, duration_s = $3 WHERE id = $1")
            .bind(job.asset_id)
            .bind(serde_json::to_value(&info).expect("MediaInfo serialises"))
            .bind(info.duration_s)
            .execute(&self.db)
            .await?;
        // Before anything decodes a frame: a picture or a duration this
        // large would hold (or take down) the worker for nothing.
        SourceLimits::default()
            .check(&info)
            .map_err(JobFailure::Media)?;
        assets::transition(
            &self.db,
            job.asset_id,
            AssetStatus::Transcoding,
            name,
            job.attempts,
            Some(json!({ "duration_s": info.duration_s })),
        )
        .await?;

        let profile = profiles::builtin(&profile_name)
            .map_err(|e| JobFailure::InvalidProfile(e.to_string()))?;
        // Rotation lives in the container's display matrix, which the
        // Matroska chunks would not carry: such sources encode whole. Judged
        // from the probe first, so a short source's content is analysed
        // once (by the whole encode), not here too.
        let splittable = |chunking: &ChunkingConfig| {
            info.primary_video().is_some_and(|v| v.rotation_deg == 0)
                && info.duration_s >= chunking.threshold_s
        };
        if let Some(chunking) = self.config.chunking.filter(|c| splittable(c)) {
            let (plan_source, plan_info, plan_profile) =
                (source.clone(), info.clone(), profile.clone());
            let plan = tokio::task::spawn_blocking(move || {
                transcode::plan_title(&plan_source, &plan_info, &plan_profile)
            })
            .await
            .map_err(|e| JobFailure::Infrastructure(format!("planning thread: {e}")))?
            .map_err(JobFailure::Media)?;
            let splittable = !plan.video.is_empty();
            if splittable
                && self
                    .split_into_parts(
                        job,
                        &source,
                        &source_key,
                        &info,
                        &plan,
                        prefix,
                        scratch,
                        chunking,
                    )
                    .await?
            {
                return Ok(());
            }
        }
        let out = scratch.join("out");
        let (progress, cancel) = (progress.clone(), cancel.clone());
        let (segments_tx, segments_rx) = tokio::sync::mpsc::unbounded_channel();
        let (plan_tx, plan_rx) = tokio::sync::oneshot::channel();
        let encode_out = out.clone();
        let span = tracing::Span::current();
        let encode = tokio::task::spawn_blocking(move || {
            let _job = span.enter();
            std::fs::create_dir_all(&encode_out)?;
            let on_progress = |pct: f64| {
                let _ = progress.send(pct);
            };
            transcode::transcode_file_observed(
                &source,
                &encode_out,
                &profile,
                &on_progress,
                &cancel,
                |plan| {
                    let _ = plan_tx.send(plan.clone());
                    Some(progressive::observer_for(plan, segments_tx))
                },
            )
        });
        // Publishes the lowest rung while the ladder encodes; ends when the
        // encode drops its observer.
        let publisher = match plan_rx.await {
            Ok(plan) => Some(tokio::spawn(
                progressive::Publisher {
                    db: self.db.clone(),
                    store: self.store.clone(),
                    job: job.clone(),
                    worker: name.clone(),
                    out_dir: out.clone(),
                    prefix: prefix.to_string(),
                    plan,
                }
                .run(segments_rx)
                .in_current_span(),
            )),
            // Probing or planning failed: the encode's result says why.
            Err(_) => None,
        };
        let report = encode
            .await
            .map_err(|e| JobFailure::Infrastructure(format!("transcode thread: {e}")))?
            .map_err(JobFailure::Media);
        if let Some(publisher) = publisher {
            let _ = publisher.await;
        }
        let report = report?;

        assets::transition(
            &self.db,
            job.asset_id,
            AssetStatus::Packaging,
            name,
            job.attempts,
            None,
        )
        .await?;
        lectern_packager::publish(&out, self.store.as_ref(), prefix)
            .await
            .map_err(|e| JobFailure::Infrastructure(format!("publishing: {e}")))?;
        self.finish_ready(
            job,
            prefix,
            &report.manifest,
            report.encoded.loudness.as_ref(),
            report.elapsed_s,
        )
        .await
    }

    /// The switch to ready, only if this worker still owns the job: the
    /// asset points at `prefix`, its renditions and its audio's loudness
    /// in one transaction.
    pub(crate) async fn finish_ready(
        &self,
        job: &ClaimedJob,
        prefix: &str,
        manifest: &lectern_packager::Manifest,
        loudness: Option<&LoudnessReport>,
        encode_s: f64,
    ) -> Result<(), JobFailure> {
        let name = &self.config.name;
        let mut tx = self.db.begin().await?;
        let owned = sqlx::query(&format!(
            "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, updated_at = now()
             WHERE {STILL_OURS}"
        ))
        .bind(job.id)
        .bind(name)
        .bind(job.attempts)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if owned != 1 {
            return Err(JobFailure::LeaseLost);
        }
        sqlx::query(
            "UPDATE assets SET output_prefix = $2, playable_prefix = $2, progress = 100,
                    ready_at = now(), error_code = NULL, error_message = NULL WHERE id = $1",
        )
        .bind(job.asset_id)
        .bind(prefix)
        .execute(&mut *tx)
        .await?;
        store_loudness(&mut tx, job.asset_id, loudness).await?;
        sqlx::query("DELETE FROM asset_renditions WHERE asset_id = $1")
            .bind(job.asset_id)
            .execute(&mut *tx)
            .await?;
        for m in &manifest.renditions {
            let r = &m.rendition;
            let kind = match r.kind {
                lectern_packager::RenditionKind::Video => "video",
                lectern_packager::RenditionKind::Audio => "audio",
            };
            sqlx::query(
                "INSERT INTO asset_renditions
                     (asset_id, name, kind, width, height, codecs, bandwidth, status, progress)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'ready', 100)",
            )
            .bind(job.asset_id)
            .bind(&r.name)
            .bind(kind)
            .bind(r.width.map(|w| w as i32))
            .bind(r.height.map(|h| h as i32))
            .bind(&r.codecs)
            .bind(m.peak_bandwidth as i64)
            .execute(&mut *tx)
            .await?;
        }
        assets::transition_in(
            &mut tx,
            job.asset_id,
            AssetStatus::Ready,
            name,
            job.attempts,
            Some(json!({ "output_prefix": prefix, "encode_s": encode_s })),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(asset = %job.asset_id, attempt = job.attempts, encode_s, "asset ready");
        Ok(())
    }

    pub(crate) async fn download(&self, key: &str, to: &Path) -> Result<(), JobFailure> {
        let object = self.store.get(key, None).await?;
        let mut file = tokio::fs::File::create(to).await?;
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk?).await?;
        }
        file.sync_all().await?;
        Ok(())
    }

    /// Records a failed attempt; `true` when the asset failed for good.
    /// `preview` is the prefix under which this attempt may have published
    /// a preview (a whole encode's).
    async fn record_failure(
        &self,
        job: &ClaimedJob,
        preview: Option<&str>,
        failure: JobFailure,
    ) -> sqlx::Result<bool> {
        let name = &self.config.name;
        let (code, message, permanent) = match failure {
            JobFailure::LeaseLost => {
                tracing::warn!(job = %job.id, attempt = job.attempts, "lease lost; another worker has the job");
                return Ok(false);
            }
            JobFailure::Interrupted => {
                tracing::info!(job = %job.id, "interrupted by shutdown; handing the job back");
                let mut conn = self.db.acquire().await?;
                if !jobs::release(&mut conn, job, name).await? {
                    tracing::warn!(job = %job.id, "lease lost before the hand-back; another worker has the job");
                }
                return Ok(false);
            }
            JobFailure::Media(e) => (
                e.code.as_str().to_string(),
                e.message,
                !e.code.is_transient(),
            ),
            JobFailure::Infrastructure(message) => ("transient".to_string(), message, false),
            JobFailure::InvalidProfile(message) => ("invalid_profile".to_string(), message, true),
            JobFailure::InvalidSpec(message) => ("internal".to_string(), message, true),
        };
        let give_up = permanent || job.is_last_attempt();
        let mut tx = self.db.begin().await?;
        let state_sql = if give_up {
            "state = 'failed', lease_expires_at = NULL"
        } else {
            "state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
             run_after = now() + $6 * interval '1 millisecond'"
        };
        let retry_in = jobs::backoff(job.counted_attempts());
        let owned = sqlx::query(&format!(
            "UPDATE jobs SET {state_sql}, last_error_code = $4, last_error_message = $5,
                    updated_at = now()
             WHERE {STILL_OURS}"
        ))
        .bind(job.id)
        .bind(name)
        .bind(job.attempts)
        .bind(&code)
        .bind(&message)
        .bind(retry_in.as_millis() as f64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if owned != 1 {
            return Ok(false);
        }
        if give_up {
            let detail = json!({ "code": code, "message": message });
            self.fail_for_good_in(&mut tx, job, &code, &message, detail)
                .await?;
            return tx.commit().await.map(|()| true);
        }
        if let Some(prefix) = preview {
            // This attempt's outputs are being removed: stop sending
            // learners there.
            sqlx::query(
                "UPDATE assets SET playable_prefix = NULL WHERE id = $1 AND playable_prefix = $2",
            )
            .bind(job.asset_id)
            .bind(prefix)
            .execute(&mut *tx)
            .await?;
        }
        if job.parent_id.is_some() {
            // The asset stays in transcoding while its other parts run.
            tracing::warn!(asset = %job.asset_id, part = %job.id, %code, %message, "part failed; will retry");
            return tx.commit().await.map(|()| false);
        }
        assets::transition_in(
            &mut tx,
            job.asset_id,
            AssetStatus::Uploaded,
            name,
            job.attempts,
            Some(json!({ "code": code, "message": message, "retry_in_s": retry_in.as_secs() })),
        )
        .await?;
        tracing::warn!(asset = %job.asset_id, %code, %message, ?retry_in, "transient failure; will retry");
        tx.commit().await.map(|()| false)
    }

    /// With `job`'s row already failed in `tx`: fails the asset with
    /// `code`. A part takes its parent and siblings with it, since one part
    /// that cannot be made means the asset cannot be finished. The preview
    /// goes too: the caller removes every output once `tx` commits.
    async fn fail_for_good_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        job: &ClaimedJob,
        code: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> sqlx::Result<()> {
        if let Some(parent) = job.parent_id {
            sqlx::query(
                "UPDATE jobs SET state = CASE WHEN id = $1 THEN 'failed' ELSE 'cancelled' END,
                        lease_expires_at = NULL, updated_at = now()
                 WHERE (id = $1 AND state = 'waiting')
                    OR (parent_id = $1 AND state IN ('queued', 'running'))",
            )
            .bind(parent)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query(
            "UPDATE assets SET error_code = $2, error_message = $3, playable_prefix = NULL
             WHERE id = $1",
        )
        .bind(job.asset_id)
        .bind(code)
        .bind(message)
        .execute(&mut **tx)
        .await?;
        assets::transition_in(
            tx,
            job.asset_id,
            AssetStatus::Failed,
            &self.config.name,
            job.attempts,
            Some(detail),
        )
        .await?;
        tracing::warn!(asset = %job.asset_id, %code, %message, "asset failed");
        Ok(())
    }

    /// Fails for good every job whose worker died on its last allowed
    /// attempt (see [`jobs::CRASHED_ON_LAST_ATTEMPT`]): such a source is
    /// likely to take down whichever worker claims it next, so it is not
    /// claimed again and its asset fails with `worker_crashed`.
    async fn fail_crashed_jobs(&self) -> sqlx::Result<()> {
        loop {
            let mut tx = self.db.begin().await?;
            let crashed: Option<ClaimedJob> = sqlx::query_as(&format!(
                "UPDATE jobs SET state = 'failed', lease_expires_at = NULL,
                        last_error_code = 'worker_crashed', updated_at = now()
                 WHERE id = (SELECT id FROM jobs WHERE {CRASHED_ON_LAST_ATTEMPT}
                             FOR UPDATE SKIP LOCKED LIMIT 1)
                 RETURNING {}",
                jobs::claimed_columns("jobs.lease_owner")
            ))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(job) = crashed else {
                return Ok(());
            };
            let what = match Stage::of(&job) {
                Ok(Stage::Part(part)) if part.index == 0 => {
                    "encoding the audio, poster and storyboard of this source".to_string()
                }
                Ok(Stage::Part(part)) => format!("encoding chunk {} of this source", part.index),
                Ok(Stage::Stitch(_)) => "packaging this source".to_string(),
                _ => "encoding this source".to_string(),
            };
            let message = format!(
                "the worker {what} stopped before finishing (it was killed, ran out of memory \
                 or crashed) on attempt {} of {}, the last allowed; a source that takes down \
                 its workers is usually damaged or extreme: check that it plays in a desktop \
                 player, or export it again as H.264/AAC MP4 and upload that",
                job.counted_attempts(),
                job.max_attempts
            );
            sqlx::query("UPDATE jobs SET last_error_message = $2 WHERE id = $1")
                .bind(job.id)
                .bind(&message)
                .execute(&mut *tx)
                .await?;
            let detail = json!({
                "code": "worker_crashed",
                "message": message,
                "job": job.id,
                "crashed_worker": job.taken_over_from,
            });
            self.fail_for_good_in(&mut tx, &job, "worker_crashed", &message, detail)
                .await?;
            tx.commit().await?;
            tracing::warn!(job = %job.id, asset = %job.asset_id, crashed_worker = ?job.taken_over_from, "job failed for good: its last attempt's worker died");
            self.remove_all_outputs(job.asset_id).await;
        }
    }

    /// Every attempt's outputs of an asset that failed for good.
    async fn remove_all_outputs(&self, asset_id: Uuid) {
        self.remove_prefix(&keys::output_root(asset_id)).await;
    }

    async fn remove_prefix(&self, prefix: &str) {
        match self.store.list(prefix).await {
            Ok(objects) => {
                for o in objects {
                    let _ = self.store.delete(&o.key).await;
                }
            }
            Err(e) => tracing::warn!(%prefix, error = %e, "cannot list outputs to remove"),
        }
    }

    /// Deletes outputs of attempts other than the published one.
    async fn collect_garbage(&self, asset_id: Uuid, keep: &str) {
        let root = keys::output_root(asset_id);
        match self.store.list(&root).await {
            Ok(objects) => {
                // Captions are uploaded per asset, not per attempt: they stay.
                let superseded = objects
                    .into_iter()
                    .filter(|o| !o.key.starts_with(keep) && !keys::is_captions(asset_id, &o.key));
                for o in superseded {
                    if let Err(e) = self.store.delete(&o.key).await {
                        tracing::warn!(key = %o.key, error = %e, "cannot delete superseded output");
                    }
                }
            }
            Err(e) => tracing::warn!(%root, error = %e, "cannot list superseded outputs"),
        }
    }
}

/// Records what the loudness pass measured and the gain applied; all
/// `NULL` for an encode without it (no audio), so a re-encode never keeps
/// an older measurement.
async fn store_loudness(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    asset: Uuid,
    loudness: Option<&LoudnessReport>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE assets SET loudness_integrated_lufs = $2, loudness_range_lu = $3,
                loudness_true_peak_dbtp = $4, loudness_target_lufs = $5,
                loudness_true_peak_max_dbtp = $6, loudness_gain_db = $7, loudness_outcome = $8
         WHERE id = $1",
    )
    .bind(asset)
    .bind(loudness.and_then(|l| l.measured.integrated_lufs))
    .bind(loudness.and_then(|l| l.measured.range_lu))
    .bind(loudness.and_then(|l| l.measured.true_peak_dbtp))
    .bind(loudness.and_then(|l| l.target_lufs))
    .bind(loudness.map(|l| l.true_peak_max_dbtp))
    .bind(loudness.map(|l| l.gain_db))
    .bind(loudness.map(|l| l.outcome.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Renews the lease every third of its length and writes progress; if the
/// lease is lost, cancels the encode so no further work is wasted.
async fn keep_lease(
    db: PgPool,
    job: ClaimedJob,
    worker: String,
    lease: Duration,
    progress: watch::Receiver<f64>,
    cancel: CancelFlag,
    lost: CancelFlag,
) {
    let mut last_written = -1.0;
    loop {
        tokio::time::sleep(lease / 3).await;
        match jobs::renew(&db, &job, &worker, lease).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                cancel.cancel();
                return;
            }
            // A database blip: the lease still has two thirds left; try again.
            Err(e) => tracing::warn!(job = %job.id, error = %e, "cannot renew lease"),
        }
        let pct = *progress.borrow();
        if (pct - last_written).abs() < 0.5 {
            continue;
        }
        let written = match job.parent_id {
            Some(parent) => jobs::record_part_progress(&db, &job, parent, pct).await,
            None => assets::set_progress(&db, job.asset_id, pct).await,
        };
        if written.is_ok() {
            last_written = pct;
        }
    }
}
