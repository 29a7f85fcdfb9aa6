//! `GET /api/v1/search`: full-text search and filtering over the published
//! lessons of the caller's organisation.
//!
//! Text is segmented by [`text`] (jieba for Chinese, lowercase words for
//! English) into a weighted `tsvector` per lesson (`lessons.search_doc`,
//! GIN-indexed) that [`index`] rewrites in the transaction of every
//! catalogue change. Results are ordered by one numeric key per sort
//! (relevance = `ts_rank_cd`, newest = publication time, most watched =
//! learners with progress, rating = average rating), ties broken by lesson
//! id, and paged with an opaque keyset cursor over (key, id), so pages
//! never skip or repeat a lesson while the catalogue is unchanged.
//!
//! Filters read only `lessons` (the course's publication, type and
//! discipline are copied onto its lessons by triggers), and relevance
//! ranks at most the newest [`RANK_CANDIDATES`] matches, so a word found
//! in a third of the catalogue costs about what a rare one does. The price:
//! a relevance search pages through at most that many results; the other
//! sorts page through every match.

pub mod index;
pub mod text;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use lectern_web::ApiQuery;
use lectern_web::ErrorCode;
use lectern_web::{Access, Principal};
use lectern_web::{ApiError, ApiRouter};

use crate::CatalogueState;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    api.route(Method::GET, "/api/v1/search", Access::Session, handler)
}

pub const RESOURCE_TYPES: [&str; 4] = ["video_course", "clinical_case", "guideline", "live_replay"];
pub const SORTS: [&str; 4] = ["relevance", "newest", "most_watched", "rating"];
const MAX_LIMIT: i64 = 100;
const DEFAULT_LIMIT: i64 = 20;
/// How many matches relevance ranks at most: the newest ones.
pub const RANK_CANDIDATES: i64 = 1000;

