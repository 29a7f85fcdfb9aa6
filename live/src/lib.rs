//! Live lectures: a lesson of kind `live` with a schedule, an organiser
//! and a stream key; RTMP ([`rtmp`]) and SRT ([`srt`]) ingest; the live
//! HLS ladder published segment by segment to object storage, where the
//! `/media` origin serves it signed like VOD ([`ladder`]); the reconnect
//! window and the replay ([`lifecycle`]).
//!
//! The life of an event: `scheduled` (created, key shown once) → `live`
//! (a publisher presented the key; it stays live while the publisher is
//! away for less than the reconnect window) → `ended` (the organiser ended
//! it, or the window passed) → `replay_ready` (the live segments, never
//! re-encoded, published under VOD playlists as the lesson's asset).
//!
//! Stream keys are 256-bit random tokens stored as their SHA-256
//! ([`key`]); a presented key is looked up by its digest and the digest
//! compared again in constant time. Ingest nodes hold each event's ladder
//! (the list of published segments) in memory, so one event is served by
//! one node at a time; losing a node loses the live ladder's index, not its
//! segments (crash safety is a later step of issue #20).
//!
//! Who watches: learners' players send heartbeats in a playback session;
//! the learning area counts each live lesson's sessions that beat lately
//! and `api` hands that count in ([`ViewerCount`]). Organisers see it on
//! their events, learners on `GET /api/v1/live-now`.

pub mod http;
pub mod key;
pub mod ladder;
pub mod lifecycle;
pub mod rtmp;
pub mod srt;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lectern_identity::Identity;
use lectern_storage::Store;
use lectern_transcoder::LadderProfile;
use sqlx::PgPool;

pub use http::routes;

/// How live ingest behaves (`LECTERN_LIVE_*` settings).
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Where the RTMP server listens; `None`: no RTMP ingest on this node.
    pub rtmp_listen: Option<SocketAddr>,
    /// The UDP port of the SRT listener; `None`: no SRT ingest.
    pub srt_port: Option<u16>,
    /// SRT encryption passphrase callers must use (10–79 characters).
    pub srt_passphrase: Option<String>,
    /// How far back viewers may seek while live (the playlist's window).
    pub dvr_window: Duration,
    /// How long a publisher may be away before the event ends.
    pub reconnect_window: Duration,
    /// The live ladder: the default profile with short segments.
    pub profile: LadderProfile,
    /// Local scratch space for segments before they are uploaded.
    pub work_dir: PathBuf,
    /// How often the reconnect windows are checked.
    pub sweep_every: Duration,
    /// The ingest addresses publishers are told, e.g.
    /// `rtmp://live.example.org/live`, `srt://live.example.org:9000`.
    pub rtmp_public_url: Option<String>,
    pub srt_public_url: Option<String>,
}

/// Segment length of the live ladder; keyframes fall on every segment
/// boundary. A standard-HLS player holds back three target durations
/// (hls.js's `liveSyncDurationCount`, and RFC 8216bis's minimum
/// `HOLD-BACK`), so the segment length sets standard latency: 2 s
/// segments measured 6.7 s glass to glass at hls.js's defaults, 1 s
/// segments bring that under the 6 s goal for twice the playlist
/// lines per hour of DVR window (and a keyframe per second, which x264's
/// zero-latency tuning already spends like a short GOP).
pub const LIVE_SEGMENT_S: f64 = 1.0;

/// LL-HLS part length (`PART-TARGET`): two parts per segment, 15 frames
/// at 30 fps. Low-latency clients hold back three of them (1.5 s).
pub const LIVE_PART_S: f64 = 0.5;

/// The live ladder's profile: the default VOD profile's rungs and audio,
/// with 1 s segments and x264's zero-latency tuning (no lookahead, no
/// B-frames), so a segment leaves the encoder as soon as it is complete.
pub fn live_profile() -> LadderProfile {
    let mut profile =
        lectern_pipelines::profiles::builtin("default").expect("the default profile is built in");
    profile.name = "live".into();
    profile.segment_duration_s = LIVE_SEGMENT_S;
    profile.x264_tune = Some("zerolatency".into());
    profile
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            rtmp_listen: None,
            srt_port: None,
            srt_passphrase: None,
            dvr_window: Duration::from_secs(2 * 3600),
            reconnect_window: Duration::from_secs(60),
            profile: live_profile(),
            work_dir: std::env::temp_dir().join("lectern-live"),
            sweep_every: Duration::from_secs(1),
            rtmp_public_url: None,
            srt_public_url: None,
        }
    }
}

/// How many learners watch a live lesson now, `None` when it cannot be
/// said. The learning area counts them from playback heartbeats; `api`
/// (which may depend on both crates) hands its count in.
pub type ViewerCount =
    Arc<dyn Fn(uuid::Uuid) -> Pin<Box<dyn Future<Output = Option<u64>> + Send>> + Send + Sync>;

/// Live's state, shared by the routes and the ingest servers.
#[derive(Clone)]
pub struct LiveState {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    pub identity: Identity,
    pub settings: Arc<LiveSettings>,
    pub ladders: Arc<ladder::Ladders>,
    /// Publishers connected to this node.
    pub active: Arc<lifecycle::Active>,
    /// Viewers of a live lesson; none: events show no viewer count.
    pub viewers: Option<ViewerCount>,
    /// Told of every live playlist written, for the origin's blocking
    /// reloads in this process (`api` hands delivery's in).
    pub changes: Arc<lectern_storage::changes::Changes>,
}

impl LiveState {
    pub fn new(
        db: PgPool,
        store: Arc<dyn Store>,
        identity: Identity,
        settings: LiveSettings,
    ) -> Self {
        Self {
            db,
            store,
            identity,
            settings: Arc::new(settings),
            ladders: Arc::default(),
            active: Arc::default(),
            viewers: None,
            changes: Arc::default(),
        }
    }

    /// Tells `changes` of every live playlist written.
    pub fn with_changes(mut self, changes: Arc<lectern_storage::changes::Changes>) -> Self {
        self.changes = changes;
        self
    }

    /// Counts viewers with `count`.
    pub fn with_viewers(mut self, count: ViewerCount) -> Self {
        self.viewers = Some(count);
        self
    }

    /// Viewers of `lesson` now, if they can be counted.
    pub async fn viewers_of(&self, lesson: uuid::Uuid) -> Option<u64> {
        match &self.viewers {
            Some(count) => count(lesson).await,
            None => None,
        }
    }
}
