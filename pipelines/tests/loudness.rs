//! Loudness normalisation end to end: speech-like recordings made at test
//! time (a voiced harmonic series with a syllable-rate envelope and
//! pauses) go through the real probe → plan → encode → package, and the
//! audio rendition that comes out is measured by an independent meter,
//! FFmpeg's `loudnorm` (libavfilter's EBU R128 implementation), reading
//! the fMP4 HLS output.

#[path = "../../transcoder/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use lectern_pipelines::transcode::{transcode_file, TranscodeReport};
use lectern_transcoder::encode::CancelFlag;
use lectern_transcoder::loudness::LoudnessOutcome;

/// A voice-like signal: 150 Hz with four harmonics, its level moving at a
/// syllable rate (4 Hz), 0.5 s of pause every 3 s. `level` shapes it.
fn voice(level: &str) -> String {
    let h = "(sin(2*PI*150*t)+0.6*sin(2*PI*300*t+1)+0.4*sin(2*PI*450*t+2)\
             +0.3*sin(2*PI*600*t+3)+0.2*sin(2*PI*900*t+4))";
    let envelope = "(0.55+0.45*sin(2*PI*4*t))*lt(mod(t\\,3)\\,2.5)";
    level.replace('H', &format!("{h}*{envelope}"))
}

/// A 12 s lecture clip: a small moving picture and `audio` (an aevalsrc
/// expression, or `None` for digital silence) in `layout`.
fn recording(dir: &Path, name: &str, audio: Option<&str>, layout: &str) -> PathBuf {
    let audio_src = match audio {
        Some(expr) => format!("aevalsrc=exprs='{expr}':s=48000:d=12"),
        None => "anullsrc=r=48000:cl=mono:d=12".to_string(),
    };
    common::ffmpeg(
        &dir.join(name),
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=192x108:rate=25:duration=12",
            "-f",
            "lavfi",
            "-i",
            &format!("{audio_src},aformat=channel_layouts={layout}"),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-b:a",
            "192k",
            "-shortest",
        ],
    )
}

