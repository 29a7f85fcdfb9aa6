//! Results, per survey × course: the number of responses, and for each
//! question (retired ones included, flagged) how many responses answered
//! it; a choice question's count per option (a multiple-choice response
//! counts once for each option it chose); a scale's mean and its
//! distribution over every value of the scale (zeros included). Free-text
//! answers are read page by page, newest first
//! (`…/questions/{question_id}/texts`). Results carry no learner's
//! identity.
//!
//! Counts are computed in PostgreSQL from the answer rows at read time,
//! so they are exact and need no upkeep; a course's responses are a
//! keyset range of `survey_responses_page`.
//!
//! [`course_survey_summary`] is the typed entry point for other crates
//! (analytics): every survey attached to a course, or answered for it,
//! with the same figures as the route.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_web::{Access, ApiError, ApiRouter, Limit, Permission, Principal};
use lectern_web::{ApiPath, ApiQuery};

use super::{course_and_survey, questions_of, QuestionKind, SurveyState};
use crate::CommunityState;

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let manage = Access::Permission(Permission::ManageSurveys);
    api.route(
        Method::GET,
        "/api/v1/courses/{course_id}/surveys/{survey_id}/results",
        manage,
        results,
    )
    .route(
        Method::GET,
        "/api/v1/courses/{course_id}/surveys/{survey_id}/questions/{question_id}/texts",
        manage,
        texts,
    )
}

/// How many responses chose an option.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct OptionCount {
    pub option_id: Uuid,
    /// Plain text; clients escape it.
    pub label: String,
    pub count: i64,
}

/// How many responses gave a value of a scale.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ScaleCount {
    pub value: i16,
    pub count: i64,
}

/// A scale question's figures.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ScaleResults {
    pub min: i16,
    pub max: i16,
    pub min_label: Option<String>,
    pub max_label: Option<String>,
    /// The mean of the values given; null when nobody answered.
    pub mean: Option<f64>,
    /// Every value from `min` to `max`, in order, with its count.
    pub distribution: Vec<ScaleCount>,
}

/// One question's figures.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct QuestionResults {
    pub question_id: Uuid,
    pub position: i32,
    pub kind: QuestionKind,
    /// Plain text; clients escape it.
    pub prompt: String,
    /// No longer asked; responses from before still count.
    pub retired: bool,
    /// Responses that answered it (not empty, not skipped).
    pub answered: i64,
    /// A choice question's options in order, each with its count.
    pub options: Vec<OptionCount>,
    /// A scale question's mean and distribution.
    pub scale: Option<ScaleResults>,
}

/// A survey's results for one course.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SurveyResults {
    pub survey_id: Uuid,
    pub course_id: Uuid,
    /// Plain text; clients escape it.
    pub title: String,
    pub state: SurveyState,
    /// Responses given for this course.
    pub responses: i64,
    /// Every question in order.
    pub questions: Vec<QuestionResults>,
}

/// Every survey of a course with its results: what analytics reads.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct CourseSurveySummary {
    pub course_id: Uuid,
    /// Surveys attached to the course or answered for it, oldest first.
    pub surveys: Vec<SurveyResults>,
}

#[derive(sqlx::FromRow)]
struct Head {
    title: String,
    state: SurveyState,
    responses: i64,
}

