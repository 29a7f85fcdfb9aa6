//! What kind of picture and sound a source holds, measured before planning,
//! so the ladder can be chosen per title ([`crate::ladder::adapt`]).
//!
//! Lectures are mostly still slides or a talking head, the cheapest content
//! there is to encode, and a fixed ladder spends on them what it spends on
//! sport. The analysis decodes a few short windows spread over the source
//! (never the whole file: a 40-minute lecture costs a few seconds, a short
//! clip at most a quarter of itself; a picture window starts at a keyframe
//! so nothing is decoded only to be skipped), shrinks
//! every fifth of a second of picture to a 64×36 luma thumbnail and counts
//! how much of it changed since the last one:
//!
//! - **slides**: at least [`SLIDES_STILL_SHARE`] of the comparisons show a
//!   frozen picture (a slide deck changes a few times a minute);
//! - **motion**: on average at least [`MOTION_AREA`] of the picture changes
//!   every fifth of a second;
//! - **talking head**: everything between, a small moving region on a
//!   still background.
//!
//! The same windows' audio says whether a stereo track is really one voice
//! on both channels (a lecture microphone recorded as dual mono), which a
//! mono rendition carries at half the bytes with nothing lost.
//!
//! A source the analysis cannot read is not an error here: the probe has
//! already accepted it, and the encode reports its own failure precisely.
//! The caller then plans the profile unchanged.

use std::path::Path;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::format::{sample::Type as SampleType, Pixel, Sample};
use ffmpeg_next::software::scaling;
use serde::{Deserialize, Serialize};

use crate::error::{MediaError, MediaErrorCode};
use crate::media_info::MediaInfo;

/// Thumbnail size the pictures are compared at: enough to see a hand or a
/// slide change, too small to see compression noise.
const THUMB_W: u32 = 64;
const THUMB_H: u32 = 36;
/// A thumbnail pixel counts as changed past this luma step (of 255).
const PIXEL_STEP: i16 = 8;
/// Pictures are compared this far apart.
const SAMPLE_EVERY_S: f64 = 0.2;
/// Each window decodes this much media…
const WINDOW_S: f64 = 3.0;
/// …and there are this many, one per ten minutes of source, within bounds…
const MIN_WINDOWS: usize = 4;
const MAX_WINDOWS: usize = 12;
/// …together never more than this share of a short source: the analysis
/// runs before the encode can start, so it adds to every title's wait.
const MAX_SHARE_ANALYSED: f64 = 0.25;
/// A comparison where less than this share of the picture changed shows a
/// frozen picture.
const STILL_AREA: f64 = 0.005;
pub const SLIDES_STILL_SHARE: f64 = 0.8;
pub const MOTION_AREA: f64 = 0.08;
/// Stereo whose channels correlate at least this much, with the side
/// signal this far below the mid, is one voice on two channels.
const DUAL_MONO_CORRELATION: f64 = 0.98;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentClass {
    Slides,
    TalkingHead,
    Motion,
}

impl ContentClass {
    /// The name profiles and reports use (`[content.talking_head]`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContentClass::Slides => "slides",
            ContentClass::TalkingHead => "talking_head",
            ContentClass::Motion => "motion",
        }
    }
}

/// What the analysis measured, kept in the plan so a title's ladder can be
/// explained afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentAnalysis {
    /// None for sources without video.
    pub class: Option<ContentClass>,
    /// Share of picture comparisons that showed a frozen picture.
    pub still_share: f64,
    /// Mean share of the picture that changed between comparisons.
    pub moving_area: f64,
    pub comparisons: u32,
    /// Pearson correlation of the left and right channels; none for mono or
    /// when no audio could be read.
    pub channel_correlation: Option<f64>,
    /// The audio is mono, or stereo carrying the same signal twice.
    pub single_voice: bool,
}

