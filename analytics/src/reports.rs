//! The report routes. Range figures (views, watch time, completions,
//! active learners) come from the rollups ([`crate::rollup`]); per-course
//! learner figures from `rollup_course_learners`; a lesson's retention
//! from its learners' watched unions (`lesson_progress`, one index range
//! per lesson); a learner's transcript and credits from `lesson_progress`
//! itself, the record credit is granted on. Ratings are read from
//! `course_ratings`.
//!
//! "Online now" counts learners whose newest beat is under a minute old,
//! as far as the rollups have seen it (the flusher's interval plus one
//! fold, seconds); the playback sessions themselves live in the progress
//! absorber (memory or Redis), which is not shared with this crate.

use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use lectern_web::{ApiError, ApiPath, ApiQuery, ErrorCode, Principal};

use crate::credits::{self, CreditRule};
use crate::figures;
use crate::filter::{self, ReportQuery, Scope};
use crate::AnalyticsState;

/// Learners (or experts) active in a window ending today.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Active {
    pub today: i64,
    pub last_7_days: i64,
    pub last_30_days: i64,
}

/// One day of the organisation.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, sqlx::FromRow)]
pub struct DayFigures {
    pub day: NaiveDate,
    pub views: i64,
    /// Distinct learners who played anything that day.
    pub learners: i64,
    pub watch_hours: f64,
    pub completions: i64,
}

/// `GET /api/v1/reports/overview`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Overview {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub time_zone: String,
    /// Learners who played anything: today, in the last 7 and 30 days
    /// (windows end today, whatever the range).
    pub active_learners: Active,
    /// Experts who signed in, in the same windows.
    pub active_experts: Active,
    /// Learners whose newest heartbeat is under a minute old.
    pub online_now: i64,
    /// Viewings started in the range (a new viewing: first play, or one
    /// more than 30 minutes after the previous).
    pub views: i64,
    /// Wall-clock hours spent playing, every viewing counted.
    pub watch_hours: f64,
    /// Hours of lessons newly watched for the first time (unique seconds).
    pub unique_hours: f64,
    /// Lessons completed in the range.
    pub completions: i64,
    /// Courses first published in the range.
    pub new_courses: i64,
    pub daily: Vec<DayFigures>,
}

#[derive(sqlx::FromRow)]
struct ActiveRow {
    today: i64,
    last_7_days: i64,
    last_30_days: i64,
}

