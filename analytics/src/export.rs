//! Exports: reports as CSV (the `csv` crate) or XLSX (`rust_xlsxwriter` in
//! constant-memory mode: each row goes to a temporary file as it is
//! written, so a million rows never sit in memory).
//!
//! A report is produced as a stream of rows ([`produce`]) in batches into a
//! bounded channel: the database is read with a cursor (`fetch`, never
//! `fetch_all`), and the consumer — the HTTP body of a streamed CSV, or a
//! background job's file writer — takes rows as they come. Every text
//! cell goes through `lectern_identity::audit::formula_guard`, so a course
//! title or a name starting with `=` is never a spreadsheet formula.
//!
//! Large exports are jobs (`report_exports`): `POST /api/v1/reports/exports`
//! queues one; the export task ([`run`], in the task set) takes it, writes
//! the file with progress (`rows_written`), puts it in object storage
//! under `exports/<org>/<id>.<ext>` and marks it done; the download route
//! streams it back. Exports naming learners (personal data) need
//! `ExportLearnerRecords`, which requires a step-up, and each is audited
//! with what was exported.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_identity::audit::{self, formula_guard, AuditEvent};
use lectern_secrets::Keyring;
use lectern_storage::PutOptions;
use lectern_web::Principal;
use lectern_web::{Accepted, ApiError, ApiJson, ApiPath, ApiQuery, ClientContext, ErrorCode};

use crate::filter::{self, ReportQuery, Scope};
use crate::reports::course_figures;
use crate::AnalyticsState;

/// One cell of an exported row. Repeated text (days, titles, emails) is
/// shared and ids are kept as values: a million-row export then makes no
/// allocation per cell on the way to the writer, which formats them.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    /// Text repeated on many rows: a title or an email, opened once.
    Shared(Arc<str>),
    Uuid(Uuid),
    Number(f64),
    Empty,
}

/// Scratch space for formatting a cell that is not text already.
struct CellText {
    buf: String,
    uuid: [u8; uuid::fmt::Hyphenated::LENGTH],
}

impl Default for CellText {
    fn default() -> Self {
        Self {
            buf: String::new(),
            uuid: [0; uuid::fmt::Hyphenated::LENGTH],
        }
    }
}

impl CellText {
    /// The cell as it is written to a CSV field or a spreadsheet string,
    /// every text cell through `formula_guard`. Numbers are for CSV only:
    /// whole ones printed as integers, without going through f64 Display.
    fn text<'a>(&'a mut self, cell: &'a Cell) -> std::borrow::Cow<'a, str> {
        use std::fmt::Write as _;
        match cell {
            Cell::Text(t) => formula_guard(t),
            Cell::Shared(t) => formula_guard(t),
            Cell::Uuid(u) => formula_guard(u.hyphenated().encode_lower(&mut self.uuid)),
            Cell::Number(n) => {
                self.buf.clear();
                if n.fract() == 0.0 && n.abs() < 1e15 {
                    let _ = write!(self.buf, "{}", *n as i64);
                } else {
                    let _ = write!(self.buf, "{n}");
                }
                std::borrow::Cow::Borrowed(&self.buf)
            }
            Cell::Empty => std::borrow::Cow::Borrowed(""),
        }
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Empty, Cell::Number)
    }
}

/// The exportable reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// One row per course (the course report).
    Courses,
    /// One row per learner × lesson × day: learner id and email (personal data).
    LearnerActivity,
}

