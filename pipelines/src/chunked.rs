//! Chunked parallel encoding of long sources.
//!
//! A transcode job whose source is at least [`ChunkingConfig::threshold_s`]
//! long splits its video at keyframes into chunks of about
//! [`ChunkingConfig::chunk_s`] (a stream copy, see
//! `lectern_transcoder::split`), uploads them next to its outputs, and
//! becomes the parent of one `encode_part` job per chunk plus part 0: the
//! audio, poster and storyboard of the whole source. It then waits, holding
//! no lease. Parts are ordinary jobs: any worker claims them, with the same
//! leases, retries, backoff and attempt limit; a part that fails for good,
//! bad media or a worker dying on its last attempt (`worker_crashed`), fails
//! the parent and the asset and cancels the other parts. Every part encodes
//! onto the whole source's timeline, so the chunks' segments follow each
//! other with continuous decode times. The last part to succeed re-queues the parent in the same
//! transaction; the parent then stitches the parts' segment lists into one
//! set of playlists and switches the asset to ready exactly as a whole
//! encode does.
//!
//! Outputs stay attempt-safe: a part's files are named after the part and
//! its attempt (`p3a2_seg_00004.m4s`), and only the files listed in the
//! result of a part's winning attempt reach a playlist; the rest are
//! deleted once the asset is ready.
//!
//! Details that matter:
//! - The chunk target is rounded up to whole segments, so a seam between
//!   chunks does not leave a short segment where keyframes allow.
//! - Once the chunks are uploaded, creating the parts and turning the
//!   parent `waiting` (no lease) happen in one transaction fenced by the
//!   parent's claim, so a stale attempt cannot create parts.
//! - Parts inherit the parent's priority and the queue claims them before
//!   new transcodes of the same priority, so an asset already split
//!   finishes before new ones start.
//! - When stitching, a chunk whose init segment differs from the one
//!   before gets its own `EXT-X-MAP` and a discontinuity; the chunk
//!   sources and losing attempts' files are deleted before the switch to
//!   ready.
//! - Trick play survives stitching: a part's keyframe byte ranges are
//!   offsets inside its own segment files (renaming them changes nothing),
//!   and the stitched I-frame playlists take the same `EXT-X-MAP` and
//!   discontinuity as the media playlists. Loudness is measured by part 0,
//!   which has the whole audio; its result carries it to the stitch.
//! - A cancelled sibling still running notices at its next lease renewal
//!   (its job is no longer `running`) and stops, removing its own outputs.
//!
//! Trade-offs: a chunked asset becomes playable when stitched, not
//! progressively (`crate::progressive` serves whole encodes only); rotated
//! sources encode whole, since Matroska chunks would lose the container's
//! display matrix.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use bytes::Bytes;
use lectern_packager::{self as packager, Package, Rendition, RenditionKind, Segment};
use lectern_storage::PutOptions;
use lectern_transcoder::encode::{self, CancelFlag, EncodeOutput, EncodeScope};
use lectern_transcoder::{split, LadderPlan, MediaInfo};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::failure::JobFailure;
use crate::jobs::{write_asset_progress, ClaimedJob, STILL_OURS};
use crate::stage::{ChunkingConfig, PartResult, PartSpec, StitchSpec, STITCH};
use crate::worker::Worker;
use lectern_assets::{self as assets, keys, AssetStatus, JobKind};

/// A part's file names carry the part and the attempt, so a stale attempt's
/// files can never be mistaken for the winner's.
fn part_tag(index: usize, attempt: i32) -> String {
    format!("p{index}a{attempt}_")
}

/// Whether `key`'s file name is a part output of any attempt.
fn is_part_output(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or_default();
    let Some(rest) = name.strip_prefix('p') else {
        return false;
    };
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(rest);
    n > 0 && rest[n..].starts_with('a') && {
        let after = &rest[n + 1..];
        let m = digits(after);
        m > 0 && after[m..].starts_with('_')
    }
}

fn chunk_key(prefix: &str, index: usize) -> String {
    keys::chunk_key(prefix, index)
}