impl From<ActiveRow> for Active {
    fn from(r: ActiveRow) -> Self {
        Active {
            today: r.today,
            last_7_days: r.last_7_days,
            last_30_days: r.last_30_days,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Totals {
    views: i64,
    watch_s: f64,
    unique_s: f64,
    completions: i64,
}

pub async fn overview(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<Overview>, ApiError> {
    let s = filter::resolve(&state.db, &principal, &q).await?;
    Ok(Json(overview_of(&state.db, s).await?))
}

/// The organisation overview of `s`.
pub async fn overview_of(db: &PgPool, s: Scope) -> Result<Overview, ApiError> {
    // The whole organisation reads its own rollups (each learner's newest
    // day, the organisation's days); a filter to some courses de-duplicates
    // their learner rows, which are as many as those courses have.
    let learners: ActiveRow = if s.courses.is_none() {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE last_day = $2) AS today,
                    count(*) FILTER (WHERE last_day > $2 - 7) AS last_7_days,
                    count(*) AS last_30_days
             FROM rollup_learner_last
             WHERE organisation_id = $1 AND last_day > $2 - 30",
        )
        .bind(s.org)
        .bind(s.today)
        .fetch_one(db)
        .await?
    } else {
        sqlx::query_as(
            "SELECT count(DISTINCT user_id) FILTER (WHERE day = $2) AS today,
                    count(DISTINCT user_id) FILTER (WHERE day > $2 - 7) AS last_7_days,
                    count(DISTINCT user_id) AS last_30_days
             FROM rollup_learner_daily
             WHERE organisation_id = $1 AND day > $2 - 30 AND day <= $2
               AND course_id = ANY($3)",
        )
        .bind(s.org)
        .bind(s.today)
        .bind(&s.courses)
        .fetch_one(db)
        .await?
    };
    let experts: ActiveRow = sqlx::query_as(
        "SELECT count(DISTINCT s.user_id) FILTER (WHERE (s.created_at AT TIME ZONE $3)::date = $2) AS today,
                count(DISTINCT s.user_id) FILTER (WHERE (s.created_at AT TIME ZONE $3)::date > $2 - 7) AS last_7_days,
                count(DISTINCT s.user_id) AS last_30_days
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE u.org_id = $1 AND u.role = 'expert'
           AND s.created_at >= (($2 - 29)::timestamp AT TIME ZONE $3)",
    )
    .bind(s.org)
    .bind(s.today)
    .bind(&s.time_zone)
    .fetch_one(db)
    .await?;
    let online_now: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rollup_online
         WHERE organisation_id = $1 AND last_at > now() - interval '60 seconds'",
    )
    .bind(s.org)
    .fetch_one(db)
    .await?;
    let totals = if s.courses.is_none() {
        sqlx::query_as(
            "SELECT coalesce(sum(views), 0)::int8 AS views, coalesce(sum(watch_s), 0)::float8 AS watch_s,
                    coalesce(sum(unique_s), 0)::float8 AS unique_s,
                    coalesce(sum(completions), 0)::int8 AS completions
             FROM rollup_org_daily
             WHERE organisation_id = $1 AND day BETWEEN $2 AND $3",
        )
        .bind(s.org)
        .bind(s.from)
        .bind(s.to)
        .fetch_one(db)
        .await?
    } else {
        range_totals(db, &s, None).await?
    };
    let new_courses: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM courses
         WHERE organisation_id = $1 AND published_at IS NOT NULL
           AND (published_at AT TIME ZONE $2)::date BETWEEN $3 AND $4
           AND ($5::uuid[] IS NULL OR id = ANY($5))",
    )
    .bind(s.org)
    .bind(&s.time_zone)
    .bind(s.from)
    .bind(s.to)
    .bind(&s.courses)
    .fetch_one(db)
    .await?;
    let daily: Vec<DayFigures> = if s.courses.is_none() {
        sqlx::query_as(
            "SELECT day, views, learners::int8 AS learners, watch_s / 3600 AS watch_hours, completions
             FROM rollup_org_daily
             WHERE organisation_id = $1 AND day BETWEEN $2 AND $3
             ORDER BY day",
        )
        .bind(s.org)
        .bind(s.from)
        .bind(s.to)
        .fetch_all(db)
        .await?
    } else {
        sqlx::query_as(
            "SELECT d.day, d.views, coalesce(l.learners, 0) AS learners, d.watch_s / 3600 AS watch_hours,
                    d.completions
             FROM (SELECT day, sum(views)::int8 AS views, sum(watch_s)::float8 AS watch_s,
                          sum(completions)::int8 AS completions
                   FROM rollup_lesson_daily
                   WHERE organisation_id = $1 AND day BETWEEN $2 AND $3 AND course_id = ANY($4)
                   GROUP BY day) d
             LEFT JOIN (SELECT day, count(DISTINCT user_id) AS learners
                        FROM rollup_learner_daily
                        WHERE organisation_id = $1 AND day BETWEEN $2 AND $3 AND course_id = ANY($4)
                        GROUP BY day) l USING (day)
             ORDER BY d.day",
        )
        .bind(s.org)
        .bind(s.from)
        .bind(s.to)
        .bind(&s.courses)
        .fetch_all(db)
        .await?
    };
    Ok(Overview {
        from: s.from,
        to: s.to,
        time_zone: s.time_zone,
        active_learners: learners.into(),
        active_experts: experts.into(),
        online_now,
        views: totals.views,
        watch_hours: totals.watch_s / 3600.0,
        unique_hours: totals.unique_s / 3600.0,
        completions: totals.completions,
        new_courses,
        daily,
    })
}

/// Views, watch time and completions in the scope's range, optionally of
/// one lesson.
async fn range_totals(db: &PgPool, s: &Scope, lesson: Option<Uuid>) -> Result<Totals, ApiError> {
    Ok(sqlx::query_as(
        "SELECT coalesce(sum(views), 0)::int8 AS views, coalesce(sum(watch_s), 0)::float8 AS watch_s,
                coalesce(sum(unique_s), 0)::float8 AS unique_s,
                coalesce(sum(completions), 0)::int8 AS completions
         FROM rollup_lesson_daily
         WHERE organisation_id = $1 AND day BETWEEN $2 AND $3
           AND ($4::uuid[] IS NULL OR course_id = ANY($4))
           AND ($5::uuid IS NULL OR lesson_id = $5)",
    )
    .bind(s.org)
    .bind(s.from)
    .bind(s.to)
    .bind(&s.courses)
    .bind(lesson)
    .fetch_one(db)
    .await?)
}