/// Measures `source` (see the module docs). Errors only when libav cannot
/// open a file the probe already accepted.
pub fn analyse(source: &Path, info: &MediaInfo) -> Result<ContentAnalysis, MediaError> {
    crate::encode::init_media_libraries()?;
    let mut pictures = PictureStats::default();
    let mut sound = SoundStats::default();
    let duration = info.duration_s.max(0.0);
    let windows = ((duration / 600.0).ceil() as usize).clamp(MIN_WINDOWS, MAX_WINDOWS);
    // At least five comparisons per window, even in a clip of seconds.
    let window_s = (duration * MAX_SHARE_ANALYSED / windows as f64).clamp(1.0, WINDOW_S);
    let video_index = info.primary_video().map(|v| v.index);
    let audio_index = info.primary_audio().map(|a| a.index);
    let mut input = ffmpeg::format::input(source).map_err(|e| open_error(source, e))?;
    let mut video = match video_index {
        Some(i) => Some(VideoWindow::open(&input, i)?),
        None => None,
    };
    let mut audio = match audio_index {
        Some(i) => AudioWindow::open(&input, i).ok(),
        None => None,
    };
    for w in 0..windows {
        // Spread windows evenly, each centred in its share of the source.
        let centre = duration * (w as f64 + 0.5) / windows as f64;
        let start = (centre - window_s / 2.0).max(0.0);
        let end = start + window_s;
        if w > 0 || start > 0.0 {
            let ts = (start * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
            if input.seek(ts, ..ts).is_err() {
                break;
            }
        }
        if let Some(v) = video.as_mut() {
            v.restart(window_s);
        }
        if let Some(a) = audio.as_mut() {
            a.restart();
        }
        let mut video_done = video.is_none();
        let mut audio_done = audio.is_none();
        for (stream, packet) in input.packets() {
            let index = stream.index();
            let at = |ts: Option<i64>| {
                ts.map(|t| t as f64 * f64::from(stream.time_base()))
                    .unwrap_or(f64::NAN)
            };
            if Some(index) == video_index {
                if let Some(v) = video.as_mut() {
                    if v.feed(&packet, at, &mut pictures) {
                        video_done = true;
                    }
                }
            } else if Some(index) == audio_index {
                if let Some(a) = audio.as_mut() {
                    if a.feed(&packet, start, end, at, &mut sound) {
                        audio_done = true;
                    }
                }
            }
            if video_done && audio_done {
                break;
            }
        }
    }
    Ok(ContentAnalysis {
        class: video_index.map(|_| pictures.class()),
        still_share: pictures.still_share(),
        moving_area: pictures.moving_area(),
        comparisons: pictures.comparisons,
        channel_correlation: sound.correlation(),
        single_voice: audio_index.is_some()
            && (info.primary_audio().is_some_and(|a| a.channels == 1)
                || sound
                    .correlation()
                    .is_some_and(|c| c >= DUAL_MONO_CORRELATION)),
    })
}

fn open_error(source: &Path, e: ffmpeg::Error) -> MediaError {
    MediaError::new(
        MediaErrorCode::CorruptMedia,
        format!("cannot reopen {} for analysis: {e}", source.display()),
    )
}

#[derive(Default)]
struct PictureStats {
    comparisons: u32,
    still: u32,
    moving_sum: f64,
}

impl PictureStats {
    fn compare(&mut self, a: &[u8], b: &[u8]) {
        let changed = a
            .iter()
            .zip(b)
            .filter(|(x, y)| (i16::from(**x) - i16::from(**y)).abs() > PIXEL_STEP)
            .count();
        let area = changed as f64 / a.len().max(1) as f64;
        self.comparisons += 1;
        self.moving_sum += area;
        if area < STILL_AREA {
            self.still += 1;
        }
    }

    fn still_share(&self) -> f64 {
        f64::from(self.still) / f64::from(self.comparisons.max(1))
    }

    fn moving_area(&self) -> f64 {
        self.moving_sum / f64::from(self.comparisons.max(1))
    }

    /// With nothing compared (a single still frame) the picture is a slide.
    fn class(&self) -> ContentClass {
        if self.comparisons == 0 || self.still_share() >= SLIDES_STILL_SHARE {
            ContentClass::Slides
        } else if self.moving_area() >= MOTION_AREA {
            ContentClass::Motion
        } else {
            ContentClass::TalkingHead
        }
    }
}

/// A picture window starts at the keyframe the seek lands on rather than
/// at the seek's target: frames between the two would be decoded only to be
/// thrown away (up to a whole GOP per window, ten seconds in some
/// recordings). It never starts before the previous window's end, so a
/// short source's windows do not overlap.
struct VideoWindow {
    decoder: ffmpeg::decoder::Video,
    scaler: Option<scaling::Context>,
    previous: Option<Vec<u8>>,
    next_sample_s: f64,
    /// Set by the first frame decoded after a seek.
    span: Option<(f64, f64)>,
    length_s: f64,
    not_before_s: f64,
    done: bool,
}

impl VideoWindow {
    fn open(input: &ffmpeg::format::context::Input, index: usize) -> Result<Self, MediaError> {
        let stream = input.stream(index).ok_or_else(|| {
            MediaError::new(MediaErrorCode::Internal, "probed video stream vanished")
        })?;
        let mut context = ffmpeg::codec::Context::from_parameters(stream.parameters())
            .map_err(|e| MediaError::new(MediaErrorCode::UnsupportedCodec, e.to_string()))?;
        context.set_threading(ffmpeg::threading::Config::kind(
            ffmpeg::threading::Type::Frame,
        ));
        // The pictures are only shrunk to 64×36 and compared: the
        // deblocking filter (and the spec's exactness, which FLAG2_FAST
        // trades for speed) changes nothing at that size, and the whole
        // analysis runs before the ladder can start.
        // SAFETY: the context is valid and not yet opened; both fields are
        // plain options libavcodec reads when decoding.
        unsafe {
            let raw = context.as_mut_ptr();
            (*raw).skip_loop_filter = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            (*raw).flags2 |= ffmpeg::ffi::AV_CODEC_FLAG2_FAST;
        }
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| MediaError::new(MediaErrorCode::UnsupportedCodec, e.to_string()))?;
        Ok(Self {
            decoder,
            scaler: None,
            previous: None,
            next_sample_s: 0.0,
            span: None,
            length_s: WINDOW_S,
            not_before_s: f64::NEG_INFINITY,
            done: false,
        })
    }

    /// After a seek: frames still in the decoder belong to the last window.
    fn restart(&mut self, length_s: f64) {
        self.decoder.flush();
        self.previous = None;
        self.next_sample_s = f64::NEG_INFINITY;
        if let Some((_, end)) = self.span.take() {
            self.not_before_s = end;
        }
        self.length_s = length_s;
        self.done = false;
    }

    /// Returns true once the window's end has been decoded.
    fn feed(
        &mut self,
        packet: &ffmpeg::Packet,
        at: impl Fn(Option<i64>) -> f64,
        stats: &mut PictureStats,
    ) -> bool {
        if self.done {
            return true;
        }
        if self.decoder.send_packet(packet).is_err() {
            return false;
        }
        let mut frame = ffmpeg::frame::Video::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let t = at(frame.timestamp().or(frame.pts()));
            if t.is_nan() {
                continue;
            }
            let (start, end) = *self.span.get_or_insert_with(|| {
                let start = t.max(self.not_before_s);
                (start, start + self.length_s)
            });
            if t < start || t < self.next_sample_s {
                continue;
            }
            if t >= end {
                self.done = true;
                break;
            }
            self.next_sample_s = t + SAMPLE_EVERY_S;
            if let Some(thumb) = self.thumbnail(&frame) {
                if let Some(previous) = &self.previous {
                    stats.compare(previous, &thumb);
                }
                self.previous = Some(thumb);
            }
        }
        self.done
    }

    fn thumbnail(&mut self, frame: &ffmpeg::frame::Video) -> Option<Vec<u8>> {
        let fits = self.scaler.as_ref().is_some_and(|s| {
            s.input().format == frame.format()
                && s.input().width == frame.width()
                && s.input().height == frame.height()
        });
        if !fits {
            self.scaler = scaling::Context::get(
                frame.format(),
                frame.width(),
                frame.height(),
                Pixel::GRAY8,
                THUMB_W,
                THUMB_H,
                scaling::Flags::AREA,
            )
            .ok();
        }
        let mut gray = ffmpeg::frame::Video::empty();
        self.scaler.as_mut()?.run(frame, &mut gray).ok()?;
        let stride = gray.stride(0);
        let data = gray.data(0);
        let mut out = Vec::with_capacity((THUMB_W * THUMB_H) as usize);
        for row in 0..THUMB_H as usize {
            out.extend_from_slice(&data[row * stride..row * stride + THUMB_W as usize]);
        }
        Some(out)
    }
}

