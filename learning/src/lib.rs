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

pub mod absorber;
pub mod flush;
pub mod intervals;
pub mod lessons;
mod qoe;
mod views;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_delivery::Playback;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use absorber::{AbsorbError, Absorber, Beat};
use lectern_web::ErrorCode;
use lectern_web::Unaudited;
use lectern_web::{Access, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiJson, ApiPath};
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
}

impl Learning {
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
        })
    }
}

/// Learning's state: the database, the heartbeat absorber and lesson
/// cache, and the media signer that puts a playback URL in a session.
#[derive(Clone)]
pub struct LearningState {
    pub db: PgPool,
    pub learning: Arc<Learning>,
    pub playback: Arc<Playback>,
    /// Set once migrations have been applied; the flusher waits for it.
    pub schema_ready: Arc<AtomicBool>,
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
pub const MIN_SPEED: f64 = 0.25;
pub const MAX_SPEED: f64 = 4.0;
/// Completion that counts as complete.
pub const COMPLETE_AT: f64 = 0.9;

fn unprocessable(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

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

type ProgressRow = (
    f64,
    f32,
    DateTime<Utc>,
    sqlx::types::Json<intervals::Intervals>,
    f64,
    Option<DateTime<Utc>>,
);

pub(crate) const PROGRESS_COLUMNS: &str =
    "position_s, speed, last_beat_at, watched, watch_time_s, completed_at";

pub(crate) fn progress_from_row(row: ProgressRow) -> Progress {
    let (position_s, speed, at, watched, watch_time_s, completed_at) = row;
    Progress {
        position_s,
        speed: Some(speed),
        at: Some(at),
        watched: watched.0,
        watch_time_s,
        completed_at,
    }
}

/// `POST /api/v1/lessons/{lesson_id}/playback` → where to play from: the
/// signed master playlist, the resume position and the preferred speed.
async fn playback(
    State(state): State<LearningState>,
    principal: Principal,
    ApiPath(lesson_id): ApiPath<Uuid>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let mut progress = stored.map(progress_from_row).unwrap_or_default();
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
    let master_url = state
        .playback
        .master_url(asset_id, prefix, principal.session_id());
    Ok(Json(json!({
        "lesson_id": lesson_id,
        "course_id": lesson.course_id,
        "asset_id": asset_id,
        "title": lesson.title,
        "master_url": master_url,
        "resume_position_s": resume,
        "speed": speed,
        "duration_s": duration,
        "completion": progress.completion(duration),
        "completed": progress.completed(duration),
        "watch_time_s": progress.watch_time_s,
    })))
}

/// The learner's newest speed anywhere: the absorber's if newer than the
/// stored one, else the stored one, else 1.
pub(crate) async fn preferred_speed(state: &LearningState, user_id: Uuid) -> Result<f32, ApiError> {
    let stored: Option<(f32, DateTime<Utc>)> =
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
        (Some((s, at)), Some(a)) if at.timestamp_millis() > a.at_ms => s,
        (_, Some(a)) => a.speed,
        (Some((s, _)), None) => s,
        (None, None) => 1.0,
    })
}

/// A heartbeat. Unknown fields are ignored on purpose: players in the
/// field are updated slowly, and a newer player must not have its beats
/// refused by an older API.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Heartbeat {
    lesson_id: Uuid,
    position_s: f64,
    speed: f64,
    played_from_s: f64,
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
            return Err(unprocessable(
                ErrorCode::NegativeValue,
                format!("{name} must be a number of seconds ≥ 0, got {v}"),
            ));
        }
    }
    if !(MIN_SPEED..=MAX_SPEED).contains(&beat.speed) {
        return Err(unprocessable(
            ErrorCode::InvalidSpeed,
            format!(
                "speed must be between {MIN_SPEED} and {MAX_SPEED}, got {}",
                beat.speed
            ),
        ));
    }
    if beat.played_from_s > beat.played_to_s {
        return Err(unprocessable(
            ErrorCode::InvalidInterval,
            format!(
                "played_from_s ({}) is after played_to_s ({})",
                beat.played_from_s, beat.played_to_s
            ),
        ));
    }
    let wall = (beat.played_to_s - beat.played_from_s) / beat.speed;
    if wall > MAX_BEAT_WALL_S {
        return Err(unprocessable(
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
                return Err(unprocessable(
                    ErrorCode::PastDuration,
                    format!("{name} ({v}) is past the end of the lesson ({d:.3} s)"),
                ));
            }
        }
    }
    Ok(())
}

/// `POST /api/v1/progress` → 204. See the module docs and `absorber` for
/// what a beat changes.
async fn progress(
    State(state): State<LearningState>,
    principal: Principal,
    beat: Result<ApiJson<Heartbeat>, ApiError>,
) -> Response {
    match absorb_beat(&state, &principal, beat).await {
        Ok(()) => (StatusCode::NO_CONTENT, axum::Extension(Unaudited)).into_response(),
        // An overloaded node must not add an audit transaction (serialised
        // on the chain lock) to every beat it fails; client errors (4xx)
        // are still audited like any refused request.
        Err(e) if e.status().is_server_error() => {
            (axum::Extension(Unaudited), e.into_response()).into_response()
        }
        Err(e) => e.into_response(),
    }
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
        })
        .await
        .map_err(absorber_error)
}

/// `POST /api/v1/bench/noop`: the benchmark's baseline — authenticated and
/// unaudited like a heartbeat, doing nothing else.
async fn bench_noop(_principal: Principal) -> Response {
    (StatusCode::NO_CONTENT, axum::Extension(Unaudited)).into_response()
}