#[derive(sqlx::FromRow)]
struct Answered {
    question_id: Uuid,
    answered: i64,
    mean: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct ValueCount {
    question_id: Uuid,
    value: i16,
    count: i64,
}

#[derive(sqlx::FromRow)]
struct Chosen {
    option_id: Uuid,
    count: i64,
}

/// Survey `survey`'s results for `course`, or `None` if there is no such
/// survey. Callers scope by organisation before asking.
pub async fn survey_results(
    conn: &mut PgConnection,
    survey: Uuid,
    course: Uuid,
) -> Result<Option<SurveyResults>, sqlx::Error> {
    let Some(head): Option<Head> = sqlx::query_as(
        "SELECT s.title, s.state,
                (SELECT count(*) FROM survey_responses r
                  WHERE r.survey_id = s.id AND r.course_id = $2) AS responses
         FROM surveys s WHERE s.id = $1",
    )
    .bind(survey)
    .bind(course)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let answered: Vec<Answered> = sqlx::query_as(
        "SELECT a.question_id, count(*) AS answered, avg(a.value)::float8 AS mean
         FROM survey_responses r JOIN survey_answers a ON a.response_id = r.id
         WHERE r.survey_id = $1 AND r.course_id = $2
         GROUP BY a.question_id",
    )
    .bind(survey)
    .bind(course)
    .fetch_all(&mut *conn)
    .await?;
    let values: Vec<ValueCount> = sqlx::query_as(
        "SELECT a.question_id, a.value, count(*) AS count
         FROM survey_responses r JOIN survey_answers a ON a.response_id = r.id
         WHERE r.survey_id = $1 AND r.course_id = $2 AND a.value IS NOT NULL
         GROUP BY a.question_id, a.value",
    )
    .bind(survey)
    .bind(course)
    .fetch_all(&mut *conn)
    .await?;
    let chosen: Vec<Chosen> = sqlx::query_as(
        "SELECT ch.option_id, count(*) AS count
         FROM survey_responses r JOIN survey_choices ch ON ch.response_id = r.id
         WHERE r.survey_id = $1 AND r.course_id = $2
         GROUP BY ch.option_id",
    )
    .bind(survey)
    .bind(course)
    .fetch_all(&mut *conn)
    .await?;
    let answered: HashMap<Uuid, &Answered> = answered.iter().map(|a| (a.question_id, a)).collect();
    let chosen: HashMap<Uuid, i64> = chosen.iter().map(|c| (c.option_id, c.count)).collect();
    let questions = questions_of(conn, survey, true)
        .await?
        .into_iter()
        .map(|q| {
            let a = answered.get(&q.id);
            QuestionResults {
                question_id: q.id,
                position: q.position,
                kind: q.kind,
                retired: q.retired,
                answered: a.map_or(0, |a| a.answered),
                options: q
                    .options
                    .into_iter()
                    .map(|o| OptionCount {
                        count: chosen.get(&o.id).copied().unwrap_or(0),
                        option_id: o.id,
                        label: o.label,
                    })
                    .collect(),
                scale: q.scale.map(|scale| ScaleResults {
                    mean: a.and_then(|a| a.mean),
                    distribution: (scale.min..=scale.max)
                        .map(|value| ScaleCount {
                            value,
                            count: values
                                .iter()
                                .find(|v| v.question_id == q.id && v.value == value)
                                .map_or(0, |v| v.count),
                        })
                        .collect(),
                    min: scale.min,
                    max: scale.max,
                    min_label: scale.min_label,
                    max_label: scale.max_label,
                }),
                prompt: q.prompt,
            }
        })
        .collect();
    Ok(Some(SurveyResults {
        survey_id: survey,
        course_id: course,
        title: head.title,
        state: head.state,
        responses: head.responses,
        questions,
    }))
}

/// Every survey attached to `course` or answered for it, with its results;
/// `None` when the course is not within `org_scope` (a global view passes
/// `None` as the scope). The typed way for analytics to read a course's
/// satisfaction.
pub async fn course_survey_summary(
    conn: &mut PgConnection,
    org_scope: Option<Uuid>,
    course: Uuid,
) -> Result<Option<CourseSurveySummary>, sqlx::Error> {
    let known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM courses
                         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2))",
    )
    .bind(course)
    .bind(org_scope)
    .fetch_one(&mut *conn)
    .await?;
    if !known {
        return Ok(None);
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT s.id FROM surveys s
         JOIN courses c ON c.id = $1 AND c.organisation_id = s.organisation_id
         WHERE EXISTS (SELECT 1 FROM course_surveys cs WHERE cs.survey_id = s.id AND cs.course_id = $1)
            OR EXISTS (SELECT 1 FROM survey_responses r WHERE r.survey_id = s.id AND r.course_id = $1)
         ORDER BY s.created_at, s.id",
    )
    .bind(course)
    .fetch_all(&mut *conn)
    .await?;
    let mut surveys = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = survey_results(conn, id, course).await? {
            surveys.push(r);
        }
    }
    Ok(Some(CourseSurveySummary {
        course_id: course,
        surveys,
    }))
}

/// `GET /api/v1/courses/{course_id}/surveys/{survey_id}/results`: the
/// survey's results for the course (it need not be attached any more).
async fn results(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((course_id, survey_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<SurveyResults>, ApiError> {
    let mut conn = state.db.acquire().await?;
    course_and_survey(&mut conn, &principal, course_id, survey_id).await?;
    survey_results(&mut conn, survey_id, course_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no survey {survey_id}")))
}

const TEXT_PAGE: Limit = Limit::new(50, 200);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextQuery {
    /// The previous page's `next`.
    after: Option<Uuid>,
    /// 1–200; 50 by default.
    limit: Option<i64>,
}

/// One free-text answer.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct TextAnswer {
    pub response_id: Uuid,
    /// Plain text as the learner wrote it; clients escape it.
    pub text: String,
    pub submitted_at: DateTime<Utc>,
}

/// A page of a free-text question's answers, newest first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct TextPage {
    pub question_id: Uuid,
    pub answers: Vec<TextAnswer>,
    /// Pass as `after` for the next page; null on the last.
    pub next: Option<Uuid>,
}

/// `GET /api/v1/courses/{course_id}/surveys/{survey_id}/questions/{question_id}/texts?after=&limit=`.
async fn texts(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((course_id, survey_id, question_id)): ApiPath<(Uuid, Uuid, Uuid)>,
    ApiQuery(q): ApiQuery<TextQuery>,
) -> Result<Json<TextPage>, ApiError> {
    let limit = TEXT_PAGE.of(q.limit)?;
    let mut conn = state.db.acquire().await?;
    course_and_survey(&mut conn, &principal, course_id, survey_id).await?;
    let free_text: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM survey_questions
                         WHERE id = $1 AND survey_id = $2 AND kind = 'free_text')",
    )
    .bind(question_id)
    .bind(survey_id)
    .fetch_one(&mut *conn)
    .await?;
    if !free_text {
        return Err(ApiError::not_found(format!(
            "no free-text question {question_id} in survey {survey_id}"
        )));
    }
    let mut answers: Vec<TextAnswer> = sqlx::query_as(
        "SELECT r.id AS response_id, a.body AS text, r.submitted_at
         FROM survey_responses r
         JOIN survey_answers a ON a.response_id = r.id AND a.question_id = $3
         WHERE r.survey_id = $1 AND r.course_id = $2 AND a.body IS NOT NULL
           AND ($4::uuid IS NULL OR r.id < $4)
         ORDER BY r.id DESC LIMIT $5",
    )
    .bind(survey_id)
    .bind(course_id)
    .bind(question_id)
    .bind(q.after)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let next = if answers.len() as i64 > limit {
        answers.truncate(limit as usize);
        answers.last().map(|a| a.response_id)
    } else {
        None
    };
    Ok(Json(TextPage {
        question_id,
        answers,
        next,
    }))
}
