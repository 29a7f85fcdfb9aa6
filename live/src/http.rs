//! The organisers' routes: schedule a live lecture (a live lesson in a
//! course, its asset and its event, in one transaction), list and read
//! events with their log and, while live, their viewers; rotate the
//! stream key, end the event. And the learners' one: what is live now in
//! their organisation's published courses, with its viewers
//! (`GET /api/v1/live-now`).
//!
//! The stream key is answered only by `create` and `rotate`, once; reads
//! never show it. Every organisers' route needs `ManageLive`, the
//! learners' a session; all are scoped to the caller's organisation, so
//! another organisation's events answer 404 (or are not listed).
//! The identity middleware audits each of these requests; what ingest
//! does on its own (connections, refusals, the end after the reconnect
//! window, the replay) is audited by [`crate::lifecycle`].

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use lectern_web::{Access, ApiError, ApiJson, ApiPath, ApiQuery, ApiRouter, Created, ErrorCode};
use lectern_web::{Permission, Principal};

use crate::{key, lifecycle, LiveState};

pub fn routes(api: ApiRouter<LiveState>) -> ApiRouter<LiveState> {
    let manage = Access::Permission(Permission::ManageLive);
    api.route(Method::POST, "/api/v1/live-events", manage, create)
        .route(Method::GET, "/api/v1/live-events", manage, list)
        .route(Method::GET, "/api/v1/live-events/{event_id}", manage, get)
        .route(
            Method::POST,
            "/api/v1/live-events/{event_id}/stream-key",
            manage,
            rotate_key,
        )
        .route(
            Method::POST,
            "/api/v1/live-events/{event_id}/end",
            manage,
            end,
        )
        .route(Method::GET, "/api/v1/live-now", Access::Session, live_now)
}

/// A live lecture to schedule: it becomes a lesson of the course.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewLiveEvent {
    course_id: Uuid,
    /// The chapter the lesson goes in; none for a course without chapters.
    chapter_id: Option<Uuid>,
    /// 1–300 characters.
    title: String,
    description: Option<String>,
    scheduled_start: DateTime<Utc>,
    scheduled_end: Option<DateTime<Utc>>,
    /// How far back viewers may seek while live, 60–86400 s; the server's
    /// setting when absent.
    dvr_window_s: Option<i32>,
    /// How long the publisher may be away before the event ends, 0–1800 s;
    /// the server's setting when absent.
    reconnect_window_s: Option<i32>,
}

/// An event as organisers see it (never its key).
#[derive(Serialize, schemars::JsonSchema, sqlx::FromRow)]
struct LiveEvent {
    id: Uuid,
    organisation_id: Uuid,
    lesson_id: Uuid,
    course_id: Uuid,
    asset_id: Uuid,
    title: String,
    organiser_id: Option<Uuid>,
    scheduled_start: DateTime<Utc>,
    scheduled_end: Option<DateTime<Utc>>,
    /// `scheduled`, `live`, `ended` or `replay_ready`.
    state: String,
    dvr_window_s: Option<i32>,
    reconnect_window_s: Option<i32>,
    /// Publishing connections so far (a reconnect adds one).
    connections: i32,
    /// Set while live and the publisher is away (within the reconnect window).
    disconnected_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    replay_ready_at: Option<DateTime<Utc>>,
    /// Media seconds of the replay.
    duration_s: Option<f64>,
    key_rotated_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    /// While live: learners watching now (playback sessions that sent a
    /// heartbeat within the last 20 s), when they can be counted.
    #[sqlx(skip)]
    viewers: Option<u64>,
}

/// Fills in the viewers of the events that are live.
async fn count_viewers(state: &LiveState, events: &mut [LiveEvent]) {
    for event in events.iter_mut().filter(|e| e.state == "live") {
        event.viewers = state.viewers_of(event.lesson_id).await;
    }
}

