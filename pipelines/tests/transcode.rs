//! probe → plan → encode → package on real media generated at test time,
//! each ladder read back and checked by `common::verify::verify_ladder`.

#[path = "../../transcoder/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lectern_pipelines::profiles;
use lectern_pipelines::transcode::{transcode_file, TranscodeReport};
use lectern_transcoder::encode::CancelFlag;
use lectern_transcoder::{LadderProfile, MediaError, MediaErrorCode};

fn transcode(
    source: &Path,
    out: &Path,
    profile: &LadderProfile,
) -> Result<TranscodeReport, MediaError> {
    transcode_file(source, out, profile, &|_| {}, &CancelFlag::new())
}

/// Transcodes with the small test ladder and verifies the result.
fn ladder_of(source: &Path, dir: &Path) -> (TranscodeReport, common::verify::LadderFacts) {
    let out = dir.join("out");
    let report = transcode(source, &out, &common::small_profile())
        .unwrap_or_else(|e| panic!("{} failed: {e}", source.display()));
    let facts = common::verify::verify_ladder(source, &out);
    (report, facts)
}

fn sizes(facts: &common::verify::LadderFacts) -> Vec<(u32, u32)> {
    facts.video.iter().map(|v| (v.width, v.height)).collect()
}

#[test]
fn h264_mp4_becomes_a_three_rung_ladder_with_audio_poster_and_storyboard() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::h264_mp4(dir.path(), "640x360", "25", 9.0);
    let (report, facts) = ladder_of(&source, dir.path());
    assert_eq!(sizes(&facts), [(640, 360), (426, 240), (320, 180)]);
    // 9 s in 4 s segments: 4 + 4 + 1.
    assert_eq!(facts.video[0].segment_durations, [4.0, 4.0, 1.0]);
    assert_eq!(facts.video[0].frame_rate, 25.0);
    assert_eq!(facts.audio.as_ref().unwrap().sample_rate, 48_000);

    let out = dir.path().join("out");
    let poster = std::fs::read(out.join("poster.jpg")).unwrap();
    assert_eq!(&poster[..2], [0xff, 0xd8], "poster is a JPEG");
    let vtt = std::fs::read_to_string(out.join("storyboard.vtt")).unwrap();
    assert!(vtt.starts_with("WEBVTT\n"));
    assert!(
        vtt.contains("00:00:00.000 --> 00:00:02.000\nstoryboard.jpg#xywh=0,0,160,90"),
        "{vtt}"
    );
    let storyboard = common::verify::ffprobe(&out.join("storyboard.jpg"));
    let board = report.encoded.storyboard.as_ref().unwrap();
    assert_eq!(storyboard["streams"][0]["width"], board.columns * 160);
    assert_eq!(storyboard["streams"][0]["height"], board.rows * 90);
    assert_eq!(board.tiles, 5, "a tile every 2 s of 9 s");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["renditions"].as_array().unwrap().len(), 4);
    assert_eq!(manifest["poster"], "poster.jpg");
    assert!((manifest["duration_s"].as_f64().unwrap() - 9.0).abs() < 0.1);
}

#[test]
fn hevc_mkv() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "hevc.mkv",
        "480x270",
        "30",
        4.0,
        Some((44_100, "stereo")),
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
            "-c:a",
            "aac",
        ],
    );
    let (_, facts) = ladder_of(&source, dir.path());
    // Never upscale: the 360p rung is dropped for a 270p source.
    assert_eq!(sizes(&facts), [(426, 240), (320, 180)]);
    assert_eq!(
        facts.audio.as_ref().unwrap().sample_rate,
        48_000,
        "resampled from 44.1 kHz"
    );
}

#[test]
fn vp9_webm_with_opus() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "vp9.webm",
        "320x180",
        "30",
        3.0,
        Some((48_000, "stereo")),
        &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "300k",
            "-c:a",
            "libopus",
        ],
    );
    let (_, facts) = ladder_of(&source, dir.path());
    assert_eq!(sizes(&facts), [(320, 180)]);
}

#[test]
fn mpeg2_transport_stream() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "mpeg2.ts",
        "352x288",
        "25",
        5.0,
        Some((48_000, "stereo")),
        &[
            "-c:v",
            "mpeg2video",
            "-q:v",
            "4",
            "-c:a",
            "mp2",
            "-f",
            "mpegts",
        ],
    );
    let (_, facts) = ladder_of(&source, dir.path());
    // 352x288 CIF has square-ish pixels at 11:9; rungs keep that aspect.
    assert_eq!(facts.video[0].height, 240);
}

