//! The learner's own views: continue watching, history, and progress
//! through one course. Each merges PostgreSQL with the absorber, so a beat
//! shows here at once for lessons already listed; a lesson started within
//! the last flush interval appears after the next flush.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::intervals::Intervals;
use crate::{absorber_error, signed_in, Progress, ProgressRow};
use lectern_web::ApiError;
use lectern_web::Principal;
use lectern_web::{ApiPath, ApiQuery, Limit};

use crate::LearningState;

/// How many lessons a page of continue watching or history holds.
const PAGE: Limit = Limit::new(20, 100);

/// A lesson of the learner's progress list as the query reads it.
#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    lesson: LessonOfCourse,
    #[sqlx(flatten)]
    progress: ProgressRow,
}

#[derive(sqlx::FromRow)]
struct LessonOfCourse {
    lesson_id: Uuid,
    title: String,
    course_id: Uuid,
    course_title: String,
    duration_s: Option<f64>,
}

/// A lesson the learner has watched, with how far they got.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WatchedLesson {
    pub lesson_id: Uuid,
    /// The lesson's title.
    pub title: String,
    pub course_id: Uuid,
    pub course_title: String,
    /// The lesson's length in seconds, when known.
    pub duration_s: Option<f64>,
    /// The resume point, in seconds.
    pub position_s: f64,
    /// The speed of the latest heartbeat.
    pub speed: Option<f32>,
    /// Share of the lesson watched (0–1).
    pub completion: f64,
    /// Whether it counts as completed (90 % watched, ever).
    pub completed: bool,
    /// Wall-clock seconds spent watching it.
    pub watch_time_s: f64,
    /// When the latest heartbeat was sent.
    pub last_watched_at: Option<DateTime<Utc>>,
}

impl WatchedLesson {
    fn new(row: LessonOfCourse, progress: Progress) -> Self {
        Self {
            lesson_id: row.lesson_id,
            title: row.title,
            course_id: row.course_id,
            course_title: row.course_title,
            duration_s: row.duration_s,
            position_s: progress.position_s,
            speed: progress.speed,
            completion: progress.completion(row.duration_s),
            completed: progress.completed(row.duration_s),
            watch_time_s: progress.watch_time_s,
            last_watched_at: progress.at,
        }
    }
}

/// The learner's progress rows, newest first, merged with the absorber.
async fn recent(
    state: &LearningState,
    principal: &Principal,
    only_unfinished: bool,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<WatchedLesson>, ApiError> {
    let user_id = signed_in(principal)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT lp.lesson_id, l.title, l.course_id, c.title AS course_title, a.duration_s,
                lp.position_s, lp.speed, lp.last_beat_at, lp.watched, lp.watch_time_s, lp.completed_at
         FROM lesson_progress lp
         JOIN lessons l ON l.id = lp.lesson_id
         JOIN courses c ON c.id = l.course_id
         LEFT JOIN assets a ON a.id = l.asset_id
         WHERE lp.user_id = $1
           AND ($2::uuid IS NULL OR l.organisation_id = $2)
           AND c.state = 'published'
           AND (NOT $3 OR lp.completed_at IS NULL)
           AND ($4::timestamptz IS NULL OR lp.last_beat_at < $4)
         ORDER BY lp.last_beat_at DESC, lp.lesson_id
         LIMIT $5",
    )
    .bind(user_id)
    .bind(principal.org_scope())
    .bind(only_unfinished)
    .bind(before)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.lesson.lesson_id).collect();
    let absorbed = state
        .learning
        .absorber
        .peek(user_id, &ids)
        .await
        .map_err(absorber_error)?;
    let mut items: Vec<WatchedLesson> = rows
        .into_iter()
        .zip(absorbed)
        .map(|(row, snap)| {
            let mut progress = Progress::from(row.progress);
            if let Some(snap) = snap {
                progress.merge(&snap);
            }
            WatchedLesson::new(row.lesson, progress)
        })
        .collect();
    if only_unfinished {
        items.retain(|i| !i.completed);
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.last_watched_at));
    Ok(items)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Lessons per page, 1–100 (default 20).
    limit: Option<i64>,
    /// `next_before` of the previous page (history only; continue watching
    /// ignores it).
    before: Option<DateTime<Utc>>,
}

/// Started, unfinished lessons, most recently watched first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ContinueWatching {
    pub items: Vec<WatchedLesson>,
}

/// A page of every lesson watched, finished or not, newest first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WatchHistory {
    pub items: Vec<WatchedLesson>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_before: Option<DateTime<Utc>>,
}