const SELECT_EVENT: &str =
    "SELECT e.id, e.organisation_id, e.lesson_id, l.course_id, e.asset_id, l.title,
        e.organiser_id, e.scheduled_start, e.scheduled_end, e.state, e.dvr_window_s,
        e.reconnect_window_s, e.connections, e.disconnected_at, e.started_at, e.ended_at,
        e.replay_ready_at, e.duration_s, e.key_rotated_at, e.created_at
     FROM live_events e JOIN lessons l ON l.id = e.lesson_id";

/// Where and how to publish, with the key shown this once.
#[derive(Serialize, schemars::JsonSchema)]
struct StreamKey {
    /// The stream key: store it now, it is never shown again.
    stream_key: String,
    /// The RTMP server URL to publish to (the key is the stream name),
    /// when this deployment has RTMP ingest.
    rtmp_url: Option<String>,
    /// The SRT URL to publish to, key in the stream id, when this
    /// deployment has SRT ingest.
    srt_url: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct ScheduledLiveEvent {
    event: LiveEvent,
    publish: StreamKey,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidLiveEvent, message)
}

fn publish_info(state: &LiveState, stream_key: String) -> StreamKey {
    let settings = &state.settings;
    StreamKey {
        rtmp_url: settings.rtmp_public_url.clone(),
        srt_url: settings
            .srt_public_url
            .as_ref()
            .map(|url| format!("{url}?streamid={stream_key}")),
        stream_key,
    }
}

/// `POST /api/v1/live-events` → 201 with the event and its stream key.
async fn create(
    State(state): State<LiveState>,
    principal: Principal,
    ApiJson(new): ApiJson<NewLiveEvent>,
) -> Result<Created<ScheduledLiveEvent>, ApiError> {
    let title = new.title.trim();
    if title.is_empty() || title.chars().count() > 300 {
        return Err(ApiError::new(
            ErrorCode::InvalidTitle,
            "a title has 1–300 characters",
        ));
    }
    if new
        .scheduled_end
        .is_some_and(|end| end <= new.scheduled_start)
    {
        return Err(invalid("scheduled_end must be after scheduled_start"));
    }
    if new
        .dvr_window_s
        .is_some_and(|w| !(60..=86_400).contains(&w))
    {
        return Err(invalid("dvr_window_s is 60–86400"));
    }
    if new
        .reconnect_window_s
        .is_some_and(|w| !(0..=1800).contains(&w))
    {
        return Err(invalid("reconnect_window_s is 0–1800"));
    }
    let description = new.description.unwrap_or_default();
    if description.chars().count() > 20_000 {
        return Err(invalid("a description has at most 20000 characters"));
    }
    let mut tx = state.db.begin().await?;
    let org: Option<Uuid> = sqlx::query_scalar(
        "SELECT organisation_id FROM courses
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(new.course_id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *tx)
    .await?;
    let org = org.ok_or_else(|| ApiError::not_found(format!("no course {}", new.course_id)))?;
    if let Some(chapter) = new.chapter_id {
        let in_course: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM chapters WHERE id = $1 AND course_id = $2)",
        )
        .bind(chapter)
        .bind(new.course_id)
        .fetch_one(&mut *tx)
        .await?;
        if !in_course {
            return Err(ApiError::not_found(format!(
                "no chapter {chapter} in this course"
            )));
        }
    }
    let (event, lesson, asset) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    // Status `transcoding`: only `uploaded` assets get a pipeline job;
    // this one is encoded by live ingest.
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, title, source_key, profile)
         VALUES ($1, $2, 'transcoding', $3, $4, 'live')",
    )
    .bind(asset)
    .bind(org)
    .bind(title)
    .bind(format!("assets/{asset}/live"))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, chapter_id, title, description,
                              position, asset_id, kind)
         VALUES ($1, $2, $3, $4, $5, $6,
                 (SELECT coalesce(max(position) + 1, 0) FROM lessons WHERE course_id = $3),
                 $7, 'live')",
    )
    .bind(lesson)
    .bind(org)
    .bind(new.course_id)
    .bind(new.chapter_id)
    .bind(title)
    .bind(&description)
    .bind(asset)
    .execute(&mut *tx)
    .await?;
    let stream_key = key::generate();
    sqlx::query(
        "INSERT INTO live_events (id, organisation_id, lesson_id, asset_id, organiser_id,
                                  scheduled_start, scheduled_end, stream_key_sha256,
                                  dvr_window_s, reconnect_window_s)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(event)
    .bind(org)
    .bind(lesson)
    .bind(asset)
    .bind(principal.user_id())
    .bind(new.scheduled_start)
    .bind(new.scheduled_end)
    .bind(key::digest(&stream_key))
    .bind(new.dvr_window_s)
    .bind(new.reconnect_window_s)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO live_event_log (event_id, kind, detail) VALUES ($1, 'scheduled', $2)")
        .bind(event)
        .bind(serde_json::json!({ "by": principal.actor() }))
        .execute(&mut *tx)
        .await?;
    let created = fetch(&mut *tx, event, None).await?;
    tx.commit().await?;
    Ok(Created::new(ScheduledLiveEvent {
        event: created,
        publish: publish_info(&state, stream_key),
    }))
}

