//! Questions to experts (consultation, 咨询): a learner asks about a
//! lesson — the experts named on its course answer — or asks one expert
//! of the organisation directly (then only that expert answers). Experts
//! work from their queue (unanswered first, oldest first, each with its
//! age); the asker accepts one answer. A question is private to its
//! asker, the experts it is for and the moderators; everyone else gets
//! 404, as for another organisation's.
//!
//! Questions and answers are posts: moderated like the rest. The experts
//! hear of a question, and the asker of an answer, when it becomes
//! visible — at once, or when a moderator approves it
//! ([`announce_question`], [`announce_answer`]) — in that transaction.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ApiQuery, ClientContext, Created, Limit};

use crate::moderation::{self, latest_reason};
use crate::text::{self, ANSWER_MAX, QUESTION_MAX};
use crate::{moderates, notices, Author, CommunityState, PostKind, PostState};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let ask = Access::Permission(Permission::AskQuestions);
    let answer = Access::Permission(Permission::AnswerQuestions);
    api.route(Method::POST, "/api/v1/questions", ask, ask_question)
        .route(Method::GET, "/api/v1/questions/mine", ask, mine)
        .route(Method::GET, "/api/v1/questions/queue", answer, queue)
        .route(
            Method::GET,
            "/api/v1/questions/{question_id}",
            Access::Session,
            get,
        )
        .route(
            Method::POST,
            "/api/v1/questions/{question_id}/answers",
            answer,
            answer_question,
        )
        .route(
            Method::POST,
            "/api/v1/questions/{question_id}/accept",
            ask,
            accept,
        )
}

const QUESTION_PAGE: Limit = Limit::new(50, 200);

/// Which experts a question is for, as SQL over `q`: the one asked, or
/// else the experts named on its course. `$U` is the expert's user id.
const FOR_EXPERT: &str = "(CASE WHEN q.expert_id IS NOT NULL
        THEN EXISTS (SELECT 1 FROM experts e WHERE e.id = q.expert_id AND e.user_id = $U)
        ELSE EXISTS (SELECT 1 FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
                      WHERE ce.course_id = q.course_id AND e.user_id = $U) END)";

fn for_expert(user: &str) -> String {
    FOR_EXPERT.replace("$U", user)
}

/// A question as the asker, its experts and moderators see it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Question {
    pub id: Uuid,
    pub course_id: Option<Uuid>,
    pub lesson_id: Option<Uuid>,
    /// The expert asked directly, if any.
    pub expert_id: Option<Uuid>,
    pub author_id: Uuid,
    /// Plain text; clients escape it.
    pub body: String,
    pub state: PostState,
    pub created_at: DateTime<Utc>,
    /// Seconds since it was asked.
    pub age_s: f64,
    /// Answers given (visible or awaiting moderation).
    pub answer_count: i64,
    /// Whether an expert has answered it.
    pub answered: bool,
    pub accepted_answer_id: Option<Uuid>,
    /// For its asker: why a moderator rejected or hid it.
    pub moderation_reason: Option<String>,
}

fn question_columns(me: &str) -> String {
    format!(
        "q.id, q.course_id, q.lesson_id, q.expert_id, q.author_id, q.body, q.state, q.created_at,
         extract(epoch FROM now() - q.created_at)::float8 AS age_s,
         (SELECT count(*) FROM answers a WHERE a.question_id = q.id
           AND a.state IN ('published', 'pending')) AS answer_count,
         EXISTS (SELECT 1 FROM answers a WHERE a.question_id = q.id
                  AND a.state IN ('published', 'pending')) AS answered,
         q.accepted_answer_id,
         CASE WHEN q.author_id = {me} AND q.state IN ('rejected', 'hidden')
              THEN {} END AS moderation_reason",
        latest_reason(PostKind::Question, "q.id")
    )
}

/// An answer.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Answer {
    pub id: Uuid,
    pub question_id: Uuid,
    pub author_id: Uuid,
    /// The answering expert's profile.
    pub expert_id: Option<Uuid>,
    /// Plain text; clients escape it.
    pub body: String,
    pub state: PostState,
    pub created_at: DateTime<Utc>,
    pub accepted: bool,
    /// For its author: why a moderator rejected or hid it.
    pub moderation_reason: Option<String>,
}

