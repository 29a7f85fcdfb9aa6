//! The GStreamer decode-once / encode-many ladder.
//!
//! One pipeline per source: `filesrc ! decodebin3`, the video decoded once,
//! converted to 8-bit I420, made progressive (interlaced sources) and
//! auto-rotated once, then a `tee` with one
//! `queue`d branch per rung (so rungs encode on their own threads) plus two
//! low-rate thumbnail branches; audio is downmixed to stereo and AAC-encoded
//! once. Encoded packets leave through appsinks into one libavformat fMP4
//! HLS muxer per rendition ([`hls_mux`]). The plan decides everything; this
//! module only executes it.
//!
//! A live encode may ask for LL-HLS parts ([`PartOptions`]): its renditions
//! are then muxed by [`part_mux`] instead, one fMP4 fragment per part (at
//! most `target_s`, cut here at packet boundaries and at every segment
//! boundary, which follows the same rule as libavformat's), each reported
//! to a [`PartObserver`] before the segment they make up, whose file is
//! their concatenation. File encodes never take that path.
//!
//! Before the pipeline starts, an encode that includes the audio runs the
//! loudness pass ([`measure`]: the audio alone, decoded and measured) when
//! the plan asks for it, and the audio branch applies the resulting gain
//! with a `volume` element after the downmix. Once a video rendition's
//! muxer is finished, its segments are read back for the byte ranges of
//! their keyframes ([`keyframes`]), which become the I-frame playlists.
//!
//! What keeps it correct:
//! - Every decoded stream passes a pad probe that puts it on one timeline
//!   (`normalize_timeline`): demuxers such as matroskademux send several
//!   segments, and `videorate` would otherwise hand x264 timestamps that go
//!   backwards.
//! - x264 runs capped CRF with `scenecut=0` and a fixed keyframe interval,
//!   so every rung has IDR frames at the same timestamps and a player can
//!   switch rungs at any segment boundary.
//! - Appsinks do not preroll: a prerolling sink would block the tee while
//!   another x264 branch still waits for its lookahead before its first
//!   output, and the pipeline would never start.
//! - All renditions share one time origin (`Timeline`), so x264's B-frame
//!   delay shifts audio and video together; the parts of a chunked encode
//!   (`EncodeScope::VideoChunk`, `AudioAndArtwork`) agree on a fixed origin
//!   [`chunk_lead_s`] before the source's start instead, and write absolute
//!   decode times, so one chunk's segments follow the last one's.
//! - The bus loop turns element errors into `MediaError`s carrying the
//!   element's debug text, reports progress every 0.5 s, honours a
//!   `CancelFlag` within 100 ms, and fails with `corrupt_media` when the
//!   position has not advanced for 30 s, so a truncated file never hangs a
//!   worker.

mod bilinear;
mod codec_string;
mod hls_mux;
mod keyframes;
pub mod live;
mod measure;
mod part_mux;
mod thumbnails;

pub use measure::measure_audio;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::{Deserialize, Serialize};

use crate::error::{MediaError, MediaErrorCode};
use crate::ladder::{AudioRendition, Downscaler, LadderPlan, VideoRendition};
use crate::loudness::LoudnessReport;
use crate::media_info::{MediaInfo, Rational};
use hls_mux::{RenditionMuxer, StreamParams};
use part_mux::PartMuxer;
use thumbnails::{PosterPicker, RgbFrame, StoryboardLayout};

/// A truncated or damaged file can leave GStreamer waiting for data that
/// never comes; if no sink advances for this long the encode is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
const BUS_POLL: Duration = Duration::from_millis(100);
/// The poster is taken this far into the video, past most black intros.
const POSTER_POSITION: f64 = 0.10;

/// Set from any thread to stop an encode; the bus loop notices within
/// [`BUS_POLL`] and returns `cancelled`.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenditionKind {
    Video,
    Audio,
}

/// One fMP4 media segment as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedSegment {
    /// File name inside the rendition directory, e.g. `seg_00000.m4s`.
    pub file_name: String,
    pub duration_s: f64,
    pub bytes: u64,
    /// Presentation time of the segment's first frame.
    pub start_s: f64,
    /// Where each keyframe of a video segment can be read alone (the
    /// I-frame playlists' byte ranges); empty for audio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyframes: Vec<KeyframeRange>,
}

/// One keyframe inside a segment file: its fragment's `moof` and the
/// `mdat` bytes up to the end of the keyframe's sample, which with the
/// init segment decode to exactly that picture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KeyframeRange {
    /// Byte offset of the fragment's `moof` in the segment file.
    pub offset: u64,
    pub length: u64,
    /// Decode time of the keyframe after the segment's first, in seconds.
    pub time_s: f64,
}

/// One encoded rendition: an init segment plus media segments in `dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedRendition {
    pub kind: RenditionKind,
    pub name: String,
    /// Relative to the encode's `out_dir`, `/`-separated: `v/720p`, `a/aac`.
    pub dir: String,
    pub init_file: String,
    pub segments: Vec<EncodedSegment>,
    /// RFC 6381 codec string read from the encoded stream, e.g. `avc1.64001f`.
    pub codecs: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<Rational>,
    pub channels: Option<u16>,
    pub sample_rate: Option<u32>,
}

/// A sprite of thumbnails and the WebVTT track that points into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Storyboard {
    /// File names relative to `out_dir`.
    pub image: String,
    pub vtt: String,
    pub tile_width: u32,
    pub tile_height: u32,
    pub columns: u32,
    pub rows: u32,
    pub tiles: u32,
    pub interval_s: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeOutput {
    /// Video rungs highest first, then the audio rendition.
    pub renditions: Vec<EncodedRendition>,
    /// Poster JPEG relative to `out_dir`; none for audio-only sources.
    pub poster: Option<String>,
    pub storyboard: Option<Storyboard>,
    /// The source's loudness and the gain the audio rendition got; `None`
    /// when this encode has no audio or its plan asks for no measurement.
    #[serde(default)]
    pub loudness: Option<LoudnessReport>,
}

/// The first error wins: later ones are usually consequences of it.
#[derive(Default)]
struct FirstError(Mutex<Option<MediaError>>);

impl FirstError {
    fn record(&self, error: MediaError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
    }

    fn take(&self) -> Option<MediaError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The zero point shared by every rendition. x264 with B-frames emits its
/// first DTS before its first PTS (negative running time), and the fMP4
/// muxer cannot store a negative decode time, so it would shift video alone
/// and leave audio a few frames early. Instead every rendition subtracts the
/// same origin: the first video DTS when negative, else 0.
///
/// The parts of a chunked encode cannot see each other's first DTS, so they
/// agree on a fixed origin instead: [`chunk_lead_s`] before the source's
/// start, shifted by where the chunk starts in the whole source.
struct Timeline {
    expects_video: bool,
    origin_ns: OnceLock<i64>,
    fixed_origin_ns: Option<i64>,
}

impl Timeline {
    fn origin(&self) -> Option<i64> {
        if let Some(fixed) = self.fixed_origin_ns {
            Some(fixed)
        } else if self.expects_video {
            self.origin_ns.get().copied()
        } else {
            Some(0)
        }
    }

