//! One libavformat `hls` muxer per rendition, fed with already-encoded
//! packets from an appsink: it cuts fMP4 (CMAF-style) segments at our
//! keyframes and writes `init.mp4` + `seg_NNNNN.m4s`. GStreamer 1.22 on
//! Debian has no isofmp4mux/cmafmux, and libavformat's fMP4 writer is the
//! one every player is tested against, so packets cross over here.
//!
//! Why fMP4 rather than MPEG-TS: hls.js over MSE and Safari play it
//! without transmuxing, its one init segment makes every media segment
//! smaller, and the same files could later serve DASH.
//!
//! The parts of a chunked encode write absolute decode times with no edit
//! list (`frag_discont`, `use_editlist=0`), so segments of consecutive
//! chunks continue one timeline when stitched into one playlist.
//!
//! The playlist libavformat writes is only read back for the segment list;
//! the published playlists come from the packager. A video rendition's
//! segments are read back too, for where their keyframes are
//! ([`super::keyframes`]).

use std::path::{Path, PathBuf};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

use super::{keyframes, EncodedSegment};
use crate::error::{MediaError, MediaErrorCode};

/// libavformat's own playlist, read back by [`RenditionMuxer::finish`] and removed.
const SCRATCH_PLAYLIST: &str = "libav-index.m3u8";
pub(crate) const INIT_FILE: &str = "init.mp4";

/// Name of segment `index`; must agree with `hls_segment_filename` below.
pub(crate) fn segment_file_name(index: usize) -> String {
    format!("seg_{index:05}.m4s")
}

/// What libavformat needs to know about the encoded stream besides its
/// configuration record (avcC / AudioSpecificConfig).
#[derive(Debug, Clone, Copy)]
pub(crate) enum StreamParams {
    Video { width: u32, height: u32 },
    Audio { sample_rate: u32, channels: u16 },
}

/// The output's one stream, of already-encoded packets. Its time base is
/// a hint only: mov picks its own timescale, which callers read back
/// after `write_header`.
pub(crate) fn add_stream(
    output: &mut ffmpeg::format::context::Output,
    params: StreamParams,
    codecpar: ffmpeg::codec::Parameters,
) -> Result<(), ffmpeg::Error> {
    let mut stream = output.add_stream(ffmpeg::codec::Id::None)?;
    stream.set_parameters(codecpar);
    stream.set_time_base(match params {
        StreamParams::Video { .. } => ffmpeg::Rational::new(1, 90_000),
        StreamParams::Audio { sample_rate, .. } => ffmpeg::Rational::new(1, sample_rate as i32),
    });
    Ok(())
}

/// `ns` in `time_base` units, rounded to nearest so 1/30 s frame
/// boundaries stay exact.
fn to_time_base(time_base: ffmpeg::Rational, ns: i64) -> i64 {
    let num = i128::from(time_base.numerator());
    let den = i128::from(time_base.denominator());
    let scaled = i128::from(ns) * den;
    let divisor = num * 1_000_000_000;
    ((scaled + scaled.signum() * divisor / 2) / divisor) as i64
}

/// An encoded sample as a packet of a one-stream output whose stream
/// settled on `time_base` (times in ns on the pipeline's shared clock).
pub(crate) fn stream_packet(
    time_base: ffmpeg::Rational,
    pts_ns: i64,
    dts_ns: i64,
    duration_ns: Option<i64>,
    keyframe: bool,
    data: &[u8],
) -> ffmpeg::Packet {
    let mut packet = ffmpeg::Packet::copy(data);
    packet.set_stream(0);
    packet.set_pts(Some(to_time_base(time_base, pts_ns)));
    packet.set_dts(Some(to_time_base(time_base, dts_ns)));
    if let Some(d) = duration_ns {
        packet.set_duration(to_time_base(time_base, d));
    }
    if keyframe {
        packet.set_flags(ffmpeg::codec::packet::Flags::KEY);
    }
    packet
}

pub(crate) struct RenditionMuxer {
    output: ffmpeg::format::context::Output,
    dir: PathBuf,
    /// The stream time base libavformat settled on in `write_header`.
    time_base: ffmpeg::Rational,
    first_pts_ns: Option<i64>,
    /// Video segments are read back for their keyframes (trick play).
    video: bool,
}

fn mux_error(what: &str, dir: &Path, e: ffmpeg::Error) -> MediaError {
    let code = match e {
        // Real errno values (ENOSPC, EACCES…) are the filesystem's fault.
        ffmpeg::Error::Other { .. } => MediaErrorCode::Io,
        _ => MediaErrorCode::Internal,
    };
    MediaError::new(code, format!("{what} in {}: {e}", dir.display()))
}

/// The stream's parameters as libavformat's fMP4 writers need them: the
/// codec, its size or sample rate, and the configuration record as extradata.
pub(crate) fn codec_parameters(
    params: StreamParams,
    codec_config: &[u8],
) -> Result<ffmpeg::codec::Parameters, MediaError> {
    let mut codecpar = ffmpeg::codec::Parameters::new();
    // SAFETY: `codecpar` owns a freshly allocated AVCodecParameters that
    // nothing else references. ffmpeg-next has no setters for these
    // fields; extradata must come from av_malloc (with the zeroed padding
    // libavcodec's bitstream readers require) because
    // avcodec_parameters_free releases it with av_free.
    unsafe {
        let p = codecpar.as_mut_ptr();
        match params {
            StreamParams::Video { width, height } => {
                (*p).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                (*p).codec_id = ffi::AVCodecID::AV_CODEC_ID_H264;
                (*p).width = width as i32;
                (*p).height = height as i32;
            }
            StreamParams::Audio {
                sample_rate,
                channels,
            } => {
                (*p).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
                (*p).codec_id = ffi::AVCodecID::AV_CODEC_ID_AAC;
                (*p).sample_rate = sample_rate as i32;
                (*p).frame_size = 1024;
                ffi::av_channel_layout_default(&mut (*p).ch_layout, i32::from(channels));
            }
        }
        let padded = codec_config.len() + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
        let extradata = ffi::av_mallocz(padded) as *mut u8;
        if extradata.is_null() {
            return Err(MediaError::new(
                MediaErrorCode::Internal,
                "out of memory for codec extradata",
            ));
        }
        std::ptr::copy_nonoverlapping(codec_config.as_ptr(), extradata, codec_config.len());
        (*p).extradata = extradata;
        (*p).extradata_size = codec_config.len() as i32;
    }
    Ok(codecpar)
}

