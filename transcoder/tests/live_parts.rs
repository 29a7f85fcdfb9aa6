//! A live encode asked for LL-HLS parts: an FLV stream made by the ffmpeg
//! CLI is pushed tag by tag, as the RTMP server does, and the parts and
//! segments reported are checked against each other and decoded by
//! ffprobe.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lectern_transcoder::encode::live::{LiveEncode, LiveInput, LiveStatus};
use lectern_transcoder::encode::{PartOptions, PartReady, RenditionKind, SegmentReady};

const PART_TARGET_S: f64 = 0.5;

/// What was reported: the rendition's directory, `part` or `segment`, the segment.
type Reported = (String, &'static str, usize);

/// The FLV tags of `path` (type, timestamp in ms, body), in order.
fn flv_tags(path: &Path) -> Vec<(u8, u32, Vec<u8>)> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..3], b"FLV");
    let header = u32::from_be_bytes(data[5..9].try_into().unwrap()) as usize;
    let mut at = header + 4;
    let mut tags = Vec::new();
    while at + 11 <= data.len() {
        let kind = data[at];
        let size = u32::from_be_bytes([0, data[at + 1], data[at + 2], data[at + 3]]) as usize;
        let ts = u32::from_be_bytes([data[at + 7], data[at + 4], data[at + 5], data[at + 6]]);
        let body = data[at + 11..at + 11 + size].to_vec();
        if kind == 8 || kind == 9 {
            tags.push((kind, ts, body));
        }
        at += 11 + size + 4;
    }
    tags
}