/// One course's figures. Learner counts are all time; `views`,
/// `watch_hours` and `completions` are those of the range.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, sqlx::FromRow)]
pub struct CourseFigures {
    pub course_id: Uuid,
    pub title: String,
    pub resource_type: String,
    /// Playable lessons (with media).
    pub lessons: i64,
    /// Learners who opened any lesson of the course.
    pub enrolled: i64,
    /// Learners who watched anything of it.
    pub started: i64,
    /// Learners who completed every playable lesson.
    pub completed: i64,
    /// completed ÷ started (0 when nobody started).
    pub completion_rate: f64,
    /// Median over learners who started of their wall-clock seconds on it.
    pub median_watch_s: f64,
    /// Media seconds played ÷ wall seconds, over every learner.
    pub average_speed: Option<f64>,
    pub rating_average: Option<f64>,
    pub rating_count: i64,
    pub views: i64,
    pub watch_hours: f64,
    pub completions: i64,
}

/// `GET /api/v1/reports/courses`: every course in the filter.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CourseReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub courses: Vec<CourseFigures>,
}

/// The most courses one report lists; narrow the filter for more.
pub const MAX_COURSES: i64 = 2000;

/// Runs with custom plans only and JIT off, both set for this transaction
/// alone, whatever the server's defaults. sqlx prepares the
/// statement once per connection, and from its sixth execution PostgreSQL
/// may switch to a generic plan, which cannot drop the optional filters
/// (`$4 IS NULL OR …`) and took 750–1,150 ms where the custom plan takes
/// 40–70: the all-courses report's p50 and p99 in `benchmarks/analytics`.
/// And PostgreSQL cannot see through the anti-join that leaves the
/// per-learner fallback below empty once every course has a summary, so
/// it estimates a million rows and compiles the plan: 50–80 ms of LLVM.
pub async fn course_figures(
    db: &PgPool,
    s: &Scope,
    only: Option<&[Uuid]>,
) -> Result<Vec<CourseFigures>, ApiError> {
    let mut tx = db.begin().await?;
    // `set_config(…, true)` is `SET LOCAL`, both in one round trip.
    sqlx::query(
        "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('jit', 'off', true)",
    )
    .execute(&mut *tx)
    .await?;
    let figures = sqlx::query_as(
        "WITH c AS (
             SELECT c.id, c.title, c.resource_type,
                    (SELECT count(*) FROM lessons l WHERE l.course_id = c.id AND l.asset_id IS NOT NULL) AS lessons
             FROM courses c
             WHERE c.organisation_id = $1
               AND ($4::uuid[] IS NULL OR c.id = ANY($4))
               AND ($5::uuid[] IS NULL OR c.id = ANY($5))
             ORDER BY c.title, c.id
             LIMIT $6
         ), summarised AS (
             SELECT s.course_id, s.enrolled, s.started, s.completed, s.median_watch_s, s.average_speed
             FROM rollup_course_summary s JOIN c ON c.id = s.course_id AND s.lessons = c.lessons
         ), learners AS (
             -- Courses without a current summary (touched since the last
             -- one was computed is fine: it trails by under a minute; a
             -- changed lesson count is not) are computed from their rows.
             SELECT r.course_id, count(*) AS enrolled,
                    count(*) FILTER (WHERE r.unique_s > 0) AS started,
                    count(*) FILTER (WHERE r.lessons_completed >= c.lessons AND c.lessons > 0) AS completed,
                    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.watch_s)
                             FILTER (WHERE r.unique_s > 0), 0) AS median_watch_s,
                    sum(r.media_s) / nullif(sum(r.watch_s), 0) AS average_speed
             FROM rollup_course_learners r JOIN c ON c.id = r.course_id
             WHERE NOT EXISTS (SELECT 1 FROM summarised WHERE summarised.course_id = c.id)
             GROUP BY r.course_id
             UNION ALL
             SELECT * FROM summarised
         ), ratings AS (
             SELECT course_id, avg(rating)::float8 AS average, count(*) AS n
             FROM course_ratings WHERE course_id IN (SELECT id FROM c) GROUP BY course_id
         ), ranged AS (
             SELECT course_id, sum(views)::int8 AS views, sum(watch_s)::float8 AS watch_s,
                    sum(completions)::int8 AS completions
             FROM rollup_course_days
             WHERE day BETWEEN $2 AND $3 AND course_id IN (SELECT id FROM c)
             GROUP BY course_id
         )
         SELECT c.id AS course_id, c.title, c.resource_type, c.lessons,
                coalesce(l.enrolled, 0) AS enrolled, coalesce(l.started, 0) AS started,
                coalesce(l.completed, 0) AS completed,
                CASE WHEN coalesce(l.started, 0) = 0 THEN 0
                     ELSE l.completed::float8 / l.started END AS completion_rate,
                coalesce(l.median_watch_s, 0) AS median_watch_s, l.average_speed,
                ra.average AS rating_average, coalesce(ra.n, 0) AS rating_count,
                coalesce(g.views, 0) AS views, coalesce(g.watch_s, 0) / 3600 AS watch_hours,
                coalesce(g.completions, 0) AS completions
         FROM c LEFT JOIN learners l ON l.course_id = c.id
                LEFT JOIN ratings ra ON ra.course_id = c.id
                LEFT JOIN ranged g ON g.course_id = c.id
         ORDER BY c.title, c.id",
    )
    .bind(s.org)
    .bind(s.from)
    .bind(s.to)
    .bind(&s.courses)
    .bind(only)
    .bind(MAX_COURSES)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(figures)
}

