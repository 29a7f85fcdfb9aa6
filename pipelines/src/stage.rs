//! What a claimed job is to do ([`Stage`]): a whole transcode, one part of
//! a chunked encode ([`PartSpec`]), or the stitch of a parent whose parts
//! are done ([`StitchSpec`]), read from the job's kind and its `spec`; and
//! when a source is long enough to be chunked ([`ChunkingConfig`]).

use lectern_assets::{keys, JobKind};
use lectern_packager::{self as packager, Rendition};
use lectern_transcoder::encode::EncodeScope;
use lectern_transcoder::loudness::LoudnessReport;
use lectern_transcoder::LadderPlan;
use serde::{Deserialize, Serialize};

use crate::failure::JobFailure;
use crate::jobs::ClaimedJob;

/// When a source is long enough to split, and into what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkingConfig {
    /// Sources at least this long (seconds) are split.
    pub threshold_s: f64,
    /// Target chunk length; chunks start at the first keyframe after it.
    pub chunk_s: f64,
}

/// What an `encode_part` job encodes (`jobs.spec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartSpec {
    /// 0: audio and artwork; 1…: video chunk `index - 1`.
    pub index: usize,
    pub scope: EncodeScope,
    /// The object the part reads: the asset's source for part 0, else the
    /// chunk file the parent uploaded.
    pub source_key: String,
    /// The chunk's duration (video), the whole source's (part 0).
    pub duration_s: f64,
    /// Share of the asset's progress: the chunk's duration; 0 for part 0.
    pub weight_s: f64,
    /// The parent attempt's output prefix, where every part writes.
    pub prefix: String,
    pub plan: LadderPlan,
}

/// A parent that has split and waits for its parts (`jobs.spec`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StitchSpec {
    pub stage: String,
    pub prefix: String,
    pub plan: LadderPlan,
    pub chunks: usize,
    /// When the split began, for the encode time recorded at ready.
    pub started_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) const STITCH: &str = "stitch";

/// What a part produced (`jobs.result`): renditions with the uploaded file
/// names, relative to each rendition's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartResult {
    pub renditions: Vec<Rendition>,
    pub poster: Option<String>,
    pub storyboard: Option<packager::StoryboardFiles>,
    /// Part 0's loudness measurement and gain (the audio is not split).
    #[serde(default)]
    pub loudness: Option<LoudnessReport>,
}

/// What a claimed job is to do.
pub(crate) enum Stage {
    /// A transcode job not split yet: the whole pipeline, or the split.
    Whole,
    Part(PartSpec),
    Stitch(StitchSpec),
}

impl Stage {
    pub(crate) fn of(job: &ClaimedJob) -> Result<Self, JobFailure> {
        let bad = |e: serde_json::Error| {
            JobFailure::InvalidSpec(format!("job {} has an unreadable spec: {e}", job.id))
        };
        match (job.kind, &job.spec) {
            (JobKind::EncodePart, Some(spec)) => Ok(Self::Part(
                serde_json::from_value(spec.clone()).map_err(bad)?,
            )),
            (JobKind::Transcode, Some(spec)) if spec["stage"] == STITCH => Ok(Self::Stitch(
                serde_json::from_value(spec.clone()).map_err(bad)?,
            )),
            (JobKind::Transcode, _) => Ok(Self::Whole),
            (JobKind::EncodePart, None) => Err(JobFailure::InvalidSpec(format!(
                "job {} of kind encode_part has no spec",
                job.id
            ))),
        }
    }

    /// Where this stage writes: a part or a stitch writes under the prefix
    /// of the attempt that split the source.
    pub(crate) fn prefix(&self, job: &ClaimedJob) -> String {
        match self {
            Self::Whole => keys::attempt_prefix(job.asset_id, job.attempts),
            Self::Part(p) => p.prefix.clone(),
            Self::Stitch(s) => s.prefix.clone(),
        }
    }
}