fn answer_columns(me: &str) -> String {
    format!(
        "a.id, a.question_id, a.author_id, a.expert_id, a.body, a.state, a.created_at,
         EXISTS (SELECT 1 FROM questions qq WHERE qq.id = a.question_id
                  AND qq.accepted_answer_id = a.id) AS accepted,
         CASE WHEN a.author_id = {me} AND a.state IN ('rejected', 'hidden')
              THEN {} END AS moderation_reason",
        latest_reason(PostKind::Answer, "a.id")
    )
}

/// A question with its answers.
#[derive(Serialize, schemars::JsonSchema)]
pub struct QuestionThread {
    #[serde(flatten)]
    pub question: Question,
    /// Oldest first; others' answers only once published.
    pub answers: Vec<Answer>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuestion {
    /// 1–5,000 characters of plain text.
    body: String,
    /// The lesson it is about: its course's experts answer.
    lesson_id: Option<Uuid>,
    /// An expert of the organisation to ask directly (only they answer).
    expert_id: Option<Uuid>,
}

/// `POST /api/v1/questions {"body", "lesson_id"?, "expert_id"?}` → 201:
/// about a published lesson, or to one expert, or both; at least one.
async fn ask_question(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiJson(body): ApiJson<NewQuestion>,
) -> Result<Created<QuestionThread>, ApiError> {
    let text = text::checked(&body.body, "body", QUESTION_MAX, false)?;
    let author = Author::of(&principal, &context)?;
    if body.lesson_id.is_none() && body.expert_id.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "a question is about a lesson (lesson_id), to an expert (expert_id), or both",
        ));
    }
    let mut tx = state.db.begin().await?;
    let course_id = match body.lesson_id {
        Some(lesson) => Some(
            sqlx::query_scalar::<_, Uuid>(
                "SELECT course_id FROM lessons WHERE id = $1 AND organisation_id = $2 AND published",
            )
            .bind(lesson)
            .bind(author.org_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no lesson {lesson}")))?,
        ),
        None => None,
    };
    if let Some(expert) = body.expert_id {
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM experts WHERE id = $1 AND organisation_id = $2)",
        )
        .bind(expert)
        .bind(author.org_id)
        .fetch_one(&mut *tx)
        .await?;
        if !known {
            return Err(ApiError::new(
                ErrorCode::UnknownExpert,
                format!("expert {expert} is not an expert of this organisation"),
            ));
        }
    }
    state
        .community
        .limiter
        .admit(author.user_id, author.ip.as_deref())?;
    let admission = moderation::admit(&mut tx, &state.community, author.org_id, &text).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO questions (id, organisation_id, course_id, lesson_id, expert_id, author_id, body, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(author.org_id)
    .bind(course_id)
    .bind(body.lesson_id)
    .bind(body.expert_id)
    .bind(author.user_id)
    .bind(&text)
    .bind(admission.state)
    .execute(&mut *tx)
    .await?;
    moderation::open_case(&mut tx, author.org_id, PostKind::Question, id, &admission).await?;
    if admission.state == PostState::Published {
        announce_question(&mut tx, id).await?;
    }
    let thread = thread(&mut tx, id, author.user_id).await?;
    tx.commit().await?;
    Ok(Created::at(format!("/api/v1/questions/{id}"), thread))
}

async fn thread(conn: &mut PgConnection, id: Uuid, me: Uuid) -> Result<QuestionThread, ApiError> {
    let question: Question = sqlx::query_as(&format!(
        "SELECT {} FROM questions q WHERE q.id = $1",
        question_columns("$2")
    ))
    .bind(id)
    .bind(me)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no question {id}")))?;
    let answers = sqlx::query_as(&format!(
        "SELECT {} FROM answers a WHERE a.question_id = $1
           AND (a.state = 'published' OR a.author_id = $2 OR $3)
         ORDER BY a.created_at, a.id",
        answer_columns("$2")
    ))
    .bind(id)
    .bind(me)
    .bind(false)
    .fetch_all(&mut *conn)
    .await?;
    Ok(QuestionThread { question, answers })
}

#[derive(sqlx::FromRow)]
struct QuestionAccess {
    organisation_id: Uuid,
    author_id: Uuid,
    state: PostState,
    for_me: bool,
}

