//! Probing the checked-in fixtures (made by `tests/fixtures/generate.sh`
//! with the ffmpeg CLI): exact codecs, sizes, rotation, rates and channels,
//! and the error code for every kind of bad upload.

use std::path::PathBuf;

use lectern_transcoder::probe::probe;
use lectern_transcoder::{MediaErrorCode, MediaInfo, Rational, StreamInfo};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn probed(name: &str) -> MediaInfo {
    probe(&fixture(name)).unwrap_or_else(|e| panic!("probing {name}: {e}"))
}

fn error_code(name: &str) -> (MediaErrorCode, String) {
    match probe(&fixture(name)) {
        Ok(info) => panic!("{name} probed as media: {info:?}"),
        Err(e) => (e.code, e.message),
    }
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() < 0.05,
        "{what}: {actual} is not about {expected}"
    );
}

#[test]
fn h264_aac_mp4() {
    let info = probed("h264_aac.mp4");
    assert_eq!(info.container, "mov,mp4,m4a,3gp,3g2,mj2");
    assert_eq!(info.container_long_name, "QuickTime / MOV");
    assert_close(info.duration_s, 5.005, "duration");
    let size = std::fs::metadata(fixture("h264_aac.mp4")).unwrap().len();
    assert_eq!(info.size_bytes, size);
    assert!(info.bit_rate.is_some_and(|b| b > 10_000));

    let v = info.primary_video().expect("video");
    assert_eq!(v.index, 0);
    assert_eq!(v.codec, "h264");
    assert_eq!(v.profile.as_deref(), Some("High"));
    assert_eq!((v.width, v.height), (128, 72));
    assert_eq!(v.sample_aspect, Rational::new(1, 1));
    assert_eq!(v.display_aspect, Rational::new(16, 9));
    assert_eq!(v.rotation_deg, 0);
    assert_eq!(v.frame_rate, Rational::new(30000, 1001));
    assert!(!v.variable_frame_rate);
    assert_eq!(v.pixel_format, "yuv420p");
    assert_eq!(v.bit_depth, 8);
    assert_eq!(v.color_transfer, None);
    assert!(!v.hdr);
    assert!(v.bit_rate.is_some());
    assert_close(
        v.duration_s.expect("stream duration"),
        5.005,
        "video duration",
    );

    let a = info.primary_audio().expect("audio");
    assert_eq!(a.index, 1);
    assert_eq!(a.codec, "aac");
    assert_eq!(a.profile.as_deref(), Some("LC"));
    assert_eq!(a.channels, 2);
    assert_eq!(a.channel_layout, "stereo");
    assert_eq!(a.sample_rate, 48_000);
    assert!(a.bit_rate.is_some_and(|b| b > 10_000 && b < 40_000));
}

#[test]
fn hevc_in_matroska() {
    let info = probed("hevc_aac.mkv");
    assert_eq!(info.container, "matroska,webm");
    let v = info.primary_video().unwrap();
    assert_eq!(v.codec, "hevc");
    assert_eq!(v.profile.as_deref(), Some("Main"));
    assert_eq!(v.frame_rate, Rational::new(25, 1));
    assert!(!v.variable_frame_rate);
    // Matroska keeps stream durations in a tag, not the stream header.
    assert_close(
        v.duration_s.expect("from DURATION tag"),
        1.0,
        "video duration",
    );
    assert_eq!(info.primary_audio().unwrap().codec, "aac");
}

#[test]
fn vp9_opus_webm() {
    let info = probed("vp9_opus.webm");
    let v = info.primary_video().unwrap();
    assert_eq!(v.codec, "vp9");
    assert_eq!(v.profile.as_deref(), Some("Profile 0"));
    assert_eq!((v.width, v.height), (128, 72));
    let a = info.primary_audio().unwrap();
    assert_eq!(a.codec, "opus");
    assert_eq!((a.channels, a.sample_rate), (2, 48_000));
    assert_eq!(a.channel_layout, "stereo");
}

#[test]
fn mpeg2_in_transport_stream() {
    let info = probed("mpeg2_mp2.ts");
    assert_eq!(info.container, "mpegts");
    let v = info.primary_video().unwrap();
    assert_eq!(v.codec, "mpeg2video");
    assert_eq!(v.profile.as_deref(), Some("Main"));
    assert_eq!(v.frame_rate, Rational::new(25, 1));
    assert!(!v.variable_frame_rate);
    assert_eq!(info.primary_audio().unwrap().codec, "mp2");
}