/// `GET /api/v1/me/continue-watching` → `{"items": [...]}`: started,
/// unfinished, published lessons, most recently watched first.
pub async fn continue_watching(
    State(state): State<LearningState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ContinueWatching>, ApiError> {
    let limit = PAGE.of(params.limit)?;
    let items = recent(&state, &principal, true, None, limit).await?;
    Ok(Json(ContinueWatching { items }))
}

/// `GET /api/v1/me/history?limit=&before=` → `{"items", "next_before"}`:
/// every lesson watched, finished or not, newest first.
pub async fn history(
    State(state): State<LearningState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<WatchHistory>, ApiError> {
    let limit = PAGE.of(params.limit)?;
    let items = recent(&state, &principal, false, params.before, limit).await?;
    let next_before = if items.len() as i64 == limit {
        items.last().and_then(|i| i.last_watched_at)
    } else {
        None
    };
    Ok(Json(WatchHistory { items, next_before }))
}

/// A lesson of a course with the caller's progress, as the query reads it
/// (progress columns are null for a lesson never started).
#[derive(sqlx::FromRow)]
struct CourseLessonRow {
    id: Uuid,
    title: String,
    duration_s: Option<f64>,
    position_s: Option<f64>,
    speed: Option<f32>,
    last_beat_at: Option<DateTime<Utc>>,
    watched: Option<SqlJson<Intervals>>,
    watch_time_s: Option<f64>,
    completed_at: Option<DateTime<Utc>>,
}

impl CourseLessonRow {
    fn progress(&mut self) -> Progress {
        match (
            self.position_s,
            self.speed,
            self.last_beat_at,
            self.watched.take(),
            self.watch_time_s,
        ) {
            (
                Some(position_s),
                Some(speed),
                Some(last_beat_at),
                Some(watched),
                Some(watch_time_s),
            ) => Progress::from(ProgressRow {
                position_s,
                speed,
                last_beat_at,
                watched,
                watch_time_s,
                completed_at: self.completed_at,
            }),
            _ => Progress::default(),
        }
    }
}

/// One lesson of [`CourseProgress`].
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CourseLessonProgress {
    pub lesson_id: Uuid,
    pub title: String,
    /// The lesson's length in seconds, when known.
    pub duration_s: Option<f64>,
    /// The resume point, in seconds (0 when not started).
    pub position_s: f64,
    /// Share of the lesson watched (0–1).
    pub completion: f64,
    /// Whether it counts as completed (90 % watched, ever).
    pub completed: bool,
    /// Wall-clock seconds spent watching it.
    pub watch_time_s: f64,
    /// When the latest heartbeat was sent; null when not started.
    pub last_watched_at: Option<DateTime<Utc>>,
}

/// The caller's own progress through a published course.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CourseProgress {
    pub course_id: Uuid,
    /// The course's title.
    pub title: String,
    pub lessons_total: usize,
    pub lessons_completed: usize,
    /// The mean completion of its lessons (a completed lesson counts as 1).
    pub completion: f64,
    /// Wall-clock seconds spent watching its lessons.
    pub watch_time_s: f64,
    /// Every lesson, in course order.
    pub lessons: Vec<CourseLessonProgress>,
}

/// `GET /api/v1/courses/{course_id}/progress` → the caller's own progress
/// through a published course, lesson by lesson in course order.
pub async fn course_progress(
    State(state): State<LearningState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<CourseProgress>, ApiError> {
    let user_id = signed_in(&principal)?;
    let found: Option<String> = sqlx::query_scalar(
        "SELECT title FROM courses
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2) AND state = 'published'",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?;
    let Some(title) = found else {
        return Err(ApiError::not_found(format!(
            "no published course {course_id}"
        )));
    };
    let rows: Vec<CourseLessonRow> = sqlx::query_as(
        "SELECT l.id, l.title, a.duration_s, lp.position_s, lp.speed, lp.last_beat_at,
                lp.watched, lp.watch_time_s, lp.completed_at
         FROM lessons l
         LEFT JOIN chapters ch ON ch.id = l.chapter_id
         LEFT JOIN assets a ON a.id = l.asset_id
         LEFT JOIN lesson_progress lp ON lp.lesson_id = l.id AND lp.user_id = $2
         WHERE l.course_id = $1
         ORDER BY ch.position NULLS FIRST, ch.id, l.position, l.id",
    )
    .bind(course_id)
    .bind(user_id)
    .fetch_all(&state.db)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let absorbed = state
        .learning
        .absorber
        .peek(user_id, &ids)
        .await
        .map_err(absorber_error)?;
    let mut lessons = Vec::with_capacity(rows.len());
    let (mut completed, mut completion_sum, mut watch_time) = (0usize, 0.0, 0.0);
    for (mut row, snap) in rows.into_iter().zip(absorbed) {
        let mut progress = row.progress();
        if let Some(snap) = snap {
            progress.merge(&snap);
        }
        let completion = progress.completion(row.duration_s);
        let is_done = progress.completed(row.duration_s);
        completed += usize::from(is_done);
        completion_sum += if is_done { 1.0 } else { completion };
        watch_time += progress.watch_time_s;
        lessons.push(CourseLessonProgress {
            lesson_id: row.id,
            title: row.title,
            duration_s: row.duration_s,
            position_s: progress.position_s,
            completion,
            completed: is_done,
            watch_time_s: progress.watch_time_s,
            last_watched_at: progress.at,
        });
    }
    let total = lessons.len();
    Ok(Json(CourseProgress {
        course_id,
        title,
        lessons_total: total,
        lessons_completed: completed,
        completion: if total == 0 {
            0.0
        } else {
            completion_sum / total as f64
        },
        watch_time_s: watch_time,
        lessons,
    }))
}
