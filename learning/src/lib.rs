//! Learning: playback sessions, progress heartbeats, QoE reports and the
//! learner's own views (continue watching, history, course progress).
//!
//! Heartbeats are the hottest write path of the system (every learner's
//! player, every few seconds), so a beat costs no PostgreSQL query: the
//! lesson it names comes from a short-lived cache ([`lessons`]), the beat
//! lands in the [`absorber`] (in process, or Redis shared by every API
//! node), and the [`flush`]er writes what changed in batches. Reads
//! (the playback session, the views) merge what PostgreSQL holds with what
//! the absorber has not flushed yet. A beat is not written to the audit
//! log: it is telemetry of a playback whose start (the playback session)
//! is audited like every state-changing request.
//!
//! A beat names its playback session (`playback_id`), and what it claims
//! to have played counts only as far as the wall time since the previous
//! beat allows ([`credit`]), so a script cannot forge completion; a beat
//! without a session still moves the resume point and speed (players of
//! before sessions keep resuming) but counts toward nothing.
//!
//! The beats of a lesson whose live event is on also say who watches it
//! now ([`viewers`]): each playback session that beat lately, once.

mod absorber;
mod credit;
pub mod flush;
mod intervals;
mod lessons;
mod qoe;
pub mod viewers;
mod views;

// What a progress node is made of — its absorber (memory or Redis) and the
// crediting policy — is this crate's API: `flush` and `Learning` take
// them, and a deployment's multi-node behaviour is defined by them.
pub use absorber::{AbsorbError, Absorber, Beat, RedisAbsorber, Session, Snapshot};
pub use credit::{Clock, CARRY_MAX_S, SLACK};
pub use intervals::MAX_FRAGMENTS;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_delivery::Playback;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use lectern_web::doc::{DocOutput, Operation, Schemas};
use lectern_web::ErrorCode;
use lectern_web::Unaudited;
use lectern_web::{Access, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiJson, ApiPath, NoContent};
use lessons::{LessonCache, LessonInfo};

/// Where heartbeats are absorbed.
#[derive(Clone, PartialEq, Eq)]
pub enum ProgressBackend {
    Memory,
    /// Shared by every API node; keys start with `prefix`.
    Redis {
        url: String,
        prefix: String,
    },
}

impl std::fmt::Debug for ProgressBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProgressBackend::Memory => write!(f, "Memory"),
            // The URL may carry a password.
            ProgressBackend::Redis { prefix, .. } => write!(f, "Redis {{ prefix: {prefix:?} }}"),
        }
    }
}

/// Settings of the learning area (`LECTERN_PROGRESS_*`).
#[derive(Debug, Clone)]
pub struct ProgressSettings {
    pub backend: ProgressBackend,
    /// How often absorbed beats go to PostgreSQL; a crash loses at most
    /// this much in memory mode.
    pub flush_interval: Duration,
    /// Registers `POST /api/v1/bench/noop` (`LECTERN_BENCH_NOOP=1`), the
    /// do-nothing baseline of `benchmarks/progress`. Never in production.
    pub bench_noop: bool,
}

impl Default for ProgressSettings {
    fn default() -> Self {
        Self {
            backend: ProgressBackend::Memory,
            flush_interval: Duration::from_secs(2),
            bench_noop: false,
        }
    }
}

/// The learning area's share of the application state.
#[derive(Default)]
pub struct Learning {
    pub absorber: Absorber,
    pub lessons: LessonCache,
    pub settings: ProgressSettings,
    /// What beats' credit is bounded by ([`credit`]).
    pub clock: Clock,
    pub flush_metrics: flush::FlushMetrics,
}

impl Learning {
    /// The viewers of live lesson `lesson` now ([`viewers`]).
    pub async fn live_viewers(&self, lesson: Uuid) -> Result<u64, AbsorbError> {
        self.absorber.viewers(lesson, self.clock.now_ms()).await
    }

    /// Connects the configured absorber (Redis answers before `serve`
    /// starts accepting beats, so a wrong URL fails at start-up).
    pub async fn connect(settings: ProgressSettings) -> Result<Self, AbsorbError> {
        let absorber = match &settings.backend {
            ProgressBackend::Memory => Absorber::default(),
            ProgressBackend::Redis { url, prefix } => {
                Absorber::Redis(absorber::RedisAbsorber::connect(url, prefix).await?)
            }
        };
        Ok(Self {
            absorber,
            lessons: LessonCache::default(),
            settings,
            clock: Clock::default(),
            flush_metrics: flush::FlushMetrics::default(),
        })
    }
}