#[derive(Default)]
struct SoundStats {
    lr: f64,
    ll: f64,
    rr: f64,
}

impl SoundStats {
    fn add(&mut self, l: f64, r: f64) {
        self.lr += l * r;
        self.ll += l * l;
        self.rr += r * r;
    }

    fn correlation(&self) -> Option<f64> {
        let energy = (self.ll * self.rr).sqrt();
        (energy > 1e-9).then(|| self.lr / energy)
    }
}

struct AudioWindow {
    decoder: ffmpeg::decoder::Audio,
    done: bool,
}

impl AudioWindow {
    fn open(input: &ffmpeg::format::context::Input, index: usize) -> Result<Self, MediaError> {
        let stream = input.stream(index).ok_or_else(|| {
            MediaError::new(MediaErrorCode::Internal, "probed audio stream vanished")
        })?;
        let context = ffmpeg::codec::Context::from_parameters(stream.parameters())
            .map_err(|e| MediaError::new(MediaErrorCode::UnsupportedCodec, e.to_string()))?;
        let decoder = context
            .decoder()
            .audio()
            .map_err(|e| MediaError::new(MediaErrorCode::UnsupportedCodec, e.to_string()))?;
        Ok(Self {
            decoder,
            done: false,
        })
    }

    fn restart(&mut self) {
        self.decoder.flush();
        self.done = false;
    }

