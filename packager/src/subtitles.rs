//! Captions as an HLS subtitle rendition: one WebVTT segment per media
//! segment of the video (same durations, so a player fetches the captions
//! of exactly the stretch it buffers), a VOD media playlist listing them,
//! and the whole file for people who want it in one piece.
//!
//! Cue times stay the caption file's own (time since the video's first
//! frame) in every segment; each segment's `X-TIMESTAMP-MAP` says where
//! that zero lies on the media timeline: `MPEGTS` is the first frame's
//! presentation time in the fMP4 segments, in 90 kHz ticks. The transcoder
//! shifts every rendition by x264's B-frame delay (or, for a chunked
//! encode, by its fixed lead), so the first frame is not at 0 and the map
//! is what lines the cues up with the picture (hls.js and Safari both
//! honour it). A cue that spans a segment boundary is repeated in each
//! segment it overlaps, as RFC 8216 §3.5 asks; players drop the repeat.
//!
//! This module only writes text; parsing and validating what a partner
//! uploads is the catalogue's.

use m3u8_rs::{MediaPlaylist, MediaPlaylistType, MediaSegment};

/// The subtitle rendition's media playlist, inside its prefix.
pub const SUBTITLE_PLAYLIST: &str = "index.m3u8";
/// The whole caption file, normalised to WebVTT, inside its prefix.
pub const WHOLE_WEBVTT: &str = "captions.vtt";
/// The ticks of `X-TIMESTAMP-MAP`'s `MPEGTS` (MPEG-2 system clock / 300).
pub const MPEGTS_HZ: f64 = 90_000.0;

/// One cue, as it is written: times in milliseconds since the video's
/// first frame, the settings and the text exactly as WebVTT carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub id: Option<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Cue settings after the timing (`line:0 align:start`), or empty.
    pub settings: String,
    /// One or more non-empty lines, without a line containing `-->`.
    pub text: String,
}

/// A caption track to write: the cues in order of start, and the
/// `STYLE`/`REGION` blocks of the file (each written before any cue, as
/// WebVTT requires, in every segment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captions {
    pub blocks: Vec<String>,
    pub cues: Vec<Cue>,
}

/// One file of a subtitle rendition: its name inside the prefix and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubtitleFile {
    pub name: String,
    pub text: String,
}

/// `hh:mm:ss.ttt`, the WebVTT timestamp form every reader accepts.
pub fn timestamp(ms: u64) -> String {
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    format!("{h:02}:{m:02}:{:02}.{:03}", rest / 1000, rest % 1000)
}

fn write_cue(out: &mut String, cue: &Cue) {
    out.push('\n');
    if let Some(id) = &cue.id {
        out.push_str(id);
        out.push('\n');
    }
    out.push_str(&timestamp(cue.start_ms));
    out.push_str(" --> ");
    out.push_str(&timestamp(cue.end_ms));
    if !cue.settings.is_empty() {
        out.push(' ');
        out.push_str(&cue.settings);
    }
    out.push('\n');
    out.push_str(&cue.text);
    out.push('\n');
}

fn header(out: &mut String, timestamp_map: Option<u64>, blocks: &[String]) {
    out.push_str("WEBVTT\n");
    if let Some(mpegts) = timestamp_map {
        out.push_str(&format!(
            "X-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:00:00:00.000\n"
        ));
    }
    for block in blocks {
        out.push('\n');
        out.push_str(block.trim_end_matches('\n'));
        out.push('\n');
    }
}

/// The whole track as one WebVTT file (no timestamp map: its times are
/// the video's own, for a download or a `<track>` element).
pub fn webvtt(captions: &Captions) -> String {
    let mut out = String::new();
    header(&mut out, None, &captions.blocks);
    for cue in &captions.cues {
        write_cue(&mut out, cue);
    }
    out
}

/// Where the video's first frame is on the media timeline, in `MPEGTS`
/// ticks (never negative: the fMP4 timeline starts at 0).
pub fn mpegts(presentation_start_s: f64) -> u64 {
    (presentation_start_s.max(0.0) * MPEGTS_HZ).round() as u64
}