/// Learning's state: the database, the heartbeat absorber and lesson
/// cache, and the media signer that puts a playback URL in a session.
///
/// Behind one `Arc`: axum clones a route's state for every layer of every
/// request, and heartbeats are the API's hottest route.
#[derive(Clone)]
pub struct LearningState(Arc<LearningParts>);

pub struct LearningParts {
    pub db: PgPool,
    pub learning: Arc<Learning>,
    pub playback: Arc<Playback>,
    /// Set once migrations have been applied; the flusher waits for it.
    pub schema_ready: Arc<AtomicBool>,
}

impl LearningState {
    pub fn new(parts: LearningParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for LearningState {
    type Target = LearningParts;

    fn deref(&self) -> &LearningParts {
        &self.0
    }
}

/// `bench_noop` adds `POST /api/v1/bench/noop`, the benchmarks' baseline.
pub fn routes(api: ApiRouter<LearningState>, noop: bool) -> ApiRouter<LearningState> {
    let api = api
        .route(
            Method::POST,
            "/api/v1/lessons/{lesson_id}/playback",
            Access::Session,
            playback,
        )
        .route(Method::POST, "/api/v1/progress", Access::Session, progress)
        .route(
            Method::GET,
            "/api/v1/me/continue-watching",
            Access::Session,
            views::continue_watching,
        )
        .route(
            Method::GET,
            "/api/v1/me/history",
            Access::Session,
            views::history,
        )
        .route(
            Method::GET,
            "/api/v1/courses/{course_id}/progress",
            Access::Session,
            views::course_progress,
        );
    let api = qoe::routes(api);
    if noop {
        api.route(
            Method::POST,
            "/api/v1/bench/noop",
            Access::Session,
            bench_noop,
        )
    } else {
        api
    }
}

/// Heartbeats may end this far past the lesson's duration: audio and video
/// rarely end on the same frame, and players round.
const END_TOLERANCE_S: f64 = 3.0;
/// The longest stretch one beat may report, in wall-clock seconds: players
/// beat every few seconds (and once more on page hide); more than this is
/// not a heartbeat.
const MAX_BEAT_WALL_S: f64 = 120.0;
/// Within this of the end, a new playback starts from the beginning.
const REWIND_NEAR_END_S: f64 = 5.0;
/// The speeds a beat may report: what the player SDK offers (0.5–2×).
/// Faster would let a learner "watch" a lesson in a fraction of its length.
pub const MIN_SPEED: f64 = 0.5;
pub const MAX_SPEED: f64 = 2.0;
/// Completion that counts as complete.
pub const COMPLETE_AT: f64 = 0.9;

fn absorber_error(e: AbsorbError) -> ApiError {
    ApiError::new(
        ErrorCode::ProgressUnavailable,
        format!("progress cannot be recorded right now; retry shortly ({e})"),
    )
}

/// The lesson, if the caller may watch it; 404 otherwise (another
/// organisation's, unpublished, not playable, or unknown: all alike).
fn watchable(
    info: Option<LessonInfo>,
    principal: &Principal,
    id: Uuid,
) -> Result<LessonInfo, ApiError> {
    info.filter(|l| l.in_scope(principal.org_scope()) && l.watchable())
        .ok_or_else(|| ApiError::not_found(format!("no watchable lesson {id}")))
}

fn signed_in(principal: &Principal) -> Result<Uuid, ApiError> {
    principal
        .user_id()
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "this needs a signed-in person"))
}

