//! Fast first playback: while the whole ladder encodes, the lowest video
//! rung and the audio are published segment by segment under the attempt's
//! prefix, with growing `EVENT` playlists and a master listing just them.
//! From the first segment of each, the asset's `playable_prefix` points
//! there, so a learner can start within seconds of the upload finishing,
//! however long the source. The final publish of the same attempt rewrites
//! these playlists as `VOD` and the master with every rung.
//!
//! The encoder reports each segment as libavformat closes it; segments are
//! uploaded before the playlist that names them, and growing playlists
//! are sent with a one-second `max-age` (`GROWING_PLAYLIST_CACHE`) so a
//! CDN cannot hold a stale one for long. The lowest rung is the one that
//! starts on any network. `playable_prefix` is set only while this worker
//! still owns the job, so a stale attempt is never what learners are sent
//! to. Publishing here is best effort: a failure is logged and the final
//! publish still makes the asset whole.
//!
//! An attempt that ends otherwise never leaves `playable_prefix` naming
//! missing objects: a failed one clears it before deleting its preview; a
//! drained one keeps the preview, still pointed at, and the next attempt
//! (which writes under its own prefix) replaces it from its first segments
//! and collects it when the asset is ready (see [`crate::worker`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use lectern_packager::{self as packager, Package, Rendition, RenditionKind, Segment};
use lectern_storage::{PutOptions, Store};
use lectern_transcoder::encode::{SegmentObserver, SegmentReady};
use lectern_transcoder::LadderPlan;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::jobs::{ClaimedJob, STILL_OURS};

/// The renditions published progressively for `plan`: the lowest video
/// rung (cheapest to start on any network) and the audio.
pub fn observer_for(plan: &LadderPlan, tx: mpsc::UnboundedSender<SegmentReady>) -> SegmentObserver {
    let lowest = plan.video.last().map(|r| r.name.clone());
    let audio = plan.audio.as_ref().map(|a| a.name.clone());
    Arc::new(move |segment: SegmentReady| {
        let wanted = match segment.kind {
            lectern_transcoder::encode::RenditionKind::Video => lowest.as_ref(),
            lectern_transcoder::encode::RenditionKind::Audio => audio.as_ref(),
        };
        if wanted == Some(&segment.rendition) {
            // The receiver outlives the encode; a send can only fail after
            // the publisher gave up, when there is nothing left to do.
            let _ = tx.send(segment);
        }
    })
}

pub struct Publisher {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    pub job: ClaimedJob,
    pub worker: String,
    /// Where the encoder writes, and the attempt prefix in storage.
    pub out_dir: PathBuf,
    pub prefix: String,
    pub plan: LadderPlan,
}

impl Publisher {
    /// Publishes segments as they arrive until the encode ends (the sender
    /// is dropped). Failures are logged, never fatal: the final publish
    /// still delivers the whole ladder.
    pub async fn run(self, mut rx: mpsc::UnboundedReceiver<SegmentReady>) {
        let expected = self.plan.video.len().min(1) + usize::from(self.plan.audio.is_some());
        let mut renditions: BTreeMap<String, Rendition> = BTreeMap::new();
        let mut playable = false;
        while let Some(segment) = rx.recv().await {
            if let Err(e) = self.publish(&segment, &mut renditions).await {
                tracing::warn!(asset = %self.job.asset_id, error = %e, "progressive publish failed; the final publish will cover it");
                continue;
            }
            let ready = renditions
                .values()
                .filter(|r| !r.segments.is_empty())
                .count();
            // The preview master names the same playlists for the whole
            // encode: written once, when each has its first segment.
            if !playable && ready == expected {
                if let Err(e) = self.publish_master(&renditions).await {
                    tracing::warn!(asset = %self.job.asset_id, error = %e, "cannot publish the preview master");
                    continue;
                }
                playable = true;
                tracing::info!(asset = %self.job.asset_id, prefix = %self.prefix, "first playable");
            }
        }
    }

