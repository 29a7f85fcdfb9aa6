//! probe → plan → encode → package, for one local source file into one local
//! directory. Publishing to storage and job durability sit above this.

use std::path::Path;
use std::time::Instant;

use lectern_packager::{self as packager, Manifest, Package, PackageError};
use lectern_transcoder::encode::{
    self, CancelFlag, EncodeOutput, EncodedRendition, SegmentObserver,
};
use lectern_transcoder::{
    content, ladder, probe, LadderPlan, LadderProfile, MediaError, MediaErrorCode, MediaInfo,
};
use serde::Serialize;

/// Everything one transcode learned and produced; `lectern transcode` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct TranscodeReport {
    pub info: MediaInfo,
    pub plan: LadderPlan,
    pub encoded: EncodeOutput,
    pub manifest: Manifest,
    pub elapsed_s: f64,
}

/// Probes `source`, plans its ladder with `profile`, encodes it into
/// `out_dir` and writes the HLS playlists and `manifest.json` next to the
/// segments. Blocking. `progress` gets 0–100 during the encode.
pub fn transcode_file(
    source: &Path,
    out_dir: &Path,
    profile: &LadderProfile,
    progress: &dyn Fn(f64),
    cancel: &CancelFlag,
) -> Result<TranscodeReport, MediaError> {
    transcode_file_observed(source, out_dir, profile, progress, cancel, |_| None)
}

/// [`transcode_file`], where `observe` may return a [`SegmentObserver`] for
/// the plan it is shown, to publish segments while the ladder encodes.
pub fn transcode_file_observed(
    source: &Path,
    out_dir: &Path,
    profile: &LadderProfile,
    progress: &dyn Fn(f64),
    cancel: &CancelFlag,
    observe: impl FnOnce(&LadderPlan) -> Option<SegmentObserver>,
) -> Result<TranscodeReport, MediaError> {
    let started = Instant::now();
    let info = probe::probe(source)?;
    let plan = plan_and_measure_title(source, &info, profile, cancel)?;
    let on_segment = observe(&plan);
    let encoded = encode::encode_ladder_observed(
        source, &info, &plan, out_dir, progress, cancel, on_segment,
    )?;
    let manifest = packager::write_hls(&package_of(&encoded), out_dir).map_err(package_error)?;
    Ok(TranscodeReport {
        info,
        plan,
        encoded,
        manifest,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// Plans `source`'s ladder: the profile's rungs, adapted to what the source
/// holds when the profile has content rules. Blocking (the analysis
/// decodes a few seconds of the source). An analysis that fails leaves the
/// profile's ladder: the probe accepted the file, so the encode will say
/// precisely what is wrong with it, if anything.
pub fn plan_title(
    source: &Path,
    info: &MediaInfo,
    profile: &LadderProfile,
) -> Result<LadderPlan, MediaError> {
    let plan = ladder::plan(info, profile)?;
    Ok(adapted_to_content(source, info, profile, plan))
}

/// `plan` adapted to what the source holds, when the profile has content
/// rules (the blocking part of [`plan_title`]).
fn adapted_to_content(
    source: &Path,
    info: &MediaInfo,
    profile: &LadderProfile,
    plan: LadderPlan,
) -> LadderPlan {
    if profile.content.is_none() {
        return plan;
    }
    match content::analyse(source, info) {
        Ok(analysis) => {
            tracing::info!(
                class = ?analysis.class,
                still_share = analysis.still_share,
                moving_area = analysis.moving_area,
                single_voice = analysis.single_voice,
                "content analysed"
            );
            ladder::adapt(plan, profile, analysis)
        }
        Err(e) => {
            tracing::warn!(error = %e, "content analysis failed; the profile's ladder is used");
            plan
        }
    }
}

/// [`plan_title`], with the audio's loudness measured at the same time, on
/// a second thread, for every layout the plan may give the audio rendition
/// (stereo, and mono when the profile has a single-voice rule): the content
/// analysis seldom keeps both cores busy, so the loudness pass costs less
/// wall time here than after the plan, where the encode would have to run
/// it before its first frame. A measurement that fails is dropped: the
/// encode then measures again and reports the failure itself.
fn plan_and_measure_title(
    source: &Path,
    info: &MediaInfo,
    profile: &LadderProfile,
    cancel: &CancelFlag,
) -> Result<LadderPlan, MediaError> {
    // Refusals (limits, nothing to play) come before any decoding.
    let plan = ladder::plan(info, profile)?;
    let layouts = ladder::possible_audio_layouts(&plan, profile);
    if layouts.is_empty() {
        return Ok(adapted_to_content(source, info, profile, plan));
    }
    std::thread::scope(|scope| {
        let measuring =
            scope.spawn(|| encode::measure_audio(source, &layouts, info.duration_s, cancel));
        let mut plan = adapted_to_content(source, info, profile, plan);
        let measured = match measuring.join() {
            Ok(Ok(measured)) => measured,
            Ok(Err(e)) => {
                if !cancel.is_cancelled() {
                    tracing::warn!(error = %e, "loudness pass beside the analysis failed; the encode measures again");
                }
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if let Some(audio) = plan.audio.as_mut() {
            let layout = audio.layout();
            if let (Some(loudness), Some(found)) = (
                audio.loudness.as_mut(),
                layouts.iter().position(|l| *l == layout),
            ) {
                loudness.measured = measured.get(found).copied();
            }
        }
        Ok(plan)
    })
}

/// The packager's view of the encode: it never depends on the transcoder.
pub fn package_of(encoded: &EncodeOutput) -> Package {
    Package {
        renditions: encoded.renditions.iter().map(rendition_of).collect(),
        poster: encoded.poster.clone(),
        storyboard: encoded
            .storyboard
            .as_ref()
            .map(|s| packager::StoryboardFiles {
                image: s.image.clone(),
                vtt: s.vtt.clone(),
            }),
    }
}

fn rendition_of(r: &EncodedRendition) -> packager::Rendition {
    packager::Rendition {
        kind: match r.kind {
            encode::RenditionKind::Video => packager::RenditionKind::Video,
            encode::RenditionKind::Audio => packager::RenditionKind::Audio,
        },
        name: r.name.clone(),
        dir: r.dir.clone(),
        codecs: r.codecs.clone(),
        width: r.width,
        height: r.height,
        frame_rate: r.frame_rate.map(|f| f.as_f64()),
        channels: r.channels,
        init_uri: r.init_file.clone(),
        segments: r
            .segments
            .iter()
            .map(|s| packager::Segment {
                uri: s.file_name.clone(),
                duration_s: s.duration_s,
                bytes: s.bytes,
                init_uri: None,
                iframes: iframes_of(s),
            })
            .collect(),
    }
}

/// The keyframe ranges the encoder found, as the packager lists them.
pub(crate) fn iframes_of(s: &encode::EncodedSegment) -> Vec<packager::IFrame> {
    s.keyframes
        .iter()
        .map(|k| packager::IFrame {
            offset: k.offset,
            length: k.length,
            time_s: k.time_s,
        })
        .collect()
}

fn package_error(e: PackageError) -> MediaError {
    let code = match e {
        PackageError::Io { .. } | PackageError::Storage { .. } => MediaErrorCode::Io,
        // The encoder handed over something unplayable: our bug, not the input's.
        PackageError::Invalid(_) => MediaErrorCode::Internal,
    };
    MediaError::new(code, e.to_string())
}
