//! `GET /api/v1/search`: full-text search and filtering over the published
//! lessons of the caller's organisation.
//!
//! Text is segmented by [`text`] (jieba for Chinese, lowercase words for
//! English) into a weighted `tsvector` per lesson (`lessons.search_doc`,
//! GIN-indexed) that [`index`] rewrites in the transaction of every
//! catalogue change. Results are ordered by one numeric key per sort
//! (relevance = `ts_rank_cd`, newest = publication time, most watched =
//! learners with progress, rating = the Bayesian average of published
//! reviews, [`crate::ratings`]), ties broken by lesson
//! id, and paged with an opaque keyset cursor over (key, id), so pages
//! never skip or repeat a lesson while the catalogue is unchanged. The
//! cursor also carries a hash of the query it was issued for, so it is
//! refused (`invalid_cursor`) if replayed against another query.
//!
//! Matching: documents are segmented with jieba's search mode (a long word
//! and the dictionary words inside it: 心血管疾病 also yields 心血管, 血管,
//! 疾病) and queries with its precise mode, so a query word matches as the
//! word it is; every query term is required (AND), English terms also as
//! prefixes. Weights: lesson and course titles A; tags, experts, the
//! resource type's words in both languages (指南/guideline) and the
//! discipline B; descriptions C. Publication is a filter on what the
//! triggers copied onto `lessons`, so nothing unpublished is ever found.
//!
//! Why PostgreSQL and not a search engine such as tantivy: the index is a
//! column rewritten in the catalogue's own transactions, so it can never
//! disagree with what was committed; a second index would have to be kept
//! transactional with PostgreSQL and would add a much larger build on 2
//! cores, and `benchmarks/search` (100k lessons) meets its p99 goal
//! without one.
//!
//! Filters read only `lessons` (the course's publication, type and
//! discipline are copied onto its lessons by triggers), and relevance
//! ranks at most the newest [`RANK_CANDIDATES`] matches, so a word found
//! in a third of the catalogue costs about what a rare one does. The price:
//! a relevance search pages through at most that many results; the other
//! sorts page through every match.
//!
//! Everything a caller sends is checked by [`SearchParams::parse`] before
//! any SQL is built; it answers only the codes listed on
//! [`SearchParams`], and `properties` (its tests) feeds it random input.

pub mod index;
mod text;

pub use text::warm_up;

#[cfg(test)]
mod properties;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use sqlx::types::Json as JsonColumn;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::view::{DisciplineRef, ExpertRef, RatingSummary};
use crate::{ClosedSet, ResourceType, SearchSort};
use lectern_web::{Access, Principal};
use lectern_web::{ApiError, ApiRouter, ErrorCode};
use lectern_web::{ApiQuery, Cursor, Limit};

use crate::CatalogueState;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    api.route(Method::GET, "/api/v1/search", Access::Session, handler)
}

/// How many results a page holds.
pub const SEARCH_PAGE: Limit = Limit::new(20, 100);
/// How many matches relevance ranks at most: the newest ones.
pub const RANK_CANDIDATES: i64 = 1000;
/// The longest `q`, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// The query string of `GET /api/v1/search`. Every filter is optional and
/// they combine (AND). A value that does not parse is a 400 with one of
/// `invalid_query` (not a number, not an id, an unknown parameter),
/// `invalid_query_text`, `invalid_type`, `invalid_sort`, `invalid_limit`,
/// `invalid_duration`, `invalid_date` or `invalid_cursor`.
#[derive(Debug, Default, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words to find, Chinese or English, up to 200 characters; every word
    /// must match (titles weigh most, then tags, experts, type and
    /// discipline, then descriptions). English words also match as a
    /// prefix.
    pub q: Option<String>,
    /// A discipline id; its descendants match too.
    pub discipline: Option<Uuid>,
    /// Only courses of this resource type.
    #[serde(rename = "type")]
    #[schemars(with = "Option<ResourceType>")]
    pub resource_type: Option<String>,
    /// An expert id: only courses they author.
    pub expert: Option<Uuid>,
    /// Only lessons at least this long, in seconds.
    pub min_duration: Option<f64>,
    /// Only lessons at most this long, in seconds.
    pub max_duration: Option<f64>,
    /// Published at or after (RFC 3339 or YYYY-MM-DD).
    pub from: Option<String>,
    /// Published at or before (RFC 3339, or YYYY-MM-DD for the whole day).
    pub to: Option<String>,
    /// `relevance` by default.
    #[schemars(with = "Option<SearchSort>")]
    pub sort: Option<String>,
    /// The previous page's `next_cursor`, with every other parameter
    /// unchanged.
    pub cursor: Option<String>,
    /// 1–100; 20 by default.
    pub limit: Option<i64>,
}

/// A course as a search result names it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SearchCourse {
    pub id: Uuid,
    pub title: String,
    pub resource_type: ResourceType,
    pub discipline: Option<DisciplineRef>,
    /// Its authors, in the order they are credited.
    pub experts: Vec<ExpertRef>,
    /// Sorted.
    pub tags: Vec<String>,
}