    async fn publish(
        &self,
        segment: &SegmentReady,
        renditions: &mut BTreeMap<String, Rendition>,
    ) -> Result<(), String> {
        let local = self.out_dir.join(&segment.dir);
        let key = |file: &str| format!("{}{}/{file}", self.prefix, segment.dir);
        let rendition = renditions
            .entry(segment.dir.clone())
            .or_insert_with(|| self.rendition_for(segment));
        if rendition.segments.is_empty() {
            let init = &segment.init_file;
            self.store
                .put_file(&key(init), &local.join(init), packager::put_options(init))
                .await
                .map_err(|e| e.to_string())?;
        }
        let file = local.join(&segment.file_name);
        let bytes = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
        self.store
            .put_file(
                &key(&segment.file_name),
                &file,
                packager::put_options(&segment.file_name),
            )
            .await
            .map_err(|e| e.to_string())?;
        rendition.segments.push(Segment {
            uri: segment.file_name.clone(),
            duration_s: segment.duration_s,
            bytes,
            init_uri: None,
            // A growing preview has no trick play; the finished ladder does.
            iframes: Vec::new(),
        });
        let target = self
            .plan
            .segment_duration_s
            .max(self.plan.video.first().map_or(0.0, |v| {
                f64::from(v.keyframe_interval_frames) / v.frame_rate.as_f64()
            }));
        let mut text = Vec::new();
        packager::event_playlist(rendition, target)
            .write_to(&mut text)
            .map_err(|e| e.to_string())?;
        self.put_growing(&key(packager::MEDIA_PLAYLIST), text).await
    }

    async fn publish_master(&self, renditions: &BTreeMap<String, Rendition>) -> Result<(), String> {
        // Video before audio, as the packager expects.
        let mut ordered: Vec<Rendition> = renditions.values().cloned().collect();
        ordered.sort_by_key(|r| r.kind == RenditionKind::Audio);
        let package = Package {
            renditions: ordered,
            poster: None,
            storyboard: None,
        };
        let mut text = Vec::new();
        packager::master_playlist(&package)
            .write_to(&mut text)
            .map_err(|e| e.to_string())?;
        self.put_growing(
            &format!("{}{}", self.prefix, packager::MASTER_PLAYLIST),
            text,
        )
        .await?;
        // Only while this worker still owns the job: a stale attempt must
        // never be what learners are sent to.
        sqlx::query(&format!(
            "UPDATE assets SET playable_prefix = $4, first_playable_at = now()
             WHERE id = $5 AND EXISTS (SELECT 1 FROM jobs WHERE {STILL_OURS})"
        ))
        .bind(self.job.id)
        .bind(&self.worker)
        .bind(self.job.attempts)
        .bind(&self.prefix)
        .bind(self.job.asset_id)
        .execute(&self.db)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn put_growing(&self, key: &str, text: Vec<u8>) -> Result<(), String> {
        let options = PutOptions {
            content_type: Some("application/vnd.apple.mpegurl".into()),
            cache_control: Some(packager::GROWING_PLAYLIST_CACHE.into()),
        };
        self.store
            .put_bytes(key, Bytes::from(text), options)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn rendition_for(&self, segment: &SegmentReady) -> Rendition {
        let video = self.plan.video.iter().find(|v| v.name == segment.rendition);
        let audio = self
            .plan
            .audio
            .as_ref()
            .filter(|a| a.name == segment.rendition);
        Rendition {
            kind: match segment.kind {
                lectern_transcoder::encode::RenditionKind::Video => RenditionKind::Video,
                lectern_transcoder::encode::RenditionKind::Audio => RenditionKind::Audio,
            },
            name: segment.rendition.clone(),
            dir: segment.dir.clone(),
            codecs: segment.codecs.clone(),
            width: video.map(|v| v.width),
            height: video.map(|v| v.height),
            frame_rate: video.map(|v| v.frame_rate.as_f64()),
            channels: audio.map(|a| a.channels),
            init_uri: segment.init_file.clone(),
            segments: Vec::new(),
        }
    }
}