impl Report {
    fn as_str(self) -> &'static str {
        match self {
            Report::Courses => "courses",
            Report::LearnerActivity => "learner_activity",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "courses" => Some(Report::Courses),
            "learner_activity" => Some(Report::LearnerActivity),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// Rows travel between the database and the writer in batches: one
/// channel hand-off (a task wake-up) per row cost as much as writing it.
/// A batch is flat (rows of `width` cells one after another): no
/// allocation per row.
#[derive(Debug, Default)]
pub struct Batch {
    width: usize,
    cells: Vec<Cell>,
}

impl Batch {
    fn with_capacity(width: usize) -> Self {
        Self {
            width,
            cells: Vec::with_capacity(width * BATCH_ROWS),
        }
    }

    fn rows(&self) -> impl Iterator<Item = &[Cell]> {
        self.cells.chunks(self.width.max(1))
    }

    fn len(&self) -> usize {
        self.cells.len() / self.width.max(1)
    }
}

const BATCH_ROWS: usize = 512;
/// Batches in flight: 8,192 rows.
const CHANNEL_BATCHES: usize = 16;

/// The channel [`produce`] writes into and [`write_file`] reads.
pub fn channel() -> (mpsc::Sender<Batch>, mpsc::Receiver<Batch>) {
    mpsc::channel(CHANNEL_BATCHES)
}

/// Collects rows into batches for `tx`; false once the receiver is gone.
struct Batcher {
    tx: mpsc::Sender<Batch>,
    batch: Batch,
}

impl Batcher {
    fn new(tx: mpsc::Sender<Batch>) -> Self {
        Self {
            tx,
            batch: Batch::default(),
        }
    }

    /// Adds a row; every row of a report has as many cells as its header.
    async fn push(&mut self, row: impl IntoIterator<Item = Cell>) -> bool {
        let before = self.batch.cells.len();
        self.batch.cells.extend(row);
        if self.batch.width == 0 {
            self.batch.width = self.batch.cells.len() - before;
        }
        debug_assert_eq!(self.batch.cells.len() % self.batch.width.max(1), 0);
        if self.batch.len() < BATCH_ROWS {
            return true;
        }
        self.flush().await
    }

    async fn flush(&mut self) -> bool {
        if self.batch.cells.is_empty() {
            return true;
        }
        let next = Batch::with_capacity(self.batch.width);
        let batch = std::mem::replace(&mut self.batch, next);
        self.tx.send(batch).await.is_ok()
    }
}

/// Produces `report`'s rows (the header first) into `tx`; returns how many
/// data rows. Stops early, without error, when the receiver is gone.
pub async fn produce(
    db: PgPool,
    keys: Option<Arc<Keyring>>,
    report: Report,
    scope: Scope,
    tx: mpsc::Sender<Batch>,
) -> Result<u64, ApiError> {
    let mut out = Batcher::new(tx);
    let n = produce_rows(db, keys, report, scope, &mut out).await?;
    out.flush().await;
    Ok(n)
}

async fn produce_rows(
    db: PgPool,
    keys: Option<Arc<Keyring>>,
    report: Report,
    scope: Scope,
    out: &mut Batcher,
) -> Result<u64, ApiError> {
    let header = |cols: &[&'static str]| -> Vec<Cell> {
        cols.iter().map(|c| Cell::Text((*c).into())).collect()
    };
    match report {
        Report::Courses => {
            if !out
                .push(header(&[
                    "course_id",
                    "title",
                    "resource_type",
                    "lessons",
                    "enrolled",
                    "started",
                    "completed",
                    "completion_rate",
                    "median_watch_s",
                    "average_speed",
                    "rating_average",
                    "rating_count",
                    "views",
                    "watch_hours",
                    "completions",
                ]))
                .await
            {
                return Ok(0);
            }
            let rows = course_figures(&db, &scope, None).await?;
            let n = rows.len() as u64;
            for c in rows {
                let row = [
                    Cell::Uuid(c.course_id),
                    Cell::Text(c.title),
                    Cell::Text(c.resource_type),
                    Cell::Number(c.lessons as f64),
                    Cell::Number(c.enrolled as f64),
                    Cell::Number(c.started as f64),
                    Cell::Number(c.completed as f64),
                    Cell::Number(c.completion_rate),
                    Cell::Number(c.median_watch_s),
                    c.average_speed.into(),
                    c.rating_average.into(),
                    Cell::Number(c.rating_count as f64),
                    Cell::Number(c.views as f64),
                    Cell::Number(c.watch_hours),
                    Cell::Number(c.completions as f64),
                ];
                if !out.push(row).await {
                    break;
                }
            }
            Ok(n)
        }
        Report::LearnerActivity => {
            let keys = keys.ok_or_else(|| ApiError::not_configured("LECTERN_FIELD_KEYS"))?;
            if !out
                .push(header(&[
                    "day",
                    "learner_id",
                    "email",
                    "course_id",
                    "course",
                    "lesson_id",
                    "lesson",
                    "views",
                    "watch_s",
                    "unique_s",
                    "completions",
                ]))
                .await
            {
                return Ok(0);
            }
            learner_activity(&db, &keys, &scope, out).await
        }
    }
}

/// A learner-day of `rollup_learner_daily` as the export reads it.
struct ActivityRow {
    day: NaiveDate,
    user_id: Uuid,
    course_id: Uuid,
    lesson_id: Uuid,
    views: i32,
    watch_s: f64,
    unique_s: f64,
    completions: i32,
}

/// By position, not by name: a derived `FromRow` looks every column's
/// name up in the statement's column map, eight lookups on each of a
/// million rows. The positions are those of [`ACTIVITY_SQL`]'s columns.
impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for ActivityRow {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(Self {
            day: row.try_get(0)?,
            user_id: row.try_get(1)?,
            course_id: row.try_get(2)?,
            lesson_id: row.try_get(3)?,
            views: row.try_get(4)?,
            watch_s: row.try_get(5)?,
            unique_s: row.try_get(6)?,
            completions: row.try_get(7)?,
        })
    }
}

/// Only the rollup's own columns, in the order of its index
/// `rollup_learner_daily_org_order`, so PostgreSQL streams them as it reads
/// them (no sort, no joined text carried through it). Titles come from maps
/// loaded once and emails from one lookup per chunk of new learners.
const ACTIVITY_SQL: &str = "SELECT r.day, r.user_id, r.course_id, r.lesson_id, r.views, r.watch_s,
        r.unique_s, r.completions
 FROM rollup_learner_daily r
 WHERE r.organisation_id = $1 AND r.day BETWEEN $2 AND $3
   AND ($4::uuid[] IS NULL OR r.course_id = ANY($4))
 ORDER BY r.day, r.user_id, r.lesson_id";

/// Rows decoded before their new learners' emails are looked up at once.
const ACTIVITY_CHUNK: usize = 2048;

#[derive(sqlx::FromRow)]
struct Titled {
    id: Uuid,
    title: String,
}

#[derive(sqlx::FromRow)]
struct SealedEmail {
    id: Uuid,
    // None for a learner whose account came from a phone, WeChat or
    // single sign-on and has no email yet.
    email_ct: Option<Vec<u8>>,
}

/// Titles by id, loaded once per export and looked up again (and kept) for
/// an id the first load did not have; `None`: the row no longer exists
/// (the export skips its rows, as a join would).
struct Titles {
    table: &'static str,
    map: HashMap<Uuid, Option<Arc<str>>>,
}

impl Titles {
    async fn load(db: &PgPool, table: &'static str, org: Uuid) -> Result<Self, sqlx::Error> {
        let rows: Vec<Titled> = sqlx::query_as(&format!(
            "SELECT id, title FROM {table} WHERE organisation_id = $1"
        ))
        .bind(org)
        .fetch_all(db)
        .await?;
        Ok(Self {
            table,
            map: rows
                .into_iter()
                .map(|r| (r.id, Some(Arc::from(r.title))))
                .collect(),
        })
    }

