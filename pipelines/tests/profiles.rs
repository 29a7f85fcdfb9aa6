//! The built-in encoding profiles, profile validation, and ladder planning
//! from those profiles on the transcoder's real probe fixtures.

use std::path::PathBuf;

use lectern_pipelines::profiles::{self, ProfileError};
use lectern_transcoder::ladder::plan;
use lectern_transcoder::probe::probe;
use lectern_transcoder::{LadderPlan, MediaErrorCode, Rational};

fn fixture_plan(name: &str) -> LadderPlan {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../transcoder/tests/fixtures")
        .join(name);
    let info = probe(&path).unwrap_or_else(|e| panic!("probing {name}: {e}"));
    plan(&info, &profiles::builtin("default").unwrap()).unwrap()
}

fn sizes(plan: &LadderPlan) -> Vec<(u32, u32)> {
    plan.video.iter().map(|r| (r.width, r.height)).collect()
}

#[test]
fn builtin_names() {
    assert_eq!(profiles::names(), ["default", "lecture"]);
}

#[test]
fn default_profile() {
    let p = profiles::builtin("default").unwrap();
    assert_eq!(p.name, "default");
    assert_eq!(p.segment_duration_s, 4.0);
    assert_eq!(p.x264_preset, "veryfast");
    assert_eq!(p.x264_tune, None);
    let rungs: Vec<_> = p
        .rungs
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.height,
                r.crf,
                r.maxrate_kbps,
                r.bufsize_kbps,
            )
        })
        .collect();
    assert_eq!(
        rungs,
        [
            ("1080p", 1080, 23, 5000, 10000),
            ("720p", 720, 23, 3000, 6000),
            ("480p", 480, 23, 1400, 2800),
            ("360p", 360, 23, 365, 730),
            ("240p", 240, 23, 140, 280),
        ]
    );
    assert_eq!((p.audio.bitrate_kbps, p.audio.sample_rate), (128, 48_000));
}

#[test]
fn lecture_profile_spends_less_than_default() {
    let lecture = profiles::builtin("lecture").unwrap();
    let default = profiles::builtin("default").unwrap();
    assert_eq!(lecture.x264_tune.as_deref(), Some("stillimage"));
    assert_eq!(lecture.audio.bitrate_kbps, 96);
    // The lecture profile stops at 360p: slide text is unreadable below it.
    assert_eq!(lecture.rungs.len(), default.rungs.len() - 1);
    for (l, d) in lecture.rungs.iter().zip(&default.rungs) {
        assert_eq!(l.height, d.height);
        assert!(l.crf > d.crf, "{}: crf {} vs {}", l.name, l.crf, d.crf);
        assert!(l.maxrate_kbps < d.maxrate_kbps, "{}", l.name);
    }
}

#[test]
fn unknown_profile_lists_the_available_ones() {
    let err = profiles::builtin("podcast").unwrap_err();
    assert!(matches!(err, ProfileError::Unknown { .. }));
    assert_eq!(
        err.to_string(),
        "unknown encoding profile \"podcast\"; available profiles: default, lecture"
    );
}

const GOOD: &str = r#"
name = "custom"
segment_duration_s = 6.0
x264_preset = "fast"

[[rungs]]
name = "720p"
height = 720
crf = 22
maxrate_kbps = 3000
bufsize_kbps = 6000

[[rungs]]
name = "360p"
height = 360
crf = 24
maxrate_kbps = 800
bufsize_kbps = 1600

[audio]
bitrate_kbps = 128
sample_rate = 44100
"#;

