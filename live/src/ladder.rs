//! An event's live ladder in object storage: segments as the encoder
//! closes them, sliding playlists, the master, and at the end the replay.
//!
//! Everything lives under the event asset's first attempt prefix
//! (`assets/<asset>/out/attempt-1/`), laid out like a VOD package
//! (`master.m3u8`, `v/<rung>/index.m3u8`, `a/audio/index.m3u8`), so the
//! `/media` origin serves it with the same tokens, CORS and cache rules.
//! Files carry the publishing connection's number (`c2-init.mp4`,
//! `c2-seg_00007.m4s`): a reconnect starts a new encoder, whose init
//! segment differs, and the packager marks the change with
//! `EXT-X-DISCONTINUITY` + a new `EXT-X-MAP`, so one playlist (and one
//! replay) spans every connection.
//!
//! Order of writes, as in every publish: a segment (and its init segment)
//! before the playlist naming it, media playlists before the master.
//! Segments are `immutable`; live playlists are sent with a one-second
//! `max-age` (the origin rewrites them per viewer, `private`, anyway).
//! The replay rewrites each media playlist as `VOD` with every segment
//! (not just the DVR window) and `EXT-X-ENDLIST`: no byte of media is
//! re-encoded or copied.
//!
//! Low-latency HLS: the encoder also reports each ~0.5 s part of the
//! segment it is writing (one fMP4 fragment; the segment is their
//! concatenation). Each part is uploaded as its own immutable object
//! (`c2-part_00007_1.m4s`) before the playlist naming it is rewritten, so
//! media playlists change every part: `EXT-X-SERVER-CONTROL` and
//! `EXT-X-PART-INF` in the header, `EXT-X-PART` lines for the last three
//! segments (three target durations, after which the spec says to drop
//! them) and for the open one, and `EXT-X-PRELOAD-HINT` naming the part
//! expected next. A connection's parts are listed only once its first
//! segment is (the first part needs the connection's `EXT-X-MAP` and
//! discontinuity, which the packager writes with a segment), and the hint
//! goes when the stream ends. Every playlist written is announced on
//! [`Changes`], which wakes the origin's blocking reloads in this
//! process. The replay's playlists come from the segments alone: no parts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lectern_packager::{self as packager, Package, Rendition, RenditionKind, Segment};
use lectern_storage::changes::Changes;
use lectern_storage::{PutOptions, Store};
use lectern_transcoder::encode::{self, EncodedRendition, PartReady, SegmentReady};
use lectern_transcoder::LadderPlan;
use uuid::Uuid;

/// The ladders of the events this node is ingesting.
#[derive(Default)]
pub struct Ladders {
    events: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<Ladder>>>>,
}

impl Ladders {
    /// The event's ladder, created empty under `prefix` the first time.
    pub fn of(&self, event: Uuid, prefix: &str) -> Arc<tokio::sync::Mutex<Ladder>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(event)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Ladder::new(prefix))))
            .clone()
    }

    pub fn get(&self, event: Uuid) -> Option<Arc<tokio::sync::Mutex<Ladder>>> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&event)
            .cloned()
    }

    /// The events whose ladders this node holds.
    pub fn events(&self) -> Vec<Uuid> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub fn forget(&self, event: Uuid) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&event);
    }
}

/// One event's published renditions, across its connections.
pub struct Ladder {
    /// `assets/<asset>/out/attempt-1/`
    pub prefix: String,
    /// By directory (`v/720p`, `a/audio`).
    renditions: BTreeMap<String, Rendition>,
    /// Segments of the current connection already published, per directory.
    published: HashMap<String, usize>,
    connection: i32,
    plan: Option<LadderPlan>,
    master_written: bool,
    /// LL-HLS parts, per directory; empty when the encoder makes none.
    parts: HashMap<String, LiveParts>,
}

/// How many complete segments keep their parts listed: three target
/// durations from the live edge (RFC 8216bis §4.4.3.8 lets them go after).
const SEGMENTS_WITH_PARTS: usize = 3;

/// One rendition's LL-HLS parts.
#[derive(Default)]
struct LiveParts {
    /// Parts of recent complete segments, with their index in the
    /// rendition's `segments`, oldest first.
    completed: VecDeque<(usize, Vec<packager::Part>)>,
    /// The connection's segment the open parts belong to.
    open_segment: usize,
    open: Vec<packager::Part>,
    /// The open parts' total duration.
    open_s: f64,
    /// More parts are coming: the stream has not ended.
    live: bool,
}