    fn origin_from_video(&self, first_dts_ns: i64) -> i64 {
        self.fixed_origin_ns
            .unwrap_or_else(|| *self.origin_ns.get_or_init(|| first_dts_ns.min(0)))
    }
}

/// What one encode covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope")]
pub enum EncodeScope {
    /// Every rung, the audio, the poster and the storyboard of one source.
    Whole,
    /// The video rungs of one chunk of a long source (see
    /// [`crate::split`]) whose first frame is `start_s` into the whole source.
    VideoChunk { start_s: f64 },
    /// The audio, poster and storyboard of the whole source: the part of a
    /// chunked encode that is not split.
    AudioAndArtwork,
}

/// How far after the timeline's zero every part of a chunked encode puts
/// the source's first frame: room for x264's B-frame decode delay (two
/// frames), with margin, so no decode time is negative.
pub fn chunk_lead_s(plan: &LadderPlan) -> f64 {
    plan.video
        .iter()
        .map(|r| 4.0 / r.frame_rate.as_f64().max(1.0))
        .fold(0.2, f64::max)
}

/// An encoded packet's timing, in pipeline running time (ns): the one clock
/// all branches share; encoders may shift buffer timestamps, not running time.
struct PacketTiming {
    pts_ns: i64,
    dts_ns: i64,
    duration_ns: Option<i64>,
    keyframe: bool,
}

impl PacketTiming {
    fn of(sample: &gst::Sample) -> Option<Self> {
        let buffer = sample.buffer()?;
        let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
        let running_ns = |t: gst::ClockTime| -> Option<i64> {
            segment.to_running_time_full(t).map(|s| match s {
                gst::Signed::Positive(t) => t.nseconds() as i64,
                gst::Signed::Negative(t) => -(t.nseconds() as i64),
            })
        };
        let pts_ns = buffer.pts().and_then(running_ns)?;
        Some(Self {
            pts_ns,
            dts_ns: buffer.dts().and_then(running_ns).unwrap_or(pts_ns),
            duration_ns: buffer.duration().map(|d| d.nseconds() as i64),
            keyframe: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
        })
    }
}

/// A segment the muxer has closed while the encode goes on: everything a
/// caller needs to publish it before the ladder is finished.
#[derive(Debug, Clone)]
pub struct SegmentReady {
    pub kind: RenditionKind,
    /// Rendition name, e.g. `360p` or `audio`.
    pub rendition: String,
    /// Directory relative to the output root, e.g. `v/360p`.
    pub dir: String,
    /// 0-based; segments of one rendition are reported in order.
    pub index: usize,
    pub file_name: String,
    pub init_file: String,
    pub duration_s: f64,
    /// RFC 6381 codec string of the rendition.
    pub codecs: String,
}

/// Called from a streaming thread for each closed segment: keep it quick.
pub type SegmentObserver = Arc<dyn Fn(SegmentReady) + Send + Sync>;

/// A partial segment (LL-HLS `EXT-X-PART`) the muxer has cut: one fMP4
/// fragment, in memory. The parts of segment `segment` are reported in
/// order, all of them before that segment's [`SegmentReady`], whose file
/// is their concatenation.
#[derive(Debug, Clone)]
pub struct PartReady {
    pub kind: RenditionKind,
    pub rendition: String,
    /// Directory relative to the output root, e.g. `v/360p`.
    pub dir: String,
    /// The segment this part belongs to (0-based, as [`SegmentReady::index`]).
    pub segment: usize,
    /// 0-based within the segment.
    pub index: usize,
    /// Suggested file name, e.g. `part_00003_1.m4s`.
    pub file_name: String,
    pub init_file: String,
    pub duration_s: f64,
    /// Starts with a keyframe: decodes without the parts before it.
    pub independent: bool,
    pub codecs: String,
    /// `moof` + `mdat`.
    pub data: Vec<u8>,
}

/// Called from a streaming thread for each part: keep it quick.
pub type PartObserver = Arc<dyn Fn(PartReady) + Send + Sync>;

/// Asks a live encode for LL-HLS parts besides its segments.
#[derive(Clone)]
pub struct PartOptions {
    /// The longest a part may be (`PART-TARGET`); parts are cut at the
    /// last packet boundary within it, and at every segment boundary.
    pub target_s: f64,
    pub observer: PartObserver,
}

/// Name of part `part` of segment `segment`.
pub fn part_file_name(segment: usize, part: usize) -> String {
    format!("part_{segment:05}_{part}.m4s")
}

/// An appsink's end of one rendition: opens the muxer on the first sample
/// (the codec configuration only exists once the encoder has started).
struct RenditionSink {
    kind: RenditionKind,
    name: String,
    dir: String,
    dir_abs: PathBuf,
    segment_time_s: f64,
    frame_rate: Option<Rational>,
    timeline: Arc<Timeline>,
    state: Mutex<SinkState>,
    observer: Option<SegmentObserver>,
    /// Set: muxed in fragments ([`part_mux`]), reported as parts.
    parts: Option<PartOptions>,
}

#[derive(Default)]
struct SinkState {
    muxing: Option<Muxing>,
    /// Next segment to report to the observer.
    next_segment: usize,
    /// Start of each segment so far (ns, on the muxer's timeline).
    boundaries: Vec<i64>,
    /// Audio held back until the video has fixed the timeline origin.
    pending: Vec<gst::Sample>,
}

struct Muxing {
    muxer: Mux,
    codecs: String,
    params: StreamParams,
}

enum Mux {
    /// libavformat's `hls` muxer cuts and writes the segments.
    Hls(RenditionMuxer),
    /// Fragments cut here; segments assembled from them.
    Parts(Box<PartWriter>),
}

/// A rendition muxed in parts: where the open segment and part stand.
struct PartWriter {
    muxer: PartMuxer,
    /// Video: for the keyframe ranges of each segment, as the hls path has.
    timescale: Option<u32>,
    /// The open segment's parts so far, concatenated.
    segment: Vec<u8>,
    segment_index: usize,
    part_index: usize,
    /// Decode time of the open part's first packet; `None`: no packet yet.
    part_start_ns: Option<i64>,
    part_independent: bool,
    /// End (dts + duration) of the last packet written.
    last_end_ns: i64,
    /// Presentation time of the open segment's first packet.
    segment_start_ns: i64,
    segments: Vec<EncodedSegment>,
}

impl RenditionSink {
    fn handle(&self, sample: gst::Sample) -> Result<(), MediaError> {
        let timing = PacketTiming::of(&sample).ok_or_else(|| {
            MediaError::new(
                MediaErrorCode::Internal,
                format!(
                    "{}: encoded sample without buffer, segment or PTS",
                    self.name
                ),
            )
        })?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let origin = match self.kind {
            RenditionKind::Video => Some(self.timeline.origin_from_video(timing.dts_ns)),
            RenditionKind::Audio => self.timeline.origin(),
        };
        let Some(origin) = origin else {
            state.pending.push(sample);
            return Ok(());
        };
        for held in std::mem::take(&mut state.pending) {
            if let Some(held_timing) = PacketTiming::of(&held) {
                self.write(&mut state, &held, &held_timing, origin)?;
            }
        }
        self.write(&mut state, &sample, &timing, origin)
    }

    fn write(
        &self,
        state: &mut SinkState,
        sample: &gst::Sample,
        timing: &PacketTiming,
        origin_ns: i64,
    ) -> Result<(), MediaError> {
        let muxing = match &mut state.muxing {
            Some(muxing) => muxing,
            empty => empty.insert(self.open(sample)?),
        };
        let map = sample
            .buffer()
            .and_then(|b| b.map_readable().ok())
            .ok_or_else(|| {
                MediaError::new(
                    MediaErrorCode::Internal,
                    format!("{}: cannot map an encoded buffer", self.name),
                )
            })?;
        let pts_ns = timing.pts_ns - origin_ns;
        let dts_ns = timing.dts_ns - origin_ns;
        let writer = match &mut muxing.muxer {
            Mux::Hls(muxer) => {
                muxer.write(
                    pts_ns,
                    dts_ns,
                    timing.duration_ns,
                    timing.keyframe,
                    map.as_slice(),
                )?;
                let codecs = muxing.codecs.clone();
                self.note_boundary(&mut state.boundaries, pts_ns, timing.keyframe);
                self.report_closed_segment(state, codecs);
                return Ok(());
            }
            Mux::Parts(writer) => writer,
        };
        // An fMP4 decode time cannot be negative: audio from before the
        // video's first frame (the timeline's zero) has nothing to play with.
        if dts_ns < 0 {
            return Ok(());
        }
        let segments_before = state.boundaries.len();
        self.note_boundary(&mut state.boundaries, pts_ns, timing.keyframe);
        let new_segment = segments_before > 0 && state.boundaries.len() > segments_before;
        let target_ns = self.parts.as_ref().map_or(0.5, |p| p.target_s) * 1e9;
        let end_ns = dts_ns + timing.duration_ns.unwrap_or(0);
        let part_full = writer
            .part_start_ns
            .is_some_and(|start| (end_ns - start) as f64 > target_ns + 1e6);
        if new_segment {
            self.cut_part(writer, &muxing.codecs, dts_ns)?;
            let end = state.boundaries[segments_before];
            self.close_segment(writer, &muxing.codecs, end, true)?;
            writer.segment_start_ns = pts_ns;
        } else if part_full {
            self.cut_part(writer, &muxing.codecs, dts_ns)?;
        }
        if writer.part_start_ns.is_none() {
            writer.part_start_ns = Some(dts_ns);
            writer.part_independent = timing.keyframe;
            if writer.segment.is_empty() && writer.part_index == 0 {
                writer.segment_start_ns = pts_ns;
            }
        }
        writer.muxer.write(
            pts_ns,
            dts_ns,
            timing.duration_ns,
            timing.keyframe,
            map.as_slice(),
        )?;
        writer.last_end_ns = writer.last_end_ns.max(end_ns);
        Ok(())
    }