#[test]
fn load_reads_a_profile_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, GOOD).unwrap();
    let p = profiles::load(&path).unwrap();
    assert_eq!(p.name, "custom");
    assert_eq!(p.rungs.len(), 2);

    let missing = dir.path().join("missing.toml");
    let err = profiles::load(&missing).unwrap_err();
    assert!(matches!(err, ProfileError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");
}

/// Each bad edit of a good profile is refused, naming the field.
#[test]
fn bad_profiles_name_the_bad_field() {
    let cases = [
        ("crf = 22", "crf = 60", "rungs[0].crf", "0..=51"),
        (
            "segment_duration_s = 6.0",
            "segment_duration_s = 0.5",
            "segment_duration_s",
            "between 1 and 10",
        ),
        (
            "bufsize_kbps = 1600",
            "bufsize_kbps = 400",
            "rungs[1].bufsize_kbps",
            "at least maxrate_kbps (800)",
        ),
        (
            "height = 360",
            "height = 1080",
            "rungs[1].height",
            "highest first",
        ),
        ("height = 360", "height = 361", "rungs[1].height", "even"),
        (
            "x264_preset = \"fast\"",
            "x264_preset = \"quick\"",
            "x264_preset",
            "veryfast",
        ),
        (
            "name = \"360p\"",
            "name = \"720p\"",
            "rungs[1].name",
            "earlier rung",
        ),
        (
            "name = \"360p\"",
            "name = \"../360p\"",
            "rungs[1].name",
            "folders",
        ),
        (
            "sample_rate = 44100",
            "sample_rate = 22050",
            "audio.sample_rate",
            "48000",
        ),
    ];
    let with_content = format!(
        "{GOOD}\n[content.slides]\ncrf_offset = -4\nsegment_duration_s = 6.0\n\
         [content.single_voice_audio]\nbitrate_kbps = 64\nsample_rate = 48000\n"
    );
    profiles::parse(&with_content, "test").expect("content rules parse");
    let content_cases = [
        (
            "segment_duration_s = 6.0\n[content",
            "segment_duration_s = 30.0\n[content",
            "content.slides.segment_duration_s",
            "between 1 and 10",
        ),
        (
            "crf_offset = -4",
            "crf_offset = -40",
            "content.slides.crf_offset",
            "-20..=20",
        ),
        (
            "bitrate_kbps = 64",
            "bitrate_kbps = 8",
            "content.single_voice_audio.bitrate_kbps",
            "between 16 and 512",
        ),
    ];
    for (from, to, field, hint) in content_cases {
        let text = with_content.replacen(from, to, 1);
        assert_ne!(text, with_content, "{from} not found");
        let err = profiles::parse(&text, "test").unwrap_err();
        let message = err.to_string();
        match &err {
            ProfileError::Invalid { field: f, .. } => assert_eq!(f, field, "{message}"),
            other => panic!("{to}: expected Invalid, got {other:?}"),
        }
        assert!(message.contains(hint), "{to}: {message}");
    }
    for (from, to, field, hint) in cases {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "{from} not found");
        let err = profiles::parse(&text, "test").unwrap_err();
        let message = err.to_string();
        match &err {
            ProfileError::Invalid {
                profile, field: f, ..
            } => {
                assert_eq!(profile, "custom");
                assert_eq!(f, field, "{message}");
            }
            other => panic!("{to}: expected Invalid, got {other:?}"),
        }
        assert!(message.contains(hint), "{to}: {message}");
    }
}

#[test]
fn unknown_keys_and_wrong_types_are_parse_errors() {
    let typo = GOOD.replacen("crf = 22", "crf = 22\ncrff = 1", 1);
    let err = profiles::parse(&typo, "typo.toml").unwrap_err();
    assert!(matches!(err, ProfileError::Parse { .. }));
    let message = err.to_string();
    assert!(
        message.contains("typo.toml") && message.contains("crff"),
        "{message}"
    );

    let negative = GOOD.replacen("crf = 22", "crf = -1", 1);
    assert!(matches!(
        profiles::parse(&negative, "negative.toml").unwrap_err(),
        ProfileError::Parse { .. }
    ));
}

// Planning the default ladder for real probed sources.

#[test]
fn full_hd_60_gets_five_rungs_at_60_fps() {
    let plan = fixture_plan("h264_1080p60.mp4");
    assert_eq!(
        sizes(&plan),
        [
            (1920, 1080),
            (1280, 720),
            (854, 480),
            (640, 360),
            (426, 240)
        ]
    );
    for rung in &plan.video {
        assert_eq!(rung.frame_rate, Rational::new(60, 1));
        assert_eq!(rung.keyframe_interval_frames, 240);
        assert_eq!(rung.h264_profile, "high");
        assert_eq!(rung.x264_preset, "veryfast");
    }
    let levels: Vec<_> = plan.video.iter().map(|r| r.h264_level.as_str()).collect();
    assert_eq!(levels, ["4.2", "3.2", "3.1", "3.1", "3"]);
    assert_eq!(plan.audio, None);
    assert_eq!(plan.segment_duration_s, 4.0);
}