/// The query string of `GET /api/v1/search`.
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub q: Option<String>,
    /// A discipline id; its descendants match too.
    pub discipline: Option<Uuid>,
    #[serde(rename = "type")]
    pub resource_type: Option<String>,
    /// An expert id.
    pub expert: Option<Uuid>,
    pub min_duration: Option<f64>,
    pub max_duration: Option<f64>,
    /// Published at or after (RFC 3339 or YYYY-MM-DD).
    pub from: Option<String>,
    /// Published at or before (RFC 3339, or YYYY-MM-DD for the whole day).
    pub to: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SearchPage {
    pub results: Vec<Value>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
struct Cursor {
    /// The sort key of the last result.
    k: f64,
    /// Its lesson id.
    i: Uuid,
    /// Which query the cursor belongs to.
    h: String,
}

async fn handler(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<SearchPage>, ApiError> {
    Ok(Json(
        search(&state.db, principal.org_scope(), &params).await?,
    ))
}

fn invalid(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

fn parse_bound(value: &str, name: &str, end_of_day: bool) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = value.parse::<NaiveDate>() {
        let d = if end_of_day {
            d.succ_opt().unwrap_or(d)
        } else {
            d
        };
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(invalid(
        ErrorCode::InvalidDate,
        format!(
            "{name}={value:?} is not a date; use YYYY-MM-DD or RFC 3339 (2026-01-31T08:00:00Z)"
        ),
    ))
}

/// Which query a cursor was issued for: everything but the cursor itself.
fn query_hash(p: &SearchParams, sort: &str, limit: i64) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{sort}|{limit}",
        p.q, p.discipline, p.resource_type, p.expert, p.min_duration, p.max_duration, p.from, p.to
    );
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

/// Runs a search for a caller limited to `org` (`None`: every
/// organisation). Shared by the handler and `benchmarks/search`.
pub async fn search(
    db: &PgPool,
    org: Option<Uuid>,
    p: &SearchParams,
) -> Result<SearchPage, ApiError> {
    let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.chars().count() > 200) {
        return Err(invalid(
            ErrorCode::InvalidQueryText,
            "q is at most 200 characters",
        ));
    }
    let tsquery = q.and_then(text::tsquery_literal);
    if let Some(t) = &p.resource_type {
        if !RESOURCE_TYPES.contains(&t.as_str()) {
            return Err(invalid(
                ErrorCode::InvalidType,
                format!(
                    "type={t:?} is not a resource type; expected one of {}",
                    RESOURCE_TYPES.join(", ")
                ),
            ));
        }
    }
    let sort = p.sort.as_deref().unwrap_or("relevance");
    if !SORTS.contains(&sort) {
        return Err(invalid(
            ErrorCode::InvalidSort,
            format!(
                "sort={sort:?} is not supported; expected one of {}",
                SORTS.join(", ")
            ),
        ));
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(
            ErrorCode::InvalidLimit,
            format!("limit is 1–{MAX_LIMIT}"),
        ));
    }
    for (name, v) in [
        ("min_duration", p.min_duration),
        ("max_duration", p.max_duration),
    ] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(invalid(
                ErrorCode::InvalidDuration,
                format!("{name} is a number of seconds ≥ 0"),
            ));
        }
    }
    if let (Some(min), Some(max)) = (p.min_duration, p.max_duration) {
        if min > max {
            return Err(invalid(
                ErrorCode::InvalidDuration,
                "min_duration is greater than max_duration",
            ));
        }
    }
    let from = p
        .from
        .as_deref()
        .map(|v| parse_bound(v, "from", false))
        .transpose()?;
    let to =
        p.to.as_deref()
            .map(|v| parse_bound(v, "to", true))
            .transpose()?;
    let hash = query_hash(p, sort, limit);
    let cursor = match &p.cursor {
        None => None,
        Some(c) => {
            let bad = || {
                invalid(
                    ErrorCode::InvalidCursor,
                    "the cursor is not one this search returned; start again without it",
                )
            };
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| bad())?;
            let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
            if cursor.h != hash {
                return Err(bad());
            }
            Some(cursor)
        }
    };

    let date_only_to =
        p.to.as_deref()
            .is_some_and(|v| v.parse::<NaiveDate>().is_ok());
    // Only lessons' own columns (publication, type and discipline are
    // copied there from the course), so the filter never joins.
    let filters = |qb: &mut QueryBuilder<Postgres>| {
        qb.push(" WHERE l.published");
        if let Some(org) = org {
            qb.push(" AND l.organisation_id = ").push_bind(org);
        }
        if let Some(tsq) = &tsquery {
            qb.push(" AND l.search_doc @@ ")
                .push_bind(tsq.clone())
                .push("::tsquery");
        }
        if let Some(discipline) = p.discipline {
            qb.push(
                " AND l.discipline_id IN (WITH RECURSIVE sub AS (
                     SELECT id FROM disciplines WHERE id = ",
            )
            .push_bind(discipline)
            .push(
                " UNION ALL SELECT dd.id FROM disciplines dd JOIN sub ON dd.parent_id = sub.id)
                   SELECT id FROM sub)",
            );
        }
        if let Some(t) = &p.resource_type {
            qb.push(" AND l.resource_type = ").push_bind(t.clone());
        }
        if let Some(expert) = p.expert {
            qb.push(" AND EXISTS (SELECT 1 FROM course_experts ce WHERE ce.course_id = l.course_id AND ce.expert_id = ")
                .push_bind(expert)
                .push(")");
        }
        // A scalar subquery, not EXISTS: a semi-join would hash every asset
        // of the catalogue, where this is one primary-key probe per match.
        let duration = " AND (SELECT a.duration_s FROM assets a WHERE a.id = l.asset_id)";
        if let Some(min) = p.min_duration {
            qb.push(duration).push(" >= ").push_bind(min);
        }
        if let Some(max) = p.max_duration {
            qb.push(duration).push(" <= ").push_bind(max);
        }
        if let Some(from) = from {
            qb.push(" AND l.published_at >= ").push_bind(from);
        }
        if let Some(to) = to {
            // A date-only bound was turned into the next midnight: exclusive.
            qb.push(if date_only_to {
                " AND l.published_at < "
            } else {
                " AND l.published_at <= "
            })
            .push_bind(to);
        }
    };

    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT h.id, h.sort_key, l.title, l.course_id, c.title AS course_title, c.resource_type,
           c.discipline_id, d.name AS discipline_name, c.published_at, a.duration_s,
           coalesce((SELECT json_agg(json_build_object('id', e.id, 'name', e.name) ORDER BY ce.position, e.name)
                     FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
                     WHERE ce.course_id = l.course_id), '[]') AS experts,
           coalesce((SELECT json_agg(t.tag ORDER BY t.tag) FROM course_tags t WHERE t.course_id = l.course_id), '[]') AS tags,
           (SELECT count(*) FROM lesson_progress lp WHERE lp.lesson_id = h.id) AS watchers,
           (SELECT avg(r.rating)::float8 FROM course_ratings r WHERE r.course_id = l.course_id) AS rating_avg,
           (SELECT count(*) FROM course_ratings r WHERE r.course_id = l.course_id) AS rating_count
         FROM (SELECT * FROM (SELECT l.id, l.published_at, ",
    );
    let ranked = sort == "relevance" && tsquery.is_some();
    let sort_by_time = !ranked && !matches!(sort, "most_watched" | "rating");
    match (sort, &tsquery) {
        ("relevance", Some(tsq)) => {
            qb.push("ts_rank_cd(l.search_doc, ").push_bind(tsq.clone()).push("::tsquery)::float8")
        }
        ("most_watched", _) => {
            qb.push("(SELECT count(*) FROM lesson_progress lp WHERE lp.lesson_id = l.id)::float8")
        }
        ("rating", _) => qb.push(
            "coalesce((SELECT avg(r.rating) FROM course_ratings r WHERE r.course_id = l.course_id), 0)::float8",
        ),
        // Newest, and relevance without words to rank by.
        _ => qb.push("extract(epoch FROM l.published_at)::float8"),
    };
    qb.push(" AS sort_key FROM ");
    if ranked {
        // Ranking reads every candidate's document, so a word in a third
        // of the catalogue would rank tens of thousands of rows for one
        // page. Rank only the newest RANK_CANDIDATES matches instead: the
        // planner walks lessons_published_recent for a broad word and
        // bitmap-scans the GIN index for a rare one, and the set is the
        // same on every page, so the keyset cursor stays consistent.
        qb.push("(SELECT l.id, l.course_id, l.published_at, l.search_doc FROM lessons l");
        filters(&mut qb);
        qb.push(" ORDER BY l.published_at DESC, l.id LIMIT ")
            .push_bind(RANK_CANDIDATES)
            .push(") l");
    } else {
        qb.push("lessons l");
        filters(&mut qb);
    }
    qb.push(") hits");
    if let Some(c) = &cursor {
        qb.push(" WHERE hits.sort_key < ")
            .push_bind(c.k)
            .push(" OR (hits.sort_key = ")
            .push_bind(c.k)
            .push(" AND hits.id > ")
            .push_bind(c.i)
            .push(")");
    }
    // Publication time orders exactly as its epoch key does, and lets the
    // planner read lessons_published_recent in order and stop at the page.
    qb.push(if sort_by_time {
        " ORDER BY hits.published_at DESC, hits.id LIMIT "
    } else {
        " ORDER BY hits.sort_key DESC, hits.id LIMIT "
    })
    .push_bind(limit + 1)
    .push(
        ") h
         JOIN lessons l ON l.id = h.id
         JOIN courses c ON c.id = l.course_id
         LEFT JOIN disciplines d ON d.id = c.discipline_id
         LEFT JOIN assets a ON a.id = l.asset_id
         ORDER BY h.sort_key DESC, h.id",
    );

    // An unnamed statement is planned with this request's words: a cached
    // generic plan cannot tell a rare word (GIN bitmap) from a broad one
    // (walk newest first), and picking wrong costs a full scan.
    let rows = qb.build().persistent(false).fetch_all(db).await?;
    let more = rows.len() as i64 > limit;
    let mut results = Vec::with_capacity(rows.len());
    let mut last = None;
    for row in rows.iter().take(limit as usize) {
        let id: Uuid = row.try_get("id")?;
        let key: f64 = row.try_get("sort_key")?;
        last = Some((key, id));
        let discipline = match row.try_get::<Option<Uuid>, _>("discipline_id")? {
            Some(d) => {
                json!({ "id": d, "name": row.try_get::<Option<String>, _>("discipline_name")? })
            }
            None => Value::Null,
        };
        results.push(json!({
            "lesson_id": id,
            "title": row.try_get::<String, _>("title")?,
            "course": {
                "id": row.try_get::<Uuid, _>("course_id")?,
                "title": row.try_get::<String, _>("course_title")?,
                "resource_type": row.try_get::<String, _>("resource_type")?,
                "discipline": discipline,
                "experts": row.try_get::<Value, _>("experts")?,
                "tags": row.try_get::<Value, _>("tags")?,
            },
            "duration_s": row.try_get::<Option<f64>, _>("duration_s")?,
            "published_at": row.try_get::<Option<DateTime<Utc>>, _>("published_at")?,
            "score": if ranked { json!(key) } else { Value::Null },
            "watchers": row.try_get::<i64, _>("watchers")?,
            "rating": {
                "average": row.try_get::<Option<f64>, _>("rating_avg")?,
                "count": row.try_get::<i64, _>("rating_count")?,
            },
        }));
    }
    let next_cursor = match (more, last) {
        (true, Some((k, i))) => {
            let bytes =
                serde_json::to_vec(&Cursor { k, i, h: hash }).map_err(ApiError::internal)?;
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
        }
        _ => None,
    };
    Ok(SearchPage {
        results,
        next_cursor,
    })
}

/// Answers 422 for a value that is not one of `allowed` (used by the
/// catalogue, which shares the resource types).
pub fn check_resource_type(t: &str) -> Result<(), ApiError> {
    if RESOURCE_TYPES.contains(&t) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidResourceType,
            format!(
                "{t:?} is not a resource type; expected one of {}",
                RESOURCE_TYPES.join(", ")
            ),
        ))
    }
}