pub async fn courses(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<CourseReport>, ApiError> {
    let s = filter::resolve(&state.db, &principal, &q).await?;
    let courses = course_figures(&state.db, &s, None).await?;
    Ok(Json(CourseReport {
        from: s.from,
        to: s.to,
        courses,
    }))
}

/// `GET /api/v1/reports/courses/{course_id}`: one course's figures and
/// the results of its satisfaction surveys.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CourseDetail {
    #[serde(flatten)]
    pub figures: CourseFigures,
    /// Every survey attached to the course or answered for it, with its
    /// results (all time: a survey is answered once, at completion).
    pub surveys: Vec<lectern_community::surveys::SurveyResults>,
}

pub async fn course(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<CourseDetail>, ApiError> {
    let s = filter::resolve(&state.db, &principal, &q).await?;
    let figures = course_figures(&state.db, &s, Some(&[course_id]))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found(format!("no course {course_id}")))?;
    let mut conn = state.db.acquire().await?;
    let surveys =
        lectern_community::surveys::course_survey_summary(&mut conn, Some(s.org), course_id)
            .await?
            .map(|summary| summary.surveys)
            .unwrap_or_default();
    Ok(Json(CourseDetail { figures, surveys }))
}

/// A re-watched stretch of a lesson: where learners rewound to.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Moment {
    /// 0–99: the stretch `[bin %, bin+1 %)` of the lesson.
    pub bin: i16,
    pub from_s: f64,
    pub to_s: f64,
    /// How many times learners rewound into it.
    pub rewinds: i64,
}

/// `GET /api/v1/reports/lessons/{lesson_id}`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LessonReport {
    pub lesson_id: Uuid,
    pub course_id: Uuid,
    pub title: String,
    pub duration_s: Option<f64>,
    /// Learners who watched anything of it (all time).
    pub starters: i64,
    /// Learners who completed it (all time).
    pub completed: i64,
    /// For 0 %, 1 %, … 100 % of the duration: the share of starters whose
    /// watched intervals cover that point (empty until someone starts).
    pub retention: Vec<f64>,
    /// Media seconds played beyond each learner's first time, all
    /// learners together, all time: how much of the lesson is watched
    /// again (media played − unique seconds; media is wall time × the
    /// speed at each flush).
    pub rewatched_s: f64,
    /// The most re-watched stretches, most first (at most 5).
    pub rewatched_moments: Vec<Moment>,
    pub views: i64,
    pub watch_hours: f64,
    pub completions: i64,
}