/// What the caller may do with question `id`: 404 unless they asked it,
/// it is for them (an expert; published questions only) or they moderate
/// the organisation.
async fn question_access(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
    lock: bool,
) -> Result<QuestionAccess, ApiError> {
    let me = principal.user_id().unwrap_or(Uuid::nil());
    let row: Option<QuestionAccess> = sqlx::query_as(&format!(
        "SELECT q.organisation_id, q.author_id, q.state, {} AS for_me
         FROM questions q WHERE q.id = $1 AND ($3::uuid IS NULL OR q.organisation_id = $3) {}",
        for_expert("$2"),
        if lock { "FOR UPDATE" } else { "" }
    ))
    .bind(id)
    .bind(me)
    .bind(principal.org_scope())
    .fetch_optional(conn)
    .await?;
    row.filter(|q| {
        q.author_id == me || moderates(principal) || (q.for_me && q.state == PostState::Published)
    })
    .ok_or_else(|| ApiError::not_found(format!("no question {id}")))
}

/// `GET /api/v1/questions/{question_id}`: the question with its answers.
async fn get(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(question_id): ApiPath<Uuid>,
) -> Result<Json<QuestionThread>, ApiError> {
    let mut conn = state.db.acquire().await?;
    question_access(&mut conn, &principal, question_id, false).await?;
    let me = principal.user_id().unwrap_or(Uuid::nil());
    let mut t = thread(&mut conn, question_id, me).await?;
    if moderates(&principal) {
        t.answers = sqlx::query_as(&format!(
            "SELECT {} FROM answers a WHERE a.question_id = $1 ORDER BY a.created_at, a.id",
            answer_columns("$2")
        ))
        .bind(question_id)
        .bind(me)
        .fetch_all(&mut *conn)
        .await?;
    }
    Ok(Json(t))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1–200; 50 by default.
    limit: Option<i64>,
}

/// A list of questions.
#[derive(Serialize, schemars::JsonSchema)]
pub struct QuestionList {
    pub questions: Vec<Question>,
}

/// `GET /api/v1/questions/mine`: the learner's questions, newest first.
async fn mine(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<QuestionList>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let limit = QUESTION_PAGE.of(q.limit)?;
    let questions = sqlx::query_as(&format!(
        "SELECT {} FROM questions q WHERE q.author_id = $1 ORDER BY q.created_at DESC LIMIT $2",
        question_columns("$1")
    ))
    .bind(author.user_id)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(QuestionList { questions }))
}

