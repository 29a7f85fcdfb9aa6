//! HLS packaging: from encoded renditions (init segment + fMP4 media
//! segments on disk) to the playlists players read, a `manifest.json` for
//! Lectern's own use, and publishing the whole package to storage.
//!
//! This crate never looks inside media: the caller describes renditions with
//! [`Rendition`] (codec strings, sizes, segment durations and byte counts)
//! and the packager turns them into text. It depends on storage only.
//! Codec strings come from the encoded bitstream, never assumed; the master
//! playlist gives each video variant its measured peak (`BANDWIDTH`) and
//! average bandwidth, resolution, frame rate and codecs, one `aac` audio
//! group, and an audio-only variant last.
//!
//! Trick play: a video rendition whose segments carry [`IFrame`] byte
//! ranges (the transcoder reads them where it writes the media) also gets
//! an I-frame playlist (`iframes.m3u8`, `EXT-X-I-FRAMES-ONLY`, one
//! `EXT-X-BYTERANGE` per keyframe into the existing segment files) and an
//! `EXT-X-I-FRAME-STREAM-INF` line in the master; renditions without them
//! (live, growing previews) get neither.
//!
//! [`publish`] uploads media first, then media playlists, then the master,
//! then the manifest, so a reader never finds a playlist naming a missing
//! file. Segments, init segments and images are `immutable` for a year —
//! safe because every encode writes under a new attempt prefix — while
//! playlists are cached briefly and growing ones for a second.

pub mod subtitles;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lectern_storage::{PutOptions, StorageError, Store};
use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, ByteRange, ExtTag, Map, MasterPlaylist, MediaPlaylist,
    MediaPlaylistType, MediaSegment, QuotedOrUnquoted, Resolution, VariantStream,
};
use serde::{Deserialize, Serialize};

/// The master playlist's file name at the package root.
pub const MASTER_PLAYLIST: &str = "master.m3u8";
/// Each rendition's media playlist, inside the rendition's directory.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
/// Each video rendition's I-frame playlist, inside the rendition's directory.
pub const IFRAME_PLAYLIST: &str = "iframes.m3u8";
pub const MANIFEST: &str = "manifest.json";
/// The `GROUP-ID` every video variant uses for its audio.
pub const AUDIO_GROUP: &str = "aac";
/// Playlist version 7: fMP4 segments with `EXT-X-MAP` need at least 6.
const HLS_VERSION: usize = 7;
/// Segments shorter than this do not set the peak bandwidth: a final
/// fragment of a few frames is mostly keyframe and would claim a rate the
/// rung never sustains, steering players to a lower rung than needed.
const MIN_PEAK_SEGMENT_S: f64 = 1.0;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("invalid package: {0}")]
    Invalid(String),
    #[error("package I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("publishing {key}: {source}")]
    Storage { key: String, source: StorageError },
}

impl PackageError {
    /// Stable machine-readable code, as every Lectern error carries.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_package",
            Self::Io { .. } => "io_error",
            Self::Storage { .. } => "storage_error",
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenditionKind {
    Video,
    Audio,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Relative to the rendition directory, e.g. `seg_00000.m4s`.
    pub uri: String,
    pub duration_s: f64,
    pub bytes: u64,
    /// An init segment that applies from this segment on, when it differs
    /// from the one before: stitched chunk encodes may each carry their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_uri: Option<String>,
    /// Keyframes inside this segment that decode alone (trick play).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iframes: Vec<IFrame>,
}

/// A keyframe inside a segment file: the bytes (the fragment's `moof` and
/// the keyframe's sample) that, after the init segment, decode to exactly
/// that picture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IFrame {
    pub offset: u64,
    pub length: u64,
    /// After the segment's start, seconds.
    pub time_s: f64,
}

/// One rendition as encoded: what players need to choose and fetch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    pub kind: RenditionKind,
    pub name: String,
    /// Directory relative to the package root, `/`-separated: `v/720p`.
    pub dir: String,
    /// RFC 6381 codec string of the encoded stream, e.g. `avc1.64001f`.
    pub codecs: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub frame_rate: Option<f64>,
    pub channels: Option<u16>,
    /// The init segment, relative to the rendition directory.
    pub init_uri: String,
    pub segments: Vec<Segment>,
}