#[derive(sqlx::FromRow)]
struct LessonRow {
    course_id: Uuid,
    title: String,
    duration_s: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct Union {
    watched: sqlx::types::Json<figures::Intervals>,
    completed: bool,
}

pub async fn lesson(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(lesson_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<LessonReport>, ApiError> {
    let s = filter::resolve(&state.db, &principal, &q).await?;
    Ok(Json(lesson_of(&state.db, &s, lesson_id).await?))
}

/// The report of one lesson of `s`'s organisation (404 for another's).
pub async fn lesson_of(db: &PgPool, s: &Scope, lesson_id: Uuid) -> Result<LessonReport, ApiError> {
    let l: LessonRow = sqlx::query_as(
        "SELECT l.course_id, l.title, a.duration_s
         FROM lessons l LEFT JOIN assets a ON a.id = l.asset_id
         WHERE l.id = $1 AND l.organisation_id = $2",
    )
    .bind(lesson_id)
    .bind(s.org)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no lesson {lesson_id}")))?;
    let unions: Vec<Union> = sqlx::query_as(
        "SELECT watched, completed_at IS NOT NULL AS completed
         FROM lesson_progress WHERE lesson_id = $1 AND watched_s > 0",
    )
    .bind(lesson_id)
    .fetch_all(db)
    .await?;
    let retention = match l.duration_s {
        Some(d) => figures::retention(
            &unions
                .iter()
                .map(|u| u.watched.0.clone())
                .collect::<Vec<_>>(),
            d,
        ),
        None => Vec::new(),
    };
    let rewatched_s: f64 = sqlx::query_scalar(
        "SELECT greatest(coalesce(sum(media_s) - sum(unique_s), 0), 0)::float8
         FROM rollup_lesson_daily WHERE lesson_id = $1",
    )
    .bind(lesson_id)
    .fetch_one(db)
    .await?;
    #[derive(sqlx::FromRow)]
    struct Bin {
        bin: i16,
        rewinds: i32,
    }
    let bins: Vec<Bin> = sqlx::query_as(
        "SELECT bin, rewinds FROM rollup_rewinds WHERE lesson_id = $1
         ORDER BY rewinds DESC, bin LIMIT 5",
    )
    .bind(lesson_id)
    .fetch_all(db)
    .await?;
    let width = l.duration_s.unwrap_or(0.0) / 100.0;
    let totals = range_totals(db, s, Some(lesson_id)).await?;
    Ok(LessonReport {
        lesson_id,
        course_id: l.course_id,
        title: l.title,
        duration_s: l.duration_s,
        starters: unions.len() as i64,
        completed: unions.iter().filter(|u| u.completed).count() as i64,
        retention,
        rewatched_s,
        rewatched_moments: bins
            .into_iter()
            .map(|b| Moment {
                bin: b.bin,
                from_s: f64::from(b.bin) * width,
                to_s: f64::from(b.bin + 1) * width,
                rewinds: i64::from(b.rewinds),
            })
            .collect(),
        views: totals.views,
        watch_hours: totals.watch_s / 3600.0,
        completions: totals.completions,
    })
}

/// `GET /api/v1/reports/experts/{expert_id}`, `GET /api/v1/me/expert-report`:
/// the courses an expert is named on.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpertReport {
    pub expert_id: Uuid,
    pub name: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Viewings of their courses in the range.
    pub views: i64,
    pub watch_hours: f64,
    pub completions: i64,
    /// Learners who completed any of their courses (all time).
    pub course_completions: i64,
    /// Average of every rating of their courses.
    pub rating_average: Option<f64>,
    pub rating_count: i64,
    pub courses: Vec<CourseFigures>,
}

pub async fn expert_report(
    db: &PgPool,
    s: &Scope,
    expert_id: Uuid,
    name: String,
) -> Result<ExpertReport, ApiError> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT course_id FROM course_experts WHERE expert_id = $1")
            .bind(expert_id)
            .fetch_all(db)
            .await?;
    let courses = course_figures(db, s, Some(&ids)).await?;
    let rated: i64 = courses.iter().map(|c| c.rating_count).sum();
    let rating_sum: f64 = courses
        .iter()
        .filter_map(|c| c.rating_average.map(|a| a * c.rating_count as f64))
        .sum();
    Ok(ExpertReport {
        expert_id,
        name,
        from: s.from,
        to: s.to,
        views: courses.iter().map(|c| c.views).sum(),
        watch_hours: courses.iter().map(|c| c.watch_hours).sum(),
        completions: courses.iter().map(|c| c.completions).sum(),
        course_completions: courses.iter().map(|c| c.completed).sum(),
        rating_average: (rated > 0).then(|| rating_sum / rated as f64),
        rating_count: rated,
        courses,
    })
}

#[derive(sqlx::FromRow)]
struct ExpertRow {
    id: Uuid,
    name: String,
}

pub async fn expert(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(expert_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<ExpertReport>, ApiError> {
    let s = filter::resolve(&state.db, &principal, &q).await?;
    let e: ExpertRow =
        sqlx::query_as("SELECT id, name FROM experts WHERE id = $1 AND organisation_id = $2")
            .bind(expert_id)
            .bind(s.org)
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no expert {expert_id}")))?;
    Ok(Json(expert_report(&state.db, &s, e.id, e.name).await?))
}

/// The expert profile of the caller: 404 when their account has none.
pub async fn own_expert(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(mut q): ApiQuery<ReportQuery>,
) -> Result<Json<ExpertReport>, ApiError> {
    q.org_id = None;
    let s = filter::resolve(&state.db, &principal, &q).await?;
    let e: ExpertRow = sqlx::query_as(
        "SELECT id, name FROM experts WHERE user_id = $1 AND organisation_id = $2
         ORDER BY created_at LIMIT 1",
    )
    .bind(principal.user_id())
    .bind(s.org)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("your account has no expert profile"))?;
    Ok(Json(expert_report(&state.db, &s, e.id, e.name).await?))
}

/// Startup and failures of one group of playbacks.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, sqlx::FromRow)]
pub struct QoeFigures {
    /// Playbacks that reported a startup.
    pub startups: i64,
    pub startup_p50_ms: Option<f64>,
    pub startup_p95_ms: Option<f64>,
    /// Mean of 8 ÷ (8 + startup seconds) over startups: 1 is instant, 0.5
    /// is 8 s (Mux's shape).
    pub startup_score: Option<f64>,
    pub rebuffer_events: i64,
    pub rebuffer_s: f64,
    pub failures: i64,
}

/// Switches into one rung.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, sqlx::FromRow)]
pub struct RungFigures {
    pub bitrate: i32,
    /// Switches into this rung.
    pub switches_to: i64,
    /// Switches away from it.
    pub switches_from: i64,
}

/// `GET /api/v1/reports/qoe`. Browser and OS are not reported: the QoE
/// events the player sends carry neither.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QoeOverview {
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(flatten)]
    pub overall: QoeFigures,
    /// Seconds stalled ÷ (seconds stalled + seconds played) in the range.
    pub rebuffer_ratio: Option<f64>,
    /// Failures ÷ startups.
    pub failure_rate: Option<f64>,
    pub by_rung: Vec<RungFigures>,
}