/// What is known of one learner × lesson: PostgreSQL merged with the
/// absorber.
#[derive(Debug, Default, Clone)]
pub(crate) struct Progress {
    pub position_s: f64,
    pub speed: Option<f32>,
    pub at: Option<DateTime<Utc>>,
    pub watched: intervals::Intervals,
    pub watch_time_s: f64,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Progress {
    pub fn merge(&mut self, snap: &absorber::Snapshot) {
        let snap_at = DateTime::from_timestamp_millis(snap.at_ms);
        if self.at.is_none() || snap_at >= self.at {
            self.position_s = snap.position_s;
            self.speed = Some(snap.speed);
            self.at = snap_at;
        }
        self.watched = intervals::union(&self.watched, &snap.watched);
        self.watch_time_s += snap.pending_watch_s.max(0.0);
    }

    pub fn completion(&self, duration_s: Option<f64>) -> f64 {
        match duration_s {
            Some(d) if d > 0.0 => (intervals::total(&self.watched) / d).min(1.0),
            _ => 0.0,
        }
    }

    pub fn completed(&self, duration_s: Option<f64>) -> bool {
        self.completed_at.is_some() || self.completion(duration_s) >= COMPLETE_AT
    }
}

/// A `lesson_progress` row as [`PROGRESS_COLUMNS`] reads it.
#[derive(sqlx::FromRow)]
pub(crate) struct ProgressRow {
    pub position_s: f64,
    pub speed: f32,
    pub last_beat_at: DateTime<Utc>,
    pub watched: sqlx::types::Json<intervals::Intervals>,
    pub watch_time_s: f64,
    pub completed_at: Option<DateTime<Utc>>,
}

pub(crate) const PROGRESS_COLUMNS: &str =
    "position_s, speed, last_beat_at, watched, watch_time_s, completed_at";

impl From<ProgressRow> for Progress {
    fn from(row: ProgressRow) -> Self {
        Progress {
            position_s: row.position_s,
            speed: Some(row.speed),
            at: Some(row.last_beat_at),
            watched: row.watched.0,
            watch_time_s: row.watch_time_s,
            completed_at: row.completed_at,
        }
    }
}

/// Where a learner starts watching a lesson: the answer of `POST
/// /api/v1/lessons/{lesson_id}/playback`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PlaybackSession {
    /// This playback's id: send it as `playback_id` with every heartbeat
    /// of this playback. Valid for 12 hours; a heartbeat answered 409
    /// `playback_session_expired` needs a new session.
    pub playback_id: Uuid,
    pub lesson_id: Uuid,
    pub course_id: Uuid,
    pub asset_id: Uuid,
    /// The lesson's title.
    pub title: String,
    /// The signed HLS master playlist (relative to the API unless a media
    /// base URL is configured); its token is bound to the caller's sign-in
    /// session and expires.
    pub master_url: String,
    /// Where to start, in seconds: where the learner stopped on any device,
    /// or 0 when that was within 5 s of the end.
    pub resume_position_s: f64,
    /// The learner's preferred speed: the last one used on any lesson (1
    /// until they chose), within the allowed 0.5–2.
    pub speed: f32,
    /// The lesson's length in seconds, when known.
    pub duration_s: Option<f64>,
    /// Share of the lesson watched (0–1): the union of the intervals
    /// credited, over the duration.
    pub completion: f64,
    /// Whether the lesson counts as completed (90 % watched, ever).
    pub completed: bool,
    /// Wall-clock seconds spent watching it, all devices together.
    pub watch_time_s: f64,
}

/// `POST /api/v1/lessons/{lesson_id}/playback` → where to play from: the
/// signed master playlist, the resume position and the preferred speed.
async fn playback(
    State(state): State<LearningState>,
    principal: Principal,
    ApiPath(lesson_id): ApiPath<Uuid>,
) -> Result<Json<PlaybackSession>, ApiError> {
    let user_id = signed_in(&principal)?;
    let lesson = watchable(
        state.learning.lessons.fresh(&state.db, lesson_id).await?,
        &principal,
        lesson_id,
    )?;
    let stored: Option<ProgressRow> = sqlx::query_as(&format!(
        "SELECT {PROGRESS_COLUMNS} FROM lesson_progress WHERE user_id = $1 AND lesson_id = $2"
    ))
    .bind(user_id)
    .bind(lesson_id)
    .fetch_optional(&state.db)
    .await?;
    let mut progress: Progress = stored.map(Progress::from).unwrap_or_default();
    let absorber = &state.learning.absorber;
    if let Some(Some(snap)) = absorber
        .peek(user_id, &[lesson_id])
        .await
        .map_err(absorber_error)?
        .first()
    {
        progress.merge(snap);
    }
    let speed = preferred_speed(&state, user_id).await?;
    let duration = lesson.duration_s;
    let mut resume = progress.position_s;
    if duration.is_some_and(|d| resume >= d - REWIND_NEAR_END_S) {
        resume = 0.0;
    }
    let (asset_id, prefix) = match (lesson.asset_id, lesson.prefix.as_deref()) {
        (Some(a), Some(p)) => (a, p),
        _ => {
            return Err(ApiError::not_found(format!(
                "no watchable lesson {lesson_id}"
            )))
        }
    };
    // Names the lesson, so the origin lists its captions in the master.
    let master_url =
        state
            .playback
            .lesson_master_url(asset_id, prefix, principal.session_id(), lesson_id);
    let playback_id = Uuid::new_v4();
    state
        .learning
        .absorber
        .open_session(
            playback_id,
            Session {
                user_id,
                lesson_id,
                issued_ms: state.learning.clock.now_ms(),
            },
        )
        .await;
    Ok(Json(PlaybackSession {
        playback_id,
        lesson_id,
        course_id: lesson.course_id,
        asset_id,
        title: lesson.title,
        master_url,
        resume_position_s: resume,
        speed: speed.clamp(MIN_SPEED as f32, MAX_SPEED as f32),
        duration_s: duration,
        completion: progress.completion(duration),
        completed: progress.completed(duration),
        watch_time_s: progress.watch_time_s,
    }))
}