impl Rendition {
    pub fn duration_s(&self) -> f64 {
        self.segments.iter().map(|s| s.duration_s).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Highest segment bit rate, bits/s (see [`MIN_PEAK_SEGMENT_S`]).
    pub fn peak_bandwidth(&self) -> u64 {
        let rate = |s: &&Segment| s.bytes as f64 * 8.0 / s.duration_s.max(1e-3);
        let long_enough = self
            .segments
            .iter()
            .filter(|s| s.duration_s >= MIN_PEAK_SEGMENT_S)
            .map(|s| rate(&s))
            .fold(0.0, f64::max);
        let peak = if long_enough > 0.0 {
            long_enough
        } else {
            self.segments.iter().map(|s| rate(&s)).fold(0.0, f64::max)
        };
        peak.ceil() as u64
    }

    /// Total bytes over total duration, bits/s.
    pub fn average_bandwidth(&self) -> u64 {
        let duration = self.duration_s();
        if duration <= 0.0 {
            return 0;
        }
        (self.bytes() as f64 * 8.0 / duration).ceil() as u64
    }

    fn playlist_uri(&self) -> String {
        format!("{}/{MEDIA_PLAYLIST}", self.dir)
    }

    fn iframe_playlist_uri(&self) -> String {
        format!("{}/{IFRAME_PLAYLIST}", self.dir)
    }

    /// Every keyframe in play order: its segment's index, the keyframe,
    /// and how long it stands for (until the next keyframe, the last one
    /// until the rendition's end).
    fn iframe_entries(&self) -> Vec<(usize, IFrame, f64)> {
        let mut starts = Vec::new();
        let mut at = 0.0;
        for (i, s) in self.segments.iter().enumerate() {
            starts.extend(s.iframes.iter().map(|f| (i, *f, at + f.time_s)));
            at += s.duration_s;
        }
        let end = at;
        (0..starts.len())
            .map(|k| {
                let next = starts.get(k + 1).map_or(end, |n| n.2);
                (starts[k].0, starts[k].1, next - starts[k].2)
            })
            .collect()
    }

    /// Peak and average bit rate of the I-frame playlist, bits/s.
    fn iframe_bandwidth(&self) -> (u64, u64) {
        let entries = self.iframe_entries();
        let peak = entries
            .iter()
            .map(|(_, f, d)| f.length as f64 * 8.0 / d.max(1e-3))
            .fold(0.0, f64::max);
        let bytes: u64 = entries.iter().map(|(_, f, _)| f.length).sum();
        let duration = self.duration_s().max(1e-3);
        (
            peak.ceil() as u64,
            (bytes as f64 * 8.0 / duration).ceil() as u64,
        )
    }
}

/// Everything one source was turned into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Package {
    /// Video rungs highest first, then audio (at most one audio rendition).
    pub renditions: Vec<Rendition>,
    /// Paths relative to the package root.
    pub poster: Option<String>,
    pub storyboard: Option<StoryboardFiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryboardFiles {
    pub image: String,
    pub vtt: String,
}

/// `manifest.json`: the package as Lectern's API and admin tools see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub master_playlist: String,
    pub duration_s: f64,
    pub renditions: Vec<ManifestRendition>,
    pub poster: Option<String>,
    pub storyboard: Option<StoryboardFiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRendition {
    #[serde(flatten)]
    pub rendition: Rendition,
    pub playlist: String,
    pub duration_s: f64,
    pub bytes: u64,
    pub peak_bandwidth: u64,
    pub average_bandwidth: u64,
}

/// Writes every media playlist, `master.m3u8` and `manifest.json` into
/// `root` (where the renditions' files already are) and returns the manifest.
pub fn write_hls(package: &Package, root: &Path) -> Result<Manifest, PackageError> {
    validate(package)?;
    for rendition in &package.renditions {
        let path = root.join(&rendition.dir).join(MEDIA_PLAYLIST);
        write_playlist(&path, |w| media_playlist(rendition).write_to(w))?;
        if let Some(iframes) = iframe_playlist(rendition) {
            let path = root.join(&rendition.dir).join(IFRAME_PLAYLIST);
            write_playlist(&path, |w| iframes.write_to(w))?;
        }
    }
    write_playlist(&root.join(MASTER_PLAYLIST), |w| {
        master_playlist(package).write_to(w)
    })?;
    let manifest = manifest(package);
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| PackageError::Invalid(format!("manifest does not serialise: {e}")))?;
    let path = root.join(MANIFEST);
    std::fs::write(&path, json).map_err(io_error(&path))?;
    Ok(manifest)
}