pub async fn qoe(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Json<QoeOverview>, ApiError> {
    let s = filter::resolve(&state.db, &principal, &q).await?;
    Ok(Json(qoe_of(&state.db, &s).await?))
}

/// Startup, stalls and failures of `s`'s playbacks (from the raw events).
pub async fn qoe_of(db: &PgPool, s: &Scope) -> Result<QoeOverview, ApiError> {
    const RANGE: &str = "e.organisation_id = $1
           AND e.at >= ($2::date::timestamp AT TIME ZONE $4)
           AND e.at < (($3::date + 1)::timestamp AT TIME ZONE $4)
           AND ($5::uuid[] IS NULL OR e.lesson_id IN
                (SELECT id FROM lessons WHERE course_id = ANY($5)))";
    let overall: QoeFigures = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE kind = 'startup') AS startups,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY startup_ms)
                    FILTER (WHERE kind = 'startup' AND startup_ms IS NOT NULL) AS startup_p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY startup_ms)
                    FILTER (WHERE kind = 'startup' AND startup_ms IS NOT NULL) AS startup_p95_ms,
                avg(8.0 / (8.0 + startup_ms / 1000.0))
                    FILTER (WHERE kind = 'startup' AND startup_ms IS NOT NULL)::float8 AS startup_score,
                coalesce(sum(coalesce(rebuffer_count, 1)) FILTER (WHERE kind = 'rebuffer'), 0)::int8
                    AS rebuffer_events,
                coalesce(sum(rebuffer_ms) FILTER (WHERE kind = 'rebuffer'), 0)::float8 / 1000
                    AS rebuffer_s,
                count(*) FILTER (WHERE kind = 'fatal_error') AS failures
         FROM qoe_events e WHERE {RANGE}"
    ))
    .bind(s.org)
    .bind(s.from)
    .bind(s.to)
    .bind(&s.time_zone)
    .bind(&s.courses)
    .fetch_one(db)
    .await?;
    let by_rung: Vec<RungFigures> = sqlx::query_as(&format!(
        "SELECT bitrate, sum(t)::int8 AS switches_to, sum(f)::int8 AS switches_from FROM (
             SELECT to_bitrate AS bitrate, 1 AS t, 0 AS f FROM qoe_events e
              WHERE kind = 'bitrate_switch' AND to_bitrate IS NOT NULL AND {RANGE}
             UNION ALL
             SELECT from_bitrate, 0, 1 FROM qoe_events e
              WHERE kind = 'bitrate_switch' AND from_bitrate IS NOT NULL AND {RANGE}
         ) x GROUP BY bitrate ORDER BY bitrate"
    ))
    .bind(s.org)
    .bind(s.from)
    .bind(s.to)
    .bind(&s.time_zone)
    .bind(&s.courses)
    .fetch_all(db)
    .await?;
    let played = range_totals(db, s, None).await?.watch_s;
    let stalled = overall.rebuffer_s;
    Ok(QoeOverview {
        from: s.from,
        to: s.to,
        rebuffer_ratio: (stalled + played > 0.0).then(|| stalled / (stalled + played)),
        failure_rate: (overall.startups > 0)
            .then(|| overall.failures as f64 / overall.startups as f64),
        overall,
        by_rung,
    })
}

