//! Satisfaction surveys: an organisation's operators (permission
//! `manage_surveys`) define surveys of single-choice, multiple-choice,
//! scale and free-text questions — the choices and the scale's labels are
//! the operator's data, not an enum — and attach them to courses. A
//! learner who completed a course answers each open survey attached to it
//! once ([`answer`]); results aggregate per survey × course and export as
//! CSV ([`results`], [`export`]).
//!
//! A survey is `draft` (being built; learners do not see it), `open`
//! (answered) or `closed` (no more answers; results kept). Opening needs
//! at least one live question.
//!
//! **Versioning: questions freeze.** The first response submitted while a
//! question is live freezes it (`frozen_at`), whether the response
//! answered it or skipped it; a frozen question's prompt, kind, options
//! and scale never change again and it cannot be deleted (409
//! `survey_question_frozen`), so every count in the results means what
//! the respondents were asked. To change a running survey an operator
//! retires a question (no longer asked; its results stay) and adds a new
//! one. Title and description stay editable: they do not change what an
//! answer means. Editing takes the survey row `FOR UPDATE` and a
//! submission takes it `FOR SHARE`, so an edit and a response never
//! interleave: the edit either lands before the response (which then
//! answers the edited question) or sees the question frozen.
//!
//! Survey text (titles, prompts, labels, answers) is stored as text and
//! answered as JSON strings, never rendered as HTML (see [`crate::text`]).

pub mod answer;
pub mod export;
pub mod results;

use std::collections::HashSet;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ApiQuery, Created, Limit, NoContent};

use crate::text;
use crate::CommunityState;

pub use results::{course_survey_summary, CourseSurveySummary, SurveyResults};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let manage = Access::Permission(Permission::ManageSurveys);
    let api = api
        .route(Method::POST, "/api/v1/surveys", manage, create)
        .route(Method::GET, "/api/v1/surveys", manage, list)
        .route(Method::GET, "/api/v1/surveys/{survey_id}", manage, get)
        .route(Method::PATCH, "/api/v1/surveys/{survey_id}", manage, patch)
        .route(
            Method::DELETE,
            "/api/v1/surveys/{survey_id}",
            manage,
            delete,
        )
        .route(
            Method::POST,
            "/api/v1/surveys/{survey_id}/questions",
            manage,
            add_question,
        )
        .route(
            Method::PUT,
            "/api/v1/surveys/{survey_id}/questions/{question_id}",
            manage,
            replace_question,
        )
        .route(
            Method::DELETE,
            "/api/v1/surveys/{survey_id}/questions/{question_id}",
            manage,
            delete_question,
        )
        .route(
            Method::POST,
            "/api/v1/surveys/{survey_id}/questions/{question_id}/retire",
            manage,
            retire_question,
        )
        .route(
            Method::PUT,
            "/api/v1/courses/{course_id}/surveys/{survey_id}",
            manage,
            attach,
        )
        .route(
            Method::DELETE,
            "/api/v1/courses/{course_id}/surveys/{survey_id}",
            manage,
            detach,
        );
    let api = answer::routes(api);
    let api = results::routes(api);
    export::routes(api)
}

/// The longest survey title, in characters.
pub const TITLE_MAX: usize = 200;
/// The longest survey description.
pub const DESCRIPTION_MAX: usize = 2_000;
/// The longest question prompt.
pub const PROMPT_MAX: usize = 500;
/// The longest option label.
pub const OPTION_MAX: usize = 200;
/// The longest label of a scale's end.
pub const SCALE_LABEL_MAX: usize = 50;
/// Live (not retired) questions a survey may hold.
pub const QUESTIONS_MAX: usize = 50;
/// Options a choice question may hold (at least 2).
pub const OPTIONS_MAX: usize = 20;

const SURVEY_PAGE: Limit = Limit::new(100, 500);

/// What a question asks for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum QuestionKind {
    /// Exactly one of the operator's options.
    SingleChoice,
    /// One or more of the operator's options.
    MultipleChoice,
    /// A whole number on the question's scale (say 1–5, or 0–10).
    Scale,
    /// Plain text, up to 2,000 characters.
    FreeText,
}