    /// The title, if the map has the id (`None`: look it up).
    fn known(&self, id: &Uuid) -> Option<&Option<Arc<str>>> {
        self.map.get(id)
    }

    async fn get(&mut self, db: &PgPool, id: Uuid) -> Result<Option<Arc<str>>, sqlx::Error> {
        if let Some(t) = self.known(&id) {
            return Ok(t.clone());
        }
        let title: Option<String> =
            sqlx::query_scalar(&format!("SELECT title FROM {} WHERE id = $1", self.table))
                .bind(id)
                .fetch_optional(db)
                .await?;
        let title = title.map(Arc::from);
        self.map.insert(id, title.clone());
        Ok(title)
    }
}

/// One row per learner × lesson × day.
async fn learner_activity(
    db: &PgPool,
    keys: &Keyring,
    scope: &Scope,
    out: &mut Batcher,
) -> Result<u64, ApiError> {
    let mut lessons = Titles::load(db, "lessons", scope.org).await?;
    let mut courses = Titles::load(db, "courses", scope.org).await?;
    // Each learner's email is opened once per export; None: no such user.
    let mut emails: HashMap<Uuid, Option<Arc<str>>> = HashMap::new();
    let no_email: Arc<str> = Arc::from("");
    let mut day_text: Option<(NaiveDate, Arc<str>)> = None;
    let mut last_learner: Option<(Uuid, Option<Arc<str>>)> = None;
    let mut rows = sqlx::query_as::<_, ActivityRow>(ACTIVITY_SQL)
        .bind(scope.org)
        .bind(scope.from)
        .bind(scope.to)
        .bind(&scope.courses)
        .fetch(db);
    let mut chunk: Vec<ActivityRow> = Vec::with_capacity(ACTIVITY_CHUNK);
    let mut n = 0u64;
    let mut more = true;
    while more {
        chunk.clear();
        while chunk.len() < ACTIVITY_CHUNK {
            match rows.next().await {
                Some(row) => chunk.push(row?),
                None => {
                    more = false;
                    break;
                }
            }
        }
        // The chunk's new learners, in one query (on another connection of
        // the pool, while the rows wait in this one).
        let mut new: Vec<Uuid> = chunk
            .iter()
            .map(|r| r.user_id)
            .filter(|u| !emails.contains_key(u))
            .collect();
        new.sort_unstable();
        new.dedup();
        if !new.is_empty() {
            let sealed: Vec<SealedEmail> =
                sqlx::query_as("SELECT id, email_ct FROM users WHERE id = ANY($1)")
                    .bind(&new)
                    .fetch_all(db)
                    .await?;
            for u in &new {
                emails.insert(*u, None);
            }
            for s in sealed {
                let email = match &s.email_ct {
                    Some(ct) => Arc::from(
                        keys.open("users.email", s.id, ct)
                            .map_err(ApiError::internal)?,
                    ),
                    None => no_email.clone(),
                };
                emails.insert(s.id, Some(email));
            }
        }
        for r in &chunk {
            // A learner's rows of a day are consecutive.
            let email = match &last_learner {
                Some((u, e)) if *u == r.user_id => e.clone(),
                _ => {
                    let e = emails.get(&r.user_id).cloned().flatten();
                    last_learner = Some((r.user_id, e.clone()));
                    e
                }
            };
            let Some(email) = email else {
                continue;
            };
            let course = match courses.known(&r.course_id) {
                Some(t) => t.clone(),
                None => courses.get(db, r.course_id).await?,
            };
            let lesson = match lessons.known(&r.lesson_id) {
                Some(t) => t.clone(),
                None => lessons.get(db, r.lesson_id).await?,
            };
            let (Some(course), Some(lesson)) = (course, lesson) else {
                continue;
            };
            let day = match &day_text {
                Some((d, t)) if *d == r.day => t.clone(),
                _ => {
                    let t: Arc<str> = Arc::from(r.day.to_string());
                    day_text = Some((r.day, t.clone()));
                    t
                }
            };
            let row = [
                Cell::Shared(day),
                Cell::Uuid(r.user_id),
                Cell::Shared(email),
                Cell::Uuid(r.course_id),
                Cell::Shared(course),
                Cell::Uuid(r.lesson_id),
                Cell::Shared(lesson),
                Cell::Number(f64::from(r.views)),
                Cell::Number(r.watch_s),
                Cell::Number(r.unique_s),
                Cell::Number(f64::from(r.completions)),
            ];
            if !out.push(row).await {
                return Ok(n);
            }
            n += 1;
        }
    }
    Ok(n)
}

fn csv_record<W: Write>(
    w: &mut csv::Writer<W>,
    scratch: &mut CellText,
    row: &[Cell],
) -> csv::Result<()> {
    for cell in row {
        w.write_field(scratch.text(cell).as_bytes())?;
    }
    w.write_record(None::<&[u8]>)
}

/// The rows of `rx` as a streamed CSV body, in chunks of about 64 KiB.
fn csv_body(rx: mpsc::Receiver<Batch>) -> Body {
    let stream = futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let mut w = csv::Writer::from_writer(Vec::with_capacity(70_000));
        let mut scratch = CellText::default();
        let mut open = true;
        while w.get_ref().len() < 64 * 1024 {
            match rx.recv().await {
                Some(batch) => {
                    for row in batch.rows() {
                        if let Err(e) = csv_record(&mut w, &mut scratch, row) {
                            return Some((Err(std::io::Error::other(e)), None));
                        }
                    }
                }
                None => {
                    open = false;
                    break;
                }
            }
            if let Err(e) = w.flush() {
                return Some((Err(e), None));
            }
        }
        let bytes = w.into_inner().unwrap_or_default();
        if bytes.is_empty() && !open {
            return None;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from(bytes)),
            open.then_some(rx),
        ))
    });
    Body::from_stream(stream)
}