/// One course of a transcript.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TranscriptCourse {
    pub course_id: Uuid,
    pub title: String,
    pub lessons: i64,
    pub lessons_completed: i64,
    /// Seconds of the course actually watched: each second once, however
    /// often, on whatever device or speed.
    pub watched_s: f64,
    /// Wall-clock seconds spent playing it (every viewing).
    pub watch_time_s: f64,
    /// Unique seconds ÷ the playable lessons' total duration.
    pub completion: f64,
    pub completed: bool,
    /// Credits earned under the organisation's rule (0 until completed,
    /// or when the course has no credit designation).
    pub credits: f64,
    pub credit_label: Option<String>,
    /// The certificate issued for it, if any.
    pub certificate_serial: Option<String>,
}

/// A learner's transcript.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Transcript {
    pub user_id: Uuid,
    pub courses: Vec<TranscriptCourse>,
    pub watched_s: f64,
    pub credits: f64,
    pub certificates: i64,
}

#[derive(sqlx::FromRow)]
struct TranscriptRow {
    course_id: Uuid,
    title: String,
    lessons: i64,
    lessons_completed: i64,
    watched_s: f64,
    watch_time_s: f64,
    duration_s: f64,
    credit_class: Option<i16>,
    max_credits: Option<f64>,
    serial: Option<String>,
}

/// The organisation's credit rule, or the default (1 credit per hour,
/// quarter steps).
pub(crate) async fn credit_rule(db: &PgPool, org: Uuid) -> Result<CreditRule, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        credits_per_hour: f64,
        rounding_step: f64,
        class_i_label: String,
        class_ii_label: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT credits_per_hour, rounding_step, class_i_label, class_ii_label
         FROM credit_rules WHERE organisation_id = $1",
    )
    .bind(org)
    .fetch_optional(db)
    .await?;
    Ok(row.map_or_else(CreditRule::default, |r| CreditRule {
        credits_per_hour: r.credits_per_hour,
        rounding_step: r.rounding_step,
        class_i_label: r.class_i_label,
        class_ii_label: r.class_ii_label,
    }))
}