#[test]
fn ten_bit_source_is_encoded_as_8_bit_high() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "10bit.mp4",
        "640x360",
        "24",
        3.0,
        None,
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p10le",
            "-x265-params",
            "log-level=error",
        ],
    );
    let (_, facts) = ladder_of(&source, dir.path());
    // verify_ladder asserts yuv420p; High profile is 0x64.
    assert!(
        facts.video.iter().all(|v| v.codecs.starts_with("avc1.64")),
        "{:?}",
        facts.video
    );
}

#[test]
fn full_hd_60fps_with_the_default_profile() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "1080p60.mp4",
        "1920x1080",
        "60",
        2.0,
        Some((48_000, "stereo")),
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let out = dir.path().join("out");
    transcode(&source, &out, &profiles::builtin("default").unwrap()).unwrap();
    let facts = common::verify::verify_ladder(&source, &out);
    assert_eq!(
        sizes(&facts),
        [
            (1920, 1080),
            (1280, 720),
            (854, 480),
            (640, 360),
            (426, 240)
        ]
    );
    assert!(facts.video.iter().all(|v| v.frame_rate == 60.0));
}

#[test]
fn portrait_phone_clip_is_rotated_upright() {
    let dir = tempfile::tempdir().unwrap();
    // Stored landscape, shown portrait: the rotation lives in the track matrix.
    let source = common::clip(
        dir.path(),
        "phone.mp4",
        "640x360",
        "30",
        3.0,
        Some((48_000, "mono")),
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    common::rotate_mp4_90(&source);
    let (_, facts) = ladder_of(&source, dir.path());
    assert_eq!(sizes(&facts), [(360, 640), (240, 426), (180, 320)]);
}

#[test]
fn odd_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "odd.mkv",
        "1918x1078",
        "25",
        2.0,
        Some((48_000, "stereo")),
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv444p",
            "-c:a",
            "aac",
        ],
    );
    let (_, facts) = ladder_of(&source, dir.path());
    assert!(facts
        .video
        .iter()
        .all(|v| v.width % 2 == 0 && v.height % 2 == 0));
    assert_eq!(facts.video[0].height, 360);
}

#[test]
fn variable_frame_rate_becomes_constant() {
    let dir = tempfile::tempdir().unwrap();
    // Drop frames 4-6 of every 10 but keep the timestamps: irregular spacing.
    let source = common::clip(
        dir.path(),
        "vfr.mp4",
        "320x180",
        "30",
        4.0,
        Some((48_000, "stereo")),
        &[
            "-vf",
            "select='not(between(mod(n\\,10)\\,4\\,6))'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
        ],
    );
    let (report, facts) = ladder_of(&source, dir.path());
    assert!(
        report.info.primary_video().unwrap().variable_frame_rate,
        "the input really is VFR"
    );
    let fps = facts.video[0].frame_rate;
    assert!(
        fps == 21.0 || fps == 30.0,
        "constant output rate, got {fps}"
    );
}

#[test]
fn audio_only() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::ffmpeg(
        &dir.path().join("talk.m4a"),
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:sample_rate=44100:duration=6",
            "-c:a",
            "aac",
        ],
    );
    let (report, facts) = ladder_of(&source, dir.path());
    assert!(facts.video.is_empty());
    assert_eq!(facts.master.variants.len(), 1);
    assert!(report.encoded.poster.is_none() && report.encoded.storyboard.is_none());
}

#[test]
fn video_only() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "silent.mp4",
        "320x180",
        "25",
        3.0,
        None,
        &["-c:v", "libx264", "-preset", "ultrafast"],
    );
    let (_, facts) = ladder_of(&source, dir.path());
    assert!(facts.audio.is_none());
    assert!(facts.master.alternatives.is_empty());
    assert!(facts.master.variants.iter().all(|v| v.audio.is_none()));
}

#[test]
fn surround_audio_is_downmixed_to_stereo() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "surround.mp4",
        "320x180",
        "25",
        3.0,
        Some((48_000, "5.1")),
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let (report, facts) = ladder_of(&source, dir.path());
    assert_eq!(report.info.primary_audio().unwrap().channels, 6);
    assert_eq!(facts.audio.unwrap().channels, 2);
}

#[test]
fn clip_shorter_than_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::h264_mp4(dir.path(), "320x180", "30", 1.5);
    let (_, facts) = ladder_of(&source, dir.path());
    assert_eq!(facts.video[0].segment_durations.len(), 1);
    assert!(
        dir.path().join("out/poster.jpg").is_file(),
        "a poster even for 1.5 s"
    );
}

