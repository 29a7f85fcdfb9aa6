//! Ladder planning: from a probed source and a profile (data, TOML in
//! `pipelines/profiles/`) to the exact renditions to encode.
//!
//! The plan is the contract between planning and the encoder: the encoder
//! does exactly what the plan says and decides nothing itself.

use serde::{Deserialize, Serialize};

use crate::content::{ContentAnalysis, ContentClass};
use crate::error::{MediaError, MediaErrorCode};
use crate::loudness::{LoudnessPlan, LoudnessTarget, DEFAULT_TRUE_PEAK_MAX_DBTP};
use crate::media_info::{MediaInfo, Rational, StreamInfo, VideoStream};

/// An encoding profile as operators write it (TOML). Heights are targets;
/// planning drops rungs the source cannot fill (never upscale).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderProfile {
    pub name: String,
    /// Target segment length; keyframes are forced on this grid in every rung.
    pub segment_duration_s: f64,
    /// x264 preset for every rung, e.g. `veryfast`.
    pub x264_preset: String,
    /// x264 tune, e.g. `stillimage` for slides; none by default.
    #[serde(default)]
    pub x264_tune: Option<String>,
    /// Rungs, highest first.
    pub rungs: Vec<RungProfile>,
    pub audio: AudioProfile,
    /// How a title's measured content changes the ladder ([`adapt`]); absent
    /// means every title gets exactly the rungs above.
    #[serde(default)]
    pub content: Option<ContentRules>,
}

/// Per-class changes to a profile, as operators write them (TOML
/// `[content.slides]`, `[content.talking_head]`, `[content.motion]`,
/// `[content.single_voice_audio]`). A class without a section keeps the
/// profile as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRules {
    #[serde(default)]
    pub slides: Option<ClassRules>,
    #[serde(default)]
    pub talking_head: Option<ClassRules>,
    #[serde(default)]
    pub motion: Option<ClassRules>,
    /// The audio rendition for a mono source or a stereo one carrying one
    /// voice twice: the same sound in one channel at a lower rate.
    #[serde(default)]
    pub single_voice_audio: Option<VoiceAudio>,
}

/// The mono rendition of one voice; loudness follows the profile's `[audio]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceAudio {
    pub bitrate_kbps: u32,
    pub sample_rate: u32,
}

