//! Answering: a course lists the surveys attached to it
//! (`GET /api/v1/courses/{course_id}/surveys`: learners see open ones,
//! with whether they completed the course and whether they answered), and
//! a learner who completed the course answers each open survey once
//! (`POST …/surveys/{survey_id}/responses`).
//!
//! **Completion** is read from the learning tables: every lesson of the
//! course has `lesson_progress.completed_at` for the learner (≥ 90 %
//! watched, the rule `learning` stamps), see [`course_completed`]. It
//! reads what the progress flusher wrote, so a lesson finished in the
//! last seconds counts from the next flush on. Answering earlier is 409
//! `course_not_completed`.
//!
//! **Once**: one response per learner × survey × course (a unique key),
//! never edited — a second is 409 `survey_already_answered`. Satisfaction
//! figures then mean "what learners said at completion", and nobody can
//! swing a course's results by answering repeatedly. A closed survey
//! takes no responses (409 `survey_closed`); a draft one is invisible to
//! learners (404).
//!
//! Free text is checked like every user text ([`crate::text::checked`],
//! 2,000 characters) and stored as text. It is not a post: only the
//! organisation's survey operators read it, never other learners, so it
//! does not pass the moderation queue (holding a complaint for a
//! moderator would only delay it reaching the people it is for).

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ClientContext, Created};

use super::{questions_of, QuestionKind, SurveyQuestion, SurveyState};
use crate::text::{self, SURVEY_TEXT_MAX};
use crate::{Author, CommunityState};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    api.route(
        Method::GET,
        "/api/v1/courses/{course_id}/surveys",
        Access::Session,
        course_surveys,
    )
    .route(
        Method::POST,
        "/api/v1/courses/{course_id}/surveys/{survey_id}/responses",
        Access::Permission(Permission::AnswerSurveys),
        respond,
    )
}

/// Whether `user` completed every lesson of `course` (and it has one), as
/// `lesson_progress` records it.
pub async fn course_completed(
    conn: &mut PgConnection,
    user: Uuid,
    course: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) > 0 AND count(*) = count(lp.completed_at)
         FROM lessons l
         LEFT JOIN lesson_progress lp ON lp.lesson_id = l.id AND lp.user_id = $2
         WHERE l.course_id = $1",
    )
    .bind(course)
    .bind(user)
    .fetch_one(conn)
    .await
}

/// A survey as a course shows it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CourseSurvey {
    pub id: Uuid,
    /// Plain text; clients escape it.
    pub title: String,
    /// Plain text; clients escape it.
    pub description: String,
    pub state: SurveyState,
    /// The questions to ask, in order (retired ones left out).
    pub questions: Vec<SurveyQuestion>,
    /// When the caller answered it for this course; null if not yet.
    pub answered_at: Option<DateTime<Utc>>,
}

/// The surveys a course shows at its completion.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CourseSurveys {
    pub course_id: Uuid,
    /// Whether the caller completed every lesson (then open surveys not
    /// yet answered may be answered).
    pub completed: bool,
    /// Learners see open surveys; survey operators every attached one.
    pub surveys: Vec<CourseSurvey>,
}

