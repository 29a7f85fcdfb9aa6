//! The audit log: append-only, hash-chained. Each row's hash is
//! SHA-256(previous hash ‖ canonical row), and rows are numbered without
//! gaps, so editing, removing or inserting a row makes [`verify`] name the
//! first row that no longer fits. Writers serialise on one advisory lock so
//! concurrent requests never fork the chain. A retention [`purge`] removes
//! old rows and records the last removed row's id and hash as the new
//! anchor, so what remains still verifies.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// Key of the advisory lock that serialises audit writers (and purges).
const CHAIN_LOCK: i64 = 0x4c45_4354_4155_4449; // "LECTAUDI"

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
    /// SHA-256 of the previous row's hash and this row, in hex.
    #[serde(with = "hex_bytes")]
    #[schemars(with = "String")]
    pub hash: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}

/// The bytes hashed for a row: a JSON array in a fixed field order, the
/// time at microsecond precision (what PostgreSQL keeps).
fn canonical(row: &AuditRow) -> String {
    serde_json::json!([
        row.id,
        row.at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.actor,
        row.org_id,
        row.role,
        row.action,
        row.target,
        row.outcome,
        row.ip,
        row.user_agent,
        row.request_id,
        row.detail,
    ])
    .to_string()
}

fn chain_hash(prev: &[u8], row: &AuditRow) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical(row).as_bytes());
    h.finalize().to_vec()
}

pub async fn record(db: &PgPool, event: &AuditEvent) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (prev_id, prev_hash) = match head {
        Some(h) => h,
        None => {
            sqlx::query_as("SELECT last_id, last_hash FROM audit_anchor")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let now = Utc::now();
    let mut row = AuditRow {
        id: prev_id + 1,
        at: DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now),
        actor: event.actor.clone(),
        org_id: event.org_id,
        role: event.role.clone(),
        action: event.action.clone(),
        target: event.target.clone(),
        outcome: event.outcome.to_string(),
        ip: event.ip.clone(),
        user_agent: event.user_agent.clone(),
        request_id: event.request_id.clone(),
        detail: event.detail.clone(),
        prev_hash,
        hash: Vec::new(),
    };
    row.hash = chain_hash(&row.prev_hash, &row);
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor, org_id, role, action, target, outcome, ip, \
         user_agent, request_id, detail, prev_hash, hash) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
    )
    .bind(row.id)
    .bind(row.at)
    .bind(&row.actor)
    .bind(row.org_id)
    .bind(&row.role)
    .bind(&row.action)
    .bind(&row.target)
    .bind(&row.outcome)
    .bind(&row.ip)
    .bind(&row.user_agent)
    .bind(&row.request_id)
    .bind(&row.detail)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.id)
}

/// Records from the request path: a failure to audit is logged loudly and
/// counted (`lectern_audit_failures_total`) rather than turning a done
/// operation into an error the client would retry.
pub async fn record_or_log(state: &Identity, event: &AuditEvent) {
    if let Err(e) = record(&state.db, event).await {
        state.metrics.audit_failed();
        tracing::error!(error = %e, action = %event.action, "audit record failed");
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub rows_checked: u64,
    /// The first row whose hash, predecessor or number does not fit.
    pub first_bad_row: Option<i64>,
}

pub async fn verify(db: &PgPool) -> Result<ChainReport, sqlx::Error> {
    let (mut prev_id, mut prev_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT last_id, last_hash FROM audit_anchor")
            .fetch_one(db)
            .await?;
    let mut checked = 0;
    loop {
        let page: Vec<AuditRow> =
            sqlx::query_as("SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000")
                .bind(prev_id)
                .fetch_all(db)
                .await?;
        if page.is_empty() {
            return Ok(ChainReport {
                rows_checked: checked,
                first_bad_row: None,
            });
        }
        for row in page {
            checked += 1;
            let fits = row.id == prev_id + 1
                && row.prev_hash == prev_hash
                && chain_hash(&row.prev_hash, &row) == row.hash;
            if !fits {
                return Ok(ChainReport {
                    rows_checked: checked,
                    first_bad_row: Some(row.id),
                });
            }
            prev_id = row.id;
            prev_hash = row.hash;
        }
    }
}

/// Removes rows older than `retention_days`, keeping the chain verifiable.
/// Returns how many rows went.
pub async fn purge(db: &PgPool, retention_days: u32) -> Result<u64, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT id, hash FROM audit_log WHERE at < now() - make_interval(days => $1) \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((last_id, last_hash)) = last else {
        return Ok(0);
    };
    // The append-only trigger lets deletes through only in this transaction.
    sqlx::query("SELECT set_config('lectern.audit_purge', 'on', true)")
        .execute(&mut *tx)
        .await?;
    let gone = sqlx::query("DELETE FROM audit_log WHERE id <= $1")
        .bind(last_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE audit_anchor SET last_id = $1, last_hash = $2")
        .bind(last_id)
        .bind(&last_hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(gone)
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
pub async fn list(
    State(state): State<Identity>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<AuditExport, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT * FROM audit_log WHERE ($1::uuid IS NULL OR org_id = $1) \
         AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(principal.org_scope())
    .bind(q.before)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(AuditExport::Json(AuditPage { entries: rows })),
        Some("csv") => Ok(AuditExport::Csv(to_csv(&rows))),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidFormat,
            format!("{other:?} is not an export format; expected json or csv"),
        )),
    }
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

/// RFC 4180 quoting, and a leading `'` before `= + - @` so a spreadsheet
/// never runs a formula smuggled in through a user agent or path.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
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