impl RenditionMuxer {
    /// `segment_time_s` is where libavformat may cut: it cuts at the first
    /// keyframe at or after each multiple of it, so callers pass slightly
    /// less than the keyframe interval to cut at every keyframe.
    ///
    /// With `absolute_times`, every fragment's decode time (`tfdt`) is the
    /// packet's own, and the init segment has no edit list. By default mov
    /// rebases the first fragment to zero and keeps the offset in an edit
    /// list, which differs per chunk and is lost when chunks are stitched.
    pub(crate) fn open(
        dir: &Path,
        params: StreamParams,
        codec_config: &[u8],
        segment_time_s: f64,
        absolute_times: bool,
    ) -> Result<Self, MediaError> {
        let playlist = dir.join(SCRATCH_PLAYLIST);
        let mut output = ffmpeg::format::output_as(&playlist, "hls")
            .map_err(|e| mux_error("opening the HLS muxer", dir, e))?;

        let codecpar = codec_parameters(params, codec_config)?;

        add_stream(&mut output, params, codecpar)
            .map_err(|e| mux_error("adding a stream", dir, e))?;

        let mut options = ffmpeg::Dictionary::new();
        options.set("hls_time", &format!("{segment_time_s:.6}"));
        options.set("hls_segment_type", "fmp4");
        options.set("hls_fmp4_init_filename", INIT_FILE);
        options.set(
            "hls_segment_filename",
            &dir.join("seg_%05d.m4s").to_string_lossy(),
        );
        options.set("hls_playlist_type", "vod");
        options.set("hls_list_size", "0");
        options.set("hls_flags", "independent_segments");
        if absolute_times {
            options.set(
                "hls_segment_options",
                "movflags=+frag_discont:use_editlist=0:avoid_negative_ts=disabled",
            );
        }
        output
            .write_header_with(options)
            .map_err(|e| mux_error("writing the HLS header", dir, e))?;
        let time_base = output
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| MediaError::new(MediaErrorCode::Internal, "muxer lost its stream"))?;

        Ok(Self {
            output,
            dir: dir.to_path_buf(),
            time_base,
            first_pts_ns: None,
            video: matches!(params, StreamParams::Video { .. }),
        })
    }

    /// Timestamps are pipeline running time in nanoseconds, the same clock
    /// for every rendition, which is what keeps segments aligned across rungs.
    pub(crate) fn write(
        &mut self,
        pts_ns: i64,
        dts_ns: i64,
        duration_ns: Option<i64>,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), MediaError> {
        self.first_pts_ns.get_or_insert(pts_ns);
        let packet = stream_packet(self.time_base, pts_ns, dts_ns, duration_ns, keyframe, data);
        packet.write_interleaved(&mut self.output).map_err(|e| {
            let at = format!("writing the packet at pts {pts_ns} ns dts {dts_ns} ns");
            mux_error(&at, &self.dir, e)
        })
    }

    /// Flushes the last segment and returns every segment in order, a
    /// video segment with where its keyframes are.
    pub(crate) fn finish(mut self) -> Result<Vec<EncodedSegment>, MediaError> {
        self.output
            .write_trailer()
            .map_err(|e| mux_error("finishing the HLS output", &self.dir, e))?;
        let playlist_path = self.dir.join(SCRATCH_PLAYLIST);
        let playlist = std::fs::read_to_string(&playlist_path)?;
        std::fs::remove_file(&playlist_path)?;

        let timescale = if self.video {
            Some(keyframes::timescale(&std::fs::read(
                self.dir.join(INIT_FILE),
            )?)?)
        } else {
            None
        };
        let mut start_s = self.first_pts_ns.unwrap_or(0) as f64 / 1e9;
        let mut segments = Vec::new();
        let mut pending_duration = None;
        for line in playlist.lines() {
            if let Some(rest) = line.strip_prefix("#EXTINF:") {
                let value = rest.split(',').next().unwrap_or_default();
                pending_duration = value.trim().parse::<f64>().ok();
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let duration_s = pending_duration.take().ok_or_else(|| {
                    MediaError::new(
                        MediaErrorCode::Internal,
                        format!("libavformat playlist has a segment without EXTINF: {line}"),
                    )
                })?;
                let path = self.dir.join(line);
                let (bytes, keyframes) = match timescale {
                    Some(scale) => {
                        let data = std::fs::read(&path)?;
                        (data.len() as u64, keyframes::keyframe_ranges(&data, scale)?)
                    }
                    None => (std::fs::metadata(&path)?.len(), Vec::new()),
                };
                segments.push(EncodedSegment {
                    file_name: line.to_string(),
                    duration_s,
                    bytes,
                    start_s,
                    keyframes,
                });
                start_s += duration_s;
            }
        }
        Ok(segments)
    }
}