/// Where a survey stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SurveyState {
    /// Being built: learners do not see it.
    Draft,
    /// Shown at the completion of the courses it is attached to.
    Open,
    /// Takes no more responses; its results stay.
    Closed,
}

/// A scale question's range (whole numbers, 0–10) and the labels of its
/// ends, e.g. 1 "非常不满意" … 5 "非常满意".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub min: i16,
    pub max: i16,
    /// Up to 50 characters.
    #[serde(default)]
    pub min_label: Option<String>,
    /// Up to 50 characters.
    #[serde(default)]
    pub max_label: Option<String>,
}

/// A question as an operator defines it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuestion {
    pub kind: QuestionKind,
    /// 1–500 characters of plain text.
    pub prompt: String,
    /// Whether every response must answer it (true when omitted).
    #[serde(default = "yes")]
    pub required: bool,
    /// A choice question's options in order: 2–20 labels of 1–200
    /// characters, no two alike. Empty for other kinds.
    #[serde(default)]
    pub options: Vec<String>,
    /// A scale question's range and labels; only for `scale`.
    #[serde(default)]
    pub scale: Option<Scale>,
}

fn yes() -> bool {
    true
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSurvey, message)
}

/// The question with its text checked and trimmed, or why it is malformed.
pub(crate) fn checked_question(q: &NewQuestion) -> Result<NewQuestion, ApiError> {
    let prompt = text::checked(&q.prompt, "prompt", PROMPT_MAX, false)?;
    let mut options = Vec::with_capacity(q.options.len());
    let mut scale = None;
    match q.kind {
        QuestionKind::SingleChoice | QuestionKind::MultipleChoice => {
            if q.scale.is_some() {
                return Err(invalid("only a scale question has a scale"));
            }
            if !(2..=OPTIONS_MAX).contains(&q.options.len()) {
                return Err(invalid(format!(
                    "a choice question has 2–{OPTIONS_MAX} options, not {}",
                    q.options.len()
                )));
            }
            let mut seen = HashSet::new();
            for label in &q.options {
                let label = text::checked(label, "option", OPTION_MAX, false)?;
                if !seen.insert(label.clone()) {
                    return Err(invalid(format!("option {label:?} is listed twice")));
                }
                options.push(label);
            }
        }
        QuestionKind::Scale => {
            if !q.options.is_empty() {
                return Err(invalid(
                    "a scale question has a scale, not options (use a choice question)",
                ));
            }
            let s = q
                .scale
                .as_ref()
                .ok_or_else(|| invalid("a scale question needs its scale {min, max}"))?;
            if !(0..=10).contains(&s.min) || !(0..=10).contains(&s.max) || s.min >= s.max {
                return Err(invalid(format!(
                    "a scale runs between whole numbers 0–10 with min < max, not {}–{}",
                    s.min, s.max
                )));
            }
            let label = |l: &Option<String>, field| -> Result<Option<String>, ApiError> {
                let v = text::checked(l.as_deref().unwrap_or(""), field, SCALE_LABEL_MAX, true)?;
                Ok((!v.is_empty()).then_some(v))
            };
            scale = Some(Scale {
                min: s.min,
                max: s.max,
                min_label: label(&s.min_label, "min_label")?,
                max_label: label(&s.max_label, "max_label")?,
            });
        }
        QuestionKind::FreeText => {
            if !q.options.is_empty() || q.scale.is_some() {
                return Err(invalid(
                    "a free-text question has neither options nor a scale",
                ));
            }
        }
    }
    Ok(NewQuestion {
        kind: q.kind,
        prompt,
        required: q.required,
        options,
        scale,
    })
}

/// A survey as the list shows it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct SurveyHead {
    pub id: Uuid,
    pub organisation_id: Uuid,
    /// Plain text; clients escape it.
    pub title: String,
    /// Plain text (may be empty); clients escape it.
    pub description: String,
    pub state: SurveyState,
    /// Live (not retired) questions.
    pub question_count: i64,
    /// Responses over every course.
    pub response_count: i64,
    /// The courses it is attached to, oldest attachment first.
    pub course_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const HEAD_COLUMNS: &str = "s.id, s.organisation_id, s.title, s.description, s.state,
    (SELECT count(*) FROM survey_questions q
      WHERE q.survey_id = s.id AND q.retired_at IS NULL) AS question_count,
    (SELECT count(*) FROM survey_responses r WHERE r.survey_id = s.id) AS response_count,
    ARRAY(SELECT cs.course_id FROM course_surveys cs
           WHERE cs.survey_id = s.id ORDER BY cs.attached_at, cs.course_id) AS course_ids,
    s.created_at, s.updated_at";