    /// Cuts the open part (ending where the packet at `end_ns` starts)
    /// and reports it.
    fn cut_part(
        &self,
        writer: &mut PartWriter,
        codecs: &str,
        end_ns: i64,
    ) -> Result<(), MediaError> {
        let Some(start) = writer.part_start_ns.take() else {
            return Ok(());
        };
        let data = writer.muxer.cut()?;
        if data.is_empty() {
            return Ok(());
        }
        writer.segment.extend_from_slice(&data);
        if let Some(parts) = &self.parts {
            (parts.observer)(PartReady {
                kind: self.kind,
                rendition: self.name.clone(),
                dir: self.dir.clone(),
                segment: writer.segment_index,
                index: writer.part_index,
                file_name: part_file_name(writer.segment_index, writer.part_index),
                init_file: hls_mux::INIT_FILE.to_string(),
                duration_s: (end_ns - start).max(0) as f64 / 1e9,
                independent: writer.part_independent,
                codecs: codecs.to_string(),
                data,
            });
        }
        writer.part_index += 1;
        Ok(())
    }

    /// Writes the open segment's file (its parts, concatenated), records
    /// it, and reports it when `report`.
    fn close_segment(
        &self,
        writer: &mut PartWriter,
        codecs: &str,
        end_pts_ns: i64,
        report: bool,
    ) -> Result<(), MediaError> {
        if writer.segment.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut writer.segment);
        let file_name = hls_mux::segment_file_name(writer.segment_index);
        // Written whole under a temporary name, then renamed: the file
        // appearing is what says it is complete.
        let temporary = self.dir_abs.join(format!("{file_name}.tmp"));
        std::fs::write(&temporary, &data)?;
        std::fs::rename(&temporary, self.dir_abs.join(&file_name))?;
        let keyframes = match writer.timescale {
            Some(scale) => keyframes::keyframe_ranges(&data, scale)?,
            None => Vec::new(),
        };
        let duration_s = (end_pts_ns - writer.segment_start_ns).max(0) as f64 / 1e9;
        writer.segments.push(EncodedSegment {
            file_name: file_name.clone(),
            duration_s,
            bytes: data.len() as u64,
            start_s: writer.segment_start_ns as f64 / 1e9,
            keyframes,
        });
        if report {
            if let Some(observer) = &self.observer {
                observer(SegmentReady {
                    kind: self.kind,
                    rendition: self.name.clone(),
                    dir: self.dir.clone(),
                    index: writer.segment_index,
                    file_name,
                    init_file: hls_mux::INIT_FILE.to_string(),
                    duration_s,
                    codecs: codecs.to_string(),
                });
            }
        }
        writer.segment_index += 1;
        writer.part_index = 0;
        Ok(())
    }

    /// Where libavformat cuts, followed from the packets written: at the
    /// first keyframe (every audio packet is one) at or after each multiple
    /// of `segment_time_s` from the first packet, which is its rule.
    fn note_boundary(&self, boundaries: &mut Vec<i64>, pts_ns: i64, keyframe: bool) {
        if !keyframe {
            return;
        }
        let Some(&first) = boundaries.first() else {
            boundaries.push(pts_ns);
            return;
        };
        let due = boundaries.len() as f64 * self.segment_time_s * 1e9;
        if (pts_ns - first) as f64 >= due - 1.0 {
            boundaries.push(pts_ns);
        }
    }

    /// A segment is complete on disk once the packets have passed its end
    /// and its own file exists: libavformat's HLS muxer keeps an fMP4
    /// segment in memory and writes its file whole, inside the write call
    /// (on this thread) of the packet that closes it — possibly a fragment
    /// after the cut followed above, so the file is the signal. Waiting
    /// for the next segment's file instead, as before, listed every
    /// segment one segment late (2 s of a live stream's latency). Its
    /// duration is between the cuts, never the time until the signal,
    /// which would credit it with its successor's.
    fn report_closed_segment(&self, state: &mut SinkState, codecs: String) {
        let Some(observer) = &self.observer else {
            return;
        };
        loop {
            let file = hls_mux::segment_file_name(state.next_segment);
            let (Some(&start), Some(&end)) = (
                state.boundaries.get(state.next_segment),
                state.boundaries.get(state.next_segment + 1),
            ) else {
                return;
            };
            if !self.dir_abs.join(&file).exists() {
                return;
            }
            observer(SegmentReady {
                kind: self.kind,
                rendition: self.name.clone(),
                dir: self.dir.clone(),
                index: state.next_segment,
                file_name: file,
                init_file: hls_mux::INIT_FILE.to_string(),
                duration_s: (end - start) as f64 / 1e9,
                codecs: codecs.clone(),
            });
            state.next_segment += 1;
        }
    }

    fn open(&self, sample: &gst::Sample) -> Result<Muxing, MediaError> {
        let internal = |what: &str| {
            MediaError::new(MediaErrorCode::Internal, format!("{}: {what}", self.name))
        };
        let caps = sample
            .caps()
            .ok_or_else(|| internal("sample without caps"))?;
        let s = caps.structure(0).ok_or_else(|| internal("empty caps"))?;
        let codec_data = s
            .get::<gst::Buffer>("codec_data")
            .map_err(|_| internal("encoded caps carry no codec_data"))?;
        let codec_data = codec_data
            .map_readable()
            .map_err(|_| internal("cannot map codec_data"))?;
        let int = |field: &str| -> Result<u32, MediaError> {
            s.get::<i32>(field)
                .map(|v| v as u32)
                .map_err(|_| internal(&format!("encoded caps lack {field}")))
        };
        let (params, codecs) = match self.kind {
            RenditionKind::Video => (
                StreamParams::Video {
                    width: int("width")?,
                    height: int("height")?,
                },
                codec_string::avc1_from_avcc(&codec_data)?,
            ),
            RenditionKind::Audio => (
                StreamParams::Audio {
                    sample_rate: int("rate")?,
                    channels: int("channels")? as u16,
                },
                codec_string::mp4a_from_audio_specific_config(&codec_data)?,
            ),
        };
        if self.parts.is_some() {
            let muxer = PartMuxer::open(params, &codec_data)?;
            std::fs::write(self.dir_abs.join(hls_mux::INIT_FILE), muxer.init())?;
            let timescale = match self.kind {
                RenditionKind::Video => Some(keyframes::timescale(muxer.init())?),
                RenditionKind::Audio => None,
            };
            return Ok(Muxing {
                muxer: Mux::Parts(Box::new(PartWriter {
                    muxer,
                    timescale,
                    segment: Vec::new(),
                    segment_index: 0,
                    part_index: 0,
                    part_start_ns: None,
                    part_independent: false,
                    last_end_ns: 0,
                    segment_start_ns: 0,
                    segments: Vec::new(),
                })),
                codecs,
                params,
            });
        }
        // Parts of a chunked encode are stitched into one playlist: their
        // fragments must carry whole-source times, not restart at zero.
        let absolute = self.timeline.fixed_origin_ns.is_some();
        let muxer = RenditionMuxer::open(
            &self.dir_abs,
            params,
            &codec_data,
            self.segment_time_s,
            absolute,
        )?;
        Ok(Muxing {
            muxer: Mux::Hls(muxer),
            codecs,
            params,
        })
    }

