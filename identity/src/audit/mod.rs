//! The audit log: append-only and hash-chained with a key kept outside the
//! database ([`chain`]), its head anchored by signed checkpoints in object
//! storage ([`checkpoint`]), written from the request path in batches by
//! one bounded writer that also aggregates unauthenticated noise
//! ([`writer`]). The role Lectern connects with may only read and append;
//! retention ([`purge`]) runs as the tables' owner inside the database and
//! keeps what remains verifiable. Reading the log is itself audited.

mod chain;
pub mod checkpoint;
mod writer;

pub use chain::{append, purge, record, verify, ChainKey, ChainReport};
pub use writer::AuditWriter;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_web::doc::{DocOutput, Operation, Schemas};
use lectern_web::ApiError;
use lectern_web::ApiQuery;
use lectern_web::ClientContext;
use lectern_web::ErrorCode;
use lectern_web::Principal;

use crate::Identity;

/// Put in a response's extensions by a handler whose requests are
/// telemetry rather than operations (progress heartbeats, thousands a
/// second): the middleware then writes no audit row for a success or a
/// server error (overload must not add audit writes). Denials and client
/// errors of such requests are still audited.
#[derive(Debug, Clone, Copy)]
pub struct Unaudited;

/// One thing that happened, as the audit log records it.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent {
    /// `user:<id>`, `key:<id>`, `cli:<operator>` or `None` for anonymous.
    pub actor: Option<String>,
    pub org_id: Option<Uuid>,
    pub role: Option<String>,
    pub action: String,
    pub target: Option<String>,
    /// `ok`, `failed` or `denied`.
    pub outcome: &'static str,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// A small JSON object; never secrets or personal data.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event with who and where filled in from a request.
    pub fn by(principal: Option<&Principal>, context: &ClientContext) -> Self {
        Self {
            actor: principal.map(Principal::actor),
            org_id: principal.and_then(|p| p.org_id),
            role: principal.map(|p| p.role.as_str().to_string()),
            ip: context.ip.clone(),
            user_agent: context.user_agent.clone(),
            request_id: context.request_id.clone(),
            ..Self::default()
        }
    }
}

/// One audit row.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, schemars::JsonSchema)]
pub struct AuditRow {
    /// Numbered without gaps, oldest first.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `user:<id>`, `key:<id>`, `cli:<operator>`, or `null` for anonymous.
    pub actor: Option<String>,
    pub org_id: Option<Uuid>,
    /// The actor's role at the time.
    pub role: Option<String>,
    /// `METHOD /route/{template}` for requests, or a named event (`auth.login`).
    pub action: String,
    /// The path requested, or what the event concerns.
    pub target: Option<String>,
    /// `ok`, `failed` or `denied`.
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// A small JSON object as text (never secrets or personal data).
    pub detail: Option<String>,
    #[serde(skip)]
    pub prev_hash: Vec<u8>,
    /// The chain key's id (`null` for rows from before the chain was keyed).
    pub key_id: Option<String>,
    /// HMAC-SHA-256 of the previous row's hash and this row, in hex.
    #[serde(with = "hex_bytes")]
    #[schemars(with = "String")]
    pub hash: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}

/// Records from the request path through the batching writer: a state
/// change gets its row before it answers; a failure to audit is logged and
/// counted rather than failing a done operation.
pub async fn record_or_log(state: &Identity, event: &AuditEvent) {
    state.audit.record(event.clone()).await;
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AuditQuery {
    /// Rows before this id (paging backwards from the newest).
    before: Option<i64>,
    /// At most this many rows (1–10,000; default 100).
    limit: Option<i64>,
    /// `csv` for a spreadsheet export; JSON otherwise.
    format: Option<String>,
}

/// Audit rows, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditRow>,
}

/// The rows as JSON, or as a CSV spreadsheet (`format=csv`).
pub enum AuditExport {
    Json(AuditPage),
    Csv(String),
}

impl IntoResponse for AuditExport {
    fn into_response(self) -> Response {
        match self {
            AuditExport::Json(page) => Json(page).into_response(),
            AuditExport::Csv(csv) => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"audit.csv\"",
                    ),
                ],
                csv,
            )
                .into_response(),
        }
    }
}

impl DocOutput for AuditExport {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<AuditPage>();
        op.response(
            200,
            "the rows, newest first; with `format=csv` the same columns as a text/csv attachment",
            Some(("application/json", schema)),
        );
    }
}

/// `GET /api/v1/audit`: newest first; an organisation's super admin sees
/// its organisation's rows, a global super admin all of them.
/// Reading the log is recorded in it (`audit.read`): who looked, how many
/// rows, in which format.
pub async fn list(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<AuditExport, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::new(
            ErrorCode::InvalidFormat,
            format!("{format:?} is not an export format; expected json or csv"),
        ));
    }
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT * FROM audit_log WHERE ($1::uuid IS NULL OR org_id = $1) \
         AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(principal.org_scope())
    .bind(q.before)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    record_or_log(
        &state,
        &AuditEvent {
            action: "audit.read".into(),
            outcome: "ok",
            detail: Some(serde_json::json!({ "rows": rows.len(), "format": format }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(if format == "csv" {
        AuditExport::Csv(to_csv(&rows))
    } else {
        AuditExport::Json(AuditPage { entries: rows })
    })
}

fn to_csv(rows: &[AuditRow]) -> String {
    let mut out = String::from(
        "id,at,actor,org_id,role,action,target,outcome,ip,user_agent,request_id,detail,hash\n",
    );
    for r in rows {
        let fields = [
            r.id.to_string(),
            r.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            r.actor.clone().unwrap_or_default(),
            r.org_id.map(|o| o.to_string()).unwrap_or_default(),
            r.role.clone().unwrap_or_default(),
            r.action.clone(),
            r.target.clone().unwrap_or_default(),
            r.outcome.clone(),
            r.ip.clone().unwrap_or_default(),
            r.user_agent.clone().unwrap_or_default(),
            r.request_id.clone().unwrap_or_default(),
            r.detail.clone().unwrap_or_default(),
            hex::encode(&r.hash),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// A leading `'` before `= + - @`, so a spreadsheet never runs a formula
/// smuggled into a cell (through a user agent, a path, a title, a name).
/// Every CSV and XLSX cell of text Lectern writes goes through it.
pub fn formula_guard(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@']) {
        std::borrow::Cow::Owned(format!("'{value}"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// RFC 4180 quoting of a [`formula_guard`]ed value.
pub fn csv_field(value: &str) -> String {
    let value = formula_guard(value).into_owned();
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// Applies retention once the schema is there, then every six hours,
/// until `cancel`.
pub async fn purge_periodically(
    db: PgPool,
    schema_ready: Arc<AtomicBool>,
    days: u32,
    cancel: CancellationToken,
) {
    loop {
        let wait = if schema_ready.load(Ordering::Acquire) {
            match purge(&db, days).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(rows = n, retention_days = days, "purged expired audit rows")
                }
                Err(e) => tracing::warn!(error = %e, "audit retention purge failed"),
            }
            Duration::from_secs(6 * 3600)
        } else {
            Duration::from_secs(5)
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
