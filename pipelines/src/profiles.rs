//! Encoding profiles as data: TOML files describing a [`LadderProfile`]. The
//! built-in ones (`pipelines/profiles/*.toml`) are embedded in the binary;
//! operators can load their own with [`load`]. Every profile is validated
//! when loaded, with errors that name the profile and the bad field.

use std::path::{Path, PathBuf};

use lectern_transcoder::ladder::{LadderProfile, RungProfile};
use lectern_transcoder::loudness::LoudnessTarget;

/// The built-in profiles, embedded so the binary needs no data files.
const BUILTINS: [(&str, &str); 2] = [
    ("default", include_str!("../profiles/default.toml")),
    ("lecture", include_str!("../profiles/lecture.toml")),
];

const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];
const X264_TUNES: [&str; 8] = [
    "film",
    "animation",
    "grain",
    "stillimage",
    "psnr",
    "ssim",
    "fastdecode",
    "zerolatency",
];
/// Rates every AAC encoder and HLS player handles.
const AUDIO_SAMPLE_RATES: [u32; 3] = [32_000, 44_100, 48_000];

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown encoding profile \"{name}\"; available profiles: {}", available.join(", "))]
    Unknown {
        name: String,
        available: Vec<&'static str>,
    },
    #[error("cannot read encoding profile {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding profile {origin} is not valid TOML for a profile: {source}")]
    Parse {
        origin: String,
        source: Box<toml::de::Error>,
    },
    #[error("encoding profile \"{profile}\": {field} {problem}")]
    Invalid {
        profile: String,
        /// Path of the offending field, e.g. `rungs[1].crf`.
        field: String,
        problem: String,
    },
}

/// Names of the built-in profiles.
pub fn names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(name, _)| *name).collect()
}

/// A built-in profile by name.
pub fn builtin(name: &str) -> Result<LadderProfile, ProfileError> {
    let (_, text) = BUILTINS
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .ok_or_else(|| ProfileError::Unknown {
            name: name.to_owned(),
            available: names(),
        })?;
    parse(text, &format!("built-in \"{name}\""))
}

/// A profile from a TOML file.
pub fn load(path: &Path) -> Result<LadderProfile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parse and validate profile TOML; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<LadderProfile, ProfileError> {
    let profile: LadderProfile = toml::from_str(text).map_err(|source| ProfileError::Parse {
        origin: origin.to_owned(),
        source: Box::new(source),
    })?;
    validate(&profile)?;
    Ok(profile)
}