    fn finish(&self) -> Result<EncodedRendition, MediaError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Audio still held means no video packet ever came: keep audio's own time.
        let origin = self.timeline.origin().unwrap_or(0);
        for held in std::mem::take(&mut state.pending) {
            if let Some(timing) = PacketTiming::of(&held) {
                self.write(&mut state, &held, &timing, origin)?;
            }
        }
        let muxing = state.muxing.take().ok_or_else(|| {
            MediaError::new(
                MediaErrorCode::CorruptMedia,
                format!("no {:?} could be decoded for {}", self.kind, self.name),
            )
        })?;
        let segments = match muxing.muxer {
            Mux::Hls(muxer) => muxer.finish()?,
            Mux::Parts(mut writer) => {
                // The last part and segment are not reported: the caller
                // publishes what `finish` returns that it was not told of.
                let end = writer.last_end_ns;
                let last = writer.muxer.finish()?;
                writer.segment.extend_from_slice(&last);
                writer.part_start_ns = None;
                self.close_segment(&mut writer, &muxing.codecs, end, false)?;
                writer.segments
            }
        };
        let (width, height, channels, sample_rate) = match muxing.params {
            StreamParams::Video { width, height } => (Some(width), Some(height), None, None),
            StreamParams::Audio {
                sample_rate,
                channels,
            } => (None, None, Some(channels), Some(sample_rate)),
        };
        Ok(EncodedRendition {
            kind: self.kind,
            name: self.name.clone(),
            dir: self.dir.clone(),
            init_file: hls_mux::INIT_FILE.to_string(),
            segments,
            codecs: muxing.codecs,
            width,
            height,
            frame_rate: self.frame_rate,
            channels,
            sample_rate,
        })
    }
}

/// GStreamer and libav* set up once per process, with libav's log quietened.
pub(crate) fn init_media_libraries() -> Result<(), MediaError> {
    static FFMPEG_LOG: Once = Once::new();
    gst::init().map_err(|e| {
        MediaError::new(
            MediaErrorCode::Internal,
            format!("GStreamer init failed: {e}"),
        )
    })?;
    ffmpeg_next::init().map_err(|e| {
        MediaError::new(MediaErrorCode::Internal, format!("FFmpeg init failed: {e}"))
    })?;
    // The hls muxer logs every segment it opens at info level.
    FFMPEG_LOG
        .call_once(|| ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Warning));
    Ok(())
}

fn make(factory: &str) -> Result<gst::Element, MediaError> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        MediaError::new(
            MediaErrorCode::Internal,
            format!("GStreamer element {factory} is not installed"),
        )
    })
}

fn capsfilter(caps: gst::Caps) -> Result<gst::Element, MediaError> {
    let filter = make("capsfilter")?;
    filter.set_property("caps", caps);
    Ok(filter)
}

fn link_error(what: &str) -> MediaError {
    MediaError::new(MediaErrorCode::Internal, format!("cannot link {what}"))
}

/// Adds `elements` to the pipeline and links them in order.
fn add_chain(pipeline: &gst::Pipeline, elements: &[gst::Element]) -> Result<(), MediaError> {
    pipeline
        .add_many(elements)
        .map_err(|_| link_error("(adding elements)"))?;
    gst::Element::link_many(elements).map_err(|_| {
        let names: Vec<_> = elements.iter().map(|e| e.name().to_string()).collect();
        link_error(&names.join(" ! "))
    })
}

fn make_appsink(
    caps: gst::Caps,
    on_sample: impl Fn(gst::Sample) -> Result<(), MediaError> + Send + Sync + 'static,
    errors: Arc<FirstError>,
) -> gst::Element {
    gst_app::AppSink::builder()
        .caps(&caps)
        // Encoding runs as fast as it can; nothing is displayed.
        .sync(false)
        // No preroll: a sink blocked in PAUSED waiting for PLAYING stops its
        // branch, the tee then blocks the others, and an x264 rung that needs
        // a lookahead of frames before its first output never prerolls.
        .async_(false)
        // Back-pressure instead of unbounded memory if a muxer is slow.
        .max_buffers(64)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    on_sample(sample).map_err(|e| {
                        errors.record(e);
                        gst::FlowError::Error
                    })?;
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build()
        .upcast()
}

#[allow(clippy::too_many_arguments)]
fn rendition_sink(
    kind: RenditionKind,
    name: &str,
    out_dir: &Path,
    segment_time_s: f64,
    frame_rate: Option<Rational>,
    timeline: &Arc<Timeline>,
    observer: Option<SegmentObserver>,
    parts: Option<PartOptions>,
) -> Result<Arc<RenditionSink>, MediaError> {
    let dir = match kind {
        RenditionKind::Video => format!("v/{name}"),
        RenditionKind::Audio => format!("a/{name}"),
    };
    let dir_abs = out_dir.join(&dir);
    std::fs::create_dir_all(&dir_abs)?;
    Ok(Arc::new(RenditionSink {
        kind,
        name: name.to_string(),
        dir,
        dir_abs,
        segment_time_s,
        frame_rate,
        timeline: timeline.clone(),
        state: Mutex::default(),
        observer,
        parts,
    }))
}

/// What every rung's raw video has in common: 8-bit I420 at the plan's one
/// frame rate and colorimetry.
fn rung_caps(rung: &VideoRendition) -> gst::caps::Builder<gst::caps::NoFeature> {
    let builder = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field(
            "framerate",
            gst::Fraction::new(rung.frame_rate.num, rung.frame_rate.den),
        );
    match &rung.colorimetry {
        Some(colorimetry) => builder.field("colorimetry", colorimetry.as_str()),
        None => builder,
    }
}

/// Which rung each rung is scaled from, and the scaled pictures of those
/// that feed another, so a lower rung can be scaled from a higher one
/// instead of from the top.
///
/// GStreamer's bilinear scaler reads two source pixels per output pixel:
/// down to half size that averages every source pixel, below it pixels
/// are skipped and fine detail aliases. A rung scaled from a rung at
/// least twice its size (240p from 480p) scales a third of the pixels;
/// such a rung, and one below half the source's size, is scaled with its
/// content class's filter, sinc or cubic ([`scale_method`]).
///
/// Only a rung that feeds another gets a `tee` (and the queue after it):
/// every other rung keeps one queue and a scale before x264, with no
/// extra thread hop per frame.
pub(crate) struct ScaledRungs {
    /// Per rung: the index of the rung it is scaled from, if not the top.
    source: Vec<Option<usize>>,
    /// Per rung: its scaled picture's tee, once built, if it feeds another.
    tees: Vec<Option<gst::Element>>,
    /// Per rung: its short side.
    shorts: Vec<u32>,
    /// The decoded picture's short side (at least the top rung's).
    picture_short: u32,
    /// Per rung: its filter at half size or less.
    downscalers: Vec<Downscaler>,
}

impl ScaledRungs {
    /// Plans `rungs` (top first): each is scaled from the smallest rung
    /// above it that was itself scaled and is at least twice its size,
    /// except a rung with the cubic filter (text: slides, the slide behind
    /// a talking head), which is scaled from the top's picture — scaled
    /// twice, text blurs twice: the talking head's 240p before encoding
    /// scored 0.9167 SSIM from the 480p picture against 0.9179 from the
    /// source, and the cascade's saving is small at a talking head's
    /// lowest rung.
    ///
    /// `picture_short` is the short side of the decoded picture the rungs
    /// are scaled from (the source's; 0 when unknown, taken as the top
    /// rung's): a 4K source's 720p rung is a third of it, below half size,
    /// though the top rung (1080p) is not.
    pub(crate) fn for_ladder(rungs: &[VideoRendition], picture_short: u32) -> Self {
        let shorts: Vec<u32> = rungs.iter().map(|r| r.width.min(r.height)).collect();
        let picture_short = picture_short.max(shorts.first().copied().unwrap_or(0));
        let mut source = cascade_sources(&shorts, picture_short);
        for (from, rung) in source.iter_mut().zip(rungs) {
            if rung.downscaler == Downscaler::Cubic {
                *from = None;
            }
        }
        Self {
            source,
            tees: vec![None; rungs.len()],
            shorts,
            picture_short,
            downscalers: rungs.iter().map(|r| r.downscaler).collect(),
        }
    }