/// The learner's newest speed anywhere: the absorber's if newer than the
/// stored one, else the stored one, else 1.
pub(crate) async fn preferred_speed(state: &LearningState, user_id: Uuid) -> Result<f32, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        speed: f32,
        speed_at: DateTime<Utc>,
    }
    let stored: Option<Stored> =
        sqlx::query_as("SELECT speed, speed_at FROM learner_preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&state.db)
            .await?;
    let absorbed = state
        .learning
        .absorber
        .speed(user_id)
        .await
        .map_err(absorber_error)?;
    Ok(match (stored, absorbed) {
        (Some(s), Some(a)) if s.speed_at.timestamp_millis() > a.at_ms => s.speed,
        (_, Some(a)) => a.speed,
        (Some(s), None) => s.speed,
        (None, None) => 1.0,
    })
}

/// A heartbeat: where the player is, and the media it played since its
/// previous beat. Send one every few seconds while playing, and on pause,
/// seek and speed change. Unknown fields are ignored on purpose: players
/// in the field are updated slowly, and a newer player must not have its
/// beats refused by an older API.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Heartbeat {
    lesson_id: Uuid,
    /// The `playback_id` of the playback session this beat belongs to.
    /// Without it the beat moves the resume point and speed but counts
    /// toward neither completion nor watch time.
    #[serde(default)]
    playback_id: Option<Uuid>,
    /// The resume point: the media time now, in seconds.
    position_s: f64,
    /// The playback speed, 0.5–2.
    speed: f64,
    /// Start of the media interval played since the previous beat, in
    /// seconds (equal to `played_to_s` when nothing played).
    played_from_s: f64,
    /// End of that interval. What counts toward completion is at most the
    /// wall time since the previous beat of this lesson × speed (with 10 %
    /// slack): the rest of a longer interval is not credited.
    played_to_s: f64,
    /// When the player sent it (RFC 3339). Orders beats across retries
    /// and devices; capped at the arrival time, so a clock running ahead
    /// cannot pin the resume point.
    #[serde(default)]
    sent_at: Option<DateTime<Utc>>,
}

fn validate(beat: &Heartbeat, duration_s: Option<f64>) -> Result<(), ApiError> {
    for (name, v) in [
        ("position_s", beat.position_s),
        ("played_from_s", beat.played_from_s),
        ("played_to_s", beat.played_to_s),
    ] {
        if !v.is_finite() || v < 0.0 {
            return Err(ApiError::new(
                ErrorCode::NegativeValue,
                format!("{name} must be a number of seconds ≥ 0, got {v}"),
            ));
        }
    }
    if !(MIN_SPEED..=MAX_SPEED).contains(&beat.speed) {
        return Err(ApiError::new(
            ErrorCode::InvalidSpeed,
            format!(
                "speed must be between {MIN_SPEED} and {MAX_SPEED}, got {}",
                beat.speed
            ),
        ));
    }
    if beat.played_from_s > beat.played_to_s {
        return Err(ApiError::new(
            ErrorCode::InvalidInterval,
            format!(
                "played_from_s ({}) is after played_to_s ({})",
                beat.played_from_s, beat.played_to_s
            ),
        ));
    }
    let wall = (beat.played_to_s - beat.played_from_s) / beat.speed;
    if wall > MAX_BEAT_WALL_S {
        return Err(ApiError::new(
            ErrorCode::IntervalTooLong,
            format!(
                "one heartbeat may report at most {MAX_BEAT_WALL_S} s of playing time; \
                 this one reports {wall:.1} s (send a beat every few seconds)"
            ),
        ));
    }
    if let Some(d) = duration_s {
        let limit = d + END_TOLERANCE_S;
        for (name, v) in [
            ("position_s", beat.position_s),
            ("played_to_s", beat.played_to_s),
        ] {
            if v > limit {
                return Err(ApiError::new(
                    ErrorCode::PastDuration,
                    format!("{name} ({v}) is past the end of the lesson ({d:.3} s)"),
                ));
            }
        }
    }
    Ok(())
}