#[test]
fn ten_bit_hevc_is_not_hdr_without_pq_or_hlg() {
    let v = probed("hevc_10bit.mkv").primary_video().unwrap().clone();
    assert_eq!(v.profile.as_deref(), Some("Main 10"));
    assert_eq!(v.pixel_format, "yuv420p10le");
    assert_eq!(v.bit_depth, 10);
    assert!(!v.hdr);
}

#[test]
fn hdr10_is_detected() {
    let v = probed("hdr_pq.mkv").primary_video().unwrap().clone();
    assert_eq!(v.bit_depth, 10);
    assert_eq!(v.color_transfer.as_deref(), Some("smpte2084"));
    assert!(v.hdr);
}

#[test]
fn full_hd_at_60() {
    let info = probed("h264_1080p60.mp4");
    let v = info.primary_video().unwrap();
    assert_eq!((v.width, v.height), (1920, 1080));
    assert_eq!(v.frame_rate, Rational::new(60, 1));
    assert_eq!(v.display_aspect, Rational::new(16, 9));
    assert!(!v.variable_frame_rate);
    assert_eq!(info.primary_audio(), None);
}

#[test]
fn phone_portrait_rotation_comes_from_the_display_matrix() {
    let v = probed("phone_portrait.mp4")
        .primary_video()
        .unwrap()
        .clone();
    assert_eq!((v.width, v.height), (1280, 720));
    assert_eq!(v.rotation_deg, 90);
    assert_eq!(v.display_dimensions(), (720, 1280));
    assert_eq!(v.frame_rate, Rational::new(30, 1));
}

#[test]
fn odd_dimensions_and_their_aspect() {
    let v = probed("odd_1918x1078.mp4").primary_video().unwrap().clone();
    assert_eq!((v.width, v.height), (1918, 1078));
    assert_eq!(v.display_aspect, Rational::new(137, 77));
}

#[test]
fn variable_frame_rate_is_detected() {
    let v = probed("vfr.mp4").primary_video().unwrap().clone();
    assert!(v.variable_frame_rate);
    // 60 frames over 2.9 s.
    assert_eq!(v.frame_rate, Rational::new(600, 29));
}

#[test]
fn audio_only() {
    let info = probed("audio_only.m4a");
    assert_eq!(info.primary_video(), None);
    let a = info.primary_audio().unwrap();
    assert_eq!((a.codec.as_str(), a.channels), ("aac", 2));
    assert_close(info.duration_s, 1.0, "duration");
}

#[test]
fn cover_art_is_not_a_video() {
    let info = probed("audio_cover.m4a");
    assert_eq!(info.primary_video(), None);
    assert!(info.primary_audio().is_some());
    assert!(info.streams.contains(&StreamInfo::Other {
        index: 1,
        media_type: "attached_picture".to_owned(),
        codec: "png".to_owned(),
    }));
}

#[test]
fn video_only() {
    let info = probed("video_only.mp4");
    assert_eq!(info.primary_audio(), None);
    assert_eq!(info.streams.len(), 1);
    assert_eq!(info.primary_video().unwrap().codec, "h264");
}

#[test]
fn surround_audio() {
    let a = probed("surround_5_1.mp4").primary_audio().unwrap().clone();
    assert_eq!(a.channels, 6);
    // MP4 signals only the AAC channel count; the probe does not guess.
    assert_eq!(a.channel_layout, "6 channels");
}

#[test]
fn clip_shorter_than_a_segment() {
    let info = probed("short_half_second.mp4");
    assert!(
        info.duration_s > 0.4 && info.duration_s < 0.6,
        "{}",
        info.duration_s
    );
}

#[test]
fn probe_output_is_the_documented_json() {
    let json = serde_json::to_value(probed("h264_aac.mp4")).unwrap();
    assert_eq!(json["streams"][0]["kind"], "video");
    assert_eq!(json["streams"][0]["frame_rate"]["num"], 30000);
    assert_eq!(json["streams"][1]["kind"], "audio");
    let back: MediaInfo = serde_json::from_value(json).unwrap();
    assert_eq!(back, probed("h264_aac.mp4"));
}