    /// The scaler for rung `index`, by how far it is scaled down.
    fn method(&self, index: usize) -> &'static str {
        let to = self.shorts.get(index).copied().unwrap_or(0);
        let downscaler = self.downscalers.get(index).copied().unwrap_or_default();
        let cascaded = self.source.get(index).copied().flatten().is_some();
        scale_method(cascaded, self.picture_short, to, downscaler)
    }

    fn feeds_another(&self, index: usize) -> bool {
        self.source.contains(&Some(index))
    }
}

/// The `videoscale` method for a rung of short side `to`, `cascaded` from
/// a rung at least twice its size or else scaled from the decoded picture
/// (short side `from`, the source's): the rung's [`Downscaler`] when
/// cascaded or below half size, else bilinear.
///
/// Below half size bilinear skips pixels and aliases; scaling a picture
/// bilinear already scaled once (240p from 480p, exactly half: a box
/// filter) blurs twice. On the real clip's 240p rung from 480p, luma SSIM
/// against the source (both pictures upscaled with lanczos) was 0.913
/// with bilinear, 0.921 lanczos, 0.940 sinc, 0.934 ffmpeg's bicubic;
/// encoded at the rung's cap 0.810 bilinear, 0.835 sinc, ffmpeg 0.828,
/// at the same bytes. Above half size bilinear already scores above
/// ffmpeg's rungs and costs least. A 360p rung straight from a 720p
/// source (exactly half, from the source's own picture) stays bilinear:
/// it scored above ffmpeg's too.
fn scale_method(cascaded: bool, from: u32, to: u32, downscaler: Downscaler) -> &'static str {
    let below_half = to > 0 && from > 2 * to;
    match downscaler {
        _ if !cascaded && !below_half => "bilinear",
        Downscaler::Sinc => "sinc",
        Downscaler::Cubic => "catrom",
    }
}

/// For rungs of these short sides (top first), scaled from a picture of
/// short side `picture_short`, the rung each is scaled from: the smallest
/// one above it that is itself scaled (smaller than the picture) and at
/// least twice its size; `None` is the decoded picture.
fn cascade_sources(shorts: &[u32], picture_short: u32) -> Vec<Option<usize>> {
    shorts
        .iter()
        .enumerate()
        .map(|(i, &short)| {
            (0..i)
                .filter(|&j| shorts[j] < picture_short && shorts[j] >= 2 * short)
                .min_by_key(|&j| shorts[j])
        })
        .collect()
}

/// Queue → scale → exact caps (→ tee → queue, when a lower rung is scaled
/// from this one) → x264 → avcC H.264 → appsink (with Lectern's bilinear
/// element the queue comes after the scale), scaled from the source's tee
/// or from a rung at least twice its size
/// ([`ScaledRungs`]). The frame rate is already the rung's (one `videorate`
/// before the first tee serves all).
fn video_rung_branch(
    pipeline: &gst::Pipeline,
    tee: &gst::Element,
    scaled: &mut ScaledRungs,
    index: usize,
    rung: &VideoRendition,
    sink: Arc<RenditionSink>,
    errors: Arc<FirstError>,
) -> Result<(), MediaError> {
    let tee = match scaled.source.get(index).copied().flatten() {
        Some(j) => scaled.tees[j]
            .clone()
            .ok_or_else(|| link_error("a rung scaled from one not built yet"))?,
        None => tee.clone(),
    };
    let raw_caps = rung_caps(rung)
        .field("width", rung.width as i32)
        .field("height", rung.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let method = scaled.method(index);
    let own_bilinear = method == "bilinear" && bilinear::available();
    let scale = if own_bilinear {
        // The same taps as `videoscale`'s bilinear, vectorised (the 480p
        // rung's scaling was 8 % of a lecture's CPU); it stretches to the
        // even rung size as `add-borders=false` does below.
        bilinear::Bilinear::new().upcast()
    } else {
        let scale = make("videoscale")?;
        // Rung sizes are rounded to even numbers; stretch by that sub-pixel
        // amount rather than add a black border line.
        scale.set_property("add-borders", false);
        set_from_str(&scale, "method", method)
            .map_err(|()| link_error(&format!("videoscale method {method}")))?;
        scale
    };

    let x264 = make("x264enc")?;
    let bad = |what: &str, value: &str| {
        MediaError::new(
            MediaErrorCode::Internal,
            format!("rung {}: invalid x264 {what} {value:?}", rung.name),
        )
    };
    set_from_str(&x264, "speed-preset", &rung.x264_preset)
        .map_err(|()| bad("preset", &rung.x264_preset))?;
    // Capped CRF: `pass=qual` makes `quantizer` the CRF and `bitrate` the VBV
    // max rate; the buffer is given in milliseconds of that rate.
    set_from_str(&x264, "pass", "qual").map_err(|()| bad("pass", "qual"))?;
    x264.set_property("quantizer", u32::from(rung.crf));
    x264.set_property("bitrate", rung.maxrate_kbps);
    let buffer_ms = (u64::from(rung.bufsize_kbps) * 1000 / u64::from(rung.maxrate_kbps.max(1)))
        .clamp(1, 10_000) as u32;
    x264.set_property("vbv-buf-capacity", buffer_ms);
    x264.set_property("key-int-max", rung.keyframe_interval_frames);
    if let Some(tune) = &rung.x264_tune {
        // x264enc splits x264's tunes into two properties.
        let property = match tune.as_str() {
            "stillimage" | "fastdecode" | "zerolatency" => "tune",
            _ => "psy-tune",
        };
        set_from_str(&x264, property, tune).map_err(|()| bad("tune", tune))?;
    }
    // Keyframes exactly every N frames and nowhere else, in every rung, so
    // segments from all rungs start at the same timestamps and players can
    // switch rungs at any segment boundary.
    let k = rung.keyframe_interval_frames;
    let mut options = format!("scenecut=0:keyint={k}:min-keyint={k}");
    if !rung.h264_level.is_empty() {
        options.push_str(&format!(":level={}", rung.h264_level));
    }
    x264.set_property("option-string", options);

    let h264_caps = gst::Caps::builder("video/x-h264")
        .field("profile", rung.h264_profile.as_str())
        .field("stream-format", "avc")
        .field("alignment", "au")
        .build();
    let appsink = make_appsink(
        gst::Caps::builder("video/x-h264")
            .field("stream-format", "avc")
            .field("alignment", "au")
            .build(),
        move |sample| sink.handle(sample),
        errors,
    );
    let mut chain = Vec::new();
    if !own_bilinear {
        // Lectern's bilinear element scales on the thread that decoded the
        // frame, before the queue (added below): the frame is at its most
        // likely to be in cache there, and the queue hands x264 the
        // smaller picture (on the slide lecture, 1.4 % less wall time than
        // scaling after the queue).
        chain.push(make("queue")?);
    }
    if rung.downscaler != Downscaler::Cubic || method == "bilinear" {
        chain.extend([scale, capsfilter(raw_caps)?]);
    } else {
        // The cubic filter on 8-bit samples loses what it is chosen for
        // (text): GStreamer's 8-bit scaler rounds its taps coarsely, and
        // on the talking head's 240p (before encoding) scored 0.9144 SSIM
        // against the source where the same filter on 10-bit samples
        // scored 0.9179 and ffmpeg's swscale 0.9185. Only these rungs pay
        // for the two conversions. Sinc rungs (natural pictures) stay on
        // 8-bit samples: they already score above ffmpeg's, and in the one
        // benchmark run with sinc on 10-bit samples the real clip's ladder
        // took 18 % more CPU relative to ffmpeg's than the run before.
        let deep = |caps: gst::caps::Builder<gst::caps::NoFeature>| {
            capsfilter(caps.field("format", DEEP_SCALING_FORMAT).build())
        };
        let to_8_bit = make("videoconvert")?;
        set_from_str(&to_8_bit, "dither", "none")
            .map_err(|()| link_error("videoconvert dither none"))?;
        chain.extend([
            make("videoconvert")?,
            deep(gst::Caps::builder("video/x-raw"))?,
            scale,
            deep(
                gst::Caps::builder("video/x-raw")
                    .field("width", rung.width as i32)
                    .field("height", rung.height as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1)),
            )?,
            to_8_bit,
            capsfilter(raw_caps)?,
        ]);
    }
    if scaled.feeds_another(index) {
        let rung_tee = make("tee")?;
        chain.extend([rung_tee.clone(), make("queue")?]);
        scaled.tees[index] = Some(rung_tee);
    } else if own_bilinear {
        chain.push(make("queue")?);
    }
    chain.extend([x264, capsfilter(h264_caps)?, make("h264parse")?, appsink]);
    add_chain(pipeline, &chain)?;
    tee.link(&chain[0])
        .map_err(|_| link_error(&format!("tee to rung {}", rung.name)))
}