/// What a telemetry request (a heartbeat) answers: 204, or the error.
/// Success and server errors are marked [`Unaudited`]: an overloaded node
/// must not add an audit transaction (serialised on the chain lock) to
/// every beat it takes or fails; client errors (4xx) are still audited
/// like any refused request.
struct Telemetry(Result<(), ApiError>);

impl IntoResponse for Telemetry {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(()) => (StatusCode::NO_CONTENT, axum::Extension(Unaudited)).into_response(),
            Err(e) if e.status().is_server_error() => {
                (axum::Extension(Unaudited), e.into_response()).into_response()
            }
            Err(e) => e.into_response(),
        }
    }
}

impl DocOutput for Telemetry {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        <Result<NoContent, ApiError> as DocOutput>::describe(op, schemas);
    }
}

/// `POST /api/v1/progress` → 204. See the module docs and `absorber` for
/// what a beat changes.
async fn progress(
    State(state): State<LearningState>,
    principal: Principal,
    beat: Result<ApiJson<Heartbeat>, ApiError>,
) -> Telemetry {
    Telemetry(absorb_beat(&state, &principal, beat).await)
}

async fn absorb_beat(
    state: &LearningState,
    principal: &Principal,
    beat: Result<ApiJson<Heartbeat>, ApiError>,
) -> Result<(), ApiError> {
    let ApiJson(beat) = beat?;
    let user_id = signed_in(principal)?;
    let lesson = watchable(
        state
            .learning
            .lessons
            .get(&state.db, beat.lesson_id)
            .await?,
        principal,
        beat.lesson_id,
    )?;
    validate(&beat, lesson.duration_s)?;
    let now = Utc::now().timestamp_millis();
    let at_ms = beat.sent_at.map_or(now, |t| t.timestamp_millis().min(now));
    let arrival_ms = state.learning.clock.now_ms();
    let issued_ms = match beat.playback_id {
        None => None,
        Some(id) => session_of(state, user_id, id, beat.lesson_id, arrival_ms).await?,
    };
    if let (true, Some(playback), Some(_)) = (lesson.live_now, beat.playback_id, issued_ms) {
        // Telemetry: a count that misses a beat is no reason to fail it.
        if let Err(e) = state
            .learning
            .absorber
            .seen_live(beat.lesson_id, playback, arrival_ms)
            .await
        {
            tracing::debug!(lesson = %beat.lesson_id, error = %e.0, "cannot record a live viewer");
        }
    }
    state
        .learning
        .absorber
        .absorb(&Beat {
            user_id,
            lesson_id: beat.lesson_id,
            org_id: lesson.org_id,
            duration_s: lesson.duration_s.unwrap_or(0.0),
            position_s: beat.position_s,
            speed: beat.speed as f32,
            from_s: beat.played_from_s,
            to_s: beat.played_to_s,
            at_ms,
            issued_ms,
            arrival_ms,
        })
        .await
        .map_err(absorber_error)
}

/// When the playback session `id` of a beat was issued: 409 if it is not
/// a live session of this learner and lesson. In Redis mode, a session
/// this node has never seen while Redis cannot be asked makes the beat
/// one without a session (it still moves the resume point): the learner
/// keeps playing, and loses the credit of the beats until Redis is back.
async fn session_of(
    state: &LearningState,
    user_id: Uuid,
    id: Uuid,
    lesson_id: Uuid,
    now_ms: i64,
) -> Result<Option<i64>, ApiError> {
    match state.learning.absorber.session(user_id, id).await {
        Ok(Some(s)) if s.lesson_id == lesson_id && s.live_at(now_ms) => Ok(Some(s.issued_ms)),
        Ok(_) => Err(ApiError::new(
            ErrorCode::PlaybackSessionExpired,
            format!(
                "playback_id {id} is not a live playback session of yours for lesson \
                 {lesson_id}; start a new one with POST /api/v1/lessons/{lesson_id}/playback \
                 and send its playback_id"
            ),
        )),
        Err(_) => Ok(None),
    }
}

/// `POST /api/v1/bench/noop`: the benchmark's baseline — authenticated and
/// unaudited like a heartbeat, doing nothing else.
async fn bench_noop(_principal: Principal) -> Telemetry {
    Telemetry(Ok(()))
}
