//! The encoder on its own: progress, cancellation and bad input, on real
//! generated media. Full ladders are verified in `pipelines/tests/transcode.rs`.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lectern_transcoder::encode::{encode_ladder, CancelFlag, RenditionKind};
use lectern_transcoder::{ladder, probe, MediaErrorCode};

#[test]
fn progress_rises_to_100_and_segments_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::h264_mp4(dir.path(), "320x180", "25", 6.0);
    let info = probe::probe(&source).unwrap();
    let plan = ladder::plan(&info, &common::small_profile()).unwrap();
    let reports = Mutex::new(Vec::new());
    let out = dir.path().join("out");
    let encoded = encode_ladder(
        &source,
        &info,
        &plan,
        &out,
        &|p| reports.lock().unwrap().push(p),
        &CancelFlag::new(),
    )
    .unwrap();
    let reports = reports.into_inner().unwrap();
    assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
    assert_eq!(reports.last(), Some(&100.0));
    assert_eq!(encoded.renditions.len(), 2, "one 180p rung and audio");
    let video = &encoded.renditions[0];
    assert_eq!(video.kind, RenditionKind::Video);
    assert_eq!(video.dir, "v/180p");
    assert!(video.codecs.starts_with("avc1.64"), "{}", video.codecs);
    assert_eq!(encoded.renditions[1].codecs, "mp4a.40.2");
    for r in &encoded.renditions {
        assert!(out.join(&r.dir).join(&r.init_file).is_file());
        for s in &r.segments {
            let bytes = std::fs::metadata(out.join(&r.dir).join(&s.file_name))
                .unwrap()
                .len();
            assert_eq!(bytes, s.bytes);
        }
        let total: f64 = r.segments.iter().map(|s| s.duration_s).sum();
        assert!((total - 6.0).abs() < 0.1, "{} lasts {total}", r.name);
    }
}

#[test]
fn cancelling_stops_the_encode_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::h264_mp4(dir.path(), "640x360", "30", 20.0);
    let info = probe::probe(&source).unwrap();
    let plan = ladder::plan(&info, &common::small_profile()).unwrap();
    let cancel = CancelFlag::new();
    let cancelled_at = Mutex::new(None);
    let err = encode_ladder(
        &source,
        &info,
        &plan,
        &dir.path().join("out"),
        &|p| {
            if p > 0.0 && !cancel.is_cancelled() {
                *cancelled_at.lock().unwrap() = Some(Instant::now());
                cancel.cancel();
            }
        },
        &cancel,
    )
    .unwrap_err();
    assert_eq!(err.code, MediaErrorCode::Cancelled, "{err}");
    let stopped_after = cancelled_at.lock().unwrap().unwrap().elapsed();
    assert!(
        stopped_after < Duration::from_secs(2),
        "took {stopped_after:?}"
    );
}

#[test]
fn zero_byte_input_is_not_media_even_without_probing() {
    let dir = tempfile::tempdir().unwrap();
    let good = common::h264_mp4(dir.path(), "320x180", "25", 2.0);
    let info = probe::probe(&good).unwrap();
    let plan = ladder::plan(&info, &common::small_profile()).unwrap();
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let err = encode_ladder(
        &empty,
        &info,
        &plan,
        &dir.path().join("out"),
        &|_| {},
        &CancelFlag::new(),
    )
    .unwrap_err();
    assert_eq!(err.code, MediaErrorCode::NotMedia, "{err}");
}

#[test]
fn garbage_after_a_valid_header_keeps_what_decoded_or_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    // A transport stream whose payload after the first packets is noise.
    let source = common::clip(
        dir.path(),
        "ok.ts",
        "320x180",
        "25",
        4.0,
        None,
        &["-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"],
    );
    let info = probe::probe(&source).unwrap();
    let plan = ladder::plan(&info, &common::small_profile()).unwrap();
    let mut bytes = std::fs::read(&source).unwrap();
    let mut x: u32 = 12345;
    for b in bytes.iter_mut().skip(188 * 20) {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (x >> 16) as u8;
    }
    std::fs::write(&source, bytes).unwrap();
    let started = Instant::now();
    let result = encode_ladder(
        &source,
        &info,
        &plan,
        &dir.path().join("out"),
        &|_| {},
        &CancelFlag::new(),
    );
    // Either what decoded before the noise is kept, or it is reported as
    // corrupt; never a hang, never another code.
    if let Err(e) = result {
        assert_eq!(e.code, MediaErrorCode::CorruptMedia, "{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// What ffmpeg's `idet` filter (field-difference statistics over the
/// pictures themselves, not the stream's flags) makes of a file's video:
/// (interlaced, progressive) frame counts.
fn idet(path: &std::path::Path) -> (u32, u32) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-vf", "idet", "-an", "-f", "null", "-"])
        .output()
        .expect("ffmpeg CLI is installed");
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("Multi frame detection"))
        .unwrap_or_else(|| panic!("no idet summary for {}: {log}", path.display()));
    let count = |label: &str| -> u32 {
        let rest = &line[line.find(label).unwrap() + label.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (count("TFF:") + count("BFF:"), count("Progressive:"))
}

/// A camcorder-style interlaced source (two fields per frame, coded as
/// interlaced H.264) comes out progressive on every rung: coded as frames,
/// and with no combing left in the pictures.
#[test]
fn an_interlaced_source_comes_out_progressive() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::ffmpeg(
        &dir.path().join("interlaced.mp4"),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=640x360:r=50:d=3",
            "-vf",
            "tinterlace=interleave_top,setfield=tff",
            "-flags",
            "+ildct+ilme",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-x264opts",
            "tff=1",
            "-pix_fmt",
            "yuv420p",
        ],
    );
    let (interlaced, _) = idet(&source);
    assert!(
        interlaced > 50,
        "the source is not interlaced: {interlaced}"
    );
    let info = probe::probe(&source).unwrap();
    let plan = ladder::plan(&info, &common::small_profile()).unwrap();
    let out = dir.path().join("out");
    let encoded = encode_ladder(&source, &info, &plan, &out, &|_| {}, &CancelFlag::new()).unwrap();
    let videos: Vec<_> = encoded
        .renditions
        .iter()
        .filter(|r| r.kind == RenditionKind::Video)
        .collect();
    assert_eq!(videos.len(), 3, "360p, 240p and 180p");
    for rung in videos {
        let file = common::joined(&out, rung);
        let frames = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v", "-show_entries"])
            .args(["frame=interlaced_frame", "-of", "csv=p=0"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&frames.stdout);
        // One line per frame, "0" or "1" (then side data's empty columns).
        let flags: Vec<&str> = stdout
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty())
            .collect();
        assert!(
            flags.len() >= 70 && flags.iter().all(|&f| f == "0"),
            "{}: frames coded as interlaced (0 = progressive): {flags:?}",
            rung.name
        );
        let (interlaced, progressive) = idet(&file);
        assert!(
            progressive > 10 * interlaced.max(1),
            "{}: {interlaced} frames look interlaced, {progressive} progressive",
            rung.name
        );
    }
}