/// An option of a choice question.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SurveyOption {
    pub id: Uuid,
    /// Plain text; clients escape it.
    pub label: String,
}

/// A question as it is asked.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SurveyQuestion {
    pub id: Uuid,
    /// Order within the survey (ascending; gaps are possible).
    pub position: i32,
    pub kind: QuestionKind,
    /// Plain text; clients escape it.
    pub prompt: String,
    pub required: bool,
    /// A choice question's options, in order.
    pub options: Vec<SurveyOption>,
    pub scale: Option<Scale>,
    /// Asked in a response already: it can no longer change (retire it
    /// and add a new question instead).
    pub frozen: bool,
    /// No longer asked; its results stay.
    pub retired: bool,
}

/// A survey with its questions, as its operators see it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Survey {
    #[serde(flatten)]
    pub head: SurveyHead,
    /// Every question in order, retired ones included.
    pub questions: Vec<SurveyQuestion>,
}

#[derive(sqlx::FromRow)]
struct QuestionRow {
    id: Uuid,
    position: i32,
    kind: QuestionKind,
    prompt: String,
    required: bool,
    scale_min: Option<i16>,
    scale_max: Option<i16>,
    min_label: Option<String>,
    max_label: Option<String>,
    frozen: bool,
    retired: bool,
}

#[derive(sqlx::FromRow)]
struct OptionRow {
    id: Uuid,
    question_id: Uuid,
    label: String,
}

/// The questions of a survey in order, with their options; retired ones
/// only when `retired` says so.
pub(crate) async fn questions_of(
    conn: &mut PgConnection,
    survey: Uuid,
    retired: bool,
) -> Result<Vec<SurveyQuestion>, sqlx::Error> {
    let rows: Vec<QuestionRow> = sqlx::query_as(
        "SELECT id, position, kind, prompt, required, scale_min, scale_max, min_label, max_label,
                frozen_at IS NOT NULL AS frozen, retired_at IS NOT NULL AS retired
         FROM survey_questions
         WHERE survey_id = $1 AND ($2 OR retired_at IS NULL)
         ORDER BY position",
    )
    .bind(survey)
    .bind(retired)
    .fetch_all(&mut *conn)
    .await?;
    let options: Vec<OptionRow> = sqlx::query_as(
        "SELECT o.id, o.question_id, o.label
         FROM survey_options o JOIN survey_questions q ON q.id = o.question_id
         WHERE q.survey_id = $1 ORDER BY o.question_id, o.position",
    )
    .bind(survey)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SurveyQuestion {
            id: r.id,
            position: r.position,
            kind: r.kind,
            prompt: r.prompt,
            required: r.required,
            options: options
                .iter()
                .filter(|o| o.question_id == r.id)
                .map(|o| SurveyOption {
                    id: o.id,
                    label: o.label.clone(),
                })
                .collect(),
            scale: match (r.scale_min, r.scale_max) {
                (Some(min), Some(max)) => Some(Scale {
                    min,
                    max,
                    min_label: r.min_label,
                    max_label: r.max_label,
                }),
                _ => None,
            },
            frozen: r.frozen,
            retired: r.retired,
        })
        .collect())
}

