//! Probing a source with libavformat (ffmpeg-next): what the file is, which
//! streams it holds, and whether we can decode them, as a [`MediaInfo`].
//!
//! Probing reads a bounded amount of the file (libavformat's probe size plus
//! at most [`MAX_TIMING_PACKETS`] packets), so garbage, truncated or huge
//! inputs come back as a [`MediaError`] quickly instead of hanging.

use std::ffi::{c_char, c_int, CStr};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::format::stream::Disposition;
use ffmpeg_next::media::Type as MediaType;

use crate::error::{MediaError, MediaErrorCode};
use crate::media_info::{AudioStream, MediaInfo, Rational, StreamInfo, VideoStream};

/// How many leading bytes are sniffed when libavformat cannot open a file, to
/// tell a damaged media file from something that never was one.
const SNIFF_BYTES: usize = 4096;
/// libavformat's `AVPROBE_SCORE_RETRY` (a macro bindgen cannot see): below
/// this a content match is a guess, which libavformat itself retries.
const PROBE_SCORE_RETRY: c_int = ffi::AVPROBE_SCORE_MAX / 4;
/// Packets read (across all streams) to judge frame-rate regularity.
const MAX_TIMING_PACKETS: usize = 2000;
/// Video timestamps collected for that judgement.
const TIMING_SAMPLES: usize = 64;
/// Of those, the largest few are dropped: packets arrive in decode order, so
/// with B-frames the newest timestamps still have gaps that later packets
/// fill. 16 is the deepest reordering H.264/HEVC allow.
const REORDER_SLACK: usize = 16;

/// Initialise libav once per process; the outcome is kept so every caller
/// sees the same error if it failed.
fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|e| e.to_string())?;
        // libav logs to stderr by default; a server must not fill its logs
        // with demuxer chatter about every odd upload. Errors still show.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
        Ok(())
    })
    .clone()
    .map_err(|e| MediaError::new(MediaErrorCode::Internal, format!("libav init failed: {e}")))
}

/// Probe a local file. Never panics; every failure has a stable code:
/// `io_error` (unreadable path), `not_media` (empty, or not a media container),
/// `corrupt_media` (a media container libavformat cannot read, e.g. an MP4 cut
/// short before its index), `no_decodable_stream` (a container without audio or
/// video) and `unsupported_codec` (audio/video exist but none can be decoded).
pub fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    let shown = path.display();
    let io_err = |e: std::io::Error| {
        MediaError::new(MediaErrorCode::Io, format!("cannot read {shown}: {e}"))
    };
    let file = File::open(path).map_err(io_err)?;
    let size_bytes = file.metadata().map_err(io_err)?.len();
    if size_bytes == 0 {
        return Err(MediaError::new(
            MediaErrorCode::NotMedia,
            "the file is empty (0 bytes); upload it again",
        ));
    }
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    file.take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;

    init()?;
    let mut input = match ffmpeg::format::input(path) {
        Ok(input) => input,
        Err(e) => return Err(classify_open_failure(&head, &e)),
    };

    let format = input.format();
    let container = format.name().to_owned();
    let container_long_name = format.description().to_owned();
    // Image demuxers happily open a photo as a one-frame "video"; a still
    // picture is not something to stream.
    if container == "image2" || container.ends_with("_pipe") {
        return Err(MediaError::new(
            MediaErrorCode::NotMedia,
            format!("the file is a still image ({container_long_name}), not a video or audio file"),
        ));
    }

    let mut streams = Vec::with_capacity(input.nb_streams() as usize);
    for stream in input.streams() {
        streams.push(describe_stream(&input, &stream));
    }

    let primary_video = streams.iter().find_map(|s| match s {
        StreamInfo::Video(v) => Some(v.index),
        _ => None,
    });
    if let Some(index) = primary_video {
        let declared_vfr = {
            let stream = input.stream(index).expect("index came from this input");
            rates_disagree(stream.avg_frame_rate(), stream.rate())
        };
        let uneven = timestamps_uneven(&mut input, index);
        if let Some(StreamInfo::Video(v)) = streams.iter_mut().find(|s| match s {
            StreamInfo::Video(v) => v.index == index,
            _ => false,
        }) {
            v.variable_frame_rate = uneven || declared_vfr;
        }
    }

    let usable = streams
        .iter()
        .any(|s| matches!(s, StreamInfo::Video(_) | StreamInfo::Audio(_)));
    if !usable {
        return Err(unusable_error(&streams, &container_long_name));
    }
    if let Some(v) = streams.iter().find_map(|s| match s {
        StreamInfo::Video(v) if v.width == 0 || v.height == 0 => Some(v),
        _ => None,
    }) {
        return Err(MediaError::new(
            MediaErrorCode::CorruptMedia,
            format!(
                "the {} video stream has no picture size; the file is damaged or incomplete",
                v.codec
            ),
        ));
    }

    let format_duration = input.duration();
    let duration_s = if format_duration > 0 {
        format_duration as f64 / f64::from(ffi::AV_TIME_BASE)
    } else {
        input
            .streams()
            .filter_map(|s| stream_duration_s(&s))
            .fold(0.0, f64::max)
    };

    Ok(MediaInfo {
        container,
        container_long_name,
        duration_s,
        size_bytes,
        bit_rate: positive(input.bit_rate()),
        streams,
    })
}

