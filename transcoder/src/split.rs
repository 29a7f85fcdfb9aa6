//! Splitting a long source into chunks that encode independently.
//!
//! The video stream is copied packet for packet (no re-encode) into one
//! Matroska file per chunk, each starting at a source keyframe at or after
//! the previous chunk's start plus the target length. A chunk's timestamps
//! start at 0 on its keyframe; [`SourceChunk::start_s`] says where that is
//! in the whole source, so the encodes of the chunks put their frames back
//! on one continuous timeline. Audio is not split: it is encoded once, whole
//! (AAC frames do not start cleanly at arbitrary cut points).

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::media::Type as MediaType;
use serde::{Deserialize, Serialize};

use crate::error::{MediaError, MediaErrorCode};

/// One chunk of a source's video, as written by [`split_video`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceChunk {
    /// 0-based, in presentation order.
    pub index: usize,
    pub path: PathBuf,
    /// Presentation time of the chunk's first frame (a keyframe) in the
    /// whole source, seconds from the source's start.
    pub start_s: f64,
    /// Up to the next chunk's start (or the end of the source).
    pub duration_s: f64,
    pub packets: u64,
}

fn split_error(source: &Path, what: &str, e: ffmpeg::Error) -> MediaError {
    let code = match e {
        ffmpeg::Error::Other { .. } => MediaErrorCode::Io,
        ffmpeg::Error::InvalidData => MediaErrorCode::CorruptMedia,
        _ => MediaErrorCode::Internal,
    };
    MediaError::new(code, format!("splitting {}: {what}: {e}", source.display()))
}

struct OpenChunk {
    output: ffmpeg::format::context::Output,
    index: usize,
    path: PathBuf,
    /// Source pts of the keyframe the chunk starts on, in the input time base.
    base_pts: i64,
    start_s: f64,
    packets: u64,
    out_time_base: ffmpeg::Rational,
}

/// Copies the video stream of `source` into chunks of about `target_s`
/// seconds under `out_dir` (`chunk_0000.mkv`, …). A last piece shorter than
/// `target_s / 4` is appended to the chunk before it, so no job is spent on
/// a few seconds. Returns the chunks in order; a source with no keyframe
/// after the first yields one chunk.
pub fn split_video(
    source: &Path,
    out_dir: &Path,
    target_s: f64,
) -> Result<Vec<SourceChunk>, MediaError> {
    crate::encode::init_media_libraries()?;
    std::fs::create_dir_all(out_dir)?;
    let mut input =
        ffmpeg::format::input(source).map_err(|e| split_error(source, "opening the source", e))?;
    let (video_index, time_base, parameters) = {
        let stream = input.streams().best(MediaType::Video).ok_or_else(|| {
            MediaError::new(
                MediaErrorCode::NoDecodableStream,
                "the source has no video stream to split",
            )
        })?;
        (stream.index(), stream.time_base(), stream.parameters())
    };
    // The whole-source timeline GStreamer decodes on starts at the earliest
    // stream start, which is what libavformat reports for the container.
    // SAFETY: reads a plain field of the open AVFormatContext.
    let start_time = unsafe { (*input.as_ptr()).start_time };
    let origin_s = match start_time {
        t if t == ffi_nopts() => 0.0,
        t => t as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE),
    };
    let seconds = |ts: i64| ts as f64 * f64::from(time_base) - origin_s;
    let duration_s = match input.duration() {
        d if d > 0 => d as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE),
        _ => f64::INFINITY,
    };

    let mut done: Vec<SourceChunk> = Vec::new();
    let mut current: Option<OpenChunk> = None;
    let mut last_end_s = 0.0_f64;
    for (stream, mut packet) in input.packets() {
        if stream.index() != video_index {
            continue;
        }
        let Some(pts) = packet.pts().or(packet.dts()) else {
            continue;
        };
        let at_s = seconds(pts);
        let boundary = match &current {
            None => true,
            Some(open) => {
                packet.is_key()
                    && at_s >= open.start_s + target_s
                    // Leave at least a quarter chunk for the last one.
                    && duration_s - at_s >= target_s / 4.0
            }
        };
        if boundary && (current.is_some() || packet.is_key()) {
            if let Some(open) = current.take() {
                done.push(close(source, open, at_s)?);
            }
            current = Some(open_chunk(
                source,
                out_dir,
                done.len(),
                &parameters,
                pts,
                at_s,
            )?);
        }
        let Some(open) = current.as_mut() else {
            // Packets before the first keyframe cannot be decoded on their own.
            continue;
        };
        // A frame shown before the keyframe (open GOP) belongs to the chunk
        // before and cannot be decoded here.
        if pts < open.base_pts {
            continue;
        }
        let duration = packet.duration();
        last_end_s = last_end_s.max(at_s + (duration as f64 * f64::from(time_base)).max(0.0));
        packet.set_pts(Some(pts - open.base_pts));
        packet.set_dts(packet.dts().map(|d| d - open.base_pts));
        packet.rescale_ts(time_base, open.out_time_base);
        packet.set_stream(0);
        packet.set_position(-1);
        packet
            .write_interleaved(&mut open.output)
            .map_err(|e| split_error(source, "writing a chunk packet", e))?;
        open.packets += 1;
    }
    if let Some(open) = current.take() {
        done.push(close(source, open, last_end_s)?);
    }
    if done.is_empty() {
        return Err(MediaError::new(
            MediaErrorCode::CorruptMedia,
            "the video stream has no keyframe to start a chunk on",
        ));
    }
    Ok(done)
}