/// The sample format a cubic (text) rung is scaled in when it is scaled
/// below half size or from another rung (see `video_rung_branch`).
const DEEP_SCALING_FORMAT: &str = "I420_10LE";

/// Validates a string against an enum/flags property instead of letting
/// `set_property_from_str` panic on a typo in an operator's profile.
fn set_from_str(element: &gst::Element, property: &str, value: &str) -> Result<(), ()> {
    let pspec = element.find_property(property).ok_or(())?;
    let value = gst::glib::Value::deserialize(value, pspec.value_type()).map_err(|_| ())?;
    element.set_property_from_value(property, &value);
    Ok(())
}

/// Low frame rate → queue → scaled RGB → appsink, for poster and storyboard.
fn thumbnail_branch(
    pipeline: &gst::Pipeline,
    tee: &gst::Element,
    (width, height): (u32, u32),
    frame_rate: gst::Fraction,
    on_frame: impl Fn(RgbFrame) + Send + Sync + 'static,
    errors: Arc<FirstError>,
) -> Result<(), MediaError> {
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("framerate", frame_rate)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let convert = make("videoconvertscale")?;
    convert.set_property("add-borders", false);
    let appsink = make_appsink(
        caps.clone(),
        move |sample| {
            let pts_s = sample
                .buffer()
                .and_then(|b| b.pts())
                .zip(
                    sample
                        .segment()
                        .and_then(|s| s.downcast_ref::<gst::ClockTime>()),
                )
                .and_then(|(pts, segment)| segment.to_running_time(pts))
                .map_or(0.0, |t| t.nseconds() as f64 / 1e9);
            on_frame(RgbFrame::from_sample(&sample, pts_s)?);
            Ok(())
        },
        errors,
    );
    // The rate first, on the tee's thread: the queue (a thread hop per
    // buffer) then carries one frame a second or less, not all of them.
    let chain = [
        make("videorate")?,
        make("queue")?,
        convert,
        capsfilter(caps)?,
        appsink,
    ];
    add_chain(pipeline, &chain)?;
    tee.link(&chain[0])
        .map_err(|_| link_error("tee to thumbnails"))
}

/// Stereo at the planned rate (audioconvert downmixes surround) → the
/// loudness gain, when there is one → AAC.
fn audio_chain(
    pipeline: &gst::Pipeline,
    audio: &AudioRendition,
    gain: f64,
    sink: Arc<RenditionSink>,
    errors: Arc<FirstError>,
) -> Result<gst::Element, MediaError> {
    let raw_caps = gst::Caps::builder("audio/x-raw")
        .field("channels", i32::from(audio.channels))
        .field("rate", audio.sample_rate as i32)
        .build();
    let aac = make("avenc_aac")?;
    aac.set_property("bitrate", (audio.bitrate_kbps * 1000) as i32);
    let appsink = make_appsink(
        gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .build(),
        move |sample| sink.handle(sample),
        errors,
    );
    let mut chain = vec![
        make("queue")?,
        make("audioconvert")?,
        make("audioresample")?,
        capsfilter(raw_caps)?,
    ];
    if gain != 1.0 {
        // After the downmix and resampling, where the gain was measured;
        // the second audioconvert hands avenc_aac the planar float it wants.
        let volume = make("volume")?;
        volume.set_property("volume", gain);
        chain.extend([volume, make("audioconvert")?]);
    }
    chain.extend([aac, make("aacparse")?, appsink]);
    add_chain(pipeline, &chain)?;
    Ok(chain[0].clone())
}

/// Decoded video → (untagged: re-tagged) → 8-bit I420 in the plan's
/// colorimetry (10-bit sources are dithered down once) → progressive →
/// the plan's frame rate → (`rotated`: upright per the orientation tag) →
/// tee. Conversion, deinterlacing, rate and rotation happen once at source
/// size, never per rung. Returns the chain's entry and the tee.
///
/// `videoflip` is left out of the chain of a source the probe found no
/// rotation in: with `video-direction=auto` and no tag it copies every
/// frame whole rather than pass it through (2 % of a slide lecture's CPU).
fn video_entry(
    pipeline: &gst::Pipeline,
    top: &VideoRendition,
    untagged_source: bool,
    rotated: bool,
) -> Result<(gst::Element, gst::Element), MediaError> {
    let tee = make("tee")?;
    let mut chain = Vec::new();
    if let (true, Some(colorimetry)) = (untagged_source, &top.colorimetry) {
        // GStreamer gives an untagged decode a default by frame size that
        // can differ from the plan's (BT.2020 for 4K); the pixels are the
        // same either way, so re-tag rather than convert.
        let retag = make("capssetter")?;
        retag.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("colorimetry", colorimetry.as_str())
                .build(),
        );
        chain.push(retag);
    }
    // An interlaced source (a camcorder's 1080i, a broadcast recording)
    // is made progressive once here: otherwise x264 codes every rung as
    // interlaced, which browsers show combed, and the scaled rungs blend
    // the two fields. One output frame per input frame (the top field's
    // time) keeps the probed frame rate the plan is made for; yadif keeps
    // still parts (a slide behind the speaker) at full height, where
    // `linear` halves them (a 720i test card's 720p rung: luma SSIM 0.9735
    // against 0.9725, chroma 0.985 against 0.979). `deinterlace` passes
    // progressive video through untouched.
    let deinterlace = make("deinterlace")?;
    set_from_str(&deinterlace, "fields", "top")
        .map_err(|()| link_error("deinterlace fields=top"))?;
    set_from_str(&deinterlace, "method", "yadif")
        .map_err(|()| link_error("deinterlace method=yadif"))?;
    chain.extend([
        make("videoconvert")?,
        deinterlace,
        make("videorate")?,
        capsfilter(rung_caps(top).build())?,
    ]);
    if rotated {
        let flip = make("videoflip")?;
        set_from_str(&flip, "video-direction", "auto")
            .map_err(|()| link_error("videoflip video-direction=auto"))?;
        chain.push(flip);
    }
    chain.push(tee.clone());
    add_chain(pipeline, &chain)?;
    Ok((chain[0].clone(), tee))
}

/// Maps a GStreamer error message to a stable code: what the user can do
/// about it depends on whether the input or the environment is at fault.
fn classify(err: &gst::message::Error) -> MediaError {
    let element = err.src().map(|s| s.name().to_string()).unwrap_or_default();
    let klass = err
        .src()
        .and_then(|s| s.downcast_ref::<gst::Element>())
        .and_then(|e| e.factory())
        .map(|f| f.klass().to_string())
        .unwrap_or_default();
    let from_media_reader = ["Decoder", "Demux", "Parser"]
        .iter()
        .any(|k| klass.contains(k))
        || element.contains("typefind");
    let error = err.error();
    let code = if let Some(kind) = error.kind::<gst::StreamError>() {
        match kind {
            gst::StreamError::TypeNotFound | gst::StreamError::WrongType => {
                MediaErrorCode::NotMedia
            }
            gst::StreamError::CodecNotFound => MediaErrorCode::UnsupportedCodec,
            gst::StreamError::Decode | gst::StreamError::Demux | gst::StreamError::Format => {
                MediaErrorCode::CorruptMedia
            }
            _ if from_media_reader => MediaErrorCode::CorruptMedia,
            _ => MediaErrorCode::Internal,
        }
    } else if error.kind::<gst::ResourceError>().is_some() {
        MediaErrorCode::Io
    } else if error.kind::<gst::CoreError>() == Some(gst::CoreError::MissingPlugin) {
        MediaErrorCode::UnsupportedCodec
    } else if from_media_reader {
        MediaErrorCode::CorruptMedia
    } else {
        MediaErrorCode::Internal
    };
    let debug = err.debug().map(|d| format!(" ({d})")).unwrap_or_default();
    MediaError::new(code, format!("{element}: {error}{debug}"))
}