impl Worker {
    /// Splits `source` and hands the encode to part jobs. Returns `false`
    /// (nothing done) when the video has too few keyframes to make two chunks.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn split_into_parts(
        &self,
        job: &ClaimedJob,
        source: &Path,
        source_key: &str,
        info: &MediaInfo,
        plan: &LadderPlan,
        prefix: &str,
        scratch: &Path,
        chunking: ChunkingConfig,
    ) -> Result<bool, JobFailure> {
        let started_at = chrono::Utc::now();
        let (source_path, chunks_dir) = (source.to_path_buf(), scratch.join("chunks"));
        // Whole segments per chunk where the source's keyframes allow: a
        // chunk that ends mid-segment leaves a short segment at the seam.
        let segment_s = plan.segment_duration_s.max(1.0);
        let target_s = (chunking.chunk_s / segment_s).ceil() * segment_s;
        let chunks = tokio::task::spawn_blocking(move || {
            split::split_video(&source_path, &chunks_dir, target_s)
        })
        .await
        .map_err(|e| JobFailure::Infrastructure(format!("split thread: {e}")))?
        .map_err(JobFailure::Media)?;
        if chunks.len() < 2 {
            return Ok(false);
        }
        let mut parts = vec![PartSpec {
            index: 0,
            scope: EncodeScope::AudioAndArtwork,
            source_key: source_key.to_string(),
            duration_s: info.duration_s,
            weight_s: 0.0,
            prefix: prefix.to_string(),
            plan: plan.clone(),
        }];
        for chunk in &chunks {
            let key = chunk_key(prefix, chunk.index);
            self.store
                .put_file(&key, &chunk.path, PutOptions::default())
                .await?;
            parts.push(PartSpec {
                index: chunk.index + 1,
                scope: EncodeScope::VideoChunk {
                    start_s: chunk.start_s,
                },
                source_key: key,
                duration_s: chunk.duration_s,
                weight_s: chunk.duration_s,
                prefix: prefix.to_string(),
                plan: plan.clone(),
            });
        }
        let stitch = StitchSpec {
            stage: STITCH.into(),
            prefix: prefix.to_string(),
            plan: plan.clone(),
            chunks: chunks.len(),
            started_at,
        };
        let mut tx = self.db.begin().await?;
        let priority: Option<i32> = sqlx::query_scalar(&format!(
            "UPDATE jobs SET state = 'waiting', lease_owner = NULL, lease_expires_at = NULL,
                    spec = $4, updated_at = now()
             WHERE {STILL_OURS} RETURNING priority"
        ))
        .bind(job.id)
        .bind(&self.config.name)
        .bind(job.attempts)
        .bind(serde_json::to_value(&stitch).expect("spec serialises"))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(priority) = priority else {
            return Err(JobFailure::LeaseLost);
        };
        // Each part's span continues this job's trace.
        let traceparent = lectern_telemetry::current_traceparent();
        for part in &parts {
            sqlx::query(
                "INSERT INTO jobs (id, kind, asset_id, priority, parent_id, spec, traceparent)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(Uuid::new_v4())
            .bind(JobKind::EncodePart)
            .bind(job.asset_id)
            .bind(priority)
            .bind(job.id)
            .bind(serde_json::to_value(part).expect("spec serialises"))
            .bind(&traceparent)
            .execute(&mut *tx)
            .await?;
        }
        assets::transition_in(
            &mut tx,
            job.asset_id,
            AssetStatus::Transcoding,
            &self.config.name,
            job.attempts,
            Some(json!({
                "chunks": chunks.len(),
                "chunk_starts_s": chunks.iter().map(|c| c.start_s).collect::<Vec<_>>(),
            })),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(asset = %job.asset_id, chunks = chunks.len(), "source split into parts");
        Ok(true)
    }

    /// Encodes one part and uploads its files; the last part to finish
    /// re-queues the parent.
    pub(crate) async fn run_part(
        &self,
        job: &ClaimedJob,
        part: &PartSpec,
        scratch: &Path,
        progress: &watch::Sender<f64>,
        cancel: &CancelFlag,
    ) -> Result<(), JobFailure> {
        let parent = job
            .parent_id
            .ok_or_else(|| JobFailure::InvalidSpec(format!("part {} has no parent", job.id)))?;
        tokio::fs::create_dir_all(scratch).await?;
        let source = scratch.join("source");
        self.download(&part.source_key, &source).await?;
        let info: serde_json::Value =
            sqlx::query_scalar("SELECT media_info FROM assets WHERE id = $1")
                .bind(job.asset_id)
                .fetch_one(&self.db)
                .await?;
        let mut info: MediaInfo = serde_json::from_value(info).map_err(|e| {
            JobFailure::InvalidSpec(format!("asset {} media_info: {e}", job.asset_id))
        })?;
        info.duration_s = part.duration_s;

        let out = scratch.join("out");
        let (plan, scope) = (part.plan.clone(), part.scope);
        let (progress, cancel) = (progress.clone(), cancel.clone());
        let encode_out = out.clone();
        let span = tracing::Span::current();
        let encoded = tokio::task::spawn_blocking(move || {
            let _job = span.enter();
            let on_progress = |pct: f64| {
                let _ = progress.send(pct);
            };
            encode::encode_scoped(
                &source,
                &info,
                &plan,
                scope,
                &encode_out,
                &on_progress,
                &cancel,
                None,
            )
        })
        .await
        .map_err(|e| JobFailure::Infrastructure(format!("encode thread: {e}")))?
        .map_err(JobFailure::Media)?;

        let result = self.upload_part(&out, &encoded, part, job.attempts).await?;

        let mut tx = self.db.begin().await?;
        // Serialises the parts' completions: exactly one sees none left.
        sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(parent)
            .execute(&mut *tx)
            .await?;
        let owned = sqlx::query(&format!(
            "UPDATE jobs SET state = 'succeeded', lease_expires_at = NULL, result = $4,
                    progress = 100, updated_at = now()
             WHERE {STILL_OURS}"
        ))
        .bind(job.id)
        .bind(&self.config.name)
        .bind(job.attempts)
        .bind(serde_json::to_value(&result).expect("result serialises"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if owned != 1 {
            return Err(JobFailure::LeaseLost);
        }
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE parent_id = $1 AND state <> 'succeeded'",
        )
        .bind(parent)
        .fetch_one(&mut *tx)
        .await?;
        if left == 0 {
            sqlx::query(
                "UPDATE jobs SET state = 'queued', run_after = now(), updated_at = now()
                 WHERE id = $1 AND state = 'waiting'",
            )
            .bind(parent)
            .execute(&mut *tx)
            .await?;
        }
        write_asset_progress(&mut tx, job.asset_id, parent).await?;
        tx.commit().await?;
        tracing::info!(asset = %job.asset_id, part = part.index, left, "part encoded");
        Ok(())
    }

    async fn upload_part(
        &self,
        out: &Path,
        encoded: &EncodeOutput,
        part: &PartSpec,
        attempt: i32,
    ) -> Result<PartResult, JobFailure> {
        let tag = part_tag(part.index, attempt);
        let mut renditions = Vec::new();
        for r in &encoded.renditions {
            let put = |file: &str| {
                (
                    out.join(&r.dir).join(file),
                    format!("{}{}/{tag}{file}", part.prefix, r.dir),
                    packager::put_options(file),
                )
            };
            let (local, key, options) = put(&r.init_file);
            self.store.put_file(&key, &local, options).await?;
            let mut segments = Vec::with_capacity(r.segments.len());
            for s in &r.segments {
                let (local, key, options) = put(&s.file_name);
                self.store.put_file(&key, &local, options).await?;
                segments.push(Segment {
                    uri: format!("{tag}{}", s.file_name),
                    duration_s: s.duration_s,
                    bytes: s.bytes,
                    init_uri: None,
                    // Offsets within the file: renaming it changes nothing.
                    iframes: crate::transcode::iframes_of(s),
                });
            }
            let mut rendition = crate::transcode::package_of(&EncodeOutput {
                renditions: vec![r.clone()],
                poster: None,
                storyboard: None,
                loudness: None,
            })
            .renditions
            .remove(0);
            rendition.init_uri = format!("{tag}{}", r.init_file);
            rendition.segments = segments;
            renditions.push(rendition);
        }
        // Artwork keeps its names: the storyboard's WebVTT names its image.
        let package = crate::transcode::package_of(encoded);
        let artwork = package
            .poster
            .iter()
            .chain(package.storyboard.iter().flat_map(|s| [&s.image, &s.vtt]));
        for file in artwork {
            self.store
                .put_file(
                    &format!("{}{file}", part.prefix),
                    &out.join(file),
                    packager::put_options(file),
                )
                .await?;
        }
        Ok(PartResult {
            renditions,
            poster: package.poster,
            storyboard: package.storyboard,
            loudness: encoded.loudness,
        })
    }

    /// Joins the parts' renditions into one ladder, publishes its playlists
    /// and switches the asset to ready.
    pub(crate) async fn run_stitch(
        &self,
        job: &ClaimedJob,
        stitch: &StitchSpec,
        scratch: &Path,
    ) -> Result<(), JobFailure> {
        let name = &self.config.name;
        assets::transition(
            &self.db,
            job.asset_id,
            AssetStatus::Packaging,
            name,
            job.attempts,
            Some(json!({ "stitching": stitch.chunks })),
        )
        .await?;
        let rows: Vec<(serde_json::Value, Option<serde_json::Value>, String)> = sqlx::query_as(
            "SELECT spec, result, state FROM jobs WHERE parent_id = $1
             ORDER BY (spec->>'index')::int",
        )
        .bind(job.id)
        .fetch_all(&self.db)
        .await?;
        let mut results = Vec::with_capacity(rows.len());
        for (spec, result, state) in rows {
            let spec: PartSpec = serde_json::from_value(spec)
                .map_err(|e| JobFailure::InvalidSpec(format!("part spec: {e}")))?;
            let result = match (state.as_str(), result) {
                ("succeeded", Some(result)) => serde_json::from_value::<PartResult>(result)
                    .map_err(|e| JobFailure::InvalidSpec(format!("part result: {e}")))?,
                _ => {
                    return Err(JobFailure::Infrastructure(format!(
                        "part {} is {state}, not succeeded",
                        spec.index
                    )))
                }
            };
            results.push((spec, result));
        }
        if results.len() != stitch.chunks + 1 {
            return Err(JobFailure::InvalidSpec(format!(
                "{} parts for {} chunks",
                results.len(),
                stitch.chunks
            )));
        }
        let package = self.stitched_package(&stitch.prefix, &results).await?;
        let loudness = results
            .iter()
            .find(|(spec, _)| spec.index == 0)
            .and_then(|(_, result)| result.loudness);

        let local = scratch.join("stitched");
        for r in &package.renditions {
            tokio::fs::create_dir_all(local.join(&r.dir)).await?;
        }
        let (write_package, write_dir) = (package.clone(), local.clone());
        let manifest =
            tokio::task::spawn_blocking(move || packager::write_hls(&write_package, &write_dir))
                .await
                .map_err(|e| JobFailure::Infrastructure(format!("packaging thread: {e}")))?
                .map_err(|e| JobFailure::Infrastructure(format!("packaging: {e}")))?;
        packager::publish(&local, self.store.as_ref(), &stitch.prefix)
            .await
            .map_err(|e| JobFailure::Infrastructure(format!("publishing: {e}")))?;
        let encode_s = (chrono::Utc::now() - stitch.started_at).num_milliseconds() as f64 / 1e3;
        // Before the switch, so a reader of the ready asset finds its prefix
        // final; nothing deleted here is named by the new playlists.
        self.remove_part_leftovers(&stitch.prefix, &package).await;
        self.finish_ready(job, &stitch.prefix, &manifest, loudness.as_ref(), encode_s)
            .await
    }

    /// Video rungs highest first (the plan's order), each the chunks'
    /// segments in order, then part 0's audio. A chunk whose init segment
    /// differs from the one before starts with its own `EXT-X-MAP`.
    async fn stitched_package(
        &self,
        prefix: &str,
        parts: &[(PartSpec, PartResult)],
    ) -> Result<Package, JobFailure> {
        let (_, artwork) = parts
            .iter()
            .find(|(spec, _)| spec.index == 0)
            .ok_or_else(|| JobFailure::InvalidSpec("part 0 is missing".into()))?;
        let plan = &parts[0].0.plan;
        let mut inits: BTreeMap<String, Bytes> = BTreeMap::new();
        let mut renditions = Vec::new();
        for rung in &plan.video {
            let mut stitched: Option<Rendition> = None;
            let mut previous_init: Option<Bytes> = None;
            for (_, result) in parts.iter().filter(|(spec, _)| spec.index > 0) {
                let r = result
                    .renditions
                    .iter()
                    .find(|r| r.kind == RenditionKind::Video && r.name == rung.name)
                    .ok_or_else(|| {
                        JobFailure::InvalidSpec(format!("a chunk lacks rung {}", rung.name))
                    })?;
                let key = format!("{prefix}{}/{}", r.dir, r.init_uri);
                let init = match inits.get(&key) {
                    Some(bytes) => bytes.clone(),
                    None => {
                        let bytes = self.store.get(&key, None).await?.bytes().await?;
                        inits.insert(key, bytes.clone());
                        bytes
                    }
                };
                let mut segments = r.segments.clone();
                match &mut stitched {
                    None => stitched = Some(r.clone()),
                    Some(all) => {
                        if previous_init.as_ref() != Some(&init) {
                            segments[0].init_uri = Some(r.init_uri.clone());
                        }
                        all.segments.extend(segments);
                    }
                }
                previous_init = Some(init);
            }
            renditions.extend(stitched);
        }
        renditions.extend(
            artwork
                .renditions
                .iter()
                .filter(|r| r.kind == RenditionKind::Audio)
                .cloned(),
        );
        Ok(Package {
            renditions,
            poster: artwork.poster.clone(),
            storyboard: artwork.storyboard.clone(),
        })
    }

    /// Deletes the chunk sources and the files of parts' losing attempts.
    async fn remove_part_leftovers(&self, prefix: &str, package: &Package) {
        let referenced: HashSet<String> = package
            .renditions
            .iter()
            .flat_map(|r| {
                std::iter::once(format!("{prefix}{}/{}", r.dir, r.init_uri)).chain(
                    r.segments.iter().flat_map(move |s| {
                        std::iter::once(format!("{prefix}{}/{}", r.dir, s.uri)).chain(
                            s.init_uri
                                .iter()
                                .map(move |i| format!("{prefix}{}/{i}", r.dir)),
                        )
                    }),
                )
            })
            .collect();
        let objects = match self.store.list(prefix).await {
            Ok(objects) => objects,
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "cannot list part leftovers");
                return;
            }
        };
        let chunks = format!("{prefix}parts/");
        for o in objects {
            let stale = o.key.starts_with(&chunks)
                || (is_part_output(&o.key) && !referenced.contains(&o.key));
            if stale {
                if let Err(e) = self.store.delete(&o.key).await {
                    tracing::warn!(key = %o.key, error = %e, "cannot delete a part leftover");
                }
            }
        }
    }

    /// Removes what one attempt of one part uploaded.
    pub(crate) async fn remove_part_attempt(&self, part: &PartSpec, attempt: i32) {
        let tag = format!("/{}", part_tag(part.index, attempt));
        match self.store.list(&part.prefix).await {
            Ok(objects) => {
                for o in objects.into_iter().filter(|o| o.key.contains(&tag)) {
                    let _ = self.store.delete(&o.key).await;
                }
            }
            Err(e) => {
                tracing::warn!(prefix = %part.prefix, error = %e, "cannot list a part's outputs")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_outputs_are_recognised_by_name() {
        assert!(is_part_output(
            "assets/x/out/attempt-1/v/720p/p3a2_seg_00004.m4s"
        ));
        assert!(is_part_output("p0a1_init.mp4"));
        assert!(!is_part_output(
            "assets/x/out/attempt-1/v/720p/seg_00004.m4s"
        ));
        assert!(!is_part_output("assets/x/out/attempt-1/poster.jpg"));
        assert!(!is_part_output("v/720p/pa1_x"));
        assert!(!is_part_output("v/720p/p1a_x"));
        assert_eq!(part_tag(3, 2), "p3a2_");
    }
}