fn ffi_nopts() -> i64 {
    ffmpeg::ffi::AV_NOPTS_VALUE
}

fn open_chunk(
    source: &Path,
    out_dir: &Path,
    index: usize,
    parameters: &ffmpeg::codec::Parameters,
    base_pts: i64,
    start_s: f64,
) -> Result<OpenChunk, MediaError> {
    let path = out_dir.join(format!("chunk_{index:04}.mkv"));
    let mut output = ffmpeg::format::output_as(&path, "matroska")
        .map_err(|e| split_error(source, "creating a chunk file", e))?;
    {
        let mut stream = output
            .add_stream(ffmpeg::codec::Id::None)
            .map_err(|e| split_error(source, "adding the chunk's stream", e))?;
        let mut parameters = parameters.clone();
        // SAFETY: `parameters` is our own copy. A source tag (e.g. mp4's
        // `avc1`) is meaningless in Matroska and makes the muxer refuse it.
        unsafe {
            (*parameters.as_mut_ptr()).codec_tag = 0;
        }
        stream.set_parameters(parameters);
    }
    let mut options = ffmpeg::Dictionary::new();
    // The keyframe is at 0 and B-frames may decode before it: negative
    // decode times are expected, and shifting them would move the chunk.
    options.set("avoid_negative_ts", "disabled");
    output
        .write_header_with(options)
        .map_err(|e| split_error(source, "writing a chunk header", e))?;
    let out_time_base = output
        .stream(0)
        .map(|s| s.time_base())
        .ok_or_else(|| MediaError::new(MediaErrorCode::Internal, "chunk muxer lost its stream"))?;
    Ok(OpenChunk {
        output,
        index,
        path,
        base_pts,
        start_s,
        packets: 0,
        out_time_base,
    })
}

fn close(source: &Path, mut open: OpenChunk, end_s: f64) -> Result<SourceChunk, MediaError> {
    open.output
        .write_trailer()
        .map_err(|e| split_error(source, "finishing a chunk file", e))?;
    Ok(SourceChunk {
        index: open.index,
        path: open.path,
        start_s: open.start_s,
        duration_s: (end_s - open.start_s).max(0.0),
        packets: open.packets,
    })
}