/// Starts `report` and answers its rows as a streamed CSV attachment. A
/// failure after the first bytes ends the body early (the client sees a
/// truncated transfer, never a partial file presented as whole).
fn stream_csv(state: &AnalyticsState, report: Report, scope: Scope, filename: &str) -> Response {
    let body = csv_stream(state.db.clone(), state.identity.keys(), report, scope);
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Starts `report` and answers its rows as a CSV body streamed as they
/// come: what the `.csv` routes send (public for the benchmark).
pub fn csv_stream(db: PgPool, keys: Option<Arc<Keyring>>, report: Report, scope: Scope) -> Body {
    let (tx, rx) = channel();
    tokio::spawn(async move {
        if let Err(e) = produce(db, keys, report, scope, tx).await {
            tracing::warn!(error = %e, report = report.as_str(), "CSV export failed");
        }
    });
    csv_body(rx)
}

/// `GET /api/v1/reports/courses.csv`.
pub async fn courses_csv(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let scope = filter::resolve(&state.db, &principal, &q).await?;
    Ok(stream_csv(&state, Report::Courses, scope, "courses.csv"))
}

async fn audit_export(
    state: &AnalyticsState,
    principal: &Principal,
    context: &ClientContext,
    report: Report,
    format: Format,
    scope: &Scope,
    target: Option<String>,
) {
    audit::record_or_log(
        &state.identity,
        &AuditEvent {
            action: "reports.export".into(),
            outcome: "ok",
            target,
            detail: Some(
                serde_json::json!({
                    "report": report.as_str(),
                    "format": format.as_str(),
                    "from": scope.from,
                    "to": scope.to,
                    "step_up": "consumed",
                })
                .to_string(),
            ),
            ..AuditEvent::by(Some(principal), context)
        },
    )
    .await;
}

/// `GET /api/v1/reports/learner-activity.csv`: personal data, so the gate
/// consumed a step-up for it and it is audited here (a GET is not).
pub async fn learner_activity_csv(
    State(state): State<AnalyticsState>,
    principal: Principal,
    context: ClientContext,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let scope = filter::resolve(&state.db, &principal, &q).await?;
    state.identity.keyring()?;
    audit_export(
        &state,
        &principal,
        &context,
        Report::LearnerActivity,
        Format::Csv,
        &scope,
        None,
    )
    .await;
    Ok(stream_csv(
        &state,
        Report::LearnerActivity,
        scope,
        "learner-activity.csv",
    ))
}

/// `POST /api/v1/reports/exports`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ExportRequest {
    pub report: Report,
    pub format: Format,
    #[serde(flatten)]
    pub filter: ReportQuery,
}

