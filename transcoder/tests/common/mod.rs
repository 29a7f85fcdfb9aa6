//! Test inputs made at test time with the ffmpeg CLI (lavfi `testsrc2` +
//! `sine`), and the one function that checks a produced ladder. Shared by
//! `transcoder/tests/ladder*.rs` and `pipelines/tests/transcode*.rs`.
#![allow(dead_code)] // Each test crate uses a different subset.

pub mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;

use lectern_transcoder::ladder::{AudioProfile, LadderProfile, RungProfile};

/// Runs ffmpeg with `args` and the output path last; panics with its stderr.
pub fn ffmpeg(out: &Path, args: &[&str]) -> PathBuf {
    let result = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(out)
        .output()
        .expect("ffmpeg CLI is installed");
    assert!(
        result.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    out.to_path_buf()
}

/// The lavfi inputs: a moving test pattern and a tone, both `seconds` long.
fn lavfi(size: &str, rate: &str, seconds: f64, audio: Option<(u32, &str)>) -> Vec<String> {
    let mut args = vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("testsrc2=size={size}:rate={rate}:duration={seconds}"),
    ];
    if let Some((rate, layout)) = audio {
        args.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            // Two different tones, so stereo is stereo and not one voice twice.
            format!(
                "aevalsrc=exprs=0.3*sin(2*PI*440*t)|0.3*sin(2*PI*554*t):s={rate}:d={seconds},\
                 aformat=channel_layouts={layout}"
            ),
        ]);
    }
    args
}

/// A clip with video (and audio unless `audio` is None), encoded by `codec_args`.
pub fn clip(
    dir: &Path,
    file_name: &str,
    size: &str,
    rate: &str,
    seconds: f64,
    audio: Option<(u32, &str)>,
    codec_args: &[&str],
) -> PathBuf {
    let mut args = lavfi(size, rate, seconds, audio);
    args.extend(codec_args.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ffmpeg(&dir.join(file_name), &args)
}

/// The everyday input: H.264 + AAC stereo in MP4.
pub fn h264_mp4(dir: &Path, size: &str, rate: &str, seconds: f64) -> PathBuf {
    clip(
        dir,
        "h264.mp4",
        size,
        rate,
        seconds,
        Some((48_000, "stereo")),
        &[
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
    )
}

/// Marks the first track of an MP4 as shown rotated 90° clockwise, the way
/// phones store portrait video: FFmpeg 5.1's CLI cannot write the display
/// matrix, so the `tkhd` box's matrix is patched in place.
pub fn rotate_mp4_90(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let tkhd = bytes
        .windows(4)
        .position(|w| w == b"tkhd")
        .expect("an MP4 with a track header")
        - 4;
    assert_eq!(bytes[tkhd + 8], 0, "tkhd version 0");
    let height = u32::from_be_bytes(bytes[tkhd + 88..tkhd + 92].try_into().unwrap()) >> 16;
    // a b u / c d v / x y w: a 90° clockwise turn, then shifted back into view.
    let matrix: [u32; 9] = [
        0,
        0x0001_0000,
        0,
        0xffff_0000,
        0,
        0,
        height << 16,
        0,
        0x4000_0000,
    ];
    for (i, value) in matrix.iter().enumerate() {
        let at = tkhd + 48 + i * 4;
        bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// A small ladder so tests encode quickly: rungs 360/240/180 with the
/// default profile's settings otherwise.
pub fn small_profile() -> LadderProfile {
    let rung = |name: &str, height, maxrate_kbps| RungProfile {
        name: name.into(),
        height,
        crf: 23,
        maxrate_kbps,
        bufsize_kbps: maxrate_kbps * 2,
    };
    LadderProfile {
        name: "test".into(),
        segment_duration_s: 4.0,
        x264_preset: "veryfast".into(),
        x264_tune: None,
        rungs: vec![
            rung("360p", 360, 800),
            rung("240p", 240, 500),
            rung("180p", 180, 300),
        ],
        audio: AudioProfile {
            bitrate_kbps: 128,
            sample_rate: 48_000,
            loudness_target_lufs: Default::default(),
            true_peak_max_dbtp: -1.0,
        },
        content: None,
    }
}

/// Init segment and every segment of `rendition`, as one file.
pub fn joined(out: &Path, rendition: &lectern_transcoder::encode::EncodedRendition) -> PathBuf {
    let dir = out.join(&rendition.dir);
    let mut bytes = std::fs::read(dir.join(&rendition.init_file)).unwrap();
    for s in &rendition.segments {
        bytes.extend_from_slice(&std::fs::read(dir.join(&s.file_name)).unwrap());
    }
    let whole = dir.join("whole.mp4");
    std::fs::write(&whole, &bytes).unwrap();
    whole
}