fn write_playlist(
    path: &Path,
    write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<(), PackageError> {
    let mut text = Vec::new();
    write(&mut text).map_err(io_error(path))?;
    std::fs::write(path, text).map_err(io_error(path))
}

fn validate(package: &Package) -> Result<(), PackageError> {
    let audio = package
        .renditions
        .iter()
        .filter(|r| r.kind == RenditionKind::Audio)
        .count();
    if package.renditions.is_empty() || audio > 1 {
        return Err(PackageError::Invalid(format!(
            "need at least one rendition and at most one audio rendition, got {} with {audio} audio",
            package.renditions.len()
        )));
    }
    for r in &package.renditions {
        if r.segments.is_empty() {
            return Err(PackageError::Invalid(format!(
                "rendition {} has no segments",
                r.name
            )));
        }
        if r.segments
            .iter()
            .any(|s| !s.duration_s.is_finite() || s.duration_s <= 0.0)
        {
            return Err(PackageError::Invalid(format!(
                "rendition {} has a segment without a positive duration",
                r.name
            )));
        }
        if r.kind == RenditionKind::Video && (r.width.is_none() || r.height.is_none()) {
            return Err(PackageError::Invalid(format!(
                "video rendition {} has no size",
                r.name
            )));
        }
    }
    Ok(())
}

/// A VOD media playlist: every segment, exact durations, one `EXT-X-MAP`.
pub fn media_playlist(rendition: &Rendition) -> MediaPlaylist {
    let longest = rendition
        .segments
        .iter()
        .map(|s| s.duration_s)
        .fold(0.0, f64::max);
    let segments = rendition
        .segments
        .iter()
        .scan(None::<&str>, |current, s| {
            // A map applies to every segment after it until the next one; a
            // changed init section is also a change of encoding parameters,
            // which RFC 8216 requires to be marked as a discontinuity.
            let init = s
                .init_uri
                .as_deref()
                .unwrap_or(current.unwrap_or(rendition.init_uri.as_str()));
            let changed = *current != Some(init);
            let discontinuity = changed && current.is_some();
            *current = Some(init);
            Some(MediaSegment {
                uri: s.uri.clone(),
                duration: s.duration_s as f32,
                discontinuity,
                map: changed.then(|| Map {
                    uri: init.to_string(),
                    ..Map::default()
                }),
                ..MediaSegment::default()
            })
        })
        .collect();
    MediaPlaylist {
        version: Some(HLS_VERSION),
        // The spec requires every EXTINF, rounded, to be ≤ the target; the
        // ceiling of the longest satisfies that with no rounding subtleties.
        target_duration: longest.ceil() as u64,
        segments,
        end_list: true,
        playlist_type: Some(MediaPlaylistType::Vod),
        independent_segments: true,
        ..MediaPlaylist::default()
    }
}

/// The I-frame playlist of a video rendition whose segments list their
/// keyframes (`None` otherwise): one entry per keyframe, a byte range of
/// the segment file, lasting until the next keyframe; the same `EXT-X-MAP`
/// and discontinuity rules as [`media_playlist`]. Byte ranges with offsets
/// need version 4, the init map version 6: version 7 like the others.
pub fn iframe_playlist(rendition: &Rendition) -> Option<MediaPlaylist> {
    if rendition.kind != RenditionKind::Video {
        return None;
    }
    let entries = rendition.iframe_entries();
    if entries.is_empty() {
        return None;
    }
    let mut current: Option<&str> = None;
    let segments: Vec<MediaSegment> = entries
        .iter()
        .map(|&(i, frame, duration)| {
            let s = &rendition.segments[i];
            let init = rendition.segments[..=i]
                .iter()
                .rev()
                .find_map(|s| s.init_uri.as_deref())
                .unwrap_or(rendition.init_uri.as_str());
            let changed = current != Some(init);
            let discontinuity = changed && current.is_some();
            current = Some(init);
            MediaSegment {
                uri: s.uri.clone(),
                duration: duration as f32,
                byte_range: Some(ByteRange {
                    length: frame.length,
                    offset: Some(frame.offset),
                }),
                discontinuity,
                map: changed.then(|| Map {
                    uri: init.to_string(),
                    ..Map::default()
                }),
                ..MediaSegment::default()
            }
        })
        .collect();
    let longest = entries.iter().map(|e| e.2).fold(0.0, f64::max);
    Some(MediaPlaylist {
        version: Some(HLS_VERSION),
        target_duration: (longest.ceil() as u64).max(1),
        segments,
        end_list: true,
        playlist_type: Some(MediaPlaylistType::Vod),
        i_frames_only: true,
        independent_segments: true,
        ..MediaPlaylist::default()
    })
}

/// A growing (`EVENT`) playlist of the segments encoded so far, so players
/// can start while the rest of the ladder is still encoding. Its target
/// duration must hold for segments still to come, hence the explicit floor.
pub fn event_playlist(rendition: &Rendition, target_duration_s: f64) -> MediaPlaylist {
    let mut playlist = media_playlist(rendition);
    playlist.target_duration = playlist
        .target_duration
        .max(target_duration_s.ceil() as u64);
    playlist.end_list = false;
    playlist.playlist_type = Some(MediaPlaylistType::Event);
    playlist
}

/// A live playlist: the segments of the last `window_s` seconds (the DVR
/// window) of a rendition that is still growing. While nothing has left
/// the window it is an `EVENT` playlist; once the head slides out it has no
/// playlist type (RFC 8216 forbids removing segments from an `EVENT`
/// playlist), `EXT-X-MEDIA-SEQUENCE` counts the segments removed and
/// `EXT-X-DISCONTINUITY-SEQUENCE` the discontinuities removed with them.
/// The first segment kept always carries the `EXT-X-MAP` it plays with.
pub fn live_playlist(
    rendition: &Rendition,
    target_duration_s: f64,
    window_s: f64,
) -> MediaPlaylist {
    let mut playlist = event_playlist(rendition, target_duration_s);
    let mut kept_s: f64 = playlist
        .segments
        .iter()
        .map(|s| f64::from(s.duration))
        .sum();
    let mut drop = 0;
    while drop + 1 < playlist.segments.len() && kept_s > window_s {
        kept_s -= f64::from(playlist.segments[drop].duration);
        drop += 1;
    }
    if drop == 0 {
        return playlist;
    }
    // The init section in force at the first kept segment.
    let map = playlist.segments[..=drop]
        .iter()
        .rev()
        .find_map(|s| s.map.clone());
    let removed_discontinuities = playlist.segments[..drop]
        .iter()
        .filter(|s| s.discontinuity)
        .count();
    playlist.segments.drain(..drop);
    playlist.segments[0].map = map;
    playlist.media_sequence = drop as u64;
    playlist.discontinuity_sequence = removed_discontinuities as u64;
    playlist.playlist_type = None;
    playlist
}

/// One LL-HLS partial segment (`EXT-X-PART`) of a live rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Relative to the rendition directory.
    pub uri: String,
    pub duration_s: f64,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// What a live playlist adds for low-latency clients (LL-HLS, RFC 8216bis
/// §4.4.3.7–8, §4.4.5.2): every tag below is one a standard client
/// ignores, so the same playlist serves both.
#[derive(Debug, Clone, Copy)]
pub struct LowLatency<'a> {
    /// `EXT-X-PART-INF:PART-TARGET`: no part is longer.
    pub part_target_s: f64,
    /// The parts of recent complete segments, oldest first, each with the
    /// index of its segment in the rendition's `segments`; segments that
    /// have left the window are skipped.
    pub completed: &'a [(usize, Vec<Part>)],
    /// The parts of the segment being written, after the last segment.
    pub open: &'a [Part],
    /// The part expected next (`EXT-X-PRELOAD-HINT:TYPE=PART`).
    pub preload_hint: Option<&'a str>,
    /// Where the other renditions stand (`EXT-X-RENDITION-REPORT`), so a
    /// player switching to one asks it for the right segment and part.
    pub reports: &'a [RenditionReport],
}

