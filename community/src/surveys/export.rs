//! The CSV export of a survey's responses
//! (`GET /api/v1/surveys/{survey_id}/responses.csv?course_id=`): one row
//! per response, oldest first — `response_id, course_id, course_title,
//! submitted_at`, then one column per question (retired ones included),
//! holding the chosen option labels (joined with `; `), the scale value
//! or the free text. No learner's identity is in it.
//!
//! The body is streamed: pages of [`PAGE`] responses are read by keyset
//! (`survey_responses.id` is a UUIDv7) and written with the `csv` crate as
//! they come, so an export of any size holds one page in memory and no
//! database connection between pages (a slow download pins nothing). A
//! database failure mid-way ends the body early (the client sees a
//! truncated transfer, never a complete-looking file).
//!
//! Every cell — the learners' text, and the operator's prompts and labels
//! too — passes the one formula-injection guard,
//! [`lectern_identity::audit::formula_guard`], before the writer quotes
//! it. The file starts with a UTF-8 byte-order mark so spreadsheet
//! programs read Chinese text correctly. Each export is audited
//! (`surveys.export`, with the survey and course, never contents).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use lectern_identity::audit::{self, formula_guard, AuditEvent};
use lectern_web::doc::{DocOutput, Operation, Schemas};
use lectern_web::{Access, ApiError, ApiRouter, Permission, Principal};
use lectern_web::{ApiPath, ApiQuery, ClientContext};

use super::{questions_of, SurveyQuestion};
use crate::CommunityState;

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    api.route(
        Method::GET,
        "/api/v1/surveys/{survey_id}/responses.csv",
        Access::Permission(Permission::ManageSurveys),
        export,
    )
}

/// Responses read and written per step of the stream.
const PAGE: i64 = 500;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Only this course's responses; every course's when omitted.
    course_id: Option<Uuid>,
}

/// A streamed `text/csv` attachment.
pub struct CsvExport {
    filename: String,
    body: Body,
}

impl IntoResponse for CsvExport {
    fn into_response(self) -> Response {
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", self.filename),
                ),
            ],
            self.body,
        )
            .into_response()
    }
}

impl DocOutput for CsvExport {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        op.raw(
            200,
            "text/csv",
            "one row per response (oldest first): response_id, course_id, course_title, \
             submitted_at, then one column per question; formulas defused",
        );
    }
}