/// Survey `id` within the caller's scope, whole; 404 otherwise.
async fn load(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Survey, ApiError> {
    let head: SurveyHead = sqlx::query_as(&format!(
        "SELECT {HEAD_COLUMNS} FROM surveys s
         WHERE s.id = $1 AND ($2::uuid IS NULL OR s.organisation_id = $2)"
    ))
    .bind(id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no survey {id}")))?;
    let questions = questions_of(conn, id, true).await?;
    Ok(Survey { head, questions })
}

#[derive(sqlx::FromRow)]
struct Locked {
    state: SurveyState,
}

/// Takes survey `id` of the caller's scope for an edit (`FOR UPDATE`:
/// submissions wait, see the module docs); 404 otherwise.
async fn lock(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Locked, ApiError> {
    sqlx::query_as(
        "SELECT state FROM surveys
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2) FOR UPDATE",
    )
    .bind(id)
    .bind(principal.org_scope())
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no survey {id}")))
}

async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE surveys SET updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(drop)
}

async fn live_questions(conn: &mut PgConnection, survey: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM survey_questions WHERE survey_id = $1 AND retired_at IS NULL",
    )
    .bind(survey)
    .fetch_one(conn)
    .await
}

/// Writes a checked question's options under `question`.
async fn insert_options(
    conn: &mut PgConnection,
    question: Uuid,
    options: &[String],
) -> Result<(), sqlx::Error> {
    for (i, label) in options.iter().enumerate() {
        sqlx::query(
            "INSERT INTO survey_options (id, question_id, position, label) VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(question)
        .bind(i as i32)
        .bind(label)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Appends a checked question to `survey`.
async fn insert_question(
    conn: &mut PgConnection,
    survey: Uuid,
    q: &NewQuestion,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let scale = q.scale.as_ref();
    sqlx::query(
        "INSERT INTO survey_questions
             (id, survey_id, position, kind, prompt, required, scale_min, scale_max, min_label, max_label)
         VALUES ($1, $2,
                 (SELECT coalesce(max(position) + 1, 0) FROM survey_questions WHERE survey_id = $2),
                 $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(survey)
    .bind(q.kind)
    .bind(&q.prompt)
    .bind(q.required)
    .bind(scale.map(|s| s.min))
    .bind(scale.map(|s| s.max))
    .bind(scale.and_then(|s| s.min_label.as_deref()))
    .bind(scale.and_then(|s| s.max_label.as_deref()))
    .execute(&mut *conn)
    .await?;
    insert_options(conn, id, &q.options).await?;
    Ok(id)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSurvey {
    /// 1–200 characters.
    pub title: String,
    /// Up to 2,000 characters.
    #[serde(default)]
    pub description: String,
    /// Up to 50 questions, in order (more can be added later).
    #[serde(default)]
    pub questions: Vec<NewQuestion>,
    /// The organisation (a global super admin must name it).
    #[serde(default)]
    pub org_id: Option<Uuid>,
}

/// `POST /api/v1/surveys {"title", "description"?, "questions"?}` → 201: a
/// draft survey of the caller's organisation.
async fn create(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewSurvey>,
) -> Result<Created<Survey>, ApiError> {
    let org = principal.target_org(body.org_id)?;
    let title = text::checked(&body.title, "title", TITLE_MAX, false)?;
    let description = text::checked(&body.description, "description", DESCRIPTION_MAX, true)?;
    if body.questions.len() > QUESTIONS_MAX {
        return Err(invalid(format!(
            "a survey holds at most {QUESTIONS_MAX} questions"
        )));
    }
    let questions = body
        .questions
        .iter()
        .map(checked_question)
        .collect::<Result<Vec<_>, _>>()?;
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO surveys (id, organisation_id, title, description, created_by)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(org)
    .bind(&title)
    .bind(&description)
    .bind(principal.user_id())
    .execute(&mut *tx)
    .await?;
    for q in &questions {
        insert_question(&mut tx, id, q).await?;
    }
    let survey = load(&mut tx, &principal, id).await?;
    tx.commit().await?;
    Ok(Created::at(format!("/api/v1/surveys/{id}"), survey))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyListQuery {
    /// The organisation (a global super admin must name it).
    org_id: Option<Uuid>,
    /// 1–500; 100 by default.
    limit: Option<i64>,
}

/// The organisation's surveys, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SurveyList {
    pub surveys: Vec<SurveyHead>,
}

/// `GET /api/v1/surveys?org_id=&limit=`.
async fn list(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<SurveyListQuery>,
) -> Result<Json<SurveyList>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    let limit = SURVEY_PAGE.of(q.limit)?;
    let surveys = sqlx::query_as(&format!(
        "SELECT {HEAD_COLUMNS} FROM surveys s WHERE s.organisation_id = $1
         ORDER BY s.created_at DESC, s.id DESC LIMIT $2"
    ))
    .bind(org)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(SurveyList { surveys }))
}

/// `GET /api/v1/surveys/{survey_id}`: the survey with every question.
async fn get(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(survey_id): ApiPath<Uuid>,
) -> Result<Json<Survey>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(load(&mut conn, &principal, survey_id).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SurveyPatch {
    /// 1–200 characters.
    title: Option<String>,
    /// Up to 2,000 characters.
    description: Option<String>,
    /// `open` (needs a live question) or `closed`; a survey never goes
    /// back to `draft`.
    state: Option<SurveyState>,
}

/// `PATCH /api/v1/surveys/{survey_id} {"title"?, "description"?, "state"?}`:
/// title and description change at any time (they do not change what an
/// answer means); the state opens or closes the survey.
async fn patch(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(survey_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<SurveyPatch>,
) -> Result<Json<Survey>, ApiError> {
    let title = body
        .title
        .as_deref()
        .map(|t| text::checked(t, "title", TITLE_MAX, false))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| text::checked(d, "description", DESCRIPTION_MAX, true))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let survey = lock(&mut tx, &principal, survey_id).await?;
    if body.state == Some(SurveyState::Draft) && survey.state != SurveyState::Draft {
        return Err(invalid(
            "a survey that was opened does not go back to draft; close it instead",
        ));
    }
    if body.state == Some(SurveyState::Open) && live_questions(&mut tx, survey_id).await? == 0 {
        return Err(invalid("a survey needs a question before it opens"));
    }
    sqlx::query(
        "UPDATE surveys SET title = coalesce($2, title), description = coalesce($3, description),
                            state = coalesce($4, state), updated_at = now()
         WHERE id = $1",
    )
    .bind(survey_id)
    .bind(title)
    .bind(description)
    .bind(body.state)
    .execute(&mut *tx)
    .await?;
    let survey = load(&mut tx, &principal, survey_id).await?;
    tx.commit().await?;
    Ok(Json(survey))
}

/// `DELETE /api/v1/surveys/{survey_id}`: only a survey nobody answered
/// (409 `survey_has_responses`: close it instead, its results stay).
async fn delete(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(survey_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    lock(&mut tx, &principal, survey_id).await?;
    let answered: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM survey_responses WHERE survey_id = $1)")
            .bind(survey_id)
            .fetch_one(&mut *tx)
            .await?;
    if answered {
        return Err(ApiError::new(
            ErrorCode::SurveyHasResponses,
            "this survey has responses; close it instead of deleting it",
        ));
    }
    sqlx::query("DELETE FROM surveys WHERE id = $1")
        .bind(survey_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(NoContent)
}

/// `POST /api/v1/surveys/{survey_id}/questions {question}` → 201: appends a
/// question, in any state (the way a running survey grows).
async fn add_question(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(survey_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewQuestion>,
) -> Result<Created<Survey>, ApiError> {
    let q = checked_question(&body)?;
    let mut tx = state.db.begin().await?;
    lock(&mut tx, &principal, survey_id).await?;
    if live_questions(&mut tx, survey_id).await? >= QUESTIONS_MAX as i64 {
        return Err(invalid(format!(
            "a survey asks at most {QUESTIONS_MAX} questions; retire one first"
        )));
    }
    insert_question(&mut tx, survey_id, &q).await?;
    touch(&mut tx, survey_id).await?;
    let survey = load(&mut tx, &principal, survey_id).await?;
    tx.commit().await?;
    Ok(Created::at(format!("/api/v1/surveys/{survey_id}"), survey))
}

#[derive(sqlx::FromRow)]
struct QuestionState {
    frozen: bool,
    retired: bool,
}

/// Question `question` of a survey the caller just locked; 404 otherwise.
async fn question_state(
    conn: &mut PgConnection,
    survey: Uuid,
    question: Uuid,
) -> Result<QuestionState, ApiError> {
    sqlx::query_as(
        "SELECT frozen_at IS NOT NULL AS frozen, retired_at IS NOT NULL AS retired
         FROM survey_questions WHERE id = $1 AND survey_id = $2",
    )
    .bind(question)
    .bind(survey)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no question {question} in survey {survey}")))
}

fn frozen() -> ApiError {
    ApiError::new(
        ErrorCode::SurveyQuestionFrozen,
        "this question was asked in a response already, so it cannot change; \
         retire it and add a new question instead",
    )
}

/// `PUT /api/v1/surveys/{survey_id}/questions/{question_id} {question}`:
/// redefines a question nobody was asked yet (409 `survey_question_frozen`
/// otherwise).
async fn replace_question(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((survey_id, question_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<NewQuestion>,
) -> Result<Json<Survey>, ApiError> {
    let q = checked_question(&body)?;
    let mut tx = state.db.begin().await?;
    lock(&mut tx, &principal, survey_id).await?;
    if question_state(&mut tx, survey_id, question_id)
        .await?
        .frozen
    {
        return Err(frozen());
    }
    let scale = q.scale.as_ref();
    sqlx::query(
        "UPDATE survey_questions SET kind = $2, prompt = $3, required = $4, scale_min = $5,
                scale_max = $6, min_label = $7, max_label = $8
         WHERE id = $1",
    )
    .bind(question_id)
    .bind(q.kind)
    .bind(&q.prompt)
    .bind(q.required)
    .bind(scale.map(|s| s.min))
    .bind(scale.map(|s| s.max))
    .bind(scale.and_then(|s| s.min_label.as_deref()))
    .bind(scale.and_then(|s| s.max_label.as_deref()))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM survey_options WHERE question_id = $1")
        .bind(question_id)
        .execute(&mut *tx)
        .await?;
    insert_options(&mut tx, question_id, &q.options).await?;
    touch(&mut tx, survey_id).await?;
    let survey = load(&mut tx, &principal, survey_id).await?;
    tx.commit().await?;
    Ok(Json(survey))
}

/// An open survey keeps at least one question to ask.
async fn keeps_a_question(
    conn: &mut PgConnection,
    survey: Uuid,
    state: SurveyState,
) -> Result<(), ApiError> {
    if state == SurveyState::Open && live_questions(conn, survey).await? <= 1 {
        return Err(invalid(
            "an open survey keeps at least one question; add another first, or close it",
        ));
    }
    Ok(())
}

/// `DELETE /api/v1/surveys/{survey_id}/questions/{question_id}`: a question
/// nobody was asked yet (409 `survey_question_frozen` otherwise: retire it).
async fn delete_question(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((survey_id, question_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    let survey = lock(&mut tx, &principal, survey_id).await?;
    let q = question_state(&mut tx, survey_id, question_id).await?;
    if q.frozen {
        return Err(frozen());
    }
    if !q.retired {
        keeps_a_question(&mut tx, survey_id, survey.state).await?;
    }
    sqlx::query("DELETE FROM survey_questions WHERE id = $1")
        .bind(question_id)
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, survey_id).await?;
    tx.commit().await?;
    Ok(NoContent)
}

/// `POST /api/v1/surveys/{survey_id}/questions/{question_id}/retire`: the
/// question is no longer asked; its answers stay in the results.
async fn retire_question(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((survey_id, question_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Survey>, ApiError> {
    let mut tx = state.db.begin().await?;
    let survey = lock(&mut tx, &principal, survey_id).await?;
    if !question_state(&mut tx, survey_id, question_id)
        .await?
        .retired
    {
        keeps_a_question(&mut tx, survey_id, survey.state).await?;
        sqlx::query("UPDATE survey_questions SET retired_at = now() WHERE id = $1")
            .bind(question_id)
            .execute(&mut *tx)
            .await?;
        touch(&mut tx, survey_id).await?;
    }
    let survey = load(&mut tx, &principal, survey_id).await?;
    tx.commit().await?;
    Ok(Json(survey))
}

/// The organisation of course `course` and survey `survey` when both are
/// the caller's and the same organisation's; 404 otherwise.
pub(crate) async fn course_and_survey(
    conn: &mut PgConnection,
    principal: &Principal,
    course: Uuid,
    survey: Uuid,
) -> Result<Uuid, ApiError> {
    let org: Option<Uuid> = sqlx::query_scalar(
        "SELECT c.organisation_id FROM courses c
         WHERE c.id = $1 AND ($2::uuid IS NULL OR c.organisation_id = $2)",
    )
    .bind(course)
    .bind(principal.org_scope())
    .fetch_optional(&mut *conn)
    .await?;
    let org = org.ok_or_else(|| ApiError::not_found(format!("no course {course}")))?;
    let same: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM surveys WHERE id = $1 AND organisation_id = $2)",
    )
    .bind(survey)
    .bind(org)
    .fetch_one(&mut *conn)
    .await?;
    if same {
        Ok(org)
    } else {
        Err(ApiError::not_found(format!("no survey {survey}")))
    }
}

/// `PUT /api/v1/courses/{course_id}/surveys/{survey_id}` → 204: the course
/// shows the survey at its completion (once the survey is open).
/// Attaching twice changes nothing.
async fn attach(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((course_id, survey_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    course_and_survey(&mut tx, &principal, course_id, survey_id).await?;
    sqlx::query(
        "INSERT INTO course_surveys (course_id, survey_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(course_id)
    .bind(survey_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(NoContent)
}

/// `DELETE /api/v1/courses/{course_id}/surveys/{survey_id}` → 204: the
/// course no longer shows the survey; responses given for it stay in the
/// results.
async fn detach(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath((course_id, survey_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    course_and_survey(&mut tx, &principal, course_id, survey_id).await?;
    let removed = sqlx::query("DELETE FROM course_surveys WHERE course_id = $1 AND survey_id = $2")
        .bind(course_id)
        .bind(survey_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found(format!(
            "survey {survey_id} is not attached to course {course_id}"
        )));
    }
    tx.commit().await?;
    Ok(NoContent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(kind: QuestionKind, options: &[&str], scale: Option<(i16, i16)>) -> NewQuestion {
        NewQuestion {
            kind,
            prompt: " 课程整体满意度 ".into(),
            required: true,
            options: options.iter().map(|o| o.to_string()).collect(),
            scale: scale.map(|(min, max)| Scale {
                min,
                max,
                min_label: Some(" 非常不满意 ".into()),
                max_label: Some(String::new()),
            }),
        }
    }

    fn code(r: Result<NewQuestion, ApiError>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn questions_are_checked_by_kind() {
        use QuestionKind::*;
        let ok = checked_question(&q(SingleChoice, &[" 是 ", "否"], None)).unwrap();
        assert_eq!(ok.prompt, "课程整体满意度");
        assert_eq!(ok.options, ["是", "否"]);
        assert_eq!(
            code(checked_question(&q(SingleChoice, &["是"], None))),
            ErrorCode::InvalidSurvey
        );
        assert_eq!(
            code(checked_question(&q(MultipleChoice, &["是", " 是"], None))),
            ErrorCode::InvalidSurvey
        );
        assert_eq!(
            code(checked_question(&q(MultipleChoice, &["是", ""], None))),
            ErrorCode::TextEmpty
        );
        let s = checked_question(&q(Scale, &[], Some((0, 10)))).unwrap();
        let scale = s.scale.unwrap();
        assert_eq!(scale.min_label.as_deref(), Some("非常不满意"));
        assert_eq!(scale.max_label, None);
        for bad in [(5, 5), (3, 1), (0, 11), (-1, 5)] {
            assert_eq!(
                code(checked_question(&q(Scale, &[], Some(bad)))),
                ErrorCode::InvalidSurvey,
                "{bad:?}"
            );
        }
        assert_eq!(
            code(checked_question(&q(Scale, &[], None))),
            ErrorCode::InvalidSurvey
        );
        assert_eq!(
            code(checked_question(&q(FreeText, &["a", "b"], None))),
            ErrorCode::InvalidSurvey
        );
        let mut long = q(FreeText, &[], None);
        long.prompt = "问".repeat(PROMPT_MAX + 1);
        assert_eq!(code(checked_question(&long)), ErrorCode::TextTooLong);
    }
}