#[derive(sqlx::FromRow)]
struct AttachedRow {
    id: Uuid,
    title: String,
    description: String,
    state: SurveyState,
    answered_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/courses/{course_id}/surveys`.
async fn course_surveys(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<CourseSurveys>, ApiError> {
    let operator = Permission::ManageSurveys.granted_to(principal.role);
    let me = principal.user_id().unwrap_or(Uuid::nil());
    let mut conn = state.db.acquire().await?;
    let visible: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM courses WHERE id = $1
                          AND ($2::uuid IS NULL OR organisation_id = $2)
                          AND ($3 OR state = 'published'))",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .bind(operator)
    .fetch_one(&mut *conn)
    .await?;
    if !visible {
        return Err(ApiError::not_found(format!("no course {course_id}")));
    }
    let rows: Vec<AttachedRow> = sqlx::query_as(
        "SELECT s.id, s.title, s.description, s.state,
                (SELECT r.submitted_at FROM survey_responses r
                  WHERE r.survey_id = s.id AND r.course_id = $1 AND r.user_id = $2) AS answered_at
         FROM course_surveys cs JOIN surveys s ON s.id = cs.survey_id
         WHERE cs.course_id = $1 AND ($3 OR s.state = 'open')
         ORDER BY cs.attached_at, s.id",
    )
    .bind(course_id)
    .bind(me)
    .bind(operator)
    .fetch_all(&mut *conn)
    .await?;
    let mut surveys = Vec::with_capacity(rows.len());
    for r in rows {
        surveys.push(CourseSurvey {
            questions: questions_of(&mut conn, r.id, false).await?,
            id: r.id,
            title: r.title,
            description: r.description,
            state: r.state,
            answered_at: r.answered_at,
        });
    }
    let completed = course_completed(&mut conn, me, course_id).await?;
    Ok(Json(CourseSurveys {
        course_id,
        completed,
        surveys,
    }))
}

/// One answer of a response: `option_ids` for a choice question (exactly
/// one for single choice), `value` for a scale, `text` for free text.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GivenAnswer {
    pub question_id: Uuid,
    #[serde(default)]
    pub option_ids: Vec<Uuid>,
    #[serde(default)]
    pub value: Option<i16>,
    /// Up to 2,000 characters of plain text; empty counts as not answered.
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResponse {
    /// One entry per answered question; leave optional questions out to
    /// skip them.
    pub answers: Vec<GivenAnswer>,
}

/// An answer that fits its question.
#[derive(Debug, PartialEq)]
pub(crate) enum Checked {
    Choices(Uuid, Vec<Uuid>),
    Value(Uuid, i16),
    Text(Uuid, String),
}

fn wrong(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSurveyAnswer, message)
}

/// The answers checked against the live questions, or why they do not fit.
pub(crate) fn check_answers(
    questions: &[SurveyQuestion],
    answers: &[GivenAnswer],
) -> Result<Vec<Checked>, ApiError> {
    let by_id: HashMap<Uuid, &SurveyQuestion> = questions.iter().map(|q| (q.id, q)).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(answers.len());
    for a in answers {
        let q = by_id.get(&a.question_id).ok_or_else(|| {
            wrong(format!(
                "question {} is not asked by this survey",
                a.question_id
            ))
        })?;
        if !seen.insert(q.id) {
            return Err(wrong(format!("question {} is answered twice", q.id)));
        }
        let only = |options: bool, value: bool, text: bool| -> Result<(), ApiError> {
            if (!options && !a.option_ids.is_empty())
                || (!value && a.value.is_some())
                || (!text && a.text.is_some())
            {
                let field = match q.kind {
                    QuestionKind::SingleChoice | QuestionKind::MultipleChoice => "option_ids",
                    QuestionKind::Scale => "value",
                    QuestionKind::FreeText => "text",
                };
                return Err(wrong(format!(
                    "question {} is answered with `{field}` only",
                    q.id
                )));
            }
            Ok(())
        };
        match q.kind {
            QuestionKind::SingleChoice | QuestionKind::MultipleChoice => {
                only(true, false, false)?;
                let single = q.kind == QuestionKind::SingleChoice;
                if a.option_ids.is_empty() || (single && a.option_ids.len() != 1) {
                    return Err(wrong(format!(
                        "question {} takes {} option",
                        q.id,
                        if single {
                            "exactly one"
                        } else {
                            "at least one"
                        }
                    )));
                }
                let mut chosen = HashSet::new();
                for o in &a.option_ids {
                    if !q.options.iter().any(|x| x.id == *o) {
                        return Err(wrong(format!("{o} is not an option of question {}", q.id)));
                    }
                    if !chosen.insert(*o) {
                        return Err(wrong(format!("option {o} is chosen twice")));
                    }
                }
                out.push(Checked::Choices(q.id, a.option_ids.clone()));
            }
            QuestionKind::Scale => {
                only(false, true, false)?;
                let scale = q.scale.as_ref().expect("a scale question has a scale");
                match a.value {
                    Some(v) if (scale.min..=scale.max).contains(&v) => {
                        out.push(Checked::Value(q.id, v))
                    }
                    _ => {
                        return Err(wrong(format!(
                            "question {} takes a whole number from {} to {}",
                            q.id, scale.min, scale.max
                        )))
                    }
                }
            }
            QuestionKind::FreeText => {
                only(false, false, true)?;
                let t = text::checked(
                    a.text.as_deref().unwrap_or(""),
                    "text",
                    SURVEY_TEXT_MAX,
                    true,
                )?;
                if !t.is_empty() {
                    out.push(Checked::Text(q.id, t));
                }
            }
        }
    }
    let answered: HashSet<Uuid> = out
        .iter()
        .map(|c| match c {
            Checked::Choices(q, _) | Checked::Value(q, _) | Checked::Text(q, _) => *q,
        })
        .collect();
    if let Some(q) = questions
        .iter()
        .find(|q| q.required && !answered.contains(&q.id))
    {
        return Err(wrong(format!(
            "question {} ({}) must be answered",
            q.id,
            text::excerpt(&q.prompt)
        )));
    }
    Ok(out)
}

/// A response received.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SubmittedResponse {
    pub id: Uuid,
    pub survey_id: Uuid,
    pub course_id: Uuid,
    pub submitted_at: DateTime<Utc>,
    /// Questions answered.
    pub answered: usize,
}

/// `POST /api/v1/courses/{course_id}/surveys/{survey_id}/responses
/// {"answers": […]}` → 201: the learner's one response to an open survey
/// attached to a published course they completed.
async fn respond(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath((course_id, survey_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<NewResponse>,
) -> Result<Created<SubmittedResponse>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    // FOR SHARE: an operator's edit of the questions (FOR UPDATE) waits
    // for this response, or this response for the edit.
    let survey: Option<SurveyState> = sqlx::query_scalar(
        "SELECT s.state FROM surveys s
         JOIN course_surveys cs ON cs.survey_id = s.id AND cs.course_id = $2
         JOIN courses c ON c.id = cs.course_id AND c.state = 'published'
         WHERE s.id = $1 AND s.organisation_id = $3
         FOR SHARE OF s",
    )
    .bind(survey_id)
    .bind(course_id)
    .bind(author.org_id)
    .fetch_optional(&mut *tx)
    .await?;
    match survey {
        None | Some(SurveyState::Draft) => {
            return Err(ApiError::not_found(format!(
                "no survey {survey_id} on course {course_id}"
            )))
        }
        Some(SurveyState::Closed) => {
            return Err(ApiError::new(
                ErrorCode::SurveyClosed,
                "this survey is closed and takes no more responses",
            ))
        }
        Some(SurveyState::Open) => {}
    }
    if !course_completed(&mut tx, author.user_id, course_id).await? {
        return Err(ApiError::new(
            ErrorCode::CourseNotCompleted,
            "this survey is answered once you have completed every lesson of the course",
        ));
    }
    let already = || {
        ApiError::new(
            ErrorCode::SurveyAlreadyAnswered,
            "you have answered this survey for this course already",
        )
    };
    let answered: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM survey_responses
                         WHERE survey_id = $1 AND course_id = $2 AND user_id = $3)",
    )
    .bind(survey_id)
    .bind(course_id)
    .bind(author.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if answered {
        return Err(already());
    }
    let questions = questions_of(&mut tx, survey_id, false).await?;
    let checked = check_answers(&questions, &body.answers)?;
    let id = Uuid::now_v7();
    // Two submissions racing past the check above meet at the unique key.
    let submitted_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO survey_responses (id, organisation_id, survey_id, course_id, user_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (survey_id, course_id, user_id) DO NOTHING
         RETURNING submitted_at",
    )
    .bind(id)
    .bind(author.org_id)
    .bind(survey_id)
    .bind(course_id)
    .bind(author.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let submitted_at = submitted_at.ok_or_else(already)?;
    for answer in &checked {
        let (question, value, body) = match answer {
            Checked::Choices(q, _) => (*q, None, None),
            Checked::Value(q, v) => (*q, Some(*v), None),
            Checked::Text(q, t) => (*q, None, Some(t.as_str())),
        };
        sqlx::query(
            "INSERT INTO survey_answers (response_id, question_id, value, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(question)
        .bind(value)
        .bind(body)
        .execute(&mut *tx)
        .await?;
        if let Checked::Choices(q, options) = answer {
            sqlx::query(
                "INSERT INTO survey_choices (response_id, question_id, option_id)
                 SELECT $1, $2, unnest($3::uuid[])",
            )
            .bind(id)
            .bind(q)
            .bind(options)
            .execute(&mut *tx)
            .await?;
        }
    }
    // Every question this response was asked is frozen from now on.
    sqlx::query(
        "UPDATE survey_questions SET frozen_at = now()
         WHERE survey_id = $1 AND retired_at IS NULL AND frozen_at IS NULL",
    )
    .bind(survey_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Created::at(
        format!("/api/v1/courses/{course_id}/surveys"),
        SubmittedResponse {
            id,
            survey_id,
            course_id,
            submitted_at,
            answered: checked.len(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surveys::{Scale, SurveyOption};

    fn question(kind: QuestionKind, required: bool) -> SurveyQuestion {
        SurveyQuestion {
            id: Uuid::now_v7(),
            position: 0,
            kind,
            prompt: "满意吗".into(),
            required,
            options: match kind {
                QuestionKind::SingleChoice | QuestionKind::MultipleChoice => (0..3)
                    .map(|i| SurveyOption {
                        id: Uuid::now_v7(),
                        label: format!("选项{i}"),
                    })
                    .collect(),
                _ => Vec::new(),
            },
            scale: (kind == QuestionKind::Scale).then_some(Scale {
                min: 1,
                max: 5,
                min_label: None,
                max_label: None,
            }),
            frozen: false,
            retired: false,
        }
    }

    fn given(q: &SurveyQuestion) -> GivenAnswer {
        GivenAnswer {
            question_id: q.id,
            option_ids: Vec::new(),
            value: None,
            text: None,
        }
    }

    fn code(questions: &[SurveyQuestion], answers: &[GivenAnswer]) -> ErrorCode {
        check_answers(questions, answers).unwrap_err().code
    }

    #[test]
    fn answers_must_fit_their_questions() {
        let single = question(QuestionKind::SingleChoice, true);
        let multi = question(QuestionKind::MultipleChoice, false);
        let scale = question(QuestionKind::Scale, true);
        let free = question(QuestionKind::FreeText, false);
        let qs = [single.clone(), multi.clone(), scale.clone(), free.clone()];
        let good = [
            GivenAnswer {
                option_ids: vec![single.options[1].id],
                ..given(&single)
            },
            GivenAnswer {
                value: Some(5),
                ..given(&scale)
            },
            GivenAnswer {
                text: Some("  ".into()),
                ..given(&free)
            },
        ];
        let ok = check_answers(&qs, &good).unwrap();
        // Empty free text counts as skipped; the optional multiple choice too.
        assert_eq!(
            ok,
            [
                Checked::Choices(single.id, vec![single.options[1].id]),
                Checked::Value(scale.id, 5)
            ]
        );
        let invalid = ErrorCode::InvalidSurveyAnswer;
        // A required question left out.
        assert_eq!(code(&qs, &good[..1]), invalid);
        // Two options for a single choice; another question's option.
        let mut two = good.clone();
        two[0].option_ids.push(single.options[0].id);
        assert_eq!(code(&qs, &two), invalid);
        let mut foreign = good.to_vec();
        foreign.push(GivenAnswer {
            option_ids: vec![single.options[0].id],
            ..given(&multi)
        });
        assert_eq!(code(&qs, &foreign), invalid);
        // Out of the scale; the wrong field for the kind.
        let mut high = good.clone();
        high[1].value = Some(6);
        assert_eq!(code(&qs, &high), invalid);
        let mut text_on_scale = good.clone();
        text_on_scale[1].text = Some("5".into());
        assert_eq!(code(&qs, &text_on_scale), invalid);
        // The same question twice; a question of another survey.
        let mut twice = good.to_vec();
        twice.push(good[1].clone());
        assert_eq!(code(&qs, &twice), invalid);
        let mut unknown = good.to_vec();
        unknown.push(GivenAnswer {
            value: Some(3),
            ..given(&question(QuestionKind::Scale, false))
        });
        assert_eq!(code(&qs, &unknown), invalid);
        // Free text is length-limited like every user text.
        let mut long = good.clone();
        long[2].text = Some("字".repeat(SURVEY_TEXT_MAX + 1));
        assert_eq!(code(&qs, &long), ErrorCode::TextTooLong);
    }
}
