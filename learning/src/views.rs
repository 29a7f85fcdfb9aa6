//! The learner's own views: continue watching, history, and progress
//! through one course. Each merges PostgreSQL with the absorber, so a beat
//! shows here at once for lessons already listed; a lesson started within
//! the last flush interval appears after the next flush.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::intervals::Intervals;
use crate::{absorber_error, progress_from_row, signed_in, Progress};
use lectern_web::ApiError;
use lectern_web::ErrorCode;
use lectern_web::Principal;
use lectern_web::{ApiPath, ApiQuery};

use crate::LearningState;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

type Row = (
    Uuid,
    String,
    Uuid,
    String,
    Option<f64>,
    f64,
    f32,
    DateTime<Utc>,
    SqlJson<Intervals>,
    f64,
    Option<DateTime<Utc>>,
);

struct Item {
    lesson_id: Uuid,
    title: String,
    course_id: Uuid,
    course_title: String,
    duration_s: Option<f64>,
    progress: Progress,
}

impl Item {
    fn to_json(&self) -> Value {
        json!({
            "lesson_id": self.lesson_id,
            "title": self.title,
            "course_id": self.course_id,
            "course_title": self.course_title,
            "duration_s": self.duration_s,
            "position_s": self.progress.position_s,
            "speed": self.progress.speed,
            "completion": self.progress.completion(self.duration_s),
            "completed": self.progress.completed(self.duration_s),
            "watch_time_s": self.progress.watch_time_s,
            "last_watched_at": self.progress.at,
        })
    }
}

/// The learner's progress rows, newest first, merged with the absorber.
async fn recent(
    state: &LearningState,
    principal: &Principal,
    only_unfinished: bool,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Item>, ApiError> {
    let user_id = signed_in(principal)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT lp.lesson_id, l.title, l.course_id, c.title, a.duration_s,
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
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let absorbed = state
        .learning
        .absorber
        .peek(user_id, &ids)
        .await
        .map_err(absorber_error)?;
    let mut items: Vec<Item> = rows
        .into_iter()
        .zip(absorbed)
        .map(|(r, snap)| {
            let (lesson_id, title, course_id, course_title, duration_s, p, s, at, w, wt, done) = r;
            let mut progress = progress_from_row((p, s, at, w, wt, done));
            if let Some(snap) = snap {
                progress.merge(&snap);
            }
            Item {
                lesson_id,
                title,
                course_id,
                course_title,
                duration_s,
                progress,
            }
        })
        .collect();
    if only_unfinished {
        items.retain(|i| !i.progress.completed(i.duration_s));
    }
    items.sort_by_key(|i| std::cmp::Reverse(i.progress.at));
    Ok(items)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<i64>,
    /// `next_before` of the previous page (history only).
    before: Option<DateTime<Utc>>,
}

fn limit(params: &ListParams) -> Result<i64, ApiError> {
    match params.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::new(
            ErrorCode::InvalidLimit,
            format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
        )),
    }
}

/// `GET /api/v1/me/continue-watching` → `{"items": [...]}`: started,
/// unfinished, published lessons, most recently watched first.
pub async fn continue_watching(
    State(state): State<LearningState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(&params)?;
    let items = recent(&state, &principal, true, None, limit).await?;
    Ok(Json(json!({
        "items": items.iter().map(Item::to_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/me/history?limit=&before=` → `{"items", "next_before"}`:
/// every lesson watched, finished or not, newest first.
pub async fn history(
    State(state): State<LearningState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(&params)?;
    let items = recent(&state, &principal, false, params.before, limit).await?;
    let next_before = if items.len() as i64 == limit {
        items.last().and_then(|i| i.progress.at)
    } else {
        None
    };
    Ok(Json(json!({
        "items": items.iter().map(Item::to_json).collect::<Vec<_>>(),
        "next_before": next_before,
    })))
}

type LessonRow = (
    Uuid,
    String,
    Option<f64>,
    Option<f64>,
    Option<f32>,
    Option<DateTime<Utc>>,
    Option<SqlJson<Intervals>>,
    Option<f64>,
    Option<DateTime<Utc>>,
);

/// `GET /api/v1/courses/{course_id}/progress` → the caller's own progress
/// through a published course, lesson by lesson in course order.
pub async fn course_progress(
    State(state): State<LearningState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
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
    let rows: Vec<LessonRow> = sqlx::query_as(
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
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let absorbed = state
        .learning
        .absorber
        .peek(user_id, &ids)
        .await
        .map_err(absorber_error)?;
    let mut lessons = Vec::with_capacity(rows.len());
    let (mut completed, mut completion_sum, mut watch_time) = (0usize, 0.0, 0.0);
    for (row, snap) in rows.into_iter().zip(absorbed) {
        let (lesson_id, lesson_title, duration_s, p, s, at, w, wt, done) = row;
        let mut progress = match (p, s, at, w, wt) {
            (Some(p), Some(s), Some(at), Some(w), Some(wt)) => {
                progress_from_row((p, s, at, w, wt, done))
            }
            _ => Progress::default(),
        };
        if let Some(snap) = snap {
            progress.merge(&snap);
        }
        let completion = progress.completion(duration_s);
        let is_done = progress.completed(duration_s);
        completed += usize::from(is_done);
        completion_sum += if is_done { 1.0 } else { completion };
        watch_time += progress.watch_time_s;
        lessons.push(json!({
            "lesson_id": lesson_id,
            "title": lesson_title,
            "duration_s": duration_s,
            "position_s": progress.position_s,
            "completion": completion,
            "completed": is_done,
            "watch_time_s": progress.watch_time_s,
            "last_watched_at": progress.at,
        }));
    }
    let total = lessons.len();
    Ok(Json(json!({
        "course_id": course_id,
        "title": title,
        "lessons_total": total,
        "lessons_completed": completed,
        "completion": if total == 0 { 0.0 } else { completion_sum / total as f64 },
        "watch_time_s": watch_time,
        "lessons": lessons,
    })))
}