/// Frames ffprobe decodes from `file`.
fn decoded_frames(file: &Path, stream: &str) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", stream])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe is installed");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The first packet's presentation time in `file`, seconds.
fn first_pts(file: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-read_intervals", "%+#1"])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn a_live_encode_with_parts_reports_fragments_that_make_up_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let flv = common::ffmpeg(
        &dir.path().join("in.flv"),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=7",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=7",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ],
    );
    let mut profile = common::small_profile();
    profile.segment_duration_s = 2.0;
    profile.x264_tune = Some("zerolatency".into());
    profile.rungs.truncate(2);

    let parts: Arc<Mutex<Vec<PartReady>>> = Arc::default();
    let segments: Arc<Mutex<Vec<SegmentReady>>> = Arc::default();
    // Every event in the order reported, per rendition: parts of a segment
    // must all come before it.
    let order: Arc<Mutex<Vec<Reported>>> = Arc::default();
    let out = dir.path().join("out");
    let (p, o) = (parts.clone(), order.clone());
    let part_options = PartOptions {
        target_s: PART_TARGET_S,
        observer: Arc::new(move |part: PartReady| {
            o.lock()
                .unwrap()
                .push((part.dir.clone(), "part", part.segment));
            p.lock().unwrap().push(part);
        }),
    };
    let (s, o) = (segments.clone(), order.clone());
    let mut encode = LiveEncode::start(
        LiveInput::Flv,
        &profile,
        &out,
        Arc::new(move |segment: SegmentReady| {
            o.lock()
                .unwrap()
                .push((segment.dir.clone(), "segment", segment.index));
            s.lock().unwrap().push(segment);
        }),
        Some(part_options),
    )
    .unwrap();
    for (kind, ts, body) in flv_tags(&flv) {
        encode.push_flv_tag(kind, ts, &body).unwrap();
        while encode.queued_bytes() > 4 << 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!matches!(
            encode.poll(Duration::ZERO),
            LiveStatus::Failed(_)
        ));
    }
    let encoded = encode.finish(Duration::from_secs(60)).unwrap();

    let parts = parts.lock().unwrap();
    let segments = segments.lock().unwrap();
    assert_eq!(encoded.len(), 3, "two rungs and the audio");
    for rendition in &encoded {
        let reported: Vec<&SegmentReady> =
            segments.iter().filter(|s| s.dir == rendition.dir).collect();
        assert!(
            reported.len() >= 2,
            "{}: 7 s in 2 s segments reports at least two before the end, got {}",
            rendition.dir,
            reported.len()
        );
        let rendition_dir = out.join(&rendition.dir);
        let init = std::fs::read(rendition_dir.join(&rendition.init_file)).unwrap();
        for segment in &reported {
            let own: Vec<&PartReady> = parts
                .iter()
                .filter(|p| p.dir == rendition.dir && p.segment == segment.index)
                .collect();
            assert!(
                own.len() >= 4,
                "{} segment {}: a 2 s segment has at least four parts of at most 0.5 s, got {}",
                rendition.dir,
                segment.index,
                own.len()
            );
            for (i, part) in own.iter().enumerate() {
                assert_eq!(part.index, i);
                assert!(
                    part.duration_s <= PART_TARGET_S + 0.001,
                    "{}: part {} lasts {} s",
                    rendition.dir,
                    part.file_name,
                    part.duration_s
                );
                if rendition.kind == RenditionKind::Audio {
                    assert!(part.independent, "every audio frame is a sync sample");
                }
            }
            if rendition.kind == RenditionKind::Video {
                assert!(own[0].independent, "a segment starts at a keyframe");
                assert!(
                    own[1..].iter().all(|p| !p.independent),
                    "one keyframe per 2 s"
                );
            }
            let durations: f64 = own.iter().map(|p| p.duration_s).sum();
            assert!(
                (durations - segment.duration_s).abs() < 0.03,
                "{} segment {}: parts last {durations} s, the segment {} s",
                rendition.dir,
                segment.index,
                segment.duration_s
            );
            // No byte muxed twice: the segment is its parts, concatenated.
            let joined: Vec<u8> = own.iter().flat_map(|p| p.data.iter().copied()).collect();
            let file = std::fs::read(rendition_dir.join(&segment.file_name)).unwrap();
            assert!(
                joined == file,
                "{} segment {} differs from its parts",
                rendition.dir,
                segment.index
            );
            // A part decodes after the init segment alone (the second,
            // which for video does not start with a keyframe, is decoded
            // after the first, as a player that joined at it would).
            let probe = dir.path().join("probe.mp4");
            let mut bytes = init.clone();
            bytes.extend_from_slice(&own[0].data);
            std::fs::write(&probe, &bytes).unwrap();
            let alone = decoded_frames(
                &probe,
                if rendition.kind == RenditionKind::Video {
                    "v:0"
                } else {
                    "a:0"
                },
            );
            assert!(
                alone > 0,
                "{} part {} decodes",
                rendition.dir,
                own[0].file_name
            );
            bytes.extend_from_slice(&own[1].data);
            std::fs::write(&probe, &bytes).unwrap();
            let two = decoded_frames(
                &probe,
                if rendition.kind == RenditionKind::Video {
                    "v:0"
                } else {
                    "a:0"
                },
            );
            assert!(
                two > alone,
                "{}: the second part adds frames",
                rendition.dir
            );
        }
        // What `finish` returns lists every segment, the reported ones first.
        assert!(rendition.segments.len() > reported.len() - 1);
        for (listed, reported) in rendition.segments.iter().zip(&reported) {
            assert_eq!(listed.file_name, reported.file_name);
        }
    }
    let order = order.lock().unwrap();
    for (i, (dir, what, segment)) in order.iter().enumerate() {
        if *what == "segment" {
            assert!(
                !order[i + 1..]
                    .iter()
                    .any(|(d, w, s)| d == dir && *w == "part" && s == segment),
                "{dir}: a part of segment {segment} came after the segment"
            );
        }
    }
    // The video parts carry the encode's own decode times: a segment
    // decoded whole lasts what it says.
    let whole = common::joined(&out, &encoded[0]);
    let frames = decoded_frames(&whole, "v:0");
    assert!(
        (200..=215).contains(&frames),
        "7 s at 30 fps, every frame once: got {frames}"
    );
    // Video and audio share one timeline (absolute decode times, no edit
    // list): a player aligns separate renditions by them.
    let audio = common::joined(&out, &encoded[2]);
    let (v, a) = (first_pts(&whole), first_pts(&audio));
    assert!((v - a).abs() < 0.2, "video starts at {v} s, audio at {a} s");
}