/// The filter a rung is scaled down with when it is half its source's
/// size or less (above that, bilinear: see `encode::scale_method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downscaler {
    /// Windowed sinc: keeps a natural picture's fine detail (the real
    /// clip's 240p: 0.868 SSIM against bilinear's 0.854 and ffmpeg's
    /// bicubic 0.866, same bytes).
    #[default]
    Sinc,
    /// Catmull-Rom cubic: no ringing beside the sharp edges of text and
    /// flat graphics, which sinc rings around and a capped low rung then
    /// spends its bits on (a talking head over a slide: 0.905 against
    /// sinc's 0.894).
    Cubic,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRules {
    /// Added to every rung's CRF (negative: sharper).
    #[serde(default)]
    pub crf_offset: i8,
    /// Multiplies every rung's rate cap and buffer.
    #[serde(default)]
    pub maxrate_scale: Option<f64>,
    /// Replaces the profile's x264 tune.
    #[serde(default)]
    pub x264_tune: Option<String>,
    /// Replaces the segment length, and with it the keyframe interval: a
    /// still picture costs a full keyframe every segment, so slides take
    /// longer segments.
    #[serde(default)]
    pub segment_duration_s: Option<f64>,
    /// Keep only the top and the bottom rung: when a top-rung picture costs
    /// less than a middle rung's budget, the middle rungs serve nobody.
    #[serde(default)]
    pub top_and_bottom_only: bool,
    /// Drop rungs shorter than this (before `top_and_bottom_only`): below
    /// it the class's picture stops serving its purpose — a slide's text
    /// becomes unreadable — while the rung still costs an encode. The top
    /// rung always stays.
    #[serde(default)]
    pub min_height: Option<u32>,
    /// Replaces the filter for rungs scaled to half size or less.
    #[serde(default)]
    pub downscaler: Option<Downscaler>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungProfile {
    /// Short name used in paths, e.g. `720p`.
    pub name: String,
    /// Target height of a landscape picture (the short side for portrait).
    pub height: u32,
    /// Capped CRF: quality target…
    pub crf: u8,
    /// …never above this rate over `bufsize_kbps` of buffer.
    pub maxrate_kbps: u32,
    pub bufsize_kbps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioProfile {
    pub bitrate_kbps: u32,
    pub sample_rate: u32,
    /// Integrated loudness (EBU R128, LUFS) the audio rendition is brought
    /// to, or `"off"` to measure only. Default −16.
    #[serde(default)]
    pub loudness_target_lufs: LoudnessTarget,
    /// The true peak the gain may not push the audio over (dBTP). Default −1.
    #[serde(default = "default_true_peak_max_dbtp")]
    pub true_peak_max_dbtp: f64,
}

fn default_true_peak_max_dbtp() -> f64 {
    DEFAULT_TRUE_PEAK_MAX_DBTP
}

/// What to encode, decided once per source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LadderPlan {
    pub profile: String,
    pub segment_duration_s: f64,
    /// Highest first. Empty for audio-only sources.
    pub video: Vec<VideoRendition>,
    /// None for sources without audio.
    pub audio: Option<AudioRendition>,
    /// What the source was measured to hold, when the profile adapts to
    /// content; the plan above is already adapted.
    #[serde(default)]
    pub content: Option<ContentAnalysis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRendition {
    pub name: String,
    /// Output picture size after rotation, both even.
    pub width: u32,
    pub height: u32,
    /// Constant output frame rate (VFR sources are made constant).
    pub frame_rate: Rational,
    /// Frames between forced keyframes: `segment_duration_s × frame_rate`.
    pub keyframe_interval_frames: u32,
    pub crf: u8,
    pub maxrate_kbps: u32,
    pub bufsize_kbps: u32,
    pub x264_preset: String,
    pub x264_tune: Option<String>,
    /// H.264 profile name for x264 (`high`), and the level the encoder is told,
    /// spelled as GStreamer `video/x-h264` caps spell it: `3`, `3.1`, `4`, `4.2`.
    pub h264_profile: String,
    pub h264_level: String,
    /// GStreamer colorimetry every rung is encoded and tagged in (`bt709`,
    /// `bt601`, `bt2020`): the source's own, so no rung converts the
    /// matrix and an ABR switch never shifts colour. None leaves it to
    /// GStreamer (HDR sources, whose transfer this must not rewrite).
    #[serde(default)]
    pub colorimetry: Option<String>,
    /// How this rung is scaled when it is half its source's size or less.
    #[serde(default)]
    pub downscaler: Downscaler,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioRendition {
    pub name: String,
    /// AAC-LC: stereo (surround is downmixed), or mono when the profile
    /// gives a single voice its own rendition ([`adapt`]).
    pub channels: u16,
    pub sample_rate: u32,
    pub bitrate_kbps: u32,
    /// Loudness measurement and normalisation (see [`crate::loudness`]);
    /// `None` in plans made before it existed: no measurement, no gain.
    #[serde(default)]
    pub loudness: Option<LoudnessPlan>,
}

impl AudioRendition {
    pub fn layout(&self) -> AudioLayout {
        AudioLayout {
            channels: self.channels,
            sample_rate: self.sample_rate,
        }
    }
}

/// Channels and sample rate an audio rendition is encoded at, which is
/// what its loudness is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLayout {
    pub channels: u16,
    pub sample_rate: u32,
}

/// Every layout [`adapt`] may give `plan`'s audio rendition, the plan's own
/// first; none when the rendition is not to be normalised. A caller can
/// measure them all in one pass while the content analysis runs, and keep
/// the one the adapted plan chose.
pub fn possible_audio_layouts(plan: &LadderPlan, profile: &LadderProfile) -> Vec<AudioLayout> {
    let Some(audio) = plan.audio.as_ref().filter(|a| a.loudness.is_some()) else {
        return Vec::new();
    };
    let mut layouts = vec![audio.layout()];
    if let Some(voice) = profile
        .content
        .as_ref()
        .and_then(|rules| rules.single_voice_audio.as_ref())
    {
        let single = AudioLayout {
            channels: 1,
            sample_rate: voice.sample_rate,
        };
        if !layouts.contains(&single) {
            layouts.push(single);
        }
    }
    layouts
}

/// Sources beyond these are refused by [`SourceLimits::check`] right after
/// the probe, before anything decodes them, with `frame_too_large` or
/// `duration_too_long`: a decoder handed a huge picture can exhaust a
/// worker's memory and take it down, and a day-long source ties a worker
/// up for hours; nobody streams 8K lectures or lectures longer than a
/// (very) long day. Operators can pass their own to [`plan_with_limits`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceLimits {
    pub max_duration_s: f64,
    /// Longest display side, in pixels (8K UHD is 7680).
    pub max_long_side: u32,
    /// Shortest display side, in pixels (8K UHD is 4320).
    pub max_short_side: u32,
    /// Widest or tallest coded picture, in pixels: what the decoder
    /// allocates, which anamorphic pixels can make far larger than what is
    /// displayed. 16384 is where common decoders and scalers stop.
    pub max_coded_side: u32,
    /// Most pixels in one coded picture (8K UHD's 7680 × 4320).
    pub max_frame_pixels: u64,
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self {
            max_duration_s: 12.0 * 3600.0,
            max_long_side: 7680,
            max_short_side: 4320,
            max_coded_side: 16384,
            max_frame_pixels: 7680 * 4320,
        }
    }
}

