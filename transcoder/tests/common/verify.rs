//! The one check every produced ladder must pass, read back with tools that
//! share no code with the encoder: m3u8-rs for the playlists, the ffprobe
//! CLI for the media.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// What was found, for tests to make case-specific assertions.
#[derive(Debug)]
pub struct LadderFacts {
    /// Highest first, as listed in the master playlist.
    pub video: Vec<RenditionFacts>,
    pub audio: Option<RenditionFacts>,
    pub master: m3u8_rs::MasterPlaylist,
}

#[derive(Debug)]
pub struct RenditionFacts {
    pub playlist: String,
    pub width: u32,
    pub height: u32,
    /// From the encoded stream, e.g. 25.0.
    pub frame_rate: f64,
    pub channels: u32,
    pub sample_rate: u32,
    pub start_s: f64,
    pub duration_s: f64,
    /// First presentation time of each segment.
    pub segment_starts: Vec<f64>,
    pub segment_durations: Vec<f64>,
    pub codecs: String,
}

pub fn ffprobe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_format",
            "-show_streams",
            "-show_packets",
        ])
        .arg(path)
        .output()
        .expect("ffprobe CLI is installed");
    assert!(
        out.status.success(),
        "ffprobe {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe prints JSON")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

fn ratio(s: &str) -> f64 {
    match s.split_once(['/', ':']) {
        Some((a, b)) => a.parse::<f64>().unwrap_or(0.0) / b.parse::<f64>().unwrap_or(1.0),
        None => s.parse().unwrap_or(0.0),
    }
}

/// Source facts from ffprobe: display aspect after SAR and rotation, and
/// per-kind durations.
struct SourceFacts {
    aspect: Option<f64>,
    video_duration: Option<f64>,
    audio_duration: Option<f64>,
}

