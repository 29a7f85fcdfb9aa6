//! The chain itself: how a row's hash is made, appending a batch of rows,
//! verifying the table, and the retention purge.
//!
//! A row's hash is HMAC-SHA-256(chain key, previous hash ‖ canonical row);
//! the key is derived from the token key (`Keyring::audit_chain_key`) and
//! never stored in the database, so someone who can write the table cannot
//! recompute the hashes of rows they edited. Rows from before the chain was
//! keyed (`key_id` NULL) are plain SHA-256 and must all precede keyed rows.
//! Rows are numbered without gaps, so an edit, a removal or an insertion in
//! the middle makes [`verify`] name the first row that no longer fits; a
//! removal at the tail is caught against the signed checkpoint (see
//! `checkpoint`). Writers serialise on one advisory lock so concurrent
//! appends never fork the chain.

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::{AuditEvent, AuditRow};

/// Key of the advisory lock that serialises audit writers and purges (the
/// migration's `audit_purge()` takes the same number).
const CHAIN_LOCK: i64 = 0x4c45_4354_4155_4449; // "LECTAUDI"

/// The id keyed rows carry in `key_id`.
pub const CHAIN_KEY_ID: &str = "token-v1";

/// The secret the chain is keyed with; `Debug` never shows it.
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl ChainKey {
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    pub fn from_keyring(keys: &lectern_secrets::Keyring) -> Self {
        Self(keys.audit_chain_key())
    }

    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length")
    }
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(<redacted>)")
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

/// The row's hash: keyed when `key` is given, the legacy SHA-256 otherwise.
fn row_hash(key: Option<&ChainKey>, row: &AuditRow) -> Vec<u8> {
    match key {
        Some(key) => {
            let mut mac = key.mac();
            mac.update(&row.prev_hash);
            mac.update(canonical(row).as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        None => {
            let mut h = Sha256::new();
            h.update(&row.prev_hash);
            h.update(canonical(row).as_bytes());
            h.finalize().to_vec()
        }
    }
}

/// PostgreSQL text cannot hold NUL; one stray byte in a header must not
/// cost the batch its rows.
fn clean(text: &Option<String>) -> Option<String> {
    text.as_ref().map(|t| t.replace('\0', "\u{fffd}"))
}

/// Appends `events` as consecutive rows in one transaction; returns their ids.
pub async fn append(
    db: &PgPool,
    key: Option<&ChainKey>,
    events: &[AuditEvent],
) -> Result<Vec<i64>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (mut prev_id, mut prev_hash) = match head {
        Some(h) => h,
        None => {
            sqlx::query_as("SELECT last_id, last_hash FROM audit_anchor")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let now = Utc::now();
    let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let mut row = AuditRow {
            id: prev_id + 1,
            at,
            actor: clean(&event.actor),
            org_id: event.org_id,
            role: clean(&event.role),
            action: event.action.replace('\0', "\u{fffd}"),
            target: clean(&event.target),
            outcome: event.outcome.to_string(),
            ip: clean(&event.ip),
            user_agent: clean(&event.user_agent),
            request_id: clean(&event.request_id),
            detail: clean(&event.detail),
            key_id: key.map(|_| CHAIN_KEY_ID.to_string()),
            prev_hash,
            hash: Vec::new(),
        };
        row.hash = row_hash(key, &row);
        prev_id = row.id;
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO audit_log (id, at, actor, org_id, role, action, target, outcome, ip, \
         user_agent, request_id, detail, key_id, prev_hash, hash) ",
    );
    insert.push_values(&rows, |mut b, row| {
        b.push_bind(row.id)
            .push_bind(row.at)
            .push_bind(&row.actor)
            .push_bind(row.org_id)
            .push_bind(&row.role)
            .push_bind(&row.action)
            .push_bind(&row.target)
            .push_bind(&row.outcome)
            .push_bind(&row.ip)
            .push_bind(&row.user_agent)
            .push_bind(&row.request_id)
            .push_bind(&row.detail)
            .push_bind(&row.key_id)
            .push_bind(&row.prev_hash)
            .push_bind(&row.hash);
    });
    insert.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| r.id).collect())
}

/// Appends one event now (operator commands, tests); the request path goes
/// through the batching [`super::AuditWriter`].
pub async fn record(
    db: &PgPool,
    key: Option<&ChainKey>,
    event: &AuditEvent,
) -> Result<i64, sqlx::Error> {
    let ids = append(db, key, std::slice::from_ref(event)).await?;
    Ok(ids[0])
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub rows_checked: u64,
    /// The first row whose hash, predecessor or number does not fit.
    pub first_bad_row: Option<i64>,
    /// The last row checked, when the whole table fitted (the anchor's row
    /// when the table is empty).
    pub head: Option<i64>,
}

/// Walks the table from the anchor. Keyed rows need `key`; without it they
/// count as not fitting.
pub async fn verify(db: &PgPool, key: Option<&ChainKey>) -> Result<ChainReport, sqlx::Error> {
    let (mut prev_id, mut prev_hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT last_id, last_hash FROM audit_anchor")
            .fetch_one(db)
            .await?;
    let mut checked = 0;
    let mut keyed_seen = false;
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
                head: Some(prev_id),
            });
        }
        for row in page {
            checked += 1;
            let hash = match (row.key_id.as_deref(), key) {
                (None, _) if !keyed_seen => Some(row_hash(None, &row)),
                // An unkeyed row after keyed ones was re-chained by hand.
                (None, _) => None,
                (Some(CHAIN_KEY_ID), Some(key)) => {
                    keyed_seen = true;
                    Some(row_hash(Some(key), &row))
                }
                (Some(_), _) => None,
            };
            let fits = row.id == prev_id + 1
                && row.prev_hash == prev_hash
                && hash.is_some_and(|h| constant_time_eq(&h, &row.hash));
            if !fits {
                return Ok(ChainReport {
                    rows_checked: checked,
                    first_bad_row: Some(row.id),
                    head: None,
                });
            }
            prev_id = row.id;
            prev_hash = row.hash;
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Removes rows older than `retention_days` (at least 180: the database
/// function refuses less), keeping the chain verifiable by moving the
/// anchor. Runs as the audit tables' owner inside `audit_purge()`: the role
/// Lectern connects with cannot delete audit rows itself. Returns how many
/// rows went.
pub async fn purge(db: &PgPool, retention_days: u32) -> Result<u64, sqlx::Error> {
    let gone: i64 = sqlx::query_scalar("SELECT audit_purge($1)")
        .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
        .fetch_one(db)
        .await?;
    Ok(u64::try_from(gone).unwrap_or(0))
}