/// Encodes `plan` from `source` into `out_dir`: `v/<rung>/init.mp4` and
/// `seg_NNNNN.m4s`, `a/<name>/…`, `poster.jpg`, `storyboard.jpg` and
/// `storyboard.vtt`. Blocking; run it on a blocking thread. `progress`
/// receives 0–100 at most every 0.5 s from this thread, ending with 100.
/// On error or cancellation `out_dir` may hold partial output.
pub fn encode_ladder(
    source: &Path,
    info: &MediaInfo,
    plan: &LadderPlan,
    out_dir: &Path,
    progress: &dyn Fn(f64),
    cancel: &CancelFlag,
) -> Result<EncodeOutput, MediaError> {
    encode_ladder_observed(source, info, plan, out_dir, progress, cancel, None)
}

/// [`encode_ladder`], also reporting each segment as soon as it is closed,
/// so a caller can publish the ladder progressively (fast first playback).
pub fn encode_ladder_observed(
    source: &Path,
    info: &MediaInfo,
    plan: &LadderPlan,
    out_dir: &Path,
    progress: &dyn Fn(f64),
    cancel: &CancelFlag,
    on_segment: Option<SegmentObserver>,
) -> Result<EncodeOutput, MediaError> {
    encode_scoped(
        source,
        info,
        plan,
        EncodeScope::Whole,
        out_dir,
        progress,
        cancel,
        on_segment,
    )
}

/// Encodes `scope` of the ladder `plan` from `source`. For a
/// [`EncodeScope::VideoChunk`], `source` is the chunk file and `info` should
/// carry the chunk's duration (it drives progress).
#[allow(clippy::too_many_arguments)]
pub fn encode_scoped(
    source: &Path,
    info: &MediaInfo,
    plan: &LadderPlan,
    scope: EncodeScope,
    out_dir: &Path,
    progress: &dyn Fn(f64),
    cancel: &CancelFlag,
    on_segment: Option<SegmentObserver>,
) -> Result<EncodeOutput, MediaError> {
    init_media_libraries()?;
    if plan.video.is_empty() && plan.audio.is_none() {
        return Err(MediaError::new(
            MediaErrorCode::NoDecodableStream,
            "the plan has neither video nor audio to encode",
        ));
    }
    std::fs::create_dir_all(out_dir)?;
    let pipeline = gst::Pipeline::new();
    let errors = Arc::new(FirstError::default());
    let duration_s = info.duration_s;

    let filesrc = make("filesrc")?;
    filesrc.set_property("location", source.to_string_lossy().to_string());
    let decodebin = make("decodebin3")?;
    add_chain(&pipeline, &[filesrc, decodebin.clone()])?;

    // Segments are cut at the first keyframe at or after each multiple of
    // this; half a frame below the keyframe period makes that every keyframe.
    let video_segment_time = |rung: &VideoRendition| {
        let fps = rung.frame_rate.as_f64().max(1.0);
        (f64::from(rung.keyframe_interval_frames) - 0.5) / fps
    };
    let lead_ns = (chunk_lead_s(plan) * 1e9).round() as i64;
    let (encode_rungs, encode_audio, make_artwork, fixed_origin_ns) = match scope {
        EncodeScope::Whole => (true, true, true, None),
        EncodeScope::VideoChunk { start_s } => (
            true,
            false,
            false,
            Some(-(lead_ns + (start_s * 1e9).round() as i64)),
        ),
        EncodeScope::AudioAndArtwork => (false, true, true, Some(-lead_ns)),
    };
    let timeline = Arc::new(Timeline {
        expects_video: !plan.video.is_empty() && encode_rungs,
        origin_ns: OnceLock::new(),
        fixed_origin_ns,
    });
    let mut sinks = Vec::new();
    let mut video_input = None;
    let poster = Arc::new(Mutex::new(PosterPicker::new(duration_s * POSTER_POSITION)));
    let tiles = Arc::new(Mutex::new(Vec::new()));
    let mut storyboard_layout = None;
    if let Some(top) = plan.video.first().filter(|_| encode_rungs || make_artwork) {
        let untagged = info
            .primary_video()
            .is_none_or(|v| v.color_matrix.is_none());
        let rotated = info
            .primary_video()
            .is_some_and(|v| v.rotation_deg % 360 != 0);
        let (entry, tee) = video_entry(&pipeline, top, untagged, rotated)?;
        let picture_short = info.primary_video().map_or(0, |v| v.width.min(v.height));
        let mut scaled = ScaledRungs::for_ladder(&plan.video, picture_short);
        for (index, rung) in plan.video.iter().enumerate().filter(|_| encode_rungs) {
            let sink = rendition_sink(
                RenditionKind::Video,
                &rung.name,
                out_dir,
                video_segment_time(rung),
                Some(rung.frame_rate),
                &timeline,
                on_segment.clone(),
                None,
            )?;
            video_rung_branch(
                &pipeline,
                &tee,
                &mut scaled,
                index,
                rung,
                sink.clone(),
                errors.clone(),
            )?;
            sinks.push(sink);
        }
        if make_artwork {
            let picker = poster.clone();
            thumbnail_branch(
                &pipeline,
                &tee,
                thumbnails::poster_size(top.width, top.height),
                gst::Fraction::new(1, 1),
                move |frame| {
                    picker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .offer(frame)
                },
                errors.clone(),
            )?;
            let layout = StoryboardLayout::for_video(duration_s, top.width, top.height);
            let collected = tiles.clone();
            thumbnail_branch(
                &pipeline,
                &tee,
                (layout.tile_width, layout.tile_height),
                gst::Fraction::new(1, layout.interval_s as i32),
                move |frame| {
                    collected
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(frame)
                },
                errors.clone(),
            )?;
            storyboard_layout = Some(layout);
        }
        video_input = Some(entry);
    }
    let mut audio_input = None;
    let mut loudness = None;
    if let Some(audio) = plan.audio.as_ref().filter(|_| encode_audio) {
        loudness = measured_loudness(source, audio, duration_s, cancel)?;
        let sink = rendition_sink(
            RenditionKind::Audio,
            &audio.name,
            out_dir,
            plan.segment_duration_s,
            None,
            &timeline,
            on_segment.clone(),
            None,
        )?;
        let gain = loudness.as_ref().map_or(1.0, LoudnessReport::linear_gain);
        audio_input = Some(audio_chain(
            &pipeline,
            audio,
            gain,
            sink.clone(),
            errors.clone(),
        )?);
        sinks.push(sink);
    }

    // decodebin3 exposes one pad per selected stream (`video_0`, `audio_0`,
    // `text_0`…). The first of each planned kind feeds its chain; anything
    // else is drained into a fakesink so it cannot stall the pipeline.
    let inputs = Mutex::new((video_input, audio_input));
    let pad_errors = errors.clone();
    decodebin.connect_pad_added(move |dbin, pad| {
        let name = pad.name();
        let target = {
            let mut inputs = inputs.lock().unwrap_or_else(|p| p.into_inner());
            if name.starts_with("video") {
                inputs.0.take()
            } else if name.starts_with("audio") {
                inputs.1.take()
            } else {
                None
            }
        };
        let linked = match target {
            Some(entry) => {
                normalize_timeline(pad);
                entry
                    .static_pad("sink")
                    .is_some_and(|sink| pad.link(&sink).is_ok())
            }
            None => drain_into_fakesink(dbin, pad),
        };
        if !linked {
            pad_errors.record(link_error(&format!("decodebin3 pad {name}")));
            gst::element_error!(
                dbin,
                gst::CoreError::Negotiation,
                ["cannot link pad {}", name]
            );
        }
    });

    let result = run(&pipeline, duration_s, progress, cancel, &errors);
    // Stops every streaming thread; after this no callback touches a muxer.
    let _ = pipeline.set_state(gst::State::Null);
    result?;

    let renditions = sinks
        .iter()
        .map(|s| s.finish())
        .collect::<Result<Vec<_>, _>>()?;
    let picked = std::mem::replace(
        &mut *poster.lock().unwrap_or_else(|p| p.into_inner()),
        PosterPicker::new(0.0),
    );
    let poster = picked
        .write(out_dir)?
        .then(|| thumbnails::POSTER_FILE.to_string());
    let storyboard = match storyboard_layout {
        Some(layout) => {
            let tiles = std::mem::take(&mut *tiles.lock().unwrap_or_else(|p| p.into_inner()));
            thumbnails::write_storyboard(&tiles, layout, duration_s, out_dir)?
        }
        None => None,
    };
    progress(100.0);
    Ok(EncodeOutput {
        renditions,
        poster,
        storyboard,
        loudness,
    })
}