/// libavformat could not open the file. If its first bytes still look like a
/// media container, the file is damaged (typically an interrupted upload);
/// otherwise it was never media.
fn classify_open_failure(head: &[u8], error: &ffmpeg::Error) -> MediaError {
    if let Some(format) = sniff_media_format(head) {
        return MediaError::new(
            MediaErrorCode::CorruptMedia,
            format!(
                "the file looks like {format} but cannot be read ({error}); \
                 it is damaged or incomplete, e.g. an upload that was cut short"
            ),
        );
    }
    MediaError::new(
        MediaErrorCode::NotMedia,
        format!(
            "the file is not a video or audio file (detected: {})",
            sniff_other_kind(head)
        ),
    )
}

/// libavformat's content probe over the first bytes, without the file name:
/// the `.mp4` of a renamed PDF must not count as evidence.
fn sniff_media_format(head: &[u8]) -> Option<String> {
    let mut buf = head.to_vec();
    // The probe functions may read this far past the end.
    buf.resize(head.len() + ffi::AVPROBE_PADDING_SIZE as usize, 0);
    let data = ffi::AVProbeData {
        filename: c"".as_ptr(),
        buf: buf.as_mut_ptr(),
        buf_size: c_int::try_from(head.len()).unwrap_or(c_int::MAX),
        mime_type: std::ptr::null(),
    };
    let mut score: c_int = 0;
    // SAFETY: `data` points at `buf`, which outlives the call and carries the
    // padding libavformat requires; the returned format is a static.
    let format = unsafe { ffi::av_probe_input_format3(&data, 1, &mut score) };
    if format.is_null() || score < PROBE_SCORE_RETRY {
        return None;
    }
    // SAFETY: non-null static AVInputFormat with static C strings.
    unsafe { c_str((*format).long_name).or_else(|| c_str((*format).name)) }
}

/// A human name for common non-media uploads, for the error message.
fn sniff_other_kind(head: &[u8]) -> String {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"%PDF", "a PDF document"),
        (b"PK\x03\x04", "a ZIP archive or Office document"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"Rar!", "a RAR archive"),
        (b"7z\xbc\xaf", "a 7-Zip archive"),
        (b"\xd0\xcf\x11\xe0", "a legacy Office document"),
        (b"\x7fELF", "an executable"),
        (b"MZ", "a Windows executable"),
    ];
    if let Some((_, name)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return (*name).to_owned();
    }
    let text = head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b >= 0x80);
    if text && std::str::from_utf8(head).is_ok() {
        let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
        if lower.contains("<html") || lower.contains("<!doctype") {
            return "an HTML page (a download link rather than the file?)".to_owned();
        }
        return "text".to_owned();
    }
    "unrecognised binary data".to_owned()
}