/// `GET /api/v1/surveys/{survey_id}/responses.csv?course_id=`.
async fn export(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(survey_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<CsvExport, ApiError> {
    let mut conn = state.db.acquire().await?;
    let org: Uuid = sqlx::query_scalar(
        "SELECT organisation_id FROM surveys
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(survey_id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no survey {survey_id}")))?;
    if let Some(course) = q.course_id {
        let same: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM courses WHERE id = $1 AND organisation_id = $2)",
        )
        .bind(course)
        .bind(org)
        .fetch_one(&mut *conn)
        .await?;
        if !same {
            return Err(ApiError::not_found(format!("no course {course}")));
        }
    }
    let questions = questions_of(&mut conn, survey_id, true).await?;
    drop(conn);
    audit::record_or_log(
        &state.identity,
        &AuditEvent {
            action: "surveys.export".into(),
            target: Some(format!("survey:{survey_id}")),
            outcome: "ok",
            detail: Some(
                serde_json::json!({ "survey_id": survey_id, "course_id": q.course_id }).to_string(),
            ),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    let pages = Pages {
        db: state.db.clone(),
        survey: survey_id,
        course: q.course_id,
        questions: Arc::new(questions),
        after: None,
        step: Step::Header,
    };
    let body = Body::from_stream(stream::unfold(pages, |mut p| async move {
        let chunk = p.next_chunk().await;
        chunk.map(|c| (c, p))
    }));
    Ok(CsvExport {
        filename: match q.course_id {
            Some(c) => format!("survey-{survey_id}-course-{c}.csv"),
            None => format!("survey-{survey_id}.csv"),
        },
        body,
    })
}

enum Step {
    Header,
    Rows,
    Done,
}

/// The stream's state between chunks.
struct Pages {
    db: PgPool,
    survey: Uuid,
    course: Option<Uuid>,
    questions: Arc<Vec<SurveyQuestion>>,
    /// The last response written.
    after: Option<Uuid>,
    step: Step,
}

#[derive(sqlx::FromRow)]
struct ResponseRow {
    id: Uuid,
    course_id: Uuid,
    course_title: String,
    submitted_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct AnswerRow {
    response_id: Uuid,
    question_id: Uuid,
    value: Option<i16>,
    body: Option<String>,
    labels: Vec<String>,
}

type Chunk = Result<Vec<u8>, std::io::Error>;

impl Pages {
    /// The next piece of the file, or `None` when it is complete.
    async fn next_chunk(&mut self) -> Option<Chunk> {
        match self.step {
            Step::Header => {
                self.step = Step::Rows;
                Some(self.header())
            }
            Step::Rows => match self.rows().await {
                Ok((bytes, more)) => {
                    if !more {
                        self.step = Step::Done;
                    }
                    Some(Ok(bytes))
                }
                Err(e) => {
                    tracing::warn!(error = %e, survey = %self.survey, "survey export failed mid-way");
                    self.step = Step::Done;
                    Some(Err(std::io::Error::other(e)))
                }
            },
            Step::Done => None,
        }
    }

    fn header(&self) -> Chunk {
        let mut w = writer();
        let mut record = vec![
            "response_id".to_string(),
            "course_id".into(),
            "course_title".into(),
            "submitted_at".into(),
        ];
        record.extend(self.questions.iter().enumerate().map(|(i, q)| {
            format!(
                "Q{} {}{}",
                i + 1,
                q.prompt,
                if q.retired { " (retired)" } else { "" }
            )
        }));
        write(&mut w, &record)?;
        let mut bytes = "\u{feff}".as_bytes().to_vec();
        bytes.extend(finish(w)?);
        Ok(bytes)
    }

    /// One page of responses as CSV, and whether more may follow.
    async fn rows(&mut self) -> Result<(Vec<u8>, bool), sqlx::Error> {
        let responses: Vec<ResponseRow> = sqlx::query_as(
            "SELECT r.id, r.course_id, c.title AS course_title, r.submitted_at
             FROM survey_responses r JOIN courses c ON c.id = r.course_id
             WHERE r.survey_id = $1 AND ($2::uuid IS NULL OR r.course_id = $2)
               AND ($3::uuid IS NULL OR r.id > $3)
             ORDER BY r.id LIMIT $4",
        )
        .bind(self.survey)
        .bind(self.course)
        .bind(self.after)
        .bind(PAGE)
        .fetch_all(&self.db)
        .await?;
        let ids: Vec<Uuid> = responses.iter().map(|r| r.id).collect();
        let answers: Vec<AnswerRow> = sqlx::query_as(
            "SELECT a.response_id, a.question_id, a.value, a.body,
                    coalesce(array_agg(o.label ORDER BY o.position)
                             FILTER (WHERE o.id IS NOT NULL), '{}') AS labels
             FROM survey_answers a
             LEFT JOIN survey_choices ch
                    ON ch.response_id = a.response_id AND ch.question_id = a.question_id
             LEFT JOIN survey_options o ON o.id = ch.option_id
             WHERE a.response_id = ANY($1)
             GROUP BY a.response_id, a.question_id, a.value, a.body",
        )
        .bind(&ids)
        .fetch_all(&self.db)
        .await?;
        let answers: HashMap<(Uuid, Uuid), AnswerRow> = answers
            .into_iter()
            .map(|a| ((a.response_id, a.question_id), a))
            .collect();
        let mut w = writer();
        for r in &responses {
            let mut record = vec![
                r.id.to_string(),
                r.course_id.to_string(),
                r.course_title.clone(),
                r.submitted_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            ];
            record.extend(
                self.questions
                    .iter()
                    .map(|q| match answers.get(&(r.id, q.id)) {
                        None => String::new(),
                        Some(a) => match (&a.value, &a.body) {
                            (Some(v), _) => v.to_string(),
                            (None, Some(body)) => body.clone(),
                            (None, None) => a.labels.join("; "),
                        },
                    }),
            );
            write(&mut w, &record).map_err(sqlx::Error::Io)?;
        }
        self.after = responses.last().map(|r| r.id);
        let bytes = finish(w).map_err(sqlx::Error::Io)?;
        Ok((bytes, responses.len() as i64 == PAGE))
    }
}

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

/// Writes one record, every cell through the formula guard.
fn write(w: &mut csv::Writer<Vec<u8>>, record: &[String]) -> Result<(), std::io::Error> {
    w.write_record(record.iter().map(|f| formula_guard(f).into_owned()))
        .map_err(std::io::Error::other)
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, std::io::Error> {
    w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_by_the_writer_and_defused_by_the_guard() {
        let mut w = writer();
        write(
            &mut w,
            &[
                "=HYPERLINK(\"http://x\",\"点\")".into(),
                "a,b".into(),
                "+1".into(),
                "正常".into(),
            ],
        )
        .unwrap();
        let out = String::from_utf8(finish(w).unwrap()).unwrap();
        assert_eq!(
            out,
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"点\"\")\",\"a,b\",'+1,正常\r\n"
        );
    }
}