#[test]
fn portrait_phone_clip_gets_portrait_rungs() {
    let plan = fixture_plan("phone_portrait.mp4");
    let names: Vec<_> = plan.video.iter().map(|r| r.name.as_str()).collect();
    // 720 wide once rotated: no 1080p rung.
    assert_eq!(names, ["720p", "480p", "360p", "240p"]);
    assert_eq!(
        sizes(&plan),
        [(720, 1280), (480, 854), (360, 640), (240, 426)]
    );
    assert_eq!(plan.video[0].frame_rate, Rational::new(30, 1));
    assert_eq!(plan.video[0].keyframe_interval_frames, 120);
}

#[test]
fn odd_dimensions_become_even_and_keep_their_aspect() {
    let plan = fixture_plan("odd_1918x1078.mp4");
    assert_eq!(
        sizes(&plan),
        [(1282, 720), (854, 480), (640, 360), (428, 240)]
    );
    let source = 1918.0 / 1078.0;
    for r in &plan.video {
        let aspect = f64::from(r.width) / f64::from(r.height);
        assert!(
            (aspect / source - 1.0).abs() < 0.01,
            "{}x{}",
            r.width,
            r.height
        );
    }
}

#[test]
fn ntsc_source_keeps_its_exact_rate() {
    let plan = fixture_plan("h264_aac.mp4");
    // 128x72 is below every rung: one rung at the source size.
    assert_eq!(sizes(&plan), [(128, 72)]);
    assert_eq!(plan.video[0].frame_rate, Rational::new(30000, 1001));
    assert_eq!(plan.video[0].keyframe_interval_frames, 120);
    assert!(plan.video[0].maxrate_kbps < 800);
}

#[test]
fn variable_rate_becomes_constant() {
    let plan = fixture_plan("vfr.mp4");
    // Average 600/29 = 20.7 fps, made a whole constant rate.
    assert_eq!(plan.video[0].frame_rate, Rational::new(21, 1));
    assert_eq!(plan.video[0].keyframe_interval_frames, 84);
}

#[test]
fn audio_only_source_has_no_video_rungs() {
    let plan = fixture_plan("audio_only.m4a");
    assert!(plan.video.is_empty());
    let audio = plan.audio.unwrap();
    assert_eq!(
        (audio.channels, audio.sample_rate, audio.bitrate_kbps),
        (2, 48_000, 128)
    );
}

#[test]
fn video_only_source_has_no_audio_rendition() {
    let plan = fixture_plan("video_only.mp4");
    assert_eq!(plan.audio, None);
    assert_eq!(plan.video.len(), 1);
}

#[test]
fn surround_is_downmixed_to_stereo() {
    let plan = fixture_plan("surround_5_1.mp4");
    assert_eq!(plan.audio.unwrap().channels, 2);
}

#[test]
fn lecture_profile_plans_with_its_tune() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../transcoder/tests/fixtures/h264_1080p60.mp4");
    let info = probe(&path).unwrap();
    let plan = plan(&info, &profiles::builtin("lecture").unwrap()).unwrap();
    assert_eq!(plan.profile, "lecture");
    assert!(plan
        .video
        .iter()
        .all(|r| r.x264_tune.as_deref() == Some("stillimage") && r.crf == 26));
}

#[test]
fn planning_refuses_sources_without_audio_or_video() {
    let mut info = probe(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../transcoder/tests/fixtures/unknown_video_with_audio.mkv"),
    )
    .unwrap();
    info.streams
        .retain(|s| !matches!(s, lectern_transcoder::StreamInfo::Audio(_)));
    let err = plan(&info, &profiles::builtin("default").unwrap()).unwrap_err();
    assert_eq!(err.code, MediaErrorCode::NoDecodableStream);
}