async fn fetch<'e, E: sqlx::PgExecutor<'e>>(
    db: E,
    id: Uuid,
    org: Option<Uuid>,
) -> Result<LiveEvent, ApiError> {
    sqlx::query_as::<_, LiveEvent>(&format!(
        "{SELECT_EVENT} WHERE e.id = $1 AND ($2::uuid IS NULL OR e.organisation_id = $2)"
    ))
    .bind(id)
    .bind(org)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no live event {id}")))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only events in this state.
    state: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct LiveEventList {
    /// Newest scheduled first, at most 200.
    events: Vec<LiveEvent>,
}

/// `GET /api/v1/live-events[?state=live]`
async fn list(
    State(state): State<LiveState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<LiveEventList>, ApiError> {
    if let Some(s) = &query.state {
        if !["scheduled", "live", "ended", "replay_ready"].contains(&s.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidStatus,
                "state is scheduled, live, ended or replay_ready",
            ));
        }
    }
    let mut events = sqlx::query_as::<_, LiveEvent>(&format!(
        "{SELECT_EVENT} WHERE ($1::uuid IS NULL OR e.organisation_id = $1)
           AND ($2::text IS NULL OR e.state = $2)
         ORDER BY e.scheduled_start DESC, e.id DESC LIMIT 200"
    ))
    .bind(principal.org_scope())
    .bind(&query.state)
    .fetch_all(&state.db)
    .await?;
    count_viewers(&state, &mut events).await;
    Ok(Json(LiveEventList { events }))
}

#[derive(Deserialize, schemars::JsonSchema)]
struct EventPath {
    event_id: Uuid,
}