fn describe_stream(input: &ffmpeg::format::context::Input, stream: &ffmpeg::Stream) -> StreamInfo {
    let index = stream.index();
    let params = stream.parameters();
    let medium = params.medium();
    let id = params.id();
    let codec = id.name().to_owned();
    let decodable = ffmpeg::decoder::find(id).is_some();
    let cover_art = stream.disposition().contains(Disposition::ATTACHED_PIC);
    // SAFETY: the parameters belong to `stream`, alive for this function.
    let par = unsafe { &*params.as_ptr() };
    let profile = profile_name(par.codec_id, par.profile);

    match medium {
        MediaType::Video if decodable && !cover_art => {
            let sample_aspect = sample_aspect(input, stream);
            let width = u32::try_from(par.width).unwrap_or(0);
            let height = u32::try_from(par.height).unwrap_or(0);
            let (pixel_format, bit_depth) = pixel_format(par.format);
            let transfer = par.color_trc;
            StreamInfo::Video(VideoStream {
                index,
                codec,
                profile,
                width,
                height,
                sample_aspect,
                display_aspect: display_aspect(width, height, sample_aspect),
                rotation_deg: rotation(stream),
                frame_rate: frame_rate(stream),
                variable_frame_rate: false,
                pixel_format,
                bit_depth,
                color_transfer: transfer_name(transfer),
                color_matrix: matrix_name(par.color_space),
                hdr: matches!(
                    transfer,
                    ffi::AVColorTransferCharacteristic::AVCOL_TRC_SMPTE2084
                        | ffi::AVColorTransferCharacteristic::AVCOL_TRC_ARIB_STD_B67
                ),
                bit_rate: positive(par.bit_rate),
                duration_s: stream_duration_s(stream),
            })
        }
        MediaType::Audio if decodable => StreamInfo::Audio(AudioStream {
            index,
            codec,
            profile,
            channels: u16::try_from(par.ch_layout.nb_channels).unwrap_or(0),
            channel_layout: channel_layout(&par.ch_layout),
            sample_rate: u32::try_from(par.sample_rate).unwrap_or(0),
            bit_rate: positive(par.bit_rate),
        }),
        _ => StreamInfo::Other {
            index,
            media_type: match medium {
                MediaType::Video if cover_art => "attached_picture",
                MediaType::Video => "video",
                MediaType::Audio => "audio",
                MediaType::Subtitle => "subtitle",
                MediaType::Data => "data",
                MediaType::Attachment => "attachment",
                MediaType::Unknown => "unknown",
            }
            .to_owned(),
            codec,
        },
    }
}

/// Nothing to play: either only undecodable audio/video, or none at all.
fn unusable_error(streams: &[StreamInfo], container: &str) -> MediaError {
    let undecodable = streams.iter().find_map(|s| match s {
        StreamInfo::Other {
            media_type, codec, ..
        } if media_type == "video" || media_type == "audio" => Some((media_type, codec)),
        _ => None,
    });
    if let Some((kind, codec)) = undecodable {
        let codec = if codec == "none" {
            "a codec libavcodec does not recognise"
        } else {
            codec
        };
        return MediaError::new(
            MediaErrorCode::UnsupportedCodec,
            format!(
                "the {kind} stream uses {codec}, which cannot be decoded here; \
                 export it as H.264/AAC MP4 and upload again"
            ),
        );
    }
    let found = if streams.is_empty() {
        "no streams at all".to_owned()
    } else {
        let kinds: Vec<&str> = streams
            .iter()
            .map(|s| match s {
                StreamInfo::Other { media_type, .. } => media_type.as_str(),
                StreamInfo::Video(_) => "video",
                StreamInfo::Audio(_) => "audio",
            })
            .collect();
        format!("only {}", kinds.join(", "))
    };
    MediaError::new(
        MediaErrorCode::NoDecodableStream,
        format!("the {container} file holds no audio or video to play (found {found})"),
    )
}

fn profile_name(id: ffi::AVCodecID, profile: c_int) -> Option<String> {
    // SAFETY: returns a static string or null for unknown profiles.
    unsafe { c_str(ffi::avcodec_profile_name(id, profile)) }
}