impl Ladder {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            renditions: BTreeMap::new(),
            published: HashMap::new(),
            connection: 0,
            plan: None,
            master_written: false,
            parts: HashMap::new(),
        }
    }

    /// A new publishing connection starts: its files get its number.
    pub fn begin_connection(&mut self, connection: i32) {
        self.connection = connection;
        self.published.clear();
        for parts in self.parts.values_mut() {
            parts.open.clear();
            parts.open_s = 0.0;
            parts.open_segment = 0;
            parts.live = true;
        }
    }

    /// Uploads one part, then rewrites its rendition's playlist to list
    /// it (once the connection has a segment there; see the module doc).
    pub async fn publish_part(
        &mut self,
        store: &dyn Store,
        changes: &Changes,
        part: PartReady,
        window_s: f64,
    ) -> Result<(), String> {
        let name = self.name(&part.file_name);
        let key = format!("{}{}/{name}", self.prefix, part.dir);
        store
            .put_bytes(&key, Bytes::from(part.data), packager::put_options(&name))
            .await
            .map_err(|e| format!("uploading {key}: {e}"))?;
        let parts = self.parts.entry(part.dir.clone()).or_default();
        parts.live = true;
        if parts.open_segment != part.segment || parts.open.is_empty() {
            parts.open.clear();
            parts.open_s = 0.0;
            parts.open_segment = part.segment;
        }
        parts.open.push(packager::Part {
            uri: name,
            duration_s: part.duration_s,
            independent: part.independent,
        });
        parts.open_s += part.duration_s;
        if self.published.get(&part.dir).copied().unwrap_or(0) == 0 {
            return Ok(());
        }
        self.write_media_playlist(store, changes, &part.dir, window_s)
            .await
    }

    /// The live playlist of `dir`, with its parts when it has any.
    async fn write_media_playlist(
        &self,
        store: &dyn Store,
        changes: &Changes,
        dir: &str,
        window_s: f64,
    ) -> Result<(), String> {
        let Some(rendition) = self.renditions.get(dir) else {
            return Ok(());
        };
        let text = match self.parts.get(dir) {
            Some(parts) => {
                let completed: Vec<(usize, Vec<packager::Part>)> =
                    parts.completed.iter().cloned().collect();
                let listed = parts.live && self.published.get(dir).copied().unwrap_or(0) > 0;
                let hint = listed.then(|| self.next_part_name(parts));
                packager::low_latency_playlist(
                    rendition,
                    crate::LIVE_SEGMENT_S,
                    window_s,
                    &packager::LowLatency {
                        part_target_s: crate::LIVE_PART_S,
                        completed: &completed,
                        open: if listed { &parts.open } else { &[] },
                        preload_hint: hint.as_deref(),
                        reports: &self.rendition_reports(dir),
                    },
                )
            }
            None => playlist_text(|| {
                packager::live_playlist(rendition, crate::LIVE_SEGMENT_S, window_s)
            })?,
        };
        let key = format!("{}{dir}/{}", self.prefix, packager::MEDIA_PLAYLIST);
        put_playlist(store, &key, text, true).await?;
        changes.changed(&key);
        Ok(())
    }

    /// Where every other rendition stands. A segment's media sequence
    /// number is its index in the rendition's list (the window's head
    /// moves `EXT-X-MEDIA-SEQUENCE` by the segments it drops).
    fn rendition_reports(&self, dir: &str) -> Vec<packager::RenditionReport> {
        self.renditions
            .iter()
            .filter(|(other, r)| other.as_str() != dir && !r.segments.is_empty())
            .map(|(other, r)| {
                let parts = self.parts.get(other);
                let open = parts.filter(|p| {
                    p.live
                        && !p.open.is_empty()
                        && self.published.get(other).copied().unwrap_or(0) > 0
                });
                let last = r.segments.len() as u64 - 1;
                let (last_msn, last_part) = match open {
                    Some(p) => (last + 1, Some(p.open.len() as u64 - 1)),
                    None => (
                        last,
                        parts
                            .and_then(|p| p.completed.back())
                            .filter(|(index, parts)| *index as u64 == last && !parts.is_empty())
                            .map(|(_, parts)| parts.len() as u64 - 1),
                    ),
                };
                packager::RenditionReport {
                    // Every rendition is two levels down (`v/720p`, `a/audio`).
                    uri: format!("../../{other}/{}", packager::MEDIA_PLAYLIST),
                    last_msn,
                    last_part,
                }
            })
            .collect()
    }

    /// The part expected next: the open segment's next, or the next
    /// segment's first once the open one is about as long as a segment
    /// (a guess: a wrong hint costs a client that fetched it only a wait).
    fn next_part_name(&self, parts: &LiveParts) -> String {
        let (segment, part) = if parts.open_s >= crate::LIVE_SEGMENT_S - crate::LIVE_PART_S / 2.0 {
            (parts.open_segment + 1, 0)
        } else {
            (parts.open_segment, parts.open.len())
        };
        self.name(&encode::part_file_name(segment, part))
    }

    pub fn set_plan(&mut self, plan: LadderPlan) {
        self.plan.get_or_insert(plan);
    }

    pub fn has_media(&self) -> bool {
        self.renditions.values().any(|r| !r.segments.is_empty())
    }

    /// Media seconds published: the top video rung's, else the audio's.
    pub fn duration_s(&self) -> f64 {
        self.ordered().first().map_or(0.0, |r| r.duration_s())
    }

    fn name(&self, file: &str) -> String {
        format!("c{}-{file}", self.connection)
    }

    /// Uploads one closed segment (and the connection's init segment
    /// before its first) and rewrites that rendition's live playlist.
    /// Returns whether the master was written now (the first time every
    /// rendition can be played).
    pub async fn publish(
        &mut self,
        store: &dyn Store,
        changes: &Changes,
        local_root: &std::path::Path,
        segment: &SegmentReady,
        window_s: f64,
    ) -> Result<bool, String> {
        let kind = match segment.kind {
            encode::RenditionKind::Video => RenditionKind::Video,
            encode::RenditionKind::Audio => RenditionKind::Audio,
        };
        let local = local_root.join(&segment.dir);
        let key = |file: &str| format!("{}{}/{file}", self.prefix, segment.dir);
        let init_name = self.name(&segment.init_file);
        let first_of_connection = !self.published.contains_key(&segment.dir);
        if first_of_connection {
            put_file(store, &key(&init_name), &local.join(&segment.init_file)).await?;
        }
        let file = local.join(&segment.file_name);
        let bytes = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
        let name = self.name(&segment.file_name);
        put_file(store, &key(&name), &file).await?;
        let video = self
            .plan
            .as_ref()
            .and_then(|p| p.video.iter().find(|v| v.name == segment.rendition));
        let rendition = self
            .renditions
            .entry(segment.dir.clone())
            .or_insert_with(|| Rendition {
                kind,
                name: segment.rendition.clone(),
                dir: segment.dir.clone(),
                codecs: segment.codecs.clone(),
                width: video.map(|v| v.width),
                height: video.map(|v| v.height),
                frame_rate: video.map(|v| v.frame_rate.as_f64()),
                channels: (kind == RenditionKind::Audio).then_some(2),
                init_uri: init_name.clone(),
                segments: Vec::new(),
            });
        rendition.segments.push(Segment {
            uri: name,
            duration_s: segment.duration_s,
            bytes,
            init_uri: first_of_connection.then_some(init_name),
            iframes: Vec::new(),
        });
        let index = rendition.segments.len() - 1;
        *self.published.entry(segment.dir.clone()).or_default() += 1;
        if let Some(parts) = self.parts.get_mut(&segment.dir) {
            // The open parts are this segment's when they are all of it.
            let whole = parts.open_segment == segment.index
                && (parts.open_s - segment.duration_s).abs() < 0.05;
            if whole {
                parts
                    .completed
                    .push_back((index, std::mem::take(&mut parts.open)));
                while parts.completed.len() > SEGMENTS_WITH_PARTS {
                    parts.completed.pop_front();
                }
            }
            parts.open.clear();
            parts.open_s = 0.0;
            parts.open_segment = segment.index + 1;
        }
        self.write_media_playlist(store, changes, &segment.dir, window_s)
            .await?;
        if !self.master_written && self.playable() {
            self.write_master(store, true).await?;
            self.master_written = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Every planned video rung has a segment, and the audio has one or
    /// the stream has shown it carries none (two video segments without).
    fn playable(&self) -> bool {
        let Some(plan) = &self.plan else {
            return false;
        };
        let videos: Vec<&Rendition> = plan
            .video
            .iter()
            .filter_map(|v| self.renditions.get(&format!("v/{}", v.name)))
            .filter(|r| !r.segments.is_empty())
            .collect();
        if videos.len() < plan.video.len() {
            return false;
        }
        let audio = self
            .renditions
            .values()
            .any(|r| r.kind == RenditionKind::Audio && !r.segments.is_empty());
        audio || videos.iter().all(|r| r.segments.len() >= 2)
    }

    /// Video rungs highest first, then the audio: the packager's order.
    fn ordered(&self) -> Vec<Rendition> {
        let mut videos: Vec<Rendition> = self
            .renditions
            .values()
            .filter(|r| r.kind == RenditionKind::Video && !r.segments.is_empty())
            .cloned()
            .collect();
        videos.sort_by_key(|r| std::cmp::Reverse(r.height.unwrap_or(0)));
        videos.extend(
            self.renditions
                .values()
                .filter(|r| r.kind == RenditionKind::Audio && !r.segments.is_empty())
                .cloned(),
        );
        videos
    }

    async fn write_master(&self, store: &dyn Store, growing: bool) -> Result<(), String> {
        let package = Package {
            renditions: self.ordered(),
            poster: None,
            storyboard: None,
        };
        let text = playlist_text(|| packager::master_playlist(&package))?;
        put_playlist(
            store,
            &format!("{}{}", self.prefix, packager::MASTER_PLAYLIST),
            text,
            growing,
        )
        .await
    }

    /// After the encoder finished: publishes the segments it closed that
    /// were not reported yet (the last one of each rendition).
    pub async fn publish_rest(
        &mut self,
        store: &dyn Store,
        changes: &Changes,
        local_root: &std::path::Path,
        encoded: &[EncodedRendition],
        window_s: f64,
    ) -> Result<(), String> {
        // No part follows: the open parts (the last one was never
        // reported) and the hint go; the segments below replace them.
        for parts in self.parts.values_mut() {
            parts.live = false;
            parts.open.clear();
            parts.open_s = 0.0;
        }
        for rendition in encoded {
            let done = self.published.get(&rendition.dir).copied().unwrap_or(0);
            for (index, segment) in rendition.segments.iter().enumerate().skip(done) {
                let ready = SegmentReady {
                    kind: rendition.kind,
                    rendition: rendition.name.clone(),
                    dir: rendition.dir.clone(),
                    index,
                    file_name: segment.file_name.clone(),
                    init_file: rendition.init_file.clone(),
                    duration_s: segment.duration_s,
                    codecs: rendition.codecs.clone(),
                };
                self.publish(store, changes, local_root, &ready, window_s)
                    .await?;
            }
        }
        Ok(())
    }

    /// The replay: every media playlist rewritten as VOD with every
    /// segment and `EXT-X-ENDLIST`, then the master, then the manifest.
    pub async fn publish_replay(&self, store: &dyn Store, changes: &Changes) -> Result<(), String> {
        let renditions = self.ordered();
        for rendition in &renditions {
            let text = playlist_text(|| packager::media_playlist(rendition))?;
            let key = format!(
                "{}{}/{}",
                self.prefix,
                rendition.dir,
                packager::MEDIA_PLAYLIST
            );
            put_playlist(store, &key, text, false).await?;
            // Blocked reloads answer at once with the ENDLIST playlist.
            changes.changed(&key);
        }
        self.write_master(store, false).await?;
        let package = Package {
            renditions,
            poster: None,
            storyboard: None,
        };
        let manifest =
            serde_json::to_vec_pretty(&packager::manifest(&package)).map_err(|e| e.to_string())?;
        store
            .put_bytes(
                &format!("{}{}", self.prefix, packager::MANIFEST),
                Bytes::from(manifest),
                packager::put_options(packager::MANIFEST),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn playlist_text<P, F>(make: F) -> Result<Vec<u8>, String>
where
    F: FnOnce() -> P,
    P: WritePlaylist,
{
    let mut text = Vec::new();
    make().write(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

trait WritePlaylist {
    fn write(&self, out: &mut Vec<u8>) -> std::io::Result<()>;
}

impl WritePlaylist for m3u8_rs::MediaPlaylist {
    fn write(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        self.write_to(out)
    }
}

impl WritePlaylist for m3u8_rs::MasterPlaylist {
    fn write(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        self.write_to(out)
    }
}

async fn put_file(store: &dyn Store, key: &str, path: &std::path::Path) -> Result<(), String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    store
        .put_file(key, path, packager::put_options(name))
        .await
        .map(|_| ())
        .map_err(|e| format!("uploading {key}: {e}"))
}

async fn put_playlist(
    store: &dyn Store,
    key: &str,
    text: Vec<u8>,
    growing: bool,
) -> Result<(), String> {
    let options = if growing {
        PutOptions {
            content_type: Some("application/vnd.apple.mpegurl".into()),
            cache_control: Some(packager::GROWING_PLAYLIST_CACHE.into()),
        }
    } else {
        packager::put_options(packager::MEDIA_PLAYLIST)
    };
    store
        .put_bytes(key, Bytes::from(text), options)
        .await
        .map(|_| ())
        .map_err(|e| format!("uploading {key}: {e}"))
}
