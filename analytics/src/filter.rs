//! The filters every report takes — a date range in the organisation's
//! time zone, a discipline (with its descendants), a resource type, a
//! course — resolved once into the organisation, its local dates and the
//! set of courses the report covers.

use chrono::{Duration, NaiveDate};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use lectern_web::{ApiError, ErrorCode, Principal};

/// The longest range a report covers.
pub const MAX_DAYS: i64 = 366;

/// Filters of a report. Dates are the organisation's local dates
/// (`time_zone`, Asia/Shanghai unless set), both ends included; by default
/// the 30 days up to today.
#[derive(Debug, Default, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
pub struct ReportQuery {
    /// First day (YYYY-MM-DD), included.
    pub from: Option<NaiveDate>,
    /// Last day (YYYY-MM-DD), included.
    pub to: Option<NaiveDate>,
    /// Only courses of this discipline or any discipline below it.
    pub discipline_id: Option<Uuid>,
    /// Only courses of this resource type (`video_course`, `clinical_case`,
    /// `guideline`, `live_replay`).
    pub resource_type: Option<String>,
    /// Only this course.
    pub course_id: Option<Uuid>,
    /// A global super admin names the organisation.
    pub org_id: Option<Uuid>,
}

/// A report's scope, resolved.
#[derive(Debug, Clone)]
pub struct Scope {
    pub org: Uuid,
    pub time_zone: String,
    pub today: NaiveDate,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// `None`: every course of the organisation.
    pub courses: Option<Vec<Uuid>>,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    time_zone: String,
    today: NaiveDate,
}

pub async fn resolve(
    db: &PgPool,
    principal: &Principal,
    q: &ReportQuery,
) -> Result<Scope, ApiError> {
    resolve_for(db, principal.target_org(q.org_id)?, q).await
}

/// [`resolve`] for an organisation already decided (a background export).
pub async fn resolve_for(db: &PgPool, org: Uuid, q: &ReportQuery) -> Result<Scope, ApiError> {
    let row: OrgRow = sqlx::query_as(
        "SELECT time_zone, (now() AT TIME ZONE time_zone)::date AS today
         FROM organisations WHERE id = $1",
    )
    .bind(org)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no organisation {org}")))?;
    let to = q.to.unwrap_or(row.today);
    let from = q.from.unwrap_or(to - Duration::days(29));
    if from > to {
        return Err(ApiError::new(
            ErrorCode::InvalidDateRange,
            format!("from ({from}) is after to ({to})"),
        ));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::new(
            ErrorCode::InvalidDateRange,
            format!("a report covers at most {MAX_DAYS} days; {from} to {to} is longer"),
        ));
    }
    if let Some(t) = &q.resource_type {
        if !["video_course", "clinical_case", "guideline", "live_replay"].contains(&t.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{t:?} is not a resource type; expected video_course, clinical_case, guideline or live_replay"),
            ));
        }
    }
    let courses = if q.discipline_id.is_none() && q.resource_type.is_none() && q.course_id.is_none()
    {
        None
    } else {
        if let Some(d) = q.discipline_id {
            let known: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM disciplines WHERE id = $1 AND organisation_id = $2)",
            )
            .bind(d)
            .bind(org)
            .fetch_one(db)
            .await?;
            if !known {
                return Err(ApiError::not_found(format!("no discipline {d}")));
            }
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "WITH RECURSIVE below AS (
                 SELECT id FROM disciplines WHERE id = $2 AND organisation_id = $1
                 UNION ALL
                 SELECT d.id FROM disciplines d JOIN below b ON d.parent_id = b.id
             )
             SELECT c.id FROM courses c
             WHERE c.organisation_id = $1
               AND ($2::uuid IS NULL OR c.discipline_id IN (SELECT id FROM below))
               AND ($3::text IS NULL OR c.resource_type = $3)
               AND ($4::uuid IS NULL OR c.id = $4)",
        )
        .bind(org)
        .bind(q.discipline_id)
        .bind(q.resource_type.as_deref())
        .bind(q.course_id)
        .fetch_all(db)
        .await?;
        Some(ids)
    };
    Ok(Scope {
        org,
        time_zone: row.time_zone,
        today: row.today,
        from,
        to,
        courses,
    })
}