/// The transcript of `user_id` in `org`, from `lesson_progress`: watched
/// seconds are each lesson's union clipped to its duration.
pub async fn transcript_of(
    db: &PgPool,
    org: Uuid,
    user_id: Uuid,
    course: Option<Uuid>,
) -> Result<Transcript, ApiError> {
    let rule = credit_rule(db, org).await?;
    let rows: Vec<TranscriptRow> = sqlx::query_as(
        "WITH mine AS (
             SELECT l.course_id,
                    count(*) FILTER (WHERE lp.completed_at IS NOT NULL) AS lessons_completed,
                    sum(least(lp.watched_s, coalesce(a.duration_s, lp.duration_s)))::float8 AS watched_s,
                    sum(lp.watch_time_s)::float8 AS watch_time_s
             FROM lesson_progress lp
             JOIN lessons l ON l.id = lp.lesson_id
             LEFT JOIN assets a ON a.id = l.asset_id
             WHERE lp.user_id = $1 AND lp.organisation_id = $2
               AND ($3::uuid IS NULL OR l.course_id = $3)
               AND l.asset_id IS NOT NULL
             GROUP BY l.course_id
         )
         SELECT c.id AS course_id, c.title,
                (SELECT count(*) FROM lessons l WHERE l.course_id = c.id AND l.asset_id IS NOT NULL) AS lessons,
                m.lessons_completed, m.watched_s, m.watch_time_s,
                (SELECT coalesce(sum(a.duration_s), 0)::float8 FROM lessons l JOIN assets a ON a.id = l.asset_id
                  WHERE l.course_id = c.id) AS duration_s,
                d.credit_class, d.max_credits,
                (SELECT serial FROM certificates WHERE user_id = $1 AND course_id = c.id) AS serial
         FROM mine m JOIN courses c ON c.id = m.course_id
         LEFT JOIN course_credit_designations d ON d.course_id = c.id
         ORDER BY c.title, c.id",
    )
    .bind(user_id)
    .bind(org)
    .bind(course)
    .fetch_all(db)
    .await?;
    let courses: Vec<TranscriptCourse> = rows
        .into_iter()
        .map(|r| {
            let completed = r.lessons > 0 && r.lessons_completed >= r.lessons;
            let credits = r.max_credits.map_or(0.0, |cap| {
                credits::earned(r.watched_s, completed, &rule, cap)
            });
            TranscriptCourse {
                course_id: r.course_id,
                title: r.title,
                lessons: r.lessons,
                lessons_completed: r.lessons_completed,
                watched_s: r.watched_s,
                watch_time_s: r.watch_time_s,
                completion: if r.duration_s > 0.0 {
                    (r.watched_s / r.duration_s).min(1.0)
                } else {
                    0.0
                },
                completed,
                credits,
                credit_label: r.credit_class.map(|c| {
                    if c == 1 {
                        rule.class_i_label.clone()
                    } else {
                        rule.class_ii_label.clone()
                    }
                }),
                certificate_serial: r.serial,
            }
        })
        .collect();
    Ok(Transcript {
        user_id,
        watched_s: courses.iter().map(|c| c.watched_s).sum(),
        credits: courses.iter().map(|c| c.credits).sum(),
        certificates: courses
            .iter()
            .filter(|c| c.certificate_serial.is_some())
            .count() as i64,
        courses,
    })
}

/// Which organisation a learner belongs to, as the caller may see it: 404
/// for another organisation's learner.
pub(crate) async fn learner_org(
    db: &PgPool,
    principal: &Principal,
    user_id: Uuid,
) -> Result<Uuid, ApiError> {
    let org: Option<Option<Uuid>> = sqlx::query_scalar("SELECT org_id FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    match (org.flatten(), principal.org_scope()) {
        (Some(o), None) => Ok(o),
        (Some(o), Some(mine)) if o == mine => Ok(o),
        _ => Err(ApiError::not_found(format!("no learner {user_id}"))),
    }
}

pub async fn transcript(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<Json<Transcript>, ApiError> {
    let org = learner_org(&state.db, &principal, user_id).await?;
    Ok(Json(transcript_of(&state.db, org, user_id, None).await?))
}

pub async fn own_transcript(
    State(state): State<AnalyticsState>,
    principal: Principal,
) -> Result<Json<Transcript>, ApiError> {
    let user_id = principal
        .user_id()
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "this needs a signed-in person"))?;
    // A global account learns nowhere: its transcript is empty.
    let Some(org) = principal.org_scope() else {
        return Ok(Json(Transcript {
            user_id,
            courses: Vec::new(),
            watched_s: 0.0,
            credits: 0.0,
            certificates: 0,
        }));
    };
    Ok(Json(transcript_of(&state.db, org, user_id, None).await?))
}