fn source_facts(source: &Path) -> SourceFacts {
    let probe = ffprobe(source);
    let format_duration = num(&probe["format"]["duration"]);
    let stream = |kind: &str| {
        probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .cloned()
    };
    let packets_span = |index: u64| {
        let packets: Vec<&Value> = probe["packets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["stream_index"].as_u64() == Some(index))
            .collect();
        let start = packets
            .iter()
            .map(|p| num(&p["pts_time"]))
            .fold(f64::INFINITY, f64::min);
        let end = packets
            .iter()
            .map(|p| num(&p["pts_time"]) + num(&p["duration_time"]).max(0.0))
            .fold(f64::NEG_INFINITY, f64::max);
        end - start
    };
    let duration = |s: &Value| {
        let d = packets_span(s["index"].as_u64().unwrap());
        if d.is_finite() && d > 0.0 {
            d
        } else {
            format_duration
        }
    };
    let video = stream("video");
    let aspect = video.as_ref().map(|v| {
        let sar = v["sample_aspect_ratio"]
            .as_str()
            .map(ratio)
            .filter(|r| *r > 0.0)
            .unwrap_or(1.0);
        let (w, h) = (num(&v["width"]), num(&v["height"]));
        let rotation = v["side_data_list"]
            .as_array()
            .and_then(|l| l.iter().find_map(|d| d.get("rotation").map(num)))
            .unwrap_or(0.0);
        let aspect = w * sar / h;
        if (rotation.abs() - 90.0).abs() < 1.0 {
            1.0 / aspect
        } else {
            aspect
        }
    });
    SourceFacts {
        aspect,
        video_duration: video.as_ref().map(duration),
        audio_duration: stream("audio").as_ref().map(duration),
    }
}

/// `avc1.PPCCLL` from the avcC box bytes in an init segment.
fn avc1_of_init(init: &[u8]) -> String {
    let at = init
        .windows(4)
        .position(|w| w == b"avcC")
        .expect("init.mp4 holds an avcC box");
    let b = &init[at + 4..at + 8];
    assert_eq!(b[0], 1, "avcC version");
    format!("avc1.{:02x}{:02x}{:02x}", b[1], b[2], b[3])
}

fn rendition(root: &Path, uri: &str, scratch: &Path) -> RenditionFacts {
    let playlist_path = root.join(uri);
    let dir = playlist_path.parent().unwrap();
    let text = std::fs::read(&playlist_path).unwrap_or_else(|e| panic!("{uri}: {e}"));
    let playlist = m3u8_rs::parse_media_playlist_res(&text)
        .unwrap_or_else(|e| panic!("{uri} does not parse: {e:?}"));
    assert_eq!(playlist.version, Some(7), "{uri}");
    assert!(playlist.end_list, "{uri} is VOD and must end");
    assert_eq!(
        playlist.playlist_type,
        Some(m3u8_rs::MediaPlaylistType::Vod),
        "{uri}"
    );
    assert!(playlist.independent_segments, "{uri}");
    assert!(!playlist.segments.is_empty(), "{uri} has segments");
    let init_uri = &playlist.segments[0]
        .map
        .as_ref()
        .unwrap_or_else(|| panic!("{uri} has no EXT-X-MAP"))
        .uri;
    let init = std::fs::read(dir.join(init_uri)).unwrap();

    let mut whole = init.clone();
    let mut segment_starts = Vec::new();
    let mut segment_durations = Vec::new();
    for (k, segment) in playlist.segments.iter().enumerate() {
        assert!(
            segment.duration.round() as u64 <= playlist.target_duration
                && f64::from(segment.duration) <= playlist.target_duration as f64,
            "{uri} segment {k} lasts {} > target {}",
            segment.duration,
            playlist.target_duration
        );
        let bytes = std::fs::read(dir.join(&segment.uri)).unwrap();
        let mut alone = init.clone();
        alone.extend_from_slice(&bytes);
        whole.extend_from_slice(&bytes);
        let path = scratch.join("segment.mp4");
        std::fs::write(&path, &alone).unwrap();
        let probe = ffprobe(&path);
        let first = probe["packets"]
            .as_array()
            .and_then(|p| p.first())
            .unwrap_or_else(|| panic!("{uri} segment {k} has no packets"));
        assert!(
            first["flags"].as_str().unwrap_or_default().starts_with('K'),
            "{uri} segment {k} does not start with a keyframe: {first}"
        );
        // The decode-order first packet; the earliest PTS is what a player shows first.
        let start = probe["packets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| num(&p["pts_time"]))
            .fold(f64::INFINITY, f64::min);
        segment_starts.push(start);
        segment_durations.push(f64::from(segment.duration));
    }
    let path = scratch.join("whole.mp4");
    std::fs::write(&path, &whole).unwrap();
    let probe = ffprobe(&path);
    let stream = &probe["streams"][0];
    let packets = probe["packets"].as_array().unwrap();
    let start = packets
        .iter()
        .map(|p| num(&p["pts_time"]))
        .fold(f64::INFINITY, f64::min);
    let end = packets
        .iter()
        .map(|p| num(&p["pts_time"]) + num(&p["duration_time"]).max(0.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let listed: f64 = segment_durations.iter().sum();
    assert!(
        (listed - (end - start)).abs() < 0.05,
        "{uri}: playlist says {listed:.3} s, media lasts {:.3} s",
        end - start
    );
    let codecs = if stream["codec_type"] == "video" {
        assert_eq!(stream["codec_name"], "h264", "{uri}");
        assert_eq!(stream["pix_fmt"], "yuv420p", "{uri}");
        avc1_of_init(&init)
    } else {
        assert_eq!(stream["codec_name"], "aac", "{uri}");
        assert_eq!(stream["profile"], "LC", "{uri}");
        "mp4a.40.2".to_string()
    };
    RenditionFacts {
        playlist: uri.to_string(),
        width: num(&stream["width"]) as u32,
        height: num(&stream["height"]) as u32,
        frame_rate: stream["avg_frame_rate"].as_str().map(ratio).unwrap_or(0.0),
        channels: num(&stream["channels"]) as u32,
        sample_rate: num(&stream["sample_rate"]) as u32,
        start_s: start,
        duration_s: end - start,
        segment_starts,
        segment_durations,
        codecs,
    }
}

/// Checks the package at `root` made from `source`: playlists parse and are
/// VOD fMP4 with segments within the target duration; every segment starts
/// with a keyframe, at the same time in every rung; rungs keep the source's
/// display aspect; durations match the source within 0.1 s; audio and video
/// start within one frame; the master's CODECS, RESOLUTION and FRAME-RATE
/// match the encoded streams.
pub fn verify_ladder(source: &Path, root: &Path) -> LadderFacts {
    let scratch = tempfile::tempdir().unwrap();
    let src = source_facts(source);
    let text = std::fs::read(root.join("master.m3u8")).expect("master.m3u8 exists");
    let master = m3u8_rs::parse_master_playlist_res(&text)
        .unwrap_or_else(|e| panic!("master.m3u8 does not parse: {e:?}"));
    assert!(master.independent_segments);

    let audio_alternative = master.alternatives.iter().find(|a| a.group_id == "aac");
    let mut video = Vec::new();
    let mut audio = None;
    for variant in master.variants.iter().filter(|v| !v.is_i_frame) {
        let facts = rendition(root, &variant.uri, scratch.path());
        let codecs = variant.codecs.as_deref().unwrap_or_default();
        if facts.width > 0 {
            let res = variant.resolution.expect("video variants state RESOLUTION");
            assert_eq!(
                (res.width, res.height),
                (u64::from(facts.width), u64::from(facts.height))
            );
            let fps = variant.frame_rate.expect("video variants state FRAME-RATE");
            assert!(
                (fps - facts.frame_rate).abs() < 0.001,
                "FRAME-RATE {fps} vs {}",
                facts.frame_rate
            );
            let expected_codecs = match audio_alternative {
                Some(_) => format!("{},mp4a.40.2", facts.codecs),
                None => facts.codecs.clone(),
            };
            assert_eq!(codecs, expected_codecs, "{}", variant.uri);
            assert_eq!(variant.audio.is_some(), audio_alternative.is_some());
            let aspect = src.aspect.expect("video from a video source");
            let rung_aspect = f64::from(facts.width) / f64::from(facts.height);
            // Rungs are rounded to even sizes: allow 2 px of error on the short side.
            let tolerance = 2.0 / f64::from(facts.width.min(facts.height)) * aspect.max(1.0);
            assert!(
                (rung_aspect - aspect).abs() <= tolerance,
                "{}: {}x{} aspect {rung_aspect:.4} vs source {aspect:.4}",
                variant.uri,
                facts.width,
                facts.height
            );
            let expected = src.video_duration.unwrap();
            assert!(
                (facts.duration_s - expected).abs() <= 0.1,
                "{}: {:.3} s vs source video {expected:.3} s",
                variant.uri,
                facts.duration_s
            );
            video.push(facts);
        } else {
            assert_eq!(codecs, "mp4a.40.2");
            assert_eq!(facts.codecs, "mp4a.40.2");
            // Stereo, or mono when the profile gives one voice its own rendition.
            assert!(
                (1..=2).contains(&facts.channels),
                "audio has {} channels",
                facts.channels
            );
            let expected = src.audio_duration.unwrap();
            assert!(
                (facts.duration_s - expected).abs() <= 0.1,
                "audio {:.3} s vs source audio {expected:.3} s",
                facts.duration_s
            );
            audio = Some(facts);
        }
    }
    if let Some(alternative) = audio_alternative {
        assert_eq!(alternative.media_type, m3u8_rs::AlternativeMediaType::Audio);
        assert!(alternative.default && alternative.autoselect);
        assert_eq!(
            alternative.channels,
            audio.as_ref().map(|a| a.channels.to_string()),
            "CHANNELS is the rendition's"
        );
        let uri = alternative.uri.as_deref().unwrap();
        assert_eq!(
            Some(uri),
            audio.as_ref().map(|a| a.playlist.as_str()),
            "audio-only variant is last and the same playlist"
        );
        let last = master.variants.iter().rfind(|v| !v.is_i_frame).unwrap();
        assert_eq!(last.uri, uri);
    }
    assert_eq!(
        video.is_empty(),
        src.aspect.is_none(),
        "video rungs iff the source has video"
    );
    assert_eq!(
        audio.is_some(),
        src.audio_duration.is_some(),
        "audio iff the source has audio"
    );

    if let Some(top) = video.first() {
        for rung in &video[1..] {
            assert!(rung.height < top.height, "rungs are highest first");
            assert_eq!(
                rung.segment_starts.len(),
                top.segment_starts.len(),
                "{} segment count",
                rung.playlist
            );
            for (k, (a, b)) in top
                .segment_starts
                .iter()
                .zip(&rung.segment_starts)
                .enumerate()
            {
                assert!(
                    (a - b).abs() < 0.001,
                    "segment {k} starts at {a} in {} but {b} in {}",
                    top.playlist,
                    rung.playlist
                );
            }
        }
        if let Some(audio) = &audio {
            let frame = 1.0 / top.frame_rate;
            assert!(
                (audio.start_s - top.start_s).abs() <= frame + 1e-6,
                "audio starts at {:.4} s, video at {:.4} s",
                audio.start_s,
                top.start_s
            );
        }
    }
    verify_trick_play(root, &master, &video, scratch.path());
    LadderFacts {
        video,
        audio,
        master,
    }
}

/// One I-frame stream per video rung, listed after the variants, whose
/// playlist is I-frames-only and every entry of which — init segment plus
/// its byte range of a segment file — decodes alone to one keyframe; the
/// entries together last as long as the rung.
fn verify_trick_play(
    root: &Path,
    master: &m3u8_rs::MasterPlaylist,
    video: &[RenditionFacts],
    scratch: &Path,
) {
    let streams: Vec<_> = master.variants.iter().filter(|v| v.is_i_frame).collect();
    assert_eq!(streams.len(), video.len(), "one I-frame stream per rung");
    let first = master.variants.iter().position(|v| v.is_i_frame);
    assert!(first.is_none_or(|i| master.variants[i..].iter().all(|v| v.is_i_frame)));
    for (stream, rung) in streams.iter().zip(video) {
        let res = stream.resolution.expect("RESOLUTION");
        assert_eq!(
            (res.width, res.height),
            (u64::from(rung.width), u64::from(rung.height))
        );
        assert_eq!(stream.codecs.as_deref(), Some(rung.codecs.as_str()));
        let path = root.join(&stream.uri);
        let dir = path.parent().unwrap();
        let text = std::fs::read(&path).unwrap();
        let playlist = m3u8_rs::parse_media_playlist_res(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e:?}", stream.uri));
        assert!(playlist.i_frames_only && playlist.end_list);
        assert!(playlist.version.unwrap_or(1) >= 4);
        let total: f64 = playlist
            .segments
            .iter()
            .map(|s| f64::from(s.duration))
            .sum();
        assert!(
            (total - rung.duration_s).abs() < 0.1,
            "{}: {total} s",
            stream.uri
        );
        let mut init = Vec::new();
        for (n, entry) in playlist.segments.iter().enumerate() {
            if let Some(map) = &entry.map {
                init = std::fs::read(dir.join(&map.uri)).unwrap();
            }
            let range = entry.byte_range.as_ref().expect("EXT-X-BYTERANGE");
            let offset = range.offset.expect("an explicit offset") as usize;
            let bytes = std::fs::read(dir.join(&entry.uri)).unwrap();
            let mut alone = init.clone();
            alone.extend_from_slice(&bytes[offset..offset + range.length as usize]);
            let file = scratch.join("iframe.mp4");
            std::fs::write(&file, alone).unwrap();
            let out = Command::new("ffprobe")
                .args(["-v", "quiet", "-select_streams", "v:0", "-show_frames"])
                .args(["-show_entries", "frame=pict_type,key_frame", "-of", "json"])
                .arg(&file)
                .output()
                .unwrap();
            let frames: Value = serde_json::from_slice(&out.stdout).unwrap();
            let frames = frames["frames"].as_array().unwrap();
            assert_eq!(frames.len(), 1, "entry {n} of {}: {frames:?}", stream.uri);
            assert_eq!(frames[0]["key_frame"], 1, "entry {n} of {}", stream.uri);
        }
    }
}