/// One lesson found.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SearchResult {
    pub lesson_id: Uuid,
    /// The lesson's title.
    pub title: String,
    /// The course the lesson belongs to.
    pub course: SearchCourse,
    /// The lesson's video length in seconds, once probed.
    pub duration_s: Option<f64>,
    /// When the course was published.
    pub published_at: Option<DateTime<Utc>>,
    /// How well the lesson matches `q` (higher is better; comparable only
    /// within one search): set when sorting by relevance with words to
    /// rank by, null otherwise.
    pub score: Option<f64>,
    /// Learners with progress on the lesson.
    pub watchers: i64,
    /// The course's ratings.
    pub rating: RatingSummary,
}

/// One page of results, best first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SearchPage {
    pub results: Vec<SearchResult>,
    /// Pass as `cursor`, with the same other parameters, for the next
    /// page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page ends, as `next_cursor` carries it. The field names are
/// short and stable: cursors handed out before a deploy stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SearchCursor {
    /// The sort key of the last result.
    k: f64,
    /// Its lesson id.
    i: Uuid,
    /// Which query the cursor belongs to ([`query_hash`]).
    h: String,
}

/// A search as [`SearchParams::parse`] accepted it: what the SQL is built
/// from.
#[derive(Debug)]
pub struct CheckedSearch {
    /// The `tsquery` literal; `None` when `q` has no searchable words.
    tsquery: Option<String>,
    discipline: Option<Uuid>,
    resource_type: Option<ResourceType>,
    expert: Option<Uuid>,
    min_duration: Option<f64>,
    max_duration: Option<f64>,
    from: Option<DateTime<Utc>>,
    /// The upper bound, and whether it is exclusive (a date-only `to`
    /// became the next midnight).
    to: Option<(DateTime<Utc>, bool)>,
    sort: SearchSort,
    limit: i64,
    after: Option<SearchCursor>,
    /// Which query this is, for the cursor of its next page.
    hash: String,
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
    Err(ApiError::new(
        ErrorCode::InvalidDate,
        format!(
            "{name}={value:?} is not a date; use YYYY-MM-DD or RFC 3339 (2026-01-31T08:00:00Z)"
        ),
    ))
}

/// Which query a cursor was issued for: everything but the cursor itself.
fn query_hash(p: &SearchParams, sort: SearchSort, limit: i64) -> String {
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{limit}",
        p.q,
        p.discipline,
        p.resource_type,
        p.expert,
        p.min_duration,
        p.max_duration,
        p.from,
        p.to,
        sort.as_str()
    );
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