/// What FFmpeg's EBU R128 meter reads: integrated LUFS and true peak dBTP.
fn ffmpeg_loudness(input: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(input)
        .args([
            "-vn",
            "-af",
            "loudnorm=print_format=json",
            "-f",
            "null",
            "-",
        ])
        .output()
        .expect("ffmpeg CLI is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stderr);
    let json = &text[text.rfind('{').unwrap()..=text.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let number = |k: &str| v[k].as_str().unwrap().parse::<f64>().unwrap();
    (number("input_i"), number("input_tp"))
}

fn transcode(source: &Path, out: &Path) -> TranscodeReport {
    transcode_file(
        source,
        out,
        &common::small_profile(),
        &|_| {},
        &CancelFlag::new(),
    )
    .unwrap_or_else(|e| panic!("{} failed: {e}", source.display()))
}

/// The audio rendition as a player gets it: its media playlist.
fn rendition(out: &Path) -> PathBuf {
    out.join("a/audio/index.m3u8")
}

/// The target is −16 LUFS; the acceptance allows ±1 LU.
const TARGET: f64 = -16.0;
/// The ceiling is −1 dBTP. AAC coding reshapes a waveform, so the decoded
/// rendition's true peak can sit a little above the peak of the signal
/// the gain was computed on; 0.3 dB covers that overshoot at 128 kb/s for
/// a signal whose peak the gain put exactly at the ceiling.
const PEAK_CEILING: f64 = -1.0;
const CODEC_OVERSHOOT_DB: f64 = 0.3;

#[test]
fn a_quiet_and_a_loud_recording_both_come_out_at_the_target() {
    let dir = tempfile::tempdir().unwrap();
    // Quiet: a mono lavalier far too low; loud: a stereo recording pushed
    // into saturation.
    let cases = [
        ("quiet.mp4", voice("0.035*H"), "mono"),
        (
            "loud.mp4",
            voice("0.98*tanh(1.3*H)/tanh(1.3*1.6)"),
            "stereo",
        ),
    ];
    for (name, expr, layout) in cases {
        let source = recording(dir.path(), name, Some(&expr), layout);
        let (source_i, source_tp) = ffmpeg_loudness(&source);
        if name == "quiet.mp4" {
            assert!(source_i < -33.0, "{name} should be quiet: {source_i} LUFS");
        } else {
            assert!(
                source_i > -9.5 && source_tp > -3.5,
                "{name} should be loud: {source_i} LUFS, {source_tp} dBTP"
            );
        }
        let out = dir.path().join(name.replace(".mp4", ""));
        let report = transcode(&source, &out);
        let loudness = report.encoded.loudness.expect("measured");
        assert_eq!(
            loudness.outcome,
            LoudnessOutcome::Normalised,
            "{name}: {loudness:?}"
        );
        assert_eq!(loudness.target_lufs, Some(TARGET));

        let (i, tp) = ffmpeg_loudness(&rendition(&out));
        eprintln!(
            "{name}: source {source_i:.2} LUFS {source_tp:.2} dBTP; ours read {:?}, gain {:+.2} dB; \
             rendition {i:.2} LUFS {tp:.2} dBTP",
            loudness.measured, loudness.gain_db
        );
        assert!((i - TARGET).abs() <= 1.0, "{name}: rendition at {i} LUFS");
        assert!(
            tp <= PEAK_CEILING + CODEC_OVERSHOOT_DB,
            "{name}: true peak {tp} dBTP"
        );
        // Our meter agrees with FFmpeg's on the source (downmixed as the
        // rendition carries it: mono is played on both channels, +3 LU).
        let ours = loudness.measured.integrated_lufs.unwrap();
        let expected = if layout == "mono" {
            source_i + 3.01
        } else {
            source_i
        };
        assert!(
            (ours - expected).abs() < 0.5,
            "{name}: ours {ours}, FFmpeg {expected}"
        );
    }
}

#[test]
fn a_peaky_recording_is_lowered_to_the_ceiling_not_pushed_over_it() {
    let dir = tempfile::tempdir().unwrap();
    // Sharp syllables: a 16 dB peak-to-loudness ratio cannot reach −16 LUFS
    // under a −1 dBTP ceiling with a linear gain.
    let h = voice("0.1*H").replace(
        "(0.55+0.45*sin(2*PI*4*t))",
        "pow(max(0\\,sin(2*PI*4*t))\\,8)",
    );
    let source = recording(dir.path(), "peaky.mp4", Some(&h), "stereo");
    let out = dir.path().join("peaky");
    let loudness = transcode(&source, &out).encoded.loudness.unwrap();
    assert_eq!(
        loudness.outcome,
        LoudnessOutcome::PeakLimited,
        "{loudness:?}"
    );
    let (i, tp) = ffmpeg_loudness(&rendition(&out));
    eprintln!("peaky: ours {loudness:?}; rendition {i:.2} LUFS {tp:.2} dBTP");
    assert!(
        tp <= PEAK_CEILING + CODEC_OVERSHOOT_DB,
        "true peak {tp} dBTP"
    );
    assert!(
        tp > PEAK_CEILING - 1.0,
        "the gain should use the room up to the ceiling: {tp}"
    );
    assert!(i < TARGET - 0.5, "short of the target, as recorded: {i}");
}

#[test]
fn a_silent_track_gets_no_gain_and_is_recorded_as_silent() {
    let dir = tempfile::tempdir().unwrap();
    let source = recording(dir.path(), "silent.mp4", None, "mono");
    let out = dir.path().join("silent");
    let report = transcode(&source, &out);
    let loudness = report.encoded.loudness.unwrap();
    assert_eq!(loudness.outcome, LoudnessOutcome::Silent);
    assert_eq!(loudness.gain_db, 0.0);
    assert_eq!(loudness.measured.integrated_lufs, None);
    assert_eq!(loudness.measured.true_peak_dbtp, None);
    // And the rendition is there, and silent.
    let volume = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(rendition(&out))
        .args(["-af", "volumedetect", "-f", "null", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&volume.stderr);
    assert!(text.contains("max_volume: -91.0 dB"), "{text}");
}

/// With a single-voice rule the audio rendition is stereo or mono
/// depending on what the content analysis finds, and the loudness pass
/// runs beside the analysis, measuring both. A lecture microphone
/// recorded as dual mono gets the mono rendition: the measurement kept
/// must be the mono one (3 LU below the stereo reading of the same
/// signal), or the rendition misses the target by 3 LU.
#[test]
fn a_dual_mono_voice_is_measured_as_the_mono_rendition_it_becomes() {
    use lectern_transcoder::encode::measure_audio;
    use lectern_transcoder::ladder::{AudioLayout, ContentRules, VoiceAudio};

    let dir = tempfile::tempdir().unwrap();
    let source = recording(dir.path(), "dual.mp4", Some(&voice("0.05*H")), "stereo");
    let (source_i, _) = ffmpeg_loudness(&source);
    let mut profile = common::small_profile();
    profile.content = Some(ContentRules {
        single_voice_audio: Some(VoiceAudio {
            bitrate_kbps: 64,
            sample_rate: 44_100,
        }),
        ..ContentRules::default()
    });
    let out = dir.path().join("dual");
    let report = transcode_file(&source, &out, &profile, &|_| {}, &CancelFlag::new())
        .unwrap_or_else(|e| panic!("dual mono failed: {e}"));
    let audio = report.plan.audio.as_ref().expect("an audio rendition");
    assert_eq!((audio.channels, audio.sample_rate), (1, 44_100));
    let planned = audio.loudness.and_then(|l| l.measured);
    let loudness = report.encoded.loudness.expect("measured");
    assert_eq!(
        planned,
        Some(loudness.measured),
        "the encode uses the measurement taken while planning"
    );

    // One pass over two layouts reads what a pass per layout reads.
    let stereo = AudioLayout {
        channels: 2,
        sample_rate: 48_000,
    };
    let mono = audio.layout();
    let cancel = CancelFlag::new();
    let both = measure_audio(&source, &[stereo, mono], 12.0, &cancel).unwrap();
    let alone = measure_audio(&source, &[mono], 12.0, &cancel).unwrap();
    assert_eq!(both[1], alone[0]);
    assert_eq!(both[1], loudness.measured);
    let (stereo_i, mono_i) = (
        both[0].integrated_lufs.unwrap(),
        both[1].integrated_lufs.unwrap(),
    );
    assert!(
        (stereo_i - source_i).abs() < 0.5,
        "stereo {stereo_i}, FFmpeg {source_i}"
    );
    assert!(
        (stereo_i - mono_i - 3.01).abs() < 0.1,
        "one voice on two channels reads 3 LU louder than on one: {stereo_i} vs {mono_i}"
    );

    let (i, tp) = ffmpeg_loudness(&rendition(&out));
    eprintln!("dual mono: source {source_i:.2} LUFS; mono read {mono_i:.2}; rendition {i:.2} LUFS {tp:.2} dBTP");
    assert!((i - TARGET).abs() <= 1.0, "mono rendition at {i} LUFS");
}