impl SourceLimits {
    /// Refuses a probed source over these limits; every video stream is
    /// checked, as a demuxer may hand any of them to a decoder.
    pub fn check(&self, info: &MediaInfo) -> Result<(), MediaError> {
        if info.duration_s > self.max_duration_s {
            return Err(MediaError::new(
                MediaErrorCode::DurationTooLong,
                format!(
                    "the source lasts {:.1} h, more than the {:.1} h limit; split it into parts \
                     and upload each",
                    info.duration_s / 3600.0,
                    self.max_duration_s / 3600.0
                ),
            ));
        }
        for v in info.streams.iter().filter_map(|s| match s {
            StreamInfo::Video(v) => Some(v),
            _ => None,
        }) {
            let coded_pixels = u64::from(v.width) * u64::from(v.height);
            if v.width.max(v.height) > self.max_coded_side || coded_pixels > self.max_frame_pixels {
                return Err(MediaError::new(
                    MediaErrorCode::FrameTooLarge,
                    format!(
                        "the {} video stream's pictures are {}x{} pixels, over the limit of \
                         {} pixels a side and {:.1} megapixels a picture; export it at 4K or less",
                        v.codec,
                        v.width,
                        v.height,
                        self.max_coded_side,
                        self.max_frame_pixels as f64 / 1e6
                    ),
                ));
            }
            let (w, h) = v.display_dimensions();
            if w.max(h) > self.max_long_side || w.min(h) > self.max_short_side {
                return Err(MediaError::new(
                    MediaErrorCode::FrameTooLarge,
                    format!(
                        "the video is {w}x{h}, larger than the {}x{} limit; export it at 4K or \
                         less",
                        self.max_long_side, self.max_short_side
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Frame-rate caps: sources at or above [`HIGH_RATE_THRESHOLD`] fps keep up
/// to 60 fps (screen recordings of motion, sport); everything else is capped
/// at 30.
const HIGH_RATE_THRESHOLD: f64 = 50.0;
const HIGH_RATE_CAP: i32 = 60;
const NORMAL_RATE_CAP: i32 = 30;

/// Broadcast rates a source's rational is snapped to when within 0.1%, so a
/// container's approximation (e.g. 2997/100) becomes the exact 30000/1001.
const STANDARD_RATES: [Rational; 9] = [
    Rational::new(24000, 1001),
    Rational::new(24, 1),
    Rational::new(25, 1),
    Rational::new(30000, 1001),
    Rational::new(30, 1),
    Rational::new(48, 1),
    Rational::new(50, 1),
    Rational::new(60000, 1001),
    Rational::new(60, 1),
];

/// Floor for rate caps scaled down for sources smaller than the smallest rung.
const MIN_MAXRATE_KBPS: u32 = 64;

/// Name of the only audio rendition.
pub const AUDIO_RENDITION_NAME: &str = "audio";

/// Plan the ladder for a probed source with the default [`SourceLimits`].
pub fn plan(info: &MediaInfo, profile: &LadderProfile) -> Result<LadderPlan, MediaError> {
    plan_with_limits(info, profile, &SourceLimits::default())
}

/// Plan the ladder: which rungs, at what exact size, rate, keyframe interval,
/// rate caps and H.264 level; and the stereo AAC rendition.
pub fn plan_with_limits(
    info: &MediaInfo,
    profile: &LadderProfile,
    limits: &SourceLimits,
) -> Result<LadderPlan, MediaError> {
    let video = info.primary_video();
    let audio = info.primary_audio();
    if video.is_none() && audio.is_none() {
        return Err(MediaError::new(
            MediaErrorCode::NoDecodableStream,
            "the source holds no audio or video to play",
        ));
    }
    limits.check(info)?;

    let video = match video {
        Some(v) => plan_video(v, profile)?,
        None => Vec::new(),
    };
    let audio = audio.map(|_| AudioRendition {
        name: AUDIO_RENDITION_NAME.to_owned(),
        // Surround is downmixed: learners listen on laptops and phones, and
        // HLS players expect one stereo AAC-LC group.
        channels: 2,
        sample_rate: profile.audio.sample_rate,
        bitrate_kbps: profile.audio.bitrate_kbps,
        loudness: Some(LoudnessPlan {
            target: profile.audio.loudness_target_lufs,
            true_peak_max_dbtp: profile.audio.true_peak_max_dbtp,
            measured: None,
        }),
    });
    Ok(LadderPlan {
        profile: profile.name.clone(),
        segment_duration_s: profile.segment_duration_s,
        video,
        audio,
        content: None,
    })
}

/// Applies the profile's [`ContentRules`] for what `analysis` measured to a
/// plan made by [`plan`] from the same profile; without rules the plan is
/// returned as it was (with the analysis recorded).
pub fn adapt(
    mut plan: LadderPlan,
    profile: &LadderProfile,
    analysis: ContentAnalysis,
) -> LadderPlan {
    let Some(rules) = &profile.content else {
        plan.content = Some(analysis);
        return plan;
    };
    let class_rules = match analysis.class {
        Some(ContentClass::Slides) => rules.slides.as_ref(),
        Some(ContentClass::TalkingHead) => rules.talking_head.as_ref(),
        Some(ContentClass::Motion) => rules.motion.as_ref(),
        None => None,
    };
    if let Some(class) = class_rules {
        if let Some(segment) = class.segment_duration_s {
            plan.segment_duration_s = segment;
        }
        for rung in &mut plan.video {
            rung.crf = (i16::from(rung.crf) + i16::from(class.crf_offset)).clamp(0, 51) as u8;
            if let Some(scale) = class.maxrate_scale {
                rung.maxrate_kbps = scale_kbps(rung.maxrate_kbps, scale).max(MIN_MAXRATE_KBPS);
                rung.bufsize_kbps = scale_kbps(rung.bufsize_kbps, scale).max(rung.maxrate_kbps);
            }
            if let Some(tune) = &class.x264_tune {
                rung.x264_tune = Some(tune.clone());
            }
            if let Some(downscaler) = class.downscaler {
                rung.downscaler = downscaler;
            }
            let fps = rung.frame_rate.as_f64();
            rung.keyframe_interval_frames = ((plan.segment_duration_s * fps).round() as u32).max(1);
            rung.h264_level = h264_level(
                rung.width,
                rung.height,
                fps,
                rung.maxrate_kbps,
                rung.bufsize_kbps,
            )
            .to_owned();
        }
        if let Some(min) = class.min_height {
            let mut index = 0;
            plan.video.retain(|r| {
                index += 1;
                index == 1 || r.height.min(r.width) >= min
            });
        }
        if class.top_and_bottom_only && plan.video.len() > 2 {
            let last = plan.video.len() - 1;
            plan.video = plan
                .video
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i == 0 || *i == last)
                .map(|(_, r)| r)
                .collect();
        }
    }
    if let (Some(voice), Some(audio), true) = (
        &rules.single_voice_audio,
        plan.audio.as_mut(),
        analysis.single_voice,
    ) {
        audio.channels = 1;
        audio.bitrate_kbps = voice.bitrate_kbps;
        audio.sample_rate = voice.sample_rate;
    }
    plan.content = Some(analysis);
    plan
}

fn plan_video(
    source: &VideoStream,
    profile: &LadderProfile,
) -> Result<Vec<VideoRendition>, MediaError> {
    let (display_w, display_h) = source.display_dimensions();
    if display_w == 0 || display_h == 0 {
        return Err(MediaError::new(
            MediaErrorCode::CorruptMedia,
            "the video stream has no picture size",
        ));
    }
    let portrait = display_h > display_w;
    let (long, short) = if portrait {
        (display_h, display_w)
    } else {
        (display_w, display_h)
    };
    let smallest = profile.rungs.last().ok_or_else(|| {
        MediaError::new(
            MediaErrorCode::Internal,
            format!("profile {} has no video rungs", profile.name),
        )
    })?;

    // Never upscale: keep the rungs the source can fill; a source smaller
    // than every rung gets one rung at its own size, with the smallest
    // rung's settings and its rate caps scaled down to the smaller picture.
    let mut targets: Vec<(String, u32, &RungProfile, f64)> = profile
        .rungs
        .iter()
        .filter(|r| r.height <= short)
        .map(|r| (r.name.clone(), r.height, r, 1.0))
        .collect();
    if targets.is_empty() {
        let height = even(f64::from(short));
        let area_ratio = (f64::from(height) / f64::from(smallest.height)).powi(2);
        // Bits needed grow slower than the pixel count (bigger pictures have
        // more redundancy), hence the 0.75 exponent common in ladder design.
        targets.push((
            format!("{height}p"),
            height,
            smallest,
            area_ratio.powf(0.75),
        ));
    }

    let frame_rate = output_frame_rate(source);
    let fps = frame_rate.as_f64();
    let keyframe_interval_frames = ((profile.segment_duration_s * fps).round() as u32).max(1);
    let aspect = f64::from(long) / f64::from(short);
    let colorimetry = colorimetry(source);

    Ok(targets
        .into_iter()
        .map(|(name, height, rung, rate_scale)| {
            let short_side = even(f64::from(height));
            let long_side = even(f64::from(short_side) * aspect);
            let (width, height) = if portrait {
                (short_side, long_side)
            } else {
                (long_side, short_side)
            };
            let maxrate_kbps = scale_kbps(rung.maxrate_kbps, rate_scale);
            let bufsize_kbps = scale_kbps(rung.bufsize_kbps, rate_scale).max(maxrate_kbps);
            VideoRendition {
                name,
                width,
                height,
                frame_rate,
                keyframe_interval_frames,
                crf: rung.crf,
                maxrate_kbps,
                bufsize_kbps,
                x264_preset: profile.x264_preset.clone(),
                x264_tune: profile.x264_tune.clone(),
                h264_profile: "high".to_owned(),
                h264_level: h264_level(width, height, fps, maxrate_kbps, bufsize_kbps).to_owned(),
                colorimetry: colorimetry.clone(),
                downscaler: Downscaler::default(),
            }
        })
        .collect())
}

/// The one colorimetry for every rung. Left alone, GStreamer picks a
/// default by frame size (BT.709 for HD, BT.601 below 720 lines) and
/// converts the matrix when it scales an HD source to an SD rung: the lower
/// rungs' colours then differ from the top rung's, every SD pixel pays for a
/// matrix conversion, and measured against the source they lose luma SSIM
/// (0.962 against 0.996 at 480p on the slide lecture). Tagged sources keep
/// their matrix; untagged ones are taken to be BT.709 when HD or larger and
/// BT.601 below, decided once from the source and applied to every rung (the
/// encoder re-tags an untagged decode rather than converting it).
fn colorimetry(source: &VideoStream) -> Option<String> {
    if source.hdr {
        return None;
    }
    let by_matrix = match source.color_matrix.as_deref() {
        Some("bt709") => Some("bt709"),
        Some("smpte170m" | "bt470bg") => Some("bt601"),
        Some("bt2020nc" | "bt2020c") => Some("bt2020"),
        _ => None,
    };
    let (w, h) = source.display_dimensions();
    let by_size = if w.min(h) >= 720 { "bt709" } else { "bt601" };
    Some(by_matrix.unwrap_or(by_size).to_owned())
}

/// Nearest even number, at least 2: 4:2:0 chroma needs even sizes.
fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32).max(1) * 2
}

/// Scales a rate down (never up: a profile's caps are ceilings).
fn scale_kbps(kbps: u32, scale: f64) -> u32 {
    if scale >= 1.0 {
        kbps
    } else {
        ((f64::from(kbps) * scale).round() as u32).max(MIN_MAXRATE_KBPS)
    }
}

/// One constant rate for every rung, so keyframes (every
/// `keyframe_interval_frames`) fall on the same timestamps in all of them.
fn output_frame_rate(source: &VideoStream) -> Rational {
    let src = source.frame_rate;
    let fps = src.as_f64();
    let cap = if fps >= HIGH_RATE_THRESHOLD {
        HIGH_RATE_CAP
    } else {
        NORMAL_RATE_CAP
    };
    if fps.is_nan() || fps <= 0.0 {
        // Unknown rate (raw streams without timing): the normal cap is what
        // such sources almost always are.
        return Rational::new(cap, 1);
    }
    let snapped = STANDARD_RATES
        .iter()
        .copied()
        .find(|r| (r.as_f64() - fps).abs() <= r.as_f64() * 0.001);
    let rate = match snapped {
        Some(r) => r,
        // A variable rate becomes its average, to the nearest whole frame:
        // odd averages such as 600/29 are not rates encoders or players like.
        None if source.variable_frame_rate => Rational::new((fps.round() as i32).max(1), 1),
        None => src,
    };
    if rate.as_f64() > f64::from(cap) {
        Rational::new(cap, 1)
    } else {
        rate
    }
}

/// H.264 level limits (Rec. ITU-T H.264 Table A-1): level name as GStreamer
/// caps spell it, max macroblocks/s, max frame size in macroblocks, and max
/// bit rate and CPB size in kbit/s for Baseline/Main (High allows 1.25x).
const H264_LEVELS: [(&str, u64, u64, u64, u64); 9] = [
    ("3", 40_500, 1_620, 10_000, 10_000),
    ("3.1", 108_000, 3_600, 14_000, 14_000),
    ("3.2", 216_000, 5_120, 20_000, 20_000),
    ("4", 245_760, 8_192, 20_000, 25_000),
    ("4.1", 245_760, 8_192, 50_000, 62_500),
    ("4.2", 522_240, 8_704, 50_000, 62_500),
    ("5", 589_824, 22_080, 135_000, 135_000),
    ("5.1", 983_040, 36_864, 240_000, 240_000),
    ("5.2", 2_073_600, 36_864, 240_000, 240_000),
];

/// The lowest level whose limits hold this rung. x264 writes the level it is
/// given into the SPS and restricts reference frames to fit it, so this is
/// also what the CODECS attribute will show. Level 3 is the floor: every HLS
/// player supports it and signalling lower gains nothing.
fn h264_level(
    width: u32,
    height: u32,
    fps: f64,
    maxrate_kbps: u32,
    bufsize_kbps: u32,
) -> &'static str {
    let mb_w = u64::from(width.div_ceil(16));
    let mb_h = u64::from(height.div_ceil(16));
    let frame_mbs = mb_w * mb_h;
    let mbs_per_s = (frame_mbs as f64 * fps).ceil() as u64;
    let (rate, cpb) = (u64::from(maxrate_kbps) * 4, u64::from(bufsize_kbps) * 4);
    H264_LEVELS
        .iter()
        .find(|(_, max_mbps, max_fs, max_br, max_cpb)| {
            mbs_per_s <= *max_mbps
                && frame_mbs <= *max_fs
                // Neither side may exceed sqrt(8 x MaxFS) macroblocks.
                && mb_w.max(mb_h).pow(2) <= 8 * max_fs
                && rate <= max_br * 5
                && cpb <= max_cpb * 5
        })
        .map_or("5.2", |(name, ..)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media_info::{AudioStream, StreamInfo};

    fn profile() -> LadderProfile {
        let rung = |name: &str, height, maxrate_kbps| RungProfile {
            name: name.to_owned(),
            height,
            crf: 23,
            maxrate_kbps,
            bufsize_kbps: maxrate_kbps * 2,
        };
        LadderProfile {
            name: "test".to_owned(),
            segment_duration_s: 4.0,
            x264_preset: "veryfast".to_owned(),
            x264_tune: None,
            rungs: vec![
                rung("1080p", 1080, 5000),
                rung("720p", 720, 3000),
                rung("480p", 480, 1400),
                rung("360p", 360, 800),
            ],
            audio: AudioProfile {
                bitrate_kbps: 128,
                sample_rate: 48_000,
                loudness_target_lufs: LoudnessTarget::default(),
                true_peak_max_dbtp: -1.0,
            },
            content: None,
        }
    }

    fn video(width: u32, height: u32, fps: Rational) -> VideoStream {
        VideoStream {
            index: 0,
            codec: "h264".to_owned(),
            profile: Some("High".to_owned()),
            width,
            height,
            sample_aspect: Rational::new(1, 1),
            display_aspect: Rational::new(16, 9),
            rotation_deg: 0,
            frame_rate: fps,
            variable_frame_rate: false,
            pixel_format: "yuv420p".to_owned(),
            bit_depth: 8,
            color_transfer: None,
            color_matrix: None,
            hdr: false,
            bit_rate: None,
            duration_s: Some(60.0),
        }
    }

    fn stereo() -> StreamInfo {
        StreamInfo::Audio(AudioStream {
            index: 1,
            codec: "aac".to_owned(),
            profile: Some("LC".to_owned()),
            channels: 2,
            channel_layout: "stereo".to_owned(),
            sample_rate: 44_100,
            bit_rate: None,
        })
    }

    fn info(streams: Vec<StreamInfo>) -> MediaInfo {
        MediaInfo {
            container: "mov,mp4,m4a,3gp,3g2,mj2".to_owned(),
            container_long_name: "QuickTime / MOV".to_owned(),
            duration_s: 60.0,
            size_bytes: 1,
            bit_rate: None,
            streams,
        }
    }

    fn sizes(plan: &LadderPlan) -> Vec<(u32, u32)> {
        plan.video.iter().map(|r| (r.width, r.height)).collect()
    }

    #[test]
    fn a_720p_source_gets_no_1080_rung() {
        let src = video(1280, 720, Rational::new(25, 1));
        let plan = plan(&info(vec![StreamInfo::Video(src), stereo()]), &profile()).unwrap();
        assert_eq!(sizes(&plan), [(1280, 720), (854, 480), (640, 360)]);
        assert!(plan
            .video
            .iter()
            .all(|r| r.frame_rate == Rational::new(25, 1)));
        assert!(plan.video.iter().all(|r| r.keyframe_interval_frames == 100));
    }

    #[test]
    fn ntsc_rate_is_kept_exactly() {
        // Containers often store 29.97 approximately; planning snaps it.
        let src = video(1920, 1080, Rational::new(2997, 100));
        let plan = plan(&info(vec![StreamInfo::Video(src)]), &profile()).unwrap();
        assert_eq!(plan.video.len(), 4);
        assert_eq!(plan.video[0].frame_rate, Rational::new(30000, 1001));
        // 4 s x 29.97 = 119.88 -> 120 frames.
        assert_eq!(plan.video[0].keyframe_interval_frames, 120);
        assert_eq!(plan.audio, None);
    }

    #[test]
    fn rates_above_the_cap_are_capped() {
        let plan_rate = |fps| {
            let src = video(1280, 720, fps);
            plan(&info(vec![StreamInfo::Video(src)]), &profile())
                .unwrap()
                .video[0]
                .frame_rate
        };
        assert_eq!(plan_rate(Rational::new(48, 1)), Rational::new(30, 1));
        assert_eq!(
            plan_rate(Rational::new(60000, 1001)),
            Rational::new(60000, 1001)
        );
        assert_eq!(plan_rate(Rational::new(120, 1)), Rational::new(60, 1));
        assert_eq!(plan_rate(Rational::new(0, 1)), Rational::new(30, 1));
    }

    #[test]
    fn tiny_source_gets_one_rung_at_its_own_size() {
        let src = video(320, 240, Rational::new(15, 1));
        let plan = plan(&info(vec![StreamInfo::Video(src), stereo()]), &profile()).unwrap();
        assert_eq!(sizes(&plan), [(320, 240)]);
        let rung = &plan.video[0];
        assert_eq!(rung.name, "240p");
        assert_eq!(rung.frame_rate, Rational::new(15, 1));
        assert_eq!(rung.keyframe_interval_frames, 60);
        // Caps shrink with the picture: (240/360)^2^0.75 of 800k = 435k.
        assert_eq!(rung.maxrate_kbps, 435);
        assert_eq!(rung.bufsize_kbps, 871);
        assert_eq!(rung.h264_level, "3");
    }

    #[test]
    fn anamorphic_source_keeps_its_display_aspect() {
        // DVD-style 720x576 with 16:11 pixels shows as 1047x576 (16:9-ish).
        let mut src = video(720, 576, Rational::new(25, 1));
        src.sample_aspect = Rational::new(16, 11);
        let plan = plan(&info(vec![StreamInfo::Video(src)]), &profile()).unwrap();
        assert_eq!(sizes(&plan), [(872, 480), (654, 360)]);
    }

    #[test]
    fn levels_follow_size_and_rate() {
        assert_eq!(h264_level(640, 360, 30.0, 800, 1600), "3");
        // 854 pixels is 54 macroblocks wide: 1620 per frame x 30 > level 3.
        assert_eq!(h264_level(854, 480, 30.0, 1400, 2800), "3.1");
        assert_eq!(h264_level(1280, 720, 30.0, 3000, 6000), "3.1");
        assert_eq!(h264_level(1280, 720, 60.0, 3000, 6000), "3.2");
        assert_eq!(h264_level(1920, 1080, 30.0, 5000, 10000), "4");
        // Past level 4's 25 Mb/s (High) the bit rate alone forces 4.1.
        assert_eq!(h264_level(1920, 1080, 30.0, 30000, 60000), "4.1");
        assert_eq!(h264_level(1920, 1080, 60.0, 5000, 10000), "4.2");
        assert_eq!(h264_level(3840, 2160, 30.0, 20000, 40000), "5.1");
    }

    #[test]
    fn oversized_sources_are_refused() {
        let src = video(15360, 8640, Rational::new(30, 1));
        let err = plan(&info(vec![StreamInfo::Video(src)]), &profile()).unwrap_err();
        assert_eq!(err.code, MediaErrorCode::FrameTooLarge);
        assert!(err.message.contains("15360x8640"), "{}", err.message);

        let mut long = info(vec![stereo()]);
        long.duration_s = 13.0 * 3600.0;
        let err = plan(&long, &profile()).unwrap_err();
        assert_eq!(err.code, MediaErrorCode::DurationTooLong);
        assert_eq!(err.code.as_str(), "duration_too_long");
        let limits = SourceLimits {
            max_duration_s: 14.0 * 3600.0,
            ..SourceLimits::default()
        };
        assert!(plan_with_limits(&long, &profile(), &limits).is_ok());
    }

    #[test]
    fn coded_pictures_are_limited_whatever_their_display_size() {
        let limits = SourceLimits::default();
        // 8K UHD itself passes, and so does a 12 h lecture.
        let mut uhd = info(vec![StreamInfo::Video(video(
            7680,
            4320,
            Rational::new(30, 1),
        ))]);
        uhd.duration_s = 12.0 * 3600.0;
        assert!(limits.check(&uhd).is_ok());
        // Displayed 4096x4096, decoded 16384x4096: 67 megapixels a picture.
        let mut squeezed = video(16384, 4096, Rational::new(30, 1));
        squeezed.sample_aspect = Rational::new(1, 4);
        assert_eq!(squeezed.display_dimensions(), (4096, 4096));
        let err = limits
            .check(&info(vec![StreamInfo::Video(squeezed)]))
            .unwrap_err();
        assert_eq!(err.code, MediaErrorCode::FrameTooLarge);
        assert_eq!(err.code.as_str(), "frame_too_large");
        assert!(err.message.contains("16384x4096"), "{}", err.message);
        // A sliver is few pixels but wider than decoders go.
        let mut sliver = video(20000, 16, Rational::new(30, 1));
        sliver.sample_aspect = Rational::new(1, 8);
        let err = limits
            .check(&info(vec![StreamInfo::Video(sliver)]))
            .unwrap_err();
        assert_eq!(err.code, MediaErrorCode::FrameTooLarge);
    }

    #[test]
    fn nothing_to_play_is_an_error() {
        let err = plan(&info(Vec::new()), &profile()).unwrap_err();
        assert_eq!(err.code, MediaErrorCode::NoDecodableStream);
    }

    fn analysis(class: ContentClass, single_voice: bool) -> ContentAnalysis {
        ContentAnalysis {
            class: Some(class),
            still_share: 0.0,
            moving_area: 0.0,
            comparisons: 10,
            channel_correlation: None,
            single_voice,
        }
    }

    fn content_rules() -> ContentRules {
        ContentRules {
            slides: Some(ClassRules {
                crf_offset: -4,
                x264_tune: Some("stillimage".to_owned()),
                segment_duration_s: Some(6.0),
                top_and_bottom_only: true,
                downscaler: Some(Downscaler::Cubic),
                ..ClassRules::default()
            }),
            talking_head: None,
            motion: Some(ClassRules {
                maxrate_scale: Some(0.5),
                ..ClassRules::default()
            }),
            single_voice_audio: Some(VoiceAudio {
                bitrate_kbps: 64,
                sample_rate: 48_000,
            }),
        }
    }

    fn minute_of(streams: Vec<StreamInfo>) -> MediaInfo {
        MediaInfo {
            container: "mov,mp4".to_owned(),
            container_long_name: String::new(),
            duration_s: 60.0,
            size_bytes: 1,
            bit_rate: None,
            streams,
        }
    }

    fn planned(class: ContentClass, single_voice: bool, rules: Option<ContentRules>) -> LadderPlan {
        let mut profile = profile();
        profile.content = rules;
        let info = minute_of(vec![
            StreamInfo::Video(video(1920, 1080, Rational::new(30, 1))),
            stereo(),
        ]);
        adapt(
            plan(&info, &profile).unwrap(),
            &profile,
            analysis(class, single_voice),
        )
    }

    #[test]
    fn slides_keep_top_and_bottom_sharper_with_longer_gops() {
        let plan = planned(ContentClass::Slides, false, Some(content_rules()));
        let names: Vec<_> = plan.video.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["1080p", "360p"]);
        assert_eq!(plan.segment_duration_s, 6.0);
        for rung in &plan.video {
            assert_eq!(rung.crf, 19);
            assert_eq!(rung.keyframe_interval_frames, 180);
            assert_eq!(rung.x264_tune.as_deref(), Some("stillimage"));
            assert_eq!(rung.downscaler, Downscaler::Cubic);
        }
        assert_eq!(plan.audio.as_ref().unwrap().channels, 2);
        assert_eq!(
            plan.content.as_ref().and_then(|c| c.class),
            Some(ContentClass::Slides)
        );
    }

    #[test]
    fn slides_drop_rungs_too_short_to_read_before_keeping_top_and_bottom() {
        let mut rules = content_rules();
        if let Some(slides) = rules.slides.as_mut() {
            slides.min_height = Some(360);
        }
        let mut profile = profile();
        profile.rungs.push(RungProfile {
            name: "240p".to_owned(),
            height: 240,
            crf: 23,
            maxrate_kbps: 150,
            bufsize_kbps: 300,
        });
        profile.content = Some(rules);
        let info = minute_of(vec![StreamInfo::Video(video(
            1280,
            720,
            Rational::new(30, 1),
        ))]);
        let names = |class| {
            let plan = adapt(
                plan(&info, &profile).unwrap(),
                &profile,
                analysis(class, false),
            );
            plan.video.into_iter().map(|r| r.name).collect::<Vec<_>>()
        };
        assert_eq!(names(ContentClass::Slides), ["720p", "360p"]);
        assert_eq!(
            names(ContentClass::Motion),
            ["720p", "480p", "360p", "240p"]
        );
        // A source smaller than the floor keeps its one top rung.
        let small = minute_of(vec![StreamInfo::Video(video(
            320,
            240,
            Rational::new(30, 1),
        ))]);
        let plan = adapt(
            plan(&small, &profile).unwrap(),
            &profile,
            analysis(ContentClass::Slides, false),
        );
        assert_eq!(plan.video.len(), 1);
    }

    #[test]
    fn a_class_without_rules_keeps_the_profile() {
        let fixed = planned(ContentClass::TalkingHead, false, None);
        let adapted = planned(ContentClass::TalkingHead, false, Some(content_rules()));
        assert_eq!(fixed.video, adapted.video);
        assert_eq!(fixed.segment_duration_s, adapted.segment_duration_s);
    }

    #[test]
    fn rate_scales_only_lower_caps_and_recompute_the_level() {
        let plan = planned(ContentClass::Motion, false, Some(content_rules()));
        assert_eq!(plan.video[0].maxrate_kbps, 2500);
        assert!(plan.video.iter().all(|r| r.bufsize_kbps >= r.maxrate_kbps));
    }

    #[test]
    fn one_voice_gets_the_mono_rendition_whatever_the_picture() {
        let plan = planned(ContentClass::Motion, true, Some(content_rules()));
        let audio = plan.audio.unwrap();
        assert_eq!((audio.channels, audio.bitrate_kbps), (1, 64));
    }

    #[test]
    fn untagged_sources_get_one_colorimetry_by_size() {
        let hd = plan(
            &MediaInfo {
                container: "mov,mp4".to_owned(),
                container_long_name: String::new(),
                duration_s: 60.0,
                size_bytes: 1,
                bit_rate: None,
                streams: vec![StreamInfo::Video(video(1280, 720, Rational::new(25, 1)))],
            },
            &profile(),
        )
        .unwrap();
        assert!(hd
            .video
            .iter()
            .all(|r| r.colorimetry.as_deref() == Some("bt709")));
        let mut sd_source = video(640, 480, Rational::new(25, 1));
        assert_eq!(colorimetry(&sd_source).as_deref(), Some("bt601"));
        sd_source.color_matrix = Some("bt709".to_owned());
        assert_eq!(colorimetry(&sd_source).as_deref(), Some("bt709"));
        sd_source.hdr = true;
        assert_eq!(colorimetry(&sd_source), None);
    }
}