    fn feed(
        &mut self,
        packet: &ffmpeg::Packet,
        start: f64,
        end: f64,
        at: impl Fn(Option<i64>) -> f64,
        stats: &mut SoundStats,
    ) -> bool {
        if self.done {
            return true;
        }
        if self.decoder.send_packet(packet).is_err() {
            return false;
        }
        let mut frame = ffmpeg::frame::Audio::empty();
        while self.decoder.receive_frame(&mut frame).is_ok() {
            let t = at(frame.timestamp().or(frame.pts()));
            if t.is_nan() || t < start {
                continue;
            }
            if t >= end {
                self.done = true;
                break;
            }
            if frame.channels() >= 2 {
                add_first_two_channels(&frame, stats);
            }
        }
        self.done
    }
}

/// Left/right products of one decoded frame, for the formats decoders
/// produce (float and 16-bit, planar or interleaved); others are skipped,
/// which leaves the track treated as stereo.
fn add_first_two_channels(frame: &ffmpeg::frame::Audio, stats: &mut SoundStats) {
    let channels = usize::from(frame.channels());
    let n = frame.samples();
    match frame.format() {
        Sample::F32(SampleType::Planar) => {
            let (l, r) = (frame.plane::<f32>(0), frame.plane::<f32>(1));
            for i in 0..n.min(l.len()).min(r.len()) {
                stats.add(f64::from(l[i]), f64::from(r[i]));
            }
        }
        Sample::I16(SampleType::Planar) => {
            let (l, r) = (frame.plane::<i16>(0), frame.plane::<i16>(1));
            for i in 0..n.min(l.len()).min(r.len()) {
                stats.add(f64::from(l[i]), f64::from(r[i]));
            }
        }
        Sample::F32(SampleType::Packed) => {
            let data = frame.data(0);
            for i in 0..n {
                let at = |c: usize| {
                    let o = (i * channels + c) * 4;
                    data.get(o..o + 4)
                        .map_or(0.0, |b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                };
                stats.add(f64::from(at(0)), f64::from(at(1)));
            }
        }
        Sample::I16(SampleType::Packed) => {
            let data = frame.data(0);
            for i in 0..n {
                let at = |c: usize| {
                    let o = (i * channels + c) * 2;
                    data.get(o..o + 2)
                        .map_or(0, |b| i16::from_ne_bytes([b[0], b[1]]))
                };
                stats.add(f64::from(at(0)), f64::from(at(1)));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(areas: &[f64]) -> PictureStats {
        let mut s = PictureStats::default();
        for &a in areas {
            s.comparisons += 1;
            s.moving_sum += a;
            if a < STILL_AREA {
                s.still += 1;
            }
        }
        s
    }

    #[test]
    fn classes_follow_the_thresholds() {
        assert_eq!(stats(&[0.0; 10]).class(), ContentClass::Slides);
        // A slide change every tenth comparison is still a slide deck.
        let mut deck = vec![0.0; 9];
        deck.push(0.9);
        assert_eq!(stats(&deck).class(), ContentClass::Slides);
        assert_eq!(stats(&[0.05; 10]).class(), ContentClass::TalkingHead);
        assert_eq!(stats(&[0.6; 10]).class(), ContentClass::Motion);
        assert_eq!(PictureStats::default().class(), ContentClass::Slides);
    }

    #[test]
    fn correlation_tells_dual_mono_from_stereo() {
        let mut same = SoundStats::default();
        let mut apart = SoundStats::default();
        for i in 0..1000 {
            let x = (f64::from(i) * 0.05).sin();
            same.add(x, x * 0.9);
            apart.add(x, (f64::from(i) * 0.031).cos());
        }
        assert!(same.correlation().unwrap() > 0.999);
        assert!(apart.correlation().unwrap().abs() < 0.5);
        assert_eq!(SoundStats::default().correlation(), None);
    }
}