/// The subtitle rendition of `captions` for a video whose media segments
/// last `segments_s` (in order) and whose first frame is presented at
/// `presentation_start_s` on the media timeline: one `seg_NNNNN.vtt` per
/// video segment, then [`SUBTITLE_PLAYLIST`] (last, so a reader that finds
/// the playlist finds its segments), plus [`WHOLE_WEBVTT`] first.
pub fn subtitle_rendition(
    captions: &Captions,
    segments_s: &[f64],
    presentation_start_s: f64,
) -> Vec<SubtitleFile> {
    let map = mpegts(presentation_start_s);
    let offset_ms = (presentation_start_s.max(0.0) * 1000.0).round() as u64;
    let mut files = vec![SubtitleFile {
        name: WHOLE_WEBVTT.to_string(),
        text: webvtt(captions),
    }];
    let mut playlist_segments = Vec::with_capacity(segments_s.len());
    let mut from_ms = 0u64;
    let last = segments_s.len().saturating_sub(1);
    for (i, duration) in segments_s.iter().enumerate() {
        let to_ms = from_ms + (duration.max(0.0) * 1000.0).round() as u64;
        // Windows are on the playlist's timeline, cues on the video's:
        // a cue plays `offset` later. The last window is open-ended, so a
        // cue ending past the last frame (rounding) still has a home.
        let mut text = String::new();
        header(&mut text, Some(map), &captions.blocks);
        for cue in &captions.cues {
            let (start, end) = (cue.start_ms + offset_ms, cue.end_ms + offset_ms);
            if end > from_ms && (start < to_ms || i == last) {
                write_cue(&mut text, cue);
            }
        }
        let name = format!("seg_{i:05}.vtt");
        playlist_segments.push(MediaSegment {
            uri: name.clone(),
            duration: *duration as f32,
            ..MediaSegment::default()
        });
        files.push(SubtitleFile { name, text });
        from_ms = to_ms;
    }
    let longest = segments_s.iter().copied().fold(0.0, f64::max);
    let playlist = MediaPlaylist {
        version: Some(3),
        target_duration: longest.ceil() as u64,
        segments: playlist_segments,
        end_list: true,
        playlist_type: Some(MediaPlaylistType::Vod),
        ..MediaPlaylist::default()
    };
    let mut text = Vec::new();
    playlist
        .write_to(&mut text)
        .expect("writing to memory cannot fail");
    files.push(SubtitleFile {
        name: SUBTITLE_PLAYLIST.to_string(),
        text: String::from_utf8(text).expect("m3u8-rs writes UTF-8"),
    });
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(start_ms: u64, end_ms: u64, text: &str) -> Cue {
        Cue {
            id: None,
            start_ms,
            end_ms,
            settings: String::new(),
            text: text.to_string(),
        }
    }

    #[test]
    fn timestamps_are_hours_minutes_seconds_millis() {
        assert_eq!(timestamp(0), "00:00:00.000");
        assert_eq!(timestamp(3_723_004), "01:02:03.004");
        assert_eq!(timestamp(100 * 3_600_000), "100:00:00.000");
    }

    #[test]
    fn one_segment_per_video_segment_with_the_cues_it_overlaps() {
        let captions = Captions {
            blocks: vec!["STYLE\n::cue { color: yellow }".into()],
            cues: vec![
                cue(500, 1500, "first"),
                cue(3500, 4500, "spans the boundary"),
                cue(9000, 9990, "last"),
            ],
        };
        let files = subtitle_rendition(&captions, &[4.0, 4.0, 2.0], 0.08);
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "captions.vtt",
                "seg_00000.vtt",
                "seg_00001.vtt",
                "seg_00002.vtt",
                "index.m3u8"
            ]
        );
        let seg = |i: usize| files[i + 1].text.as_str();
        for i in 0..3 {
            assert!(
                seg(i).starts_with(
                    "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:7200,LOCAL:00:00:00.000\n\nSTYLE\n"
                ),
                "{}",
                seg(i)
            );
        }
        assert!(seg(0).contains("00:00:00.500 --> 00:00:01.500\nfirst\n"));
        assert!(seg(0).contains("spans the boundary"));
        assert!(seg(1).contains("00:00:03.500 --> 00:00:04.500\nspans the boundary\n"));
        assert!(!seg(1).contains("first") && !seg(1).contains("last"));
        assert!(seg(2).contains("last") && !seg(2).contains("spans"));
        let playlist = &files[4].text;
        assert!(playlist.contains("#EXT-X-TARGETDURATION:4"), "{playlist}");
        assert!(playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{playlist}");
        assert!(playlist.contains("seg_00002.vtt"), "{playlist}");
        assert!(
            playlist.trim_end().ends_with("#EXT-X-ENDLIST"),
            "{playlist}"
        );
        assert!(!files[0].text.contains("X-TIMESTAMP-MAP"));
        assert!(files[0].text.contains("first") && files[0].text.contains("last"));
    }

    #[test]
    fn a_cue_past_the_last_window_stays_in_the_last_segment() {
        let captions = Captions {
            blocks: vec![],
            cues: vec![cue(5_900, 6_500, "tail")],
        };
        let files = subtitle_rendition(&captions, &[4.0, 2.0], 0.0);
        assert!(files[2].text.contains("tail"));
        assert!(!files[1].text.contains("tail"));
    }
}