#[test]
fn truncated_upload_is_corrupt_not_foreign() {
    let (code, message) = error_code("truncated.mp4");
    assert_eq!(code, MediaErrorCode::CorruptMedia);
    assert!(message.contains("QuickTime / MOV"), "{message}");
    assert!(message.contains("cut short"), "{message}");
}

#[test]
fn empty_file_is_not_media() {
    let (code, message) = error_code("empty.mp4");
    assert_eq!(code, MediaErrorCode::NotMedia);
    assert!(message.contains("empty"), "{message}");
}

#[test]
fn renamed_pdf_is_not_media() {
    let (code, message) = error_code("document_renamed.mp4");
    assert_eq!(code, MediaErrorCode::NotMedia);
    assert_eq!(
        message,
        "the file is not a video or audio file (detected: a PDF document)"
    );
}

#[test]
fn random_bytes_are_not_media() {
    let (code, message) = error_code("random.bin");
    assert_eq!(code, MediaErrorCode::NotMedia);
    assert!(message.contains("unrecognised binary data"), "{message}");
}

#[test]
fn still_photo_is_not_media() {
    let (code, message) = error_code("photo.jpg");
    assert_eq!(code, MediaErrorCode::NotMedia);
    assert!(message.contains("still image"), "{message}");
}

#[test]
fn subtitles_alone_are_not_playable() {
    let (code, message) = error_code("subtitles_only.mkv");
    assert_eq!(code, MediaErrorCode::NoDecodableStream);
    assert!(message.contains("subtitle"), "{message}");
}

#[test]
fn unknown_codec_alone_is_unsupported() {
    let (code, message) = error_code("unknown_video_codec.mkv");
    assert_eq!(code, MediaErrorCode::UnsupportedCodec);
    assert!(message.contains("video stream"), "{message}");
}

#[test]
fn unknown_video_codec_next_to_usable_audio_still_probes() {
    let info = probed("unknown_video_with_audio.mkv");
    assert_eq!(info.primary_video(), None);
    assert_eq!(info.primary_audio().unwrap().codec, "aac");
    assert!(matches!(
        &info.streams[0],
        StreamInfo::Other { media_type, .. } if media_type == "video"
    ));
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = fixture("does-not-exist.mp4");
    let err = probe(&path).unwrap_err();
    assert_eq!(err.code, MediaErrorCode::Io);
    assert!(
        err.message.contains("does-not-exist.mp4"),
        "{}",
        err.message
    );
    assert!(err.code.is_transient());
}

#[test]
fn a_directory_is_an_io_error() {
    let err = probe(&fixture("")).unwrap_err();
    assert_eq!(err.code, MediaErrorCode::Io);
}

/// Every prefix length class of every real fixture, and pseudo-random
/// garbage: probing returns (a value or an error) without panicking or
/// hanging, and errors carry a media code.
#[test]
fn damaged_inputs_never_panic_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut probes = 0;
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.len() < 1024 {
            continue;
        }
        for percent in [1, 10, 33, 50, 90, 99] {
            let cut = dir.path().join(format!(
                "{}-{percent}",
                path.file_name().unwrap().to_string_lossy()
            ));
            std::fs::write(&cut, &bytes[..bytes.len() * percent / 100]).unwrap();
            check_damaged(&cut);
            probes += 1;
        }
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..32 {
        let len = 64 + round * 997;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                // xorshift64: deterministic garbage without a dependency.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let path = dir.path().join(format!("garbage-{round}.mp4"));
        std::fs::write(&path, bytes).unwrap();
        check_damaged(&path);
        probes += 1;
    }
    assert!(probes > 100, "only {probes} probes ran");
    assert!(
        started.elapsed().as_secs() < 60,
        "probing damaged files took {:?}",
        started.elapsed()
    );
}

fn check_damaged(path: &std::path::Path) {
    if let Err(e) = probe(path) {
        assert!(
            matches!(
                e.code,
                MediaErrorCode::NotMedia
                    | MediaErrorCode::CorruptMedia
                    | MediaErrorCode::NoDecodableStream
                    | MediaErrorCode::UnsupportedCodec
            ),
            "{}: {e}",
            path.display()
        );
        assert!(!e.message.is_empty());
    }
}