#[test]
fn truncated_file_plays_what_exists_or_fails_as_corrupt_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let whole = common::clip(
        dir.path(),
        "whole.mp4",
        "320x180",
        "25",
        6.0,
        Some((48_000, "stereo")),
        &[
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-movflags",
            "+faststart",
        ],
    );
    let bytes = std::fs::read(&whole).unwrap();
    let source: PathBuf = dir.path().join("truncated.mp4");
    std::fs::write(&source, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let started = Instant::now();
    match transcode(&source, &dir.path().join("out"), &common::small_profile()) {
        Ok(report) => assert!(report
            .encoded
            .renditions
            .iter()
            .all(|r| !r.segments.is_empty())),
        Err(e) => assert_eq!(e.code, MediaErrorCode::CorruptMedia, "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn zero_byte_file_and_renamed_pdf_are_not_media() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let pdf = dir.path().join("slides.mp4");
    std::fs::write(
        &pdf,
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    )
    .unwrap();
    for source in [empty, pdf] {
        let err =
            transcode(&source, &dir.path().join("out"), &common::small_profile()).unwrap_err();
        assert_eq!(
            err.code,
            MediaErrorCode::NotMedia,
            "{}: {err}",
            source.display()
        );
    }
}

/// A still slide with one voice on both channels, as a lecture capture
/// records it: the default profile measures it as slides and plans for that.
#[test]
fn a_slide_lecture_gets_the_slide_ladder_and_a_mono_voice() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::ffmpeg(
        &dir.path().join("slides.mp4"),
        &[
            "-f",
            "lavfi",
            "-i",
            // testsrc2 at one picture per 30 s, held at 30 fps: a still slide.
            "testsrc2=size=1280x720:rate=1/30:duration=14,fps=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:sample_rate=48000:duration=14,pan=stereo|c0=c0|c1=c0",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ],
    );
    let out = dir.path().join("out");
    let report = transcode(&source, &out, &profiles::builtin("default").unwrap()).unwrap();
    let content = report
        .plan
        .content
        .as_ref()
        .expect("the default profile analyses content");
    assert_eq!(
        content.class,
        Some(lectern_transcoder::content::ContentClass::Slides),
        "{content:?}"
    );
    assert!(content.single_voice, "{content:?}");
    let facts = common::verify::verify_ladder(&source, &out);
    // Top and bottom rung only, 6 s segments, one channel at the voice rate.
    assert_eq!(sizes(&facts), [(1280, 720), (640, 360)]);
    assert_eq!(facts.video[0].segment_durations[..2], [6.0, 6.0]);
    assert_eq!(facts.audio.as_ref().unwrap().channels, 1);
    assert!(report.plan.video.iter().all(|r| r.crf == 17));
}

/// A 1080p slide deck: its 360p rung is scaled below half size with the
/// cubic filter, which runs on 10-bit samples and converts back. The
/// ladder must still be 8-bit High-profile H.264 at the planned sizes.
#[test]
fn a_1080p_slide_deck_scales_its_lowest_rung_on_deep_samples_and_stays_8_bit() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::ffmpeg(
        &dir.path().join("slides-1080p.mp4"),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=1/30:duration=8,fps=30",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let out = dir.path().join("out");
    let report = transcode(&source, &out, &profiles::builtin("default").unwrap()).unwrap();
    let content = report.plan.content.as_ref().unwrap();
    assert_eq!(
        content.class,
        Some(lectern_transcoder::content::ContentClass::Slides),
        "{content:?}"
    );
    assert!(
        report
            .plan
            .video
            .iter()
            .all(|r| r.downscaler == lectern_transcoder::ladder::Downscaler::Cubic),
        "{:?}",
        report.plan.video
    );
    let facts = common::verify::verify_ladder(&source, &out);
    assert_eq!(sizes(&facts), [(1920, 1080), (640, 360)]);
}

/// The same picture with different sound on each channel keeps stereo, and
/// a moving picture keeps every rung.
#[test]
fn real_stereo_and_moving_pictures_keep_the_full_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::clip(
        dir.path(),
        "moving.mp4",
        "1280x720",
        "25",
        6.0,
        Some((48_000, "stereo")),
        &["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    );
    let out = dir.path().join("out");
    let report = transcode(&source, &out, &profiles::builtin("default").unwrap()).unwrap();
    let content = report.plan.content.as_ref().unwrap();
    assert!(!content.single_voice, "{content:?}");
    assert_ne!(
        content.class,
        Some(lectern_transcoder::content::ContentClass::Slides),
        "{content:?}"
    );
    let facts = common::verify::verify_ladder(&source, &out);
    assert_eq!(
        sizes(&facts),
        [(1280, 720), (854, 480), (640, 360), (426, 240)]
    );
    assert_eq!(facts.audio.unwrap().channels, 2);
}