/// One line of an event's log.
#[derive(Serialize, schemars::JsonSchema, sqlx::FromRow)]
struct LogEntry {
    at: DateTime<Utc>,
    /// `scheduled`, `connected`, `playable`, `disconnected`,
    /// `stream_refused`, `key_rotated`, `ended`, `replay_ready`…
    kind: String,
    detail: Option<serde_json::Value>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct LiveEventDetail {
    event: LiveEvent,
    /// Oldest first.
    log: Vec<LogEntry>,
}

/// `GET /api/v1/live-events/{event_id}`: the event and its log.
async fn get(
    State(state): State<LiveState>,
    principal: Principal,
    ApiPath(path): ApiPath<EventPath>,
) -> Result<Json<LiveEventDetail>, ApiError> {
    let mut event = fetch(&state.db, path.event_id, principal.org_scope()).await?;
    count_viewers(&state, std::slice::from_mut(&mut event)).await;
    let log = sqlx::query_as::<_, LogEntry>(
        "SELECT at, kind, detail FROM live_event_log WHERE event_id = $1 ORDER BY id LIMIT 1000",
    )
    .bind(event.id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(LiveEventDetail { event, log }))
}

/// `POST /api/v1/live-events/{event_id}/stream-key`: a new key, shown
/// once; the old one stops working at once, for the publisher streaming
/// with it too: cut off here now, or by its own node's sweep within a
/// second when it streams to another node. The event stays live for the
/// reconnect window, for the publisher to come back with the new key.
async fn rotate_key(
    State(state): State<LiveState>,
    principal: Principal,
    ApiPath(path): ApiPath<EventPath>,
) -> Result<Json<StreamKey>, ApiError> {
    let event = fetch(&state.db, path.event_id, principal.org_scope()).await?;
    let stream_key = key::generate();
    let rotated = sqlx::query(
        "UPDATE live_events SET stream_key_sha256 = $2, key_rotated_at = now(), updated_at = now()
         WHERE id = $1 AND state IN ('scheduled', 'live')",
    )
    .bind(event.id)
    .bind(key::digest(&stream_key))
    .execute(&state.db)
    .await?
    .rows_affected();
    if rotated == 0 {
        return Err(ApiError::new(
            ErrorCode::LiveEventEnded,
            "the event has ended; its stream key can no longer change",
        ));
    }
    // A stolen key is rotated to shut its holder out: whoever streams
    // with the old key now is cut off too.
    let publisher_cut = state.active.stop(event.id);
    lifecycle::log(
        &state,
        event.id,
        "key_rotated",
        serde_json::json!({ "by": principal.actor(), "publisher_cut": publisher_cut }),
    )
    .await;
    Ok(Json(publish_info(&state, stream_key)))
}

/// `POST /api/v1/live-events/{event_id}/end`: ends the event now; the
/// replay follows within seconds (the event turns `replay_ready`).
async fn end(
    State(state): State<LiveState>,
    principal: Principal,
    ApiPath(path): ApiPath<EventPath>,
) -> Result<Json<LiveEvent>, ApiError> {
    let event = fetch(&state.db, path.event_id, principal.org_scope()).await?;
    let ended = lifecycle::end_event(&state, event.id, Some(principal.actor())).await?;
    if !ended {
        return Err(ApiError::new(
            ErrorCode::LiveEventEnded,
            "the event has already ended",
        ));
    }
    Ok(Json(fetch(&state.db, event.id, None).await?))
}

/// A live lecture a learner can join now.
#[derive(Serialize, schemars::JsonSchema, sqlx::FromRow)]
struct LiveNowEvent {
    event_id: Uuid,
    /// Play it like any lesson: `POST /api/v1/lessons/{lesson_id}/playback`.
    lesson_id: Uuid,
    course_id: Uuid,
    course_title: String,
    title: String,
    started_at: Option<DateTime<Utc>>,
    /// Learners watching now, when they can be counted.
    #[sqlx(skip)]
    viewers: Option<u64>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct LiveNow {
    /// Most recently started first, at most 100.
    events: Vec<LiveNowEvent>,
}

/// `GET /api/v1/live-now`: the live lectures of published courses in the
/// caller's organisation that can be played now (their first segments
/// are published), with their viewers.
async fn live_now(
    State(state): State<LiveState>,
    principal: Principal,
) -> Result<Json<LiveNow>, ApiError> {
    let mut events = sqlx::query_as::<_, LiveNowEvent>(
        "SELECT e.id AS event_id, e.lesson_id, l.course_id, c.title AS course_title, l.title,
                e.started_at
         FROM live_events e
         JOIN lessons l ON l.id = e.lesson_id
         JOIN courses c ON c.id = l.course_id
         JOIN assets a ON a.id = e.asset_id
         WHERE e.state = 'live' AND c.state = 'published' AND a.playable_prefix IS NOT NULL
           AND ($1::uuid IS NULL OR e.organisation_id = $1)
         ORDER BY e.started_at DESC NULLS LAST, e.id DESC LIMIT 100",
    )
    .bind(principal.org_scope())
    .fetch_all(&state.db)
    .await?;
    for event in &mut events {
        event.viewers = state.viewers_of(event.lesson_id).await;
    }
    Ok(Json(LiveNow { events }))
}