/// An export job.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExportJob {
    pub id: Uuid,
    pub report: String,
    pub format: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub rows_written: i64,
    pub rows_total: Option<i64>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Once `done`: where to download it (needs the same permission).
    pub download_url: Option<String>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    organisation_id: Option<Uuid>,
    report: String,
    format: String,
    params: sqlx::types::Json<ReportQuery>,
    state: String,
    rows_written: i64,
    rows_total: Option<i64>,
    object_key: Option<String>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

const JOB_COLUMNS: &str = "id, organisation_id, report, format, params, state, rows_written, \
                           rows_total, object_key, error, created_at, finished_at";

impl From<JobRow> for ExportJob {
    fn from(r: JobRow) -> Self {
        ExportJob {
            download_url: (r.state == "done")
                .then(|| format!("/api/v1/reports/exports/{}/download", r.id)),
            id: r.id,
            report: r.report,
            format: r.format,
            state: r.state,
            rows_written: r.rows_written,
            rows_total: r.rows_total,
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

pub async fn start(
    State(state): State<AnalyticsState>,
    principal: Principal,
    context: ClientContext,
    ApiJson(req): ApiJson<ExportRequest>,
) -> Result<Accepted<ExportJob>, ApiError> {
    // Resolved now so a bad filter is refused now, not in the job.
    let scope = filter::resolve(&state.db, &principal, &req.filter).await?;
    let mut params = req.filter.clone();
    params.org_id = Some(scope.org);
    let id = Uuid::new_v4();
    let row: JobRow = sqlx::query_as(&format!(
        "INSERT INTO report_exports (id, organisation_id, requested_by, report, format, params)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {JOB_COLUMNS}"
    ))
    .bind(id)
    .bind(scope.org)
    .bind(principal.user_id())
    .bind(req.report.as_str())
    .bind(req.format.as_str())
    .bind(sqlx::types::Json(&params))
    .fetch_one(&state.db)
    .await?;
    audit_export(
        &state,
        &principal,
        &context,
        req.report,
        req.format,
        &scope,
        Some(format!("export:{id}")),
    )
    .await;
    let location = format!("/api/v1/reports/exports/{id}");
    Ok(Accepted(row.into(), Some(location)))
}

async fn job(state: &AnalyticsState, principal: &Principal, id: Uuid) -> Result<JobRow, ApiError> {
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM report_exports
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)"
    ))
    .bind(id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?;
    row.ok_or_else(|| ApiError::not_found(format!("no export {id}")))
}

pub async fn status(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ExportJob>, ApiError> {
    Ok(Json(job(&state, &principal, id).await?.into()))
}

pub async fn download(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let row = job(&state, &principal, id).await?;
    let key = match (row.state.as_str(), &row.object_key) {
        ("done", Some(key)) => key.clone(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::ExportNotReady,
                format!("export {id} is {}", row.state),
            ))
        }
    };
    let object = state
        .store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::new(ErrorCode::StorageUnavailable, e.to_string()))?;
    let format = if row.format == "xlsx" {
        Format::Xlsx
    } else {
        Format::Csv
    };
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}-{}.{}\"",
                    row.report,
                    row.created_at.format("%Y%m%d"),
                    row.format
                ),
            ),
        ],
        Body::from_stream(object.body),
    )
        .into_response())
}