impl SearchParams {
    /// Checks everything the caller sent, before any SQL: a 400 with one
    /// of the codes listed on [`SearchParams`] for what does not parse,
    /// including a cursor issued for another query.
    pub fn parse(&self) -> Result<CheckedSearch, ApiError> {
        let p = self;
        let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
        if q.is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS) {
            return Err(ApiError::new(
                ErrorCode::InvalidQueryText,
                format!("q is at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let resource_type = p
            .resource_type
            .as_deref()
            .map(|t| ResourceType::read(t, "type", ErrorCode::InvalidType))
            .transpose()?;
        let sort = p
            .sort
            .as_deref()
            .map(|s| SearchSort::read(s, "sort", ErrorCode::InvalidSort))
            .transpose()?
            .unwrap_or(SearchSort::Relevance);
        let limit = SEARCH_PAGE.of(p.limit)?;
        for (name, v) in [
            ("min_duration", p.min_duration),
            ("max_duration", p.max_duration),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(ApiError::new(
                    ErrorCode::InvalidDuration,
                    format!("{name} is a number of seconds ≥ 0"),
                ));
            }
        }
        if let (Some(min), Some(max)) = (p.min_duration, p.max_duration) {
            if min > max {
                return Err(ApiError::new(
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
                .map(|v| {
                    let exclusive = v.parse::<NaiveDate>().is_ok();
                    parse_bound(v, "to", true).map(|t| (t, exclusive))
                })
                .transpose()?;
        let hash = query_hash(p, sort, limit);
        let after = match &p.cursor {
            None => None,
            Some(c) => {
                let cursor: SearchCursor = Cursor::decode(c)?;
                if cursor.h != hash {
                    return Err(ApiError::new(
                        ErrorCode::InvalidCursor,
                        "the cursor belongs to another search (its parameters changed); \
                         start again without it",
                    ));
                }
                Some(cursor)
            }
        };
        Ok(CheckedSearch {
            tsquery: q.and_then(text::tsquery_literal),
            discipline: p.discipline,
            resource_type,
            expert: p.expert,
            min_duration: p.min_duration,
            max_duration: p.max_duration,
            from,
            to,
            sort,
            limit,
            after,
            hash,
        })
    }
}

impl CheckedSearch {
    /// The cursor of the page after the one ending at (`key`, `id`).
    fn cursor_after(&self, key: f64, id: Uuid) -> String {
        Cursor::encode(&SearchCursor {
            k: key,
            i: id,
            h: self.hash.clone(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct SearchRow {
    id: Uuid,
    sort_key: f64,
    title: String,
    course_id: Uuid,
    course_title: String,
    resource_type: ResourceType,
    discipline_id: Option<Uuid>,
    discipline_name: Option<String>,
    published_at: Option<DateTime<Utc>>,
    duration_s: Option<f64>,
    experts: JsonColumn<Vec<ExpertRef>>,
    tags: Vec<String>,
    watchers: i64,
    #[sqlx(flatten)]
    rating: RatingSummary,
}

/// Runs a search for a caller limited to `org` (`None`: every
/// organisation). Shared by the handler and `benchmarks/search`.
pub async fn search(
    db: &PgPool,
    org: Option<Uuid>,
    p: &SearchParams,
) -> Result<SearchPage, ApiError> {
    let s = p.parse()?;
    // Only lessons' own columns (publication, type and discipline are
    // copied there from the course), so the filter never joins.
    let filters = |qb: &mut QueryBuilder<Postgres>| {
        qb.push(" WHERE l.published");
        if let Some(org) = org {
            qb.push(" AND l.organisation_id = ").push_bind(org);
        }
        if let Some(tsq) = &s.tsquery {
            qb.push(" AND l.search_doc @@ ")
                .push_bind(tsq.clone())
                .push("::tsquery");
        }
        if let Some(discipline) = s.discipline {
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
        if let Some(t) = s.resource_type {
            qb.push(" AND l.resource_type = ").push_bind(t);
        }
        if let Some(expert) = s.expert {
            qb.push(" AND EXISTS (SELECT 1 FROM course_experts ce WHERE ce.course_id = l.course_id AND ce.expert_id = ")
                .push_bind(expert)
                .push(")");
        }
        // A scalar subquery, not EXISTS: a semi-join would hash every asset
        // of the catalogue, where this is one primary-key probe per match.
        let duration = " AND (SELECT a.duration_s FROM assets a WHERE a.id = l.asset_id)";
        if let Some(min) = s.min_duration {
            qb.push(duration).push(" >= ").push_bind(min);
        }
        if let Some(max) = s.max_duration {
            qb.push(duration).push(" <= ").push_bind(max);
        }
        if let Some(from) = s.from {
            qb.push(" AND l.published_at >= ").push_bind(from);
        }
        if let Some((to, exclusive)) = s.to {
            qb.push(if exclusive {
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
           coalesce((SELECT json_agg(json_build_object('id', e.id, 'name', e.name, 'title', e.title)
                                     ORDER BY ce.position, e.name)
                     FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
                     WHERE ce.course_id = l.course_id), '[]') AS experts,
           ARRAY(SELECT t.tag FROM course_tags t WHERE t.course_id = l.course_id ORDER BY t.tag) AS tags,
           (SELECT count(*) FROM lesson_progress lp WHERE lp.lesson_id = h.id) AS watchers, ",
    );
    qb.push(crate::ratings::summary_columns("l.course_id"));
    qb.push(" FROM (SELECT * FROM (SELECT l.id, l.published_at, ");
    let ranked = s.sort == SearchSort::Relevance && s.tsquery.is_some();
    let sort_by_time = !ranked && !matches!(s.sort, SearchSort::MostWatched | SearchSort::Rating);
    match (s.sort, &s.tsquery) {
        (SearchSort::Relevance, Some(tsq)) => qb
            .push("ts_rank_cd(l.search_doc, ")
            .push_bind(tsq.clone())
            .push("::tsquery)::float8"),
        (SearchSort::MostWatched, _) => {
            qb.push("(SELECT count(*) FROM lesson_progress lp WHERE lp.lesson_id = l.id)::float8")
        }
        // The Bayesian average, so one 5-star review does not outrank a
        // course many rated well (see `crate::ratings`).
        (SearchSort::Rating, _) => qb.push(crate::ratings::bayesian("l.course_id")),
        // Newest, and relevance without words to rank by.
        (SearchSort::Newest | SearchSort::Relevance, _) => {
            qb.push("extract(epoch FROM l.published_at)::float8")
        }
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
    if let Some(c) = &s.after {
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
    .push_bind(s.limit + 1)
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
    let mut rows: Vec<SearchRow> = qb.build_query_as().persistent(false).fetch_all(db).await?;
    let next_cursor = if rows.len() as i64 > s.limit {
        rows.truncate(s.limit as usize);
        rows.last().map(|r| s.cursor_after(r.sort_key, r.id))
    } else {
        None
    };
    let results = rows
        .into_iter()
        .map(|r| SearchResult {
            lesson_id: r.id,
            title: r.title,
            course: SearchCourse {
                id: r.course_id,
                title: r.course_title,
                resource_type: r.resource_type,
                discipline: r.discipline_id.map(|id| DisciplineRef {
                    id,
                    name: r.discipline_name.unwrap_or_default(),
                }),
                experts: r.experts.0,
                tags: r.tags,
            },
            duration_s: r.duration_s,
            published_at: r.published_at,
            score: ranked.then_some(r.sort_key),
            watchers: r.watchers,
            rating: r.rating,
        })
        .collect();
    Ok(SearchPage {
        results,
        next_cursor,
    })
}