/// The loudness pass (see [`measure`]) and the gain it leads to, when the
/// plan asks for one; no pass when the plan already carries the
/// measurement.
fn measured_loudness(
    source: &Path,
    audio: &AudioRendition,
    duration_s: f64,
    cancel: &CancelFlag,
) -> Result<Option<LoudnessReport>, MediaError> {
    let Some(plan) = &audio.loudness else {
        return Ok(None);
    };
    let measured = match plan.measured {
        Some(measured) => measured,
        None => measure::measure_audio(source, &[audio.layout()], duration_s, cancel)?
            .pop()
            .ok_or_else(|| MediaError::new(MediaErrorCode::Internal, "loudness: no measurement"))?,
    };
    let report = LoudnessReport::decide(measured, plan);
    tracing::info!(
        integrated_lufs = ?measured.integrated_lufs,
        true_peak_dbtp = ?measured.true_peak_dbtp,
        range_lu = ?measured.range_lu,
        gain_db = report.gain_db,
        outcome = report.outcome.as_str(),
        "loudness measured"
    );
    Ok(Some(report))
}

/// Rewrites a decoded stream onto one timeline: buffers carry their running
/// time and downstream sees a single segment starting at 0. Demuxers may
/// send several segments before data settles (matroskademux sends one from
/// the first cluster's time, then one from 0); videorate restarts on each,
/// which would hand x264 timestamps that go backwards. Running time is what
/// the demuxer means for playback, so it is kept; only its encoding changes.
fn normalize_timeline(pad: &gst::Pad) {
    let current = Mutex::new(None::<gst::FormattedSegment<gst::ClockTime>>);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
            match &mut info.data {
                Some(gst::PadProbeData::Event(event)) => {
                    let gst::EventView::Segment(segment) = event.view() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let Ok(time) = segment.segment().clone().downcast::<gst::ClockTime>() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    let first = current.is_none();
                    *current = Some(time);
                    if !first {
                        return gst::PadProbeReturn::Drop;
                    }
                    *event = gst::event::Segment::builder(
                        &gst::FormattedSegment::<gst::ClockTime>::new(),
                    )
                    .seqnum(event.seqnum())
                    .build();
                    gst::PadProbeReturn::Ok
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let Some(segment) = current.as_ref() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    // Outside the segment: the demuxer sent it only to prime a decoder.
                    let Some(pts) = buffer.pts().and_then(|t| segment.to_running_time(t)) else {
                        return gst::PadProbeReturn::Drop;
                    };
                    let dts = buffer.dts().and_then(|t| segment.to_running_time(t));
                    let buffer = buffer.make_mut();
                    buffer.set_pts(pts);
                    buffer.set_dts(dts);
                    gst::PadProbeReturn::Ok
                }
                _ => gst::PadProbeReturn::Ok,
            }
        },
    );
}

fn drain_into_fakesink(dbin: &gst::Element, pad: &gst::Pad) -> bool {
    let Some(bin) = dbin.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) else {
        return false;
    };
    let Ok(fakesink) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
    else {
        return false;
    };
    bin.add(&fakesink).is_ok()
        && fakesink.sync_state_with_parent().is_ok()
        && fakesink
            .static_pad("sink")
            .is_some_and(|sink| pad.link(&sink).is_ok())
}

/// Plays the pipeline to EOS, reporting progress, honouring cancellation
/// and giving up on a pipeline that stopped advancing.
fn run(
    pipeline: &gst::Pipeline,
    duration_s: f64,
    progress: &dyn Fn(f64),
    cancel: &CancelFlag,
    errors: &FirstError,
) -> Result<(), MediaError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| MediaError::new(MediaErrorCode::Internal, "pipeline without a bus"))?;
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The reason is on the bus; fall through to read it.
        tracing::debug!("pipeline refused PLAYING");
    }
    progress(0.0);
    let mut last_report = Instant::now();
    let mut last_position = None;
    let mut last_advance = Instant::now();
    loop {
        if cancel.is_cancelled() {
            return Err(MediaError::new(
                MediaErrorCode::Cancelled,
                "encode cancelled",
            ));
        }
        if let Some(message) =
            bus.timed_pop(gst::ClockTime::from_nseconds(BUS_POLL.as_nanos() as u64))
        {
            match message.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(err) => {
                    return Err(errors.take().unwrap_or_else(|| classify(err)));
                }
                _ => {}
            }
        }
        let position = pipeline.query_position::<gst::ClockTime>();
        if position.is_some() && position > last_position {
            last_position = position;
            last_advance = Instant::now();
        } else if last_advance.elapsed() > STALL_TIMEOUT {
            return Err(MediaError::new(
                MediaErrorCode::CorruptMedia,
                format!(
                    "decoding stopped advancing at {:.1} s for {} s: the file is probably truncated or damaged",
                    last_position.map_or(0.0, |p| p.nseconds() as f64 / 1e9),
                    STALL_TIMEOUT.as_secs()
                ),
            ));
        }
        if last_report.elapsed() >= PROGRESS_INTERVAL {
            last_report = Instant::now();
            if let (Some(position), true) = (last_position, duration_s > 0.0) {
                let percent = position.nseconds() as f64 / 1e9 / duration_s * 100.0;
                // 100 is reserved for "finished", after the muxers are closed.
                progress(percent.clamp(0.0, 99.9));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cascade_sources;

    #[test]
    fn rungs_below_half_size_are_scaled_from_a_scaled_rung() {
        // 720p source ladder: 240p from 480p; 360p is exactly half the top,
        // which is the top's own picture, so it scales from the top.
        assert_eq!(
            cascade_sources(&[720, 480, 360, 240], 720),
            [None, None, None, Some(1)]
        );
        // 1080p: 480p from the top (720p is under twice its size), 360p
        // from 720p, 240p from 480p, the smallest rung at least twice its
        // size.
        assert_eq!(
            cascade_sources(&[1080, 720, 480, 360, 240], 1080),
            [None, None, None, Some(1), Some(2)]
        );
        assert_eq!(cascade_sources(&[720, 360], 720), [None, None]);
        // A 4K source: the 1080p top is itself scaled (exactly half) and
        // feeds 480p; 720p, a third of the picture, is scaled from the
        // picture (below half size: its class's filter, not bilinear);
        // 360p from 720p, 240p from 480p.
        assert_eq!(
            cascade_sources(&[1080, 720, 480, 360, 240], 2160),
            [None, None, Some(0), Some(1), Some(2)]
        );
        use crate::ladder::Downscaler::{Cubic, Sinc};
        assert_eq!(super::scale_method(false, 1080, 240, Sinc), "sinc");
        assert_eq!(super::scale_method(false, 1080, 240, Cubic), "catrom");
        assert_eq!(super::scale_method(true, 720, 240, Sinc), "sinc");
        assert_eq!(super::scale_method(true, 720, 240, Cubic), "catrom");
        assert_eq!(super::scale_method(false, 720, 360, Sinc), "bilinear");
        assert_eq!(super::scale_method(false, 720, 480, Cubic), "bilinear");
        assert_eq!(super::scale_method(false, 2160, 720, Sinc), "sinc");
        assert_eq!(super::scale_method(false, 2160, 1080, Sinc), "bilinear");
        assert_eq!(cascade_sources(&[], 0), Vec::<Option<usize>>::new());
    }
}