/// Writes the rows of `rx` to `path` as `format`; returns the rows written.
/// Blocking: run it on the blocking pool.
pub fn write_file(
    format: Format,
    path: &std::path::Path,
    mut rx: mpsc::Receiver<Batch>,
    progress: impl Fn(u64),
) -> Result<u64, String> {
    let mut n: u64 = 0;
    match format {
        Format::Csv => {
            let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
            let mut w =
                csv::Writer::from_writer(std::io::BufWriter::with_capacity(256 * 1024, file));
            let mut scratch = CellText::default();
            while let Some(batch) = rx.blocking_recv() {
                for row in batch.rows() {
                    csv_record(&mut w, &mut scratch, row).map_err(|e| e.to_string())?;
                    n += 1;
                    if n.is_multiple_of(10_000) {
                        progress(n - 1);
                    }
                }
            }
            w.flush().map_err(|e| e.to_string())?;
        }
        Format::Xlsx => {
            use rust_xlsxwriter::Workbook;
            let mut workbook = Workbook::new();
            // Level 1: saving deflates the whole sheet's XML after the last
            // row, on one core, so it adds to the export's time in full.
            // For a million rows (benchmarks/analytics, zlib-rs, loaded
            // machine): 2.2–2.4 s against 4.9–7.1 s at level 3, for a file
            // of 106 MB instead of 76 MB.
            workbook.set_zip_compression_level(1);
            let sheet = workbook
                .add_worksheet_with_constant_memory()
                .map_err(|e| e.to_string())?;
            let mut scratch = CellText::default();
            while let Some(batch) = rx.blocking_recv() {
                for row in batch.rows() {
                    let r = u32::try_from(n).map_err(|_| "too many rows for a worksheet")?;
                    for (c, cell) in row.iter().enumerate() {
                        let c = c as u16;
                        let written = match cell {
                            Cell::Number(v) => sheet.write_number(r, c, *v).map(|_| ()),
                            Cell::Empty => Ok(()),
                            text => sheet.write_string(r, c, scratch.text(text)).map(|_| ()),
                        };
                        written.map_err(|e| e.to_string())?;
                    }
                    n += 1;
                    if n.is_multiple_of(10_000) {
                        progress(n - 1);
                    }
                }
            }
            workbook.save(path).map_err(|e| e.to_string())?;
        }
    }
    // The header is not a data row.
    Ok(n.saturating_sub(1))
}