/// Checks what TOML types cannot: ranges, ordering, and consistency.
pub fn validate(profile: &LadderProfile) -> Result<(), ProfileError> {
    let invalid = |field: &str, problem: String| ProfileError::Invalid {
        profile: profile.name.clone(),
        field: field.to_owned(),
        problem,
    };
    if !is_path_safe(&profile.name) {
        return Err(invalid(
            "name",
            "must be non-empty lowercase letters, digits, '-' or '_'".to_owned(),
        ));
    }
    let segment = profile.segment_duration_s;
    if !(1.0..=10.0).contains(&segment) {
        return Err(invalid(
            "segment_duration_s",
            format!("must be between 1 and 10 seconds, got {segment}"),
        ));
    }
    if !X264_PRESETS.contains(&profile.x264_preset.as_str()) {
        return Err(invalid(
            "x264_preset",
            format!(
                "must be one of {}, got \"{}\"",
                X264_PRESETS.join(", "),
                profile.x264_preset
            ),
        ));
    }
    if let Some(tune) = &profile.x264_tune {
        if !X264_TUNES.contains(&tune.as_str()) {
            return Err(invalid(
                "x264_tune",
                format!("must be one of {}, got \"{tune}\"", X264_TUNES.join(", ")),
            ));
        }
    }
    if profile.rungs.is_empty() {
        return Err(invalid("rungs", "must list at least one rung".to_owned()));
    }
    let mut previous: Option<&RungProfile> = None;
    for (i, rung) in profile.rungs.iter().enumerate() {
        let field = |name: &str| format!("rungs[{i}].{name}");
        if !is_path_safe(&rung.name) {
            return Err(invalid(
                &field("name"),
                format!(
                    "must be non-empty lowercase letters, digits, '-' or '_' (it names output \
                     folders), got \"{}\"",
                    rung.name
                ),
            ));
        }
        if profile.rungs[..i].iter().any(|r| r.name == rung.name) {
            return Err(invalid(
                &field("name"),
                format!("\"{}\" is used by an earlier rung", rung.name),
            ));
        }
        if rung.height < 2 || rung.height % 2 != 0 {
            return Err(invalid(
                &field("height"),
                format!("must be an even number of pixels, got {}", rung.height),
            ));
        }
        if let Some(prev) = previous {
            if rung.height >= prev.height {
                return Err(invalid(
                    &field("height"),
                    format!(
                        "must be lower than the rung before it ({}): rungs are listed highest \
                         first, got {}",
                        prev.height, rung.height
                    ),
                ));
            }
        }
        if rung.crf > 51 {
            return Err(invalid(
                &field("crf"),
                format!("must be in 0..=51, got {}", rung.crf),
            ));
        }
        if rung.maxrate_kbps == 0 {
            return Err(invalid(
                &field("maxrate_kbps"),
                "must be above 0".to_owned(),
            ));
        }
        if rung.bufsize_kbps < rung.maxrate_kbps {
            return Err(invalid(
                &field("bufsize_kbps"),
                format!(
                    "must be at least maxrate_kbps ({}), got {}",
                    rung.maxrate_kbps, rung.bufsize_kbps
                ),
            ));
        }
        previous = Some(rung);
    }
    validate_audio(
        "audio",
        profile.audio.bitrate_kbps,
        profile.audio.sample_rate,
    )
    .map_err(|(f, p)| invalid(&f, p))?;
    if let LoudnessTarget::Lufs(target) = profile.audio.loudness_target_lufs {
        // Broadcast speech sits near −23, streaming −16 to −14; beyond this
        // band a typo is likelier than an intent.
        if !(-40.0..=-5.0).contains(&target) {
            return Err(invalid(
                "audio.loudness_target_lufs",
                format!("must be between -40 and -5 LUFS, or \"off\", got {target}"),
            ));
        }
    }
    let peak = profile.audio.true_peak_max_dbtp;
    if !(-12.0..=0.0).contains(&peak) {
        return Err(invalid(
            "audio.true_peak_max_dbtp",
            format!("must be between -12 and 0 dBTP, got {peak}"),
        ));
    }
    if let Some(content) = &profile.content {
        let classes = [
            ("content.slides", &content.slides),
            ("content.talking_head", &content.talking_head),
            ("content.motion", &content.motion),
        ];
        for (name, rules) in classes {
            let Some(rules) = rules else { continue };
            let field = |f: &str| format!("{name}.{f}");
            if let Some(segment) = rules.segment_duration_s {
                if !(1.0..=10.0).contains(&segment) {
                    return Err(invalid(
                        &field("segment_duration_s"),
                        format!("must be between 1 and 10 seconds, got {segment}"),
                    ));
                }
            }
            if let Some(scale) = rules.maxrate_scale {
                if !(scale > 0.0 && scale <= 1.0) {
                    return Err(invalid(
                        &field("maxrate_scale"),
                        format!("must be above 0 and at most 1 (caps are ceilings), got {scale}"),
                    ));
                }
            }
            if let Some(tune) = &rules.x264_tune {
                if !X264_TUNES.contains(&tune.as_str()) {
                    return Err(invalid(
                        &field("x264_tune"),
                        format!("must be one of {}, got \"{tune}\"", X264_TUNES.join(", ")),
                    ));
                }
            }
            if let Some(min) = rules.min_height {
                let top = profile.rungs.first().map_or(0, |r| r.height);
                if min == 0 || min > top {
                    return Err(invalid(
                        &field("min_height"),
                        format!(
                            "must be above 0 and at most the top rung's {top} lines, got {min}"
                        ),
                    ));
                }
            }
            if !(-20..=20).contains(&rules.crf_offset) {
                return Err(invalid(
                    &field("crf_offset"),
                    format!("must be in -20..=20, got {}", rules.crf_offset),
                ));
            }
        }
        if let Some(voice) = &content.single_voice_audio {
            validate_audio(
                "content.single_voice_audio",
                voice.bitrate_kbps,
                voice.sample_rate,
            )
            .map_err(|(f, p)| invalid(&f, p))?;
        }
    }
    Ok(())
}

fn validate_audio(name: &str, bitrate_kbps: u32, sample_rate: u32) -> Result<(), (String, String)> {
    if !(16..=512).contains(&bitrate_kbps) {
        return Err((
            format!("{name}.bitrate_kbps"),
            format!("must be between 16 and 512, got {bitrate_kbps}"),
        ));
    }
    if !AUDIO_SAMPLE_RATES.contains(&sample_rate) {
        return Err((
            format!("{name}.sample_rate"),
            format!("must be one of 32000, 44100, 48000, got {sample_rate}"),
        ));
    }
    Ok(())
}

/// Profile and rung names become path components and URL segments.
fn is_path_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