/// `GET /api/v1/questions/queue`: the questions for the calling expert —
/// about the courses they are named on, or put to them — unanswered
/// first, oldest first, each with its age in seconds.
async fn queue(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<QuestionList>, ApiError> {
    let expert = Author::of(&principal, &context)?;
    let limit = QUESTION_PAGE.of(q.limit)?;
    let questions = sqlx::query_as(&format!(
        "SELECT * FROM (SELECT {} FROM questions q
                        WHERE q.organisation_id = $2 AND q.state = 'published' AND {}) q
         ORDER BY q.answered, q.created_at, q.id LIMIT $3",
        question_columns("$1"),
        for_expert("$1")
    ))
    .bind(expert.user_id)
    .bind(expert.org_id)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(QuestionList { questions }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAnswer {
    /// 1–10,000 characters of plain text.
    body: String,
}

/// `POST /api/v1/questions/{question_id}/answers {"body"}` → 201: only an
/// expert the question is for (named on its course, or the one asked);
/// any other caller gets 404.
async fn answer_question(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(question_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewAnswer>,
) -> Result<Created<Answer>, ApiError> {
    let text = text::checked(&body.body, "body", ANSWER_MAX, false)?;
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    let q = question_access(&mut tx, &principal, question_id, true).await?;
    if !(q.for_me && q.state == PostState::Published) {
        return Err(ApiError::not_found(format!("no question {question_id}")));
    }
    state
        .community
        .limiter
        .admit(author.user_id, author.ip.as_deref())?;
    let expert_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM experts WHERE user_id = $1 AND organisation_id = $2 ORDER BY created_at LIMIT 1",
    )
    .bind(author.user_id)
    .bind(q.organisation_id)
    .fetch_optional(&mut *tx)
    .await?;
    let admission = moderation::admit(&mut tx, &state.community, q.organisation_id, &text).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO answers (id, organisation_id, question_id, author_id, expert_id, body, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(q.organisation_id)
    .bind(question_id)
    .bind(author.user_id)
    .bind(expert_id)
    .bind(&text)
    .bind(admission.state)
    .execute(&mut *tx)
    .await?;
    moderation::open_case(&mut tx, q.organisation_id, PostKind::Answer, id, &admission).await?;
    if admission.state == PostState::Published {
        announce_answer(&mut tx, id).await?;
    }
    let answer: Answer = sqlx::query_as(&format!(
        "SELECT {} FROM answers a WHERE a.id = $1",
        answer_columns("$2")
    ))
    .bind(id)
    .bind(author.user_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Created::at(
        format!("/api/v1/questions/{question_id}"),
        answer,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    answer_id: Uuid,
}

/// `POST /api/v1/questions/{question_id}/accept {"answer_id"}`: the asker
/// accepts one published answer (once: 409 `answer_already_accepted`).
async fn accept(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(question_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Acceptance>,
) -> Result<Json<QuestionThread>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    let q = question_access(&mut tx, &principal, question_id, true).await?;
    if q.author_id != author.user_id {
        return Err(ApiError::not_found(format!(
            "no question {question_id} of yours"
        )));
    }
    #[derive(sqlx::FromRow)]
    struct Accepted {
        accepted_answer_id: Option<Uuid>,
        answerer: Option<Uuid>,
        answer_body: Option<String>,
    }
    let row: Accepted = sqlx::query_as(
        "SELECT q.accepted_answer_id, a.author_id AS answerer, a.body AS answer_body
         FROM questions q LEFT JOIN answers a
           ON a.id = $2 AND a.question_id = q.id AND a.state = 'published'
         WHERE q.id = $1",
    )
    .bind(question_id)
    .bind(body.answer_id)
    .fetch_one(&mut *tx)
    .await?;
    if row.accepted_answer_id.is_some() {
        return Err(ApiError::new(
            ErrorCode::AnswerAlreadyAccepted,
            "this question has an accepted answer already",
        ));
    }
    let (Some(answerer), Some(answer_body)) = (row.answerer, row.answer_body) else {
        return Err(ApiError::not_found(format!(
            "no answer {} to this question",
            body.answer_id
        )));
    };
    sqlx::query("UPDATE questions SET accepted_answer_id = $2 WHERE id = $1")
        .bind(question_id)
        .bind(body.answer_id)
        .execute(&mut *tx)
        .await?;
    notices::answer_accepted(
        &mut tx,
        q.organisation_id,
        answerer,
        &text::excerpt(&answer_body),
        question_id,
    )
    .await?;
    let t = thread(&mut tx, question_id, author.user_id).await?;
    tx.commit().await?;
    Ok(Json(t))
}

#[derive(sqlx::FromRow)]
struct Announced {
    organisation_id: Uuid,
    body: String,
    course_title: Option<String>,
    lesson_title: Option<String>,
    experts: Vec<Uuid>,
}

/// Tells the experts a question is for that it is waiting (it just
/// became visible), in the caller's transaction.
pub async fn announce_question(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    let q: Announced = sqlx::query_as(
        "SELECT q.organisation_id, q.body, c.title AS course_title, l.title AS lesson_title,
                CASE WHEN q.expert_id IS NOT NULL
                     THEN ARRAY(SELECT e.user_id FROM experts e
                                 WHERE e.id = q.expert_id AND e.user_id IS NOT NULL)
                     ELSE ARRAY(SELECT DISTINCT e.user_id FROM course_experts ce
                                  JOIN experts e ON e.id = ce.expert_id
                                 WHERE ce.course_id = q.course_id AND e.user_id IS NOT NULL)
                END AS experts
         FROM questions q
         LEFT JOIN courses c ON c.id = q.course_id
         LEFT JOIN lessons l ON l.id = q.lesson_id
         WHERE q.id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    notices::question_asked(
        conn,
        q.organisation_id,
        &q.experts,
        q.course_title.as_deref().unwrap_or(""),
        q.lesson_title.as_deref().unwrap_or(""),
        &text::excerpt(&q.body),
        id,
    )
    .await
}

/// Tells the asker an answer is there (it just became visible).
pub async fn announce_answer(conn: &mut PgConnection, answer_id: Uuid) -> Result<(), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        organisation_id: Uuid,
        asker: Uuid,
        body: String,
        course_title: Option<String>,
        course_id: Option<Uuid>,
        lesson_id: Option<Uuid>,
    }
    let r: Row = sqlx::query_as(
        "SELECT a.organisation_id, q.author_id AS asker, a.body,
                c.title AS course_title, q.course_id, q.lesson_id
         FROM answers a JOIN questions q ON q.id = a.question_id
         LEFT JOIN courses c ON c.id = q.course_id
         WHERE a.id = $1",
    )
    .bind(answer_id)
    .fetch_one(&mut *conn)
    .await?;
    notices::question_answered(
        conn,
        r.organisation_id,
        r.asker,
        r.course_title.as_deref().unwrap_or(""),
        &text::excerpt(&r.body),
        r.course_id,
        r.lesson_id,
    )
    .await
}