/// Container sample aspect if set, else the codec's; square when neither
/// says (that is how every player shows it).
fn sample_aspect(input: &ffmpeg::format::context::Input, stream: &ffmpeg::Stream) -> Rational {
    // SAFETY: both pointers are live; libavformat only reads them when the
    // frame argument is null.
    let sar = unsafe {
        ffi::av_guess_sample_aspect_ratio(
            input.as_ptr() as *mut _,
            stream.as_ptr() as *mut _,
            std::ptr::null_mut(),
        )
    };
    if sar.num > 0 && sar.den > 0 {
        reduce(i64::from(sar.num), i64::from(sar.den))
    } else {
        Rational::new(1, 1)
    }
}

fn display_aspect(width: u32, height: u32, sar: Rational) -> Rational {
    if width == 0 || height == 0 {
        return Rational::new(0, 1);
    }
    reduce(
        i64::from(width) * i64::from(sar.num),
        i64::from(height) * i64::from(sar.den),
    )
}

fn reduce(num: i64, den: i64) -> Rational {
    let g = gcd(num.unsigned_abs(), den.unsigned_abs()).max(1) as i64;
    Rational::new(
        i32::try_from(num / g).unwrap_or(i32::MAX),
        i32::try_from(den / g).unwrap_or(i32::MAX),
    )
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Clockwise degrees to turn the stored picture for display (0/90/180/270).
/// The display matrix is the source of truth (phones write it); the legacy
/// `rotate` tag is the fallback for muxers that only wrote that.
fn rotation(stream: &ffmpeg::Stream) -> u32 {
    let from_matrix = stream.side_data().find_map(|sd| {
        let data = sd.data();
        if sd.kind() != ffmpeg::codec::packet::side_data::Type::DisplayMatrix || data.len() < 9 * 4
        {
            return None;
        }
        let mut matrix = [0i32; 9];
        for (slot, bytes) in matrix.iter_mut().zip(data.chunks_exact(4)) {
            *slot = i32::from_ne_bytes(bytes.try_into().expect("chunks of 4"));
        }
        // SAFETY: `matrix` is the 3x3 i32 matrix the function reads.
        let counter_clockwise = unsafe { ffi::av_display_rotation_get(matrix.as_ptr()) };
        counter_clockwise.is_finite().then_some(-counter_clockwise)
    });
    let degrees = from_matrix.or_else(|| {
        stream
            .metadata()
            .get("rotate")
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    match degrees {
        // Snap to the nearest quarter turn: encoders only rotate by those.
        Some(d) => ((d / 90.0).round() as i64).rem_euclid(4) as u32 * 90,
        None => 0,
    }
}

/// Average frame rate, or the container's base rate when no average is known
/// (raw elementary streams). 0/1 when neither is known.
fn frame_rate(stream: &ffmpeg::Stream) -> Rational {
    [stream.avg_frame_rate(), stream.rate()]
        .into_iter()
        .find(|r| r.numerator() > 0 && r.denominator() > 0)
        .map(|r| reduce(i64::from(r.numerator()), i64::from(r.denominator())))
        .unwrap_or(Rational::new(0, 1))
}

/// The container says the average rate differs from the base rate by more
/// than 1%: frames are not evenly spaced.
fn rates_disagree(avg: ffmpeg::Rational, base: ffmpeg::Rational) -> bool {
    let valid = |r: ffmpeg::Rational| r.numerator() > 0 && r.denominator() > 0;
    if !valid(avg) || !valid(base) {
        return false;
    }
    let (a, b) = (f64::from(avg), f64::from(base));
    (a - b).abs() > 0.01 * b
}

/// Reads the first packets of the video stream and reports whether their
/// presentation timestamps are unevenly spaced (by more than 10% of the usual
/// spacing, and more than the 2-tick jitter of millisecond time bases).
fn timestamps_uneven(input: &mut ffmpeg::format::context::Input, video_index: usize) -> bool {
    let mut stamps = Vec::with_capacity(TIMING_SAMPLES);
    let mut packet = ffmpeg::Packet::empty();
    for _ in 0..MAX_TIMING_PACKETS {
        // Stop at the first error as well as at the end: a damaged file can
        // fail the same way forever.
        if packet.read(input).is_err() {
            break;
        }
        if packet.stream() == video_index {
            if let Some(ts) = packet.pts().or(packet.dts()) {
                stamps.push(ts);
            }
            if stamps.len() == TIMING_SAMPLES {
                break;
            }
        }
    }
    stamps.sort_unstable();
    if stamps.len() > 2 * REORDER_SLACK {
        stamps.truncate(stamps.len() - REORDER_SLACK);
    }
    let mut gaps: Vec<i64> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.len() < 2 {
        return false;
    }
    gaps.sort_unstable();
    let typical = gaps[gaps.len() / 2];
    let tolerance = (typical / 10).max(2);
    gaps.iter().any(|g| (g - typical).abs() > tolerance)
}

/// Pixel format name and bit depth of its first component. Looked up by
/// walking libavutil's descriptor table, so an unexpected number from a
/// container never becomes an invalid Rust enum value.
fn pixel_format(format: c_int) -> (String, u8) {
    let mut desc: *const ffi::AVPixFmtDescriptor = std::ptr::null();
    loop {
        // SAFETY: iterating libavutil's static descriptor table.
        desc = unsafe { ffi::av_pix_fmt_desc_next(desc) };
        if desc.is_null() {
            return ("unknown".to_owned(), 0);
        }
        // SAFETY: `desc` is a non-null entry of that table.
        if unsafe { ffi::av_pix_fmt_desc_get_id(desc) } as c_int == format {
            // SAFETY: as above; the name is a static C string.
            let (name, depth) = unsafe { (c_str((*desc).name), (*desc).comp[0].depth) };
            return (
                name.unwrap_or_else(|| "unknown".to_owned()),
                u8::try_from(depth).unwrap_or(0),
            );
        }
    }
}

fn transfer_name(trc: ffi::AVColorTransferCharacteristic) -> Option<String> {
    use ffi::AVColorTransferCharacteristic as Trc;
    if matches!(
        trc,
        Trc::AVCOL_TRC_UNSPECIFIED | Trc::AVCOL_TRC_RESERVED | Trc::AVCOL_TRC_RESERVED0
    ) {
        return None;
    }
    // SAFETY: returns a static string, or null for out-of-range values.
    unsafe { c_str(ffi::av_color_transfer_name(trc)) }
}

fn matrix_name(space: ffi::AVColorSpace) -> Option<String> {
    use ffi::AVColorSpace as Space;
    if matches!(
        space,
        Space::AVCOL_SPC_UNSPECIFIED | Space::AVCOL_SPC_RESERVED
    ) {
        return None;
    }
    // SAFETY: returns a static string, or null for out-of-range values.
    unsafe { c_str(ffi::av_color_space_name(space)) }
}

/// libavutil's description: `stereo`, `5.1(side)`, or `6 channels` when the
/// container gives only a count (AAC in MP4 often does).
fn channel_layout(layout: &ffi::AVChannelLayout) -> String {
    let mut buf = [0 as c_char; 128];
    // SAFETY: `layout` is live and `buf` is writable for its full length;
    // the function always NUL-terminates within it.
    let written = unsafe { ffi::av_channel_layout_describe(layout, buf.as_mut_ptr(), buf.len()) };
    if written <= 0 {
        return "unknown".to_owned();
    }
    // SAFETY: NUL-terminated by the call above.
    unsafe { c_str(buf.as_ptr()) }.unwrap_or_else(|| "unknown".to_owned())
}

/// Stream duration from the stream header, or Matroska's `DURATION` tag
/// (`HH:MM:SS.nnnnnnnnn`), which is where MKV and WebM keep it.
fn stream_duration_s(stream: &ffmpeg::Stream) -> Option<f64> {
    let duration = stream.duration();
    if duration > 0 {
        return Some(duration as f64 * f64::from(stream.time_base()));
    }
    let tag = stream.metadata().get("DURATION")?.to_owned();
    let mut seconds = 0.0;
    for part in tag.split(':') {
        seconds = seconds * 60.0 + part.trim().parse::<f64>().ok()?;
    }
    (seconds > 0.0).then_some(seconds)
}

fn positive(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v > 0)
}

/// # Safety
/// `ptr` is null or a valid NUL-terminated string.
unsafe fn c_str(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        Some(CStr::from_ptr(ptr).to_string_lossy().into_owned())
    }
}