/// `EXT-X-RENDITION-REPORT`: another rendition's last segment or part.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    /// That rendition's playlist, relative to this one.
    pub uri: String,
    /// Its last media sequence number: the open segment's when it has
    /// parts listed.
    pub last_msn: u64,
    /// Its last part of `last_msn`, when it lists parts of it.
    pub last_part: Option<u64>,
}

/// How far behind the live edge low-latency clients play: three part
/// targets, what the spec recommends (it requires at least two).
pub fn part_hold_back_s(part_target_s: f64) -> f64 {
    3.0 * part_target_s
}

/// The attributes of a part's `EXT-X-PART` tag.
fn part_attributes(part: &Part) -> String {
    format!(
        "DURATION={:.5},URI=\"{}\"{}",
        part.duration_s,
        part.uri,
        if part.independent {
            ",INDEPENDENT=YES"
        } else {
            ""
        }
    )
}

/// [`live_playlist`] with LL-HLS: `EXT-X-SERVER-CONTROL` (the origin
/// answers blocking reloads, `CAN-BLOCK-RELOAD=YES`, and says how far back
/// low-latency clients hold, `PART-HOLD-BACK`), `EXT-X-PART-INF`, the parts
/// of the last segments before each one's `EXTINF`, the open segment's
/// parts after the last segment, the hint of the next part, and a report
/// of where each other rendition stands.
pub fn low_latency_playlist(
    rendition: &Rendition,
    target_duration_s: f64,
    window_s: f64,
    low_latency: &LowLatency<'_>,
) -> Vec<u8> {
    let mut playlist = live_playlist(rendition, target_duration_s, window_s);
    let dropped = playlist.media_sequence as usize;
    for (index, parts) in low_latency.completed {
        if let Some(segment) = index
            .checked_sub(dropped)
            .and_then(|i| playlist.segments.get_mut(i))
        {
            segment.unknown_tags = parts
                .iter()
                .map(|p| ExtTag {
                    tag: "X-PART".into(),
                    rest: Some(part_attributes(p)),
                })
                .collect();
        }
    }
    let mut text = Vec::new();
    playlist
        .write_to(&mut text)
        .expect("writing to a Vec cannot fail");
    let text = String::from_utf8(text).expect("m3u8-rs writes UTF-8");
    let mut out = String::with_capacity(text.len() + 512);
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("#EXT-X-TARGETDURATION:") {
            out.push_str(&format!(
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
                 #EXT-X-PART-INF:PART-TARGET={:.3}\n",
                part_hold_back_s(low_latency.part_target_s),
                low_latency.part_target_s
            ));
        }
    }
    for part in low_latency.open {
        out.push_str("#EXT-X-PART:");
        out.push_str(&part_attributes(part));
        out.push('\n');
    }
    if let Some(hint) = low_latency.preload_hint {
        out.push_str(&format!("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"\n"));
    }
    for report in low_latency.reports {
        out.push_str(&format!(
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
            report.uri, report.last_msn
        ));
        if let Some(part) = report.last_part {
            out.push_str(&format!(",LAST-PART={part}"));
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Growing playlists change every few seconds: caches may keep them a second.
pub const GROWING_PLAYLIST_CACHE: &str = "public, max-age=1";

/// One variant per video rung (video + the audio group), then an audio-only
/// variant; an audio-only package has just that one.
pub fn master_playlist(package: &Package) -> MasterPlaylist {
    let audio = package
        .renditions
        .iter()
        .find(|r| r.kind == RenditionKind::Audio);
    let videos: Vec<&Rendition> = package
        .renditions
        .iter()
        .filter(|r| r.kind == RenditionKind::Video)
        .collect();
    let (audio_peak, audio_average) =
        audio.map_or((0, 0), |a| (a.peak_bandwidth(), a.average_bandwidth()));

    let mut variants: Vec<VariantStream> = videos
        .iter()
        .map(|v| VariantStream {
            uri: v.playlist_uri(),
            bandwidth: v.peak_bandwidth() + audio_peak,
            average_bandwidth: Some(v.average_bandwidth() + audio_average),
            codecs: Some(match audio {
                Some(a) => format!("{},{}", v.codecs, a.codecs),
                None => v.codecs.clone(),
            }),
            resolution: v.width.zip(v.height).map(|(w, h)| Resolution {
                width: u64::from(w),
                height: u64::from(h),
            }),
            // m3u8-rs prints f64 as is ("25"); the spec's form is three
            // decimals, so it goes out as a raw attribute instead.
            other_attributes: v.frame_rate.map(|fps| {
                HashMap::from([(
                    "FRAME-RATE".to_string(),
                    QuotedOrUnquoted::Unquoted(format!("{fps:.3}")),
                )])
            }),
            audio: audio.map(|_| AUDIO_GROUP.to_string()),
            ..VariantStream::default()
        })
        .collect();
    if let Some(a) = audio {
        variants.push(VariantStream {
            uri: a.playlist_uri(),
            bandwidth: audio_peak,
            average_bandwidth: Some(audio_average),
            codecs: Some(a.codecs.clone()),
            ..VariantStream::default()
        });
    }
    // Trick play, after the variants: one I-frame stream per rung that has
    // keyframe ranges. Its BANDWIDTH is the peak of its own entries; it
    // carries no audio, so CODECS is the video's alone.
    variants.extend(
        videos
            .iter()
            .filter(|v| iframe_playlist(v).is_some())
            .map(|v| {
                let (peak, average) = v.iframe_bandwidth();
                VariantStream {
                    is_i_frame: true,
                    uri: v.iframe_playlist_uri(),
                    bandwidth: peak,
                    average_bandwidth: Some(average),
                    codecs: Some(v.codecs.clone()),
                    resolution: v.width.zip(v.height).map(|(w, h)| Resolution {
                        width: u64::from(w),
                        height: u64::from(h),
                    }),
                    ..VariantStream::default()
                }
            }),
    );
    let alternatives = match audio {
        Some(a) if !videos.is_empty() => vec![AlternativeMedia {
            media_type: AlternativeMediaType::Audio,
            uri: Some(a.playlist_uri()),
            group_id: AUDIO_GROUP.to_string(),
            name: a.name.clone(),
            default: true,
            autoselect: true,
            channels: a.channels.map(|c| c.to_string()),
            ..AlternativeMedia::default()
        }],
        _ => Vec::new(),
    };
    MasterPlaylist {
        version: Some(HLS_VERSION),
        variants,
        independent_segments: true,
        alternatives,
        ..MasterPlaylist::default()
    }
}

pub fn manifest(package: &Package) -> Manifest {
    let renditions: Vec<ManifestRendition> = package
        .renditions
        .iter()
        .map(|r| ManifestRendition {
            playlist: r.playlist_uri(),
            duration_s: r.duration_s(),
            bytes: r.bytes(),
            peak_bandwidth: r.peak_bandwidth(),
            average_bandwidth: r.average_bandwidth(),
            rendition: r.clone(),
        })
        .collect();
    Manifest {
        master_playlist: MASTER_PLAYLIST.to_string(),
        duration_s: renditions.iter().map(|r| r.duration_s).fold(0.0, f64::max),
        renditions,
        poster: package.poster.clone(),
        storyboard: package.storyboard.clone(),
    }
}

/// Content type and cache policy by file name. Segments, init segments and
/// images never change once written (new encodes get new prefixes), so they
/// are immutable for a year; VOD playlists may be re-packaged, so they are
/// cached briefly; the manifest is Lectern's own index, cached least.
pub fn put_options(file_name: &str) -> PutOptions {
    const IMMUTABLE: &str = "public, max-age=31536000, immutable";
    let (content_type, cache_control) = match file_name.rsplit('.').next().unwrap_or_default() {
        "m3u8" => ("application/vnd.apple.mpegurl", "public, max-age=300"),
        "m4s" => ("video/iso.segment", IMMUTABLE),
        "mp4" => ("video/mp4", IMMUTABLE),
        "jpg" | "jpeg" => ("image/jpeg", IMMUTABLE),
        "vtt" => ("text/vtt", "public, max-age=300"),
        "json" => ("application/json", "public, max-age=60"),
        _ => ("application/octet-stream", "public, max-age=300"),
    };
    PutOptions {
        content_type: Some(content_type.to_string()),
        cache_control: Some(cache_control.to_string()),
    }
}

/// Uploads every file under `local_dir` to `store` under `prefix/`, media
/// first, then media playlists, then the master playlist, the manifest last:
/// a reader that finds a playlist always finds everything it references.
/// Returns the keys written, in upload order.
pub async fn publish(
    local_dir: &Path,
    store: &dyn Store,
    prefix: &str,
) -> Result<Vec<String>, PackageError> {
    let mut files = Vec::new();
    collect_files(local_dir, local_dir, &mut files)?;
    let rank = |rel: &str| match rel {
        MANIFEST => 3,
        MASTER_PLAYLIST => 2,
        _ if rel.ends_with(".m3u8") => 1,
        _ => 0,
    };
    files.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    let prefix = prefix.trim_matches('/');
    let mut keys = Vec::with_capacity(files.len());
    for rel in files {
        let key = if prefix.is_empty() {
            rel.clone()
        } else {
            format!("{prefix}/{rel}")
        };
        let path = local_dir.join(&rel);
        store
            .put_file(&key, &path, put_options(&rel))
            .await
            .map_err(|source| PackageError::Storage {
                key: key.clone(),
                source,
            })?;
        keys.push(key);
    }
    Ok(keys)
}

/// Relative `/`-separated paths of every regular file under `dir`.
fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), PackageError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(io_error(&path))?;
        if file_type.is_dir() {
            collect_files(root, &path, out)?;
        } else if file_type.is_file() {
            let rel = path.strip_prefix(root).map_err(|_| {
                PackageError::Invalid(format!("{} escapes the package", path.display()))
            })?;
            let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(sizes: &[(f64, u64)]) -> Vec<Segment> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &(duration_s, bytes))| Segment {
                uri: format!("seg_{i:05}.m4s"),
                duration_s,
                bytes,
                init_uri: None,
                iframes: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_changed_init_section_gets_a_map_and_a_discontinuity() {
        let mut v = video(
            "360p",
            360,
            &[(4.0, 1000), (4.0, 1000), (4.0, 1000), (4.0, 1000)],
        );
        v.segments[2].init_uri = Some("c1_init.mp4".into());
        // Naming the current init again changes nothing.
        v.segments[3].init_uri = Some("c1_init.mp4".into());
        let mut text = Vec::new();
        media_playlist(&v).write_to(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.matches("#EXT-X-MAP").count(), 2, "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 1, "{text}");
        let map = text.find("c1_init.mp4").unwrap();
        assert!(text.find("seg_00001.m4s").unwrap() < text.find("#EXT-X-DISCONTINUITY").unwrap());
        assert!(map < text.find("seg_00002.m4s").unwrap());
    }

    #[test]
    fn a_live_playlist_slides_its_window_and_keeps_the_map_in_force() {
        let mut v = video("360p", 360, &[(2.0, 1000); 6]);
        v.segments[3].init_uri = Some("c2-init.mp4".into());
        // Within the window: an EVENT playlist of everything.
        let whole = text(|out| live_playlist(&v, 2.0, 60.0).write_to(out));
        assert!(whole.contains("#EXT-X-PLAYLIST-TYPE:EVENT"), "{whole}");
        assert!(!whole.contains("#EXT-X-ENDLIST"), "{whole}");
        assert_eq!(whole.matches("#EXTINF").count(), 6);
        // A 5 s window keeps the last segments that fit (at least 4 s).
        let slid = text(|out| live_playlist(&v, 2.0, 5.0).write_to(out));
        assert!(!slid.contains("#EXT-X-PLAYLIST-TYPE"), "{slid}");
        assert!(slid.contains("#EXT-X-MEDIA-SEQUENCE:4"), "{slid}");
        // The discontinuity of segment 3 left the window with it.
        assert!(slid.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1"), "{slid}");
        assert!(!slid.contains("#EXT-X-DISCONTINUITY\n"), "{slid}");
        assert_eq!(slid.matches("#EXTINF").count(), 2, "{slid}");
        // The first kept segment plays with the second connection's init.
        assert!(slid.contains("#EXT-X-MAP:URI=\"c2-init.mp4\""), "{slid}");
        assert!(!slid.contains("seg_00003.m4s"), "{slid}");
    }

    fn video(name: &str, height: u32, sizes: &[(f64, u64)]) -> Rendition {
        Rendition {
            kind: RenditionKind::Video,
            name: name.into(),
            dir: format!("v/{name}"),
            codecs: "avc1.64001f".into(),
            width: Some(height * 16 / 9),
            height: Some(height),
            frame_rate: Some(30000.0 / 1001.0),
            channels: None,
            init_uri: "init.mp4".into(),
            segments: segments(sizes),
        }
    }

    fn audio() -> Rendition {
        Rendition {
            kind: RenditionKind::Audio,
            name: "audio".into(),
            dir: "a/audio".into(),
            codecs: "mp4a.40.2".into(),
            width: None,
            height: None,
            frame_rate: None,
            channels: Some(2),
            init_uri: "init.mp4".into(),
            segments: segments(&[(4.0, 64_000), (4.0, 64_000), (1.0, 16_000)]),
        }
    }

    fn text(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn low_latency_playlists_list_recent_parts_the_open_ones_and_a_hint() {
        let r = video("720p", 720, &[(2.0, 1_000), (2.0, 1_000), (2.0, 1_000)]);
        let part = |uri: &str, independent| Part {
            uri: uri.into(),
            duration_s: 0.5,
            independent,
        };
        let completed = vec![
            (0, vec![part("p0_0.m4s", true)]),
            (2, vec![part("p2_0.m4s", true), part("p2_1.m4s", false)]),
        ];
        let open = vec![part("p3_0.m4s", true)];
        let ll = LowLatency {
            part_target_s: 0.5,
            completed: &completed,
            open: &open,
            preload_hint: Some("p3_1.m4s"),
            reports: &[RenditionReport {
                uri: "../../a/audio/index.m3u8".into(),
                last_msn: 3,
                last_part: Some(0),
            }],
        };
        // A window of 4.5 s drops the first segment, and its parts with it.
        let t = String::from_utf8(low_latency_playlist(&r, 2.0, 4.5, &ll)).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let at = |l: &str| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("{l} in\n{t}"))
        };
        assert!(
            at("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500")
                < at("#EXT-X-MEDIA-SEQUENCE:1")
        );
        at("#EXT-X-PART-INF:PART-TARGET=0.500");
        assert!(
            !t.contains("p0_0"),
            "parts of a segment out of the window are gone"
        );
        let p20 = at("#EXT-X-PART:DURATION=0.50000,URI=\"p2_0.m4s\",INDEPENDENT=YES");
        let p21 = at("#EXT-X-PART:DURATION=0.50000,URI=\"p2_1.m4s\"");
        let s2 = at("seg_00002.m4s");
        assert!(at("seg_00001.m4s") < p20 && p20 < p21 && p21 < s2);
        let open = at("#EXT-X-PART:DURATION=0.50000,URI=\"p3_0.m4s\",INDEPENDENT=YES");
        assert!(s2 < open);
        assert!(open < at("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p3_1.m4s\""));
        assert_eq!(
            lines.last(),
            Some(
                &"#EXT-X-RENDITION-REPORT:URI=\"../../a/audio/index.m3u8\",LAST-MSN=3,LAST-PART=0"
            )
        );
        assert!(!t.contains("ENDLIST"));
        // Still a playlist a standard client (and m3u8-rs) reads.
        let parsed = m3u8_rs::parse_media_playlist_res(t.as_bytes()).unwrap();
        assert_eq!(parsed.segments.len(), 2);
    }

    #[test]
    fn media_playlist_is_vod_fmp4_with_exact_durations() {
        let r = video(
            "720p",
            720,
            &[(4.004, 1_000_000), (4.004, 900_000), (2.5, 400_000)],
        );
        let t = text(|w| media_playlist(&r).write_to(w));
        for line in [
            "#EXT-X-VERSION:7",
            "#EXT-X-TARGETDURATION:5",
            "#EXT-X-PLAYLIST-TYPE:VOD",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            "#EXT-X-MAP:URI=\"init.mp4\"",
            "#EXTINF:4.004,",
            "#EXTINF:2.5,",
            "#EXT-X-ENDLIST",
        ] {
            assert!(t.contains(line), "missing {line} in\n{t}");
        }
        assert_eq!(t.matches("#EXT-X-MAP").count(), 1);
        // And it parses back.
        let parsed = m3u8_rs::parse_media_playlist_res(t.as_bytes()).unwrap();
        assert_eq!(parsed.segments.len(), 3);
    }

    #[test]
    fn master_measures_bandwidth_and_lists_audio_last() {
        // 720p: peak 1 MB over 4 s = 2 Mb/s; the 0.5 s tail does not count.
        let package = Package {
            renditions: vec![
                video(
                    "720p",
                    720,
                    &[(4.0, 1_000_000), (4.0, 500_000), (0.5, 200_000)],
                ),
                video(
                    "360p",
                    360,
                    &[(4.0, 250_000), (4.0, 250_000), (0.5, 20_000)],
                ),
                audio(),
            ],
            poster: None,
            storyboard: None,
        };
        let master = master_playlist(&package);
        let t = text(|w| master.write_to(w));
        assert!(t.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{t}");
        assert!(t.contains("#EXT-X-MEDIA:TYPE=AUDIO,URI=\"a/audio/index.m3u8\",GROUP-ID=\"aac\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\""), "{t}");
        assert_eq!(master.variants.len(), 3);
        let top = &master.variants[0];
        assert_eq!(top.bandwidth, 2_000_000 + 128_000);
        // 1.7 MB over 8.5 s, plus the audio's 144 kB over 9 s.
        assert_eq!(top.average_bandwidth, Some(1_600_000 + 128_000));
        assert_eq!(top.codecs.as_deref(), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(top.audio.as_deref(), Some("aac"));
        assert!(t.contains("RESOLUTION=1280x720"), "{t}");
        assert!(t.contains("FRAME-RATE=29.970"), "{t}");
        let last = master.variants.last().unwrap();
        assert_eq!(last.codecs.as_deref(), Some("mp4a.40.2"));
        assert_eq!(last.uri, "a/audio/index.m3u8");
        // Round trip through the parser players' tooling uses.
        let parsed = m3u8_rs::parse_master_playlist_res(t.as_bytes()).unwrap();
        assert_eq!(parsed.variants.len(), 3);
        assert_eq!(parsed.alternatives.len(), 1);
    }

    #[test]
    fn video_only_has_no_audio_group_and_audio_only_one_variant() {
        let video_only = Package {
            renditions: vec![video("360p", 360, &[(4.0, 100_000)])],
            poster: None,
            storyboard: None,
        };
        let master = master_playlist(&video_only);
        assert_eq!(master.variants.len(), 1);
        assert!(master.variants[0].audio.is_none());
        assert!(master.alternatives.is_empty());

        let audio_only = Package {
            renditions: vec![audio()],
            poster: None,
            storyboard: None,
        };
        let master = master_playlist(&audio_only);
        assert_eq!(master.variants.len(), 1);
        assert!(master.alternatives.is_empty());
        assert_eq!(master.variants[0].codecs.as_deref(), Some("mp4a.40.2"));
    }

    #[test]
    fn keyframe_ranges_become_an_iframe_playlist_and_a_master_line() {
        let mut v = video("360p", 360, &[(4.0, 100_000), (4.0, 90_000), (2.0, 40_000)]);
        for (i, s) in v.segments.iter_mut().enumerate() {
            s.iframes = vec![IFrame {
                offset: 76,
                length: 5_000 + i as u64,
                time_s: 0.0,
            }];
        }
        // A stitched chunk with its own init section.
        v.segments[2].init_uri = Some("p3a1_init.mp4".into());
        let t = text(|w| iframe_playlist(&v).unwrap().write_to(w));
        for line in [
            "#EXT-X-VERSION:7",
            "#EXT-X-I-FRAMES-ONLY",
            "#EXT-X-MAP:URI=\"init.mp4\"",
            "#EXT-X-BYTERANGE:5000@76\n#EXTINF:4,\nseg_00000.m4s",
            "#EXT-X-BYTERANGE:5001@76\n#EXTINF:4,\nseg_00001.m4s",
            "#EXT-X-MAP:URI=\"p3a1_init.mp4\"",
            "#EXT-X-ENDLIST",
        ] {
            assert!(t.contains(line), "missing {line} in\n{t}");
        }
        assert_eq!(t.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{t}");
        let parsed = m3u8_rs::parse_media_playlist_res(t.as_bytes()).unwrap();
        assert!(parsed.i_frames_only);
        let durations: Vec<f32> = parsed.segments.iter().map(|s| s.duration).collect();
        assert_eq!(durations, [4.0, 4.0, 2.0]);

        let package = Package {
            renditions: vec![v, video("240p", 240, &[(4.0, 1000)]), audio()],
            poster: None,
            storyboard: None,
        };
        let t = text(|w| master_playlist(&package).write_to(w));
        // Only the rung with keyframe ranges gets trick play, after the
        // variants; its peak is the 2 s entry: 5002 bytes over 2 s.
        assert_eq!(t.matches("#EXT-X-I-FRAME-STREAM-INF").count(), 1, "{t}");
        assert!(t.contains("#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=20008,AVERAGE-BANDWIDTH=12003,CODECS=\"avc1.64001f\",RESOLUTION=640x360,URI=\"v/360p/iframes.m3u8\""), "{t}");
        assert!(t.rfind("#EXT-X-STREAM-INF").unwrap() < t.find("I-FRAME").unwrap());
        let parsed = m3u8_rs::parse_master_playlist_res(t.as_bytes()).unwrap();
        assert_eq!(parsed.variants.iter().filter(|v| v.is_i_frame).count(), 1);
        // Live and preview renditions carry none.
        assert!(iframe_playlist(&video("240p", 240, &[(4.0, 1000)])).is_none());
    }

    #[test]
    fn content_types_and_cache_policies() {
        let o = put_options("seg_00001.m4s");
        assert_eq!(o.content_type.as_deref(), Some("video/iso.segment"));
        assert!(o.cache_control.unwrap().contains("immutable"));
        let o = put_options("index.m3u8");
        assert_eq!(
            o.content_type.as_deref(),
            Some("application/vnd.apple.mpegurl")
        );
        assert!(!o.cache_control.unwrap().contains("immutable"));
        assert_eq!(
            put_options("init.mp4").content_type.as_deref(),
            Some("video/mp4")
        );
        assert_eq!(
            put_options("poster.jpg").content_type.as_deref(),
            Some("image/jpeg")
        );
        assert_eq!(
            put_options("storyboard.vtt").content_type.as_deref(),
            Some("text/vtt")
        );
        assert_eq!(
            put_options("manifest.json").content_type.as_deref(),
            Some("application/json")
        );
    }

    #[test]
    fn rejects_empty_renditions() {
        let package = Package {
            renditions: vec![video("360p", 360, &[])],
            poster: None,
            storyboard: None,
        };
        let dir = std::env::temp_dir();
        assert_eq!(
            write_hls(&package, &dir).unwrap_err().code(),
            "invalid_package"
        );
    }
}