/// Runs one export job to the end.
async fn run_job(state: &AnalyticsState, row: JobRow) -> Result<(String, u64), String> {
    let report = Report::parse(&row.report).ok_or("unknown report")?;
    let format = if row.format == "xlsx" {
        Format::Xlsx
    } else {
        Format::Csv
    };
    let org = row.organisation_id.ok_or("export without organisation")?;
    let scope = filter::resolve_for(&state.db, org, &row.params.0)
        .await
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join(format!("export.{}", format.as_str()));
    let (tx, rx) = channel();
    let producer = tokio::spawn(produce(
        state.db.clone(),
        state.identity.keys(),
        report,
        scope,
        tx,
    ));
    let (ptx, mut prx) = mpsc::unbounded_channel::<u64>();
    let writer_path = path.clone();
    let writer = tokio::task::spawn_blocking(move || {
        write_file(format, &writer_path, rx, |n| {
            let _ = ptx.send(n);
        })
    });
    let db = state.db.clone();
    let id = row.id;
    let reporter = tokio::spawn(async move {
        while let Some(n) = prx.recv().await {
            let _ = sqlx::query(
                "UPDATE report_exports SET rows_written = $2, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(n as i64)
            .execute(&db)
            .await;
        }
    });
    let written = writer.await.map_err(|e| e.to_string())??;
    producer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let _ = reporter.await;
    let key = format!("exports/{org}/{}.{}", row.id, format.as_str());
    state
        .store
        .put_file(
            &key,
            &path,
            PutOptions {
                content_type: Some(format.content_type().into()),
                cache_control: None,
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((key, written))
}

/// Takes one queued export (or one whose worker stopped), if any.
async fn claim(db: &PgPool) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE report_exports SET state = 'running', updated_at = now()
         WHERE id = (SELECT id FROM report_exports
                     WHERE state = 'queued'
                        OR (state = 'running' AND updated_at < now() - interval '10 minutes')
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING {JOB_COLUMNS}"
    ))
    .fetch_optional(db)
    .await
}

/// Runs every queued export, then waits for more.
pub async fn run_pending(state: &AnalyticsState) -> Result<usize, sqlx::Error> {
    let mut done = 0;
    while let Some(row) = claim(&state.db).await? {
        let id = row.id;
        match run_job(state, row).await {
            Ok((key, n)) => {
                sqlx::query(
                    "UPDATE report_exports SET state = 'done', object_key = $2, rows_written = $3,
                         rows_total = $3, finished_at = now(), updated_at = now() WHERE id = $1",
                )
                .bind(id)
                .bind(key)
                .bind(n as i64)
                .execute(&state.db)
                .await?;
            }
            Err(e) => {
                tracing::warn!(export = %id, error = %e, "export failed");
                sqlx::query(
                    "UPDATE report_exports SET state = 'failed', error = $2, finished_at = now(),
                         updated_at = now() WHERE id = $1",
                )
                .bind(id)
                .bind(e)
                .execute(&state.db)
                .await?;
            }
        }
        done += 1;
    }
    Ok(done)
}

/// The export task: every two seconds, runs what is queued.
pub async fn run(state: AnalyticsState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.schema_ready.load(Ordering::Acquire) {
            continue;
        }
        // An export runs to its end once started; a shutdown waits for it
        // up to the task set's grace, and a killed one is taken again.
        if let Err(e) = run_pending(&state).await {
            tracing::warn!(error = %e, "export queue unavailable; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_print_counts_whole_and_guard_formulas() {
        let row = vec![
            Cell::Number(600.0),
            Cell::Number(0.25),
            Cell::Number(-3.0),
            Cell::Empty,
            Cell::Text("=1+1".into()),
            Cell::Text("a,b".into()),
        ];
        let line = |row: &[Cell]| {
            let mut w = csv::Writer::from_writer(Vec::new());
            csv_record(&mut w, &mut CellText::default(), row).unwrap();
            String::from_utf8(w.into_inner().unwrap()).unwrap()
        };
        assert_eq!(line(&row), "600,0.25,-3,,'=1+1,\"a,b\"\n");
        assert_eq!(line(&[Cell::Number(1e20)]), "100000000000000000000\n");
    }
}
