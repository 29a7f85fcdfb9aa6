//! What content admins set for reporting and credits: the organisation's
//! time zone (the days and hours of its reports), its credit rule, and a
//! course's credit designation (class, the project's cap, its code).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use lectern_web::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorCode, Principal};

use crate::credits::CreditRule;
use crate::reports::credit_rule;
use crate::AnalyticsState;

/// Names the organisation for a global super admin.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct OrgQuery {
    pub org_id: Option<Uuid>,
}

/// `GET /api/v1/credit-rule`: the rule in force (the default until set).
pub async fn get_rule(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
) -> Result<Json<CreditRule>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    Ok(Json(credit_rule(&state.db, org).await?))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidCreditRule, message)
}

/// `PUT /api/v1/credit-rule`.
pub async fn put_rule(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
    ApiJson(rule): ApiJson<CreditRule>,
) -> Result<Json<CreditRule>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    if !(rule.credits_per_hour > 0.0 && rule.credits_per_hour <= 100.0) {
        return Err(invalid(format!(
            "credits_per_hour must be above 0 and at most 100, got {}",
            rule.credits_per_hour
        )));
    }
    // Steps are whole hundredths of a credit (0.25, 0.5, 1 …), so rounding
    // stays exact.
    let hundredths = rule.rounding_step * 100.0;
    if !(0.01..=10.0).contains(&rule.rounding_step)
        || (hundredths - hundredths.round()).abs() > 1e-9
    {
        return Err(invalid(format!(
            "rounding_step must be a multiple of 0.01 between 0.01 and 10, got {}",
            rule.rounding_step
        )));
    }
    for (name, label) in [
        ("class_i_label", &rule.class_i_label),
        ("class_ii_label", &rule.class_ii_label),
    ] {
        if label.trim().is_empty() || label.chars().count() > 100 {
            return Err(invalid(format!("{name} must be 1–100 characters")));
        }
    }
    sqlx::query(
        "INSERT INTO credit_rules (organisation_id, credits_per_hour, rounding_step,
             class_i_label, class_ii_label)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (organisation_id) DO UPDATE SET credits_per_hour = EXCLUDED.credits_per_hour,
             rounding_step = EXCLUDED.rounding_step, class_i_label = EXCLUDED.class_i_label,
             class_ii_label = EXCLUDED.class_ii_label, updated_at = now()",
    )
    .bind(org)
    .bind(rule.credits_per_hour)
    .bind(rule.rounding_step)
    .bind(rule.class_i_label.trim())
    .bind(rule.class_ii_label.trim())
    .execute(&state.db)
    .await?;
    Ok(Json(credit_rule(&state.db, org).await?))
}

/// A course's credit designation.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Designation {
    /// 1 (class I) or 2 (class II).
    pub credit_class: i16,
    /// The most credits a learner earns from this course (the project's cap).
    pub max_credits: f64,
    /// The project's code as the accrediting body issued it.
    #[serde(default)]
    pub project_code: String,
}

/// `PUT /api/v1/courses/{course_id}/credit-designation`.
pub async fn put_designation(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(d): ApiJson<Designation>,
) -> Result<Json<Designation>, ApiError> {
    if !matches!(d.credit_class, 1 | 2) {
        return Err(invalid(format!(
            "credit_class must be 1 or 2, got {}",
            d.credit_class
        )));
    }
    if !(d.max_credits > 0.0 && d.max_credits <= 1000.0) {
        return Err(invalid(format!(
            "max_credits must be above 0 and at most 1000, got {}",
            d.max_credits
        )));
    }
    if d.project_code.chars().count() > 100 {
        return Err(invalid("project_code is at most 100 characters".into()));
    }
    let org: Option<Uuid> = sqlx::query_scalar(
        "SELECT organisation_id FROM courses
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?;
    let org = org.ok_or_else(|| ApiError::not_found(format!("no course {course_id}")))?;
    sqlx::query(
        "INSERT INTO course_credit_designations (course_id, organisation_id, credit_class,
             max_credits, project_code)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (course_id) DO UPDATE SET credit_class = EXCLUDED.credit_class,
             max_credits = EXCLUDED.max_credits, project_code = EXCLUDED.project_code,
             updated_at = now()",
    )
    .bind(course_id)
    .bind(org)
    .bind(d.credit_class)
    .bind(d.max_credits)
    .bind(d.project_code.trim())
    .execute(&state.db)
    .await?;
    Ok(Json(d))
}

/// The organisation's reporting time zone.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TimeZone {
    /// An IANA name, e.g. `Asia/Shanghai` (the default) or `Europe/Berlin`.
    pub time_zone: String,
}

/// `PUT /api/v1/reporting/time-zone`: days and hours of changes folded
/// from now on are this zone's (rollups already written keep theirs).
pub async fn put_time_zone(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
    ApiJson(tz): ApiJson<TimeZone>,
) -> Result<Json<TimeZone>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    // PostgreSQL's own list, so every zone accepted here converts in the
    // rollup (an unknown name would fail every fold).
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
            .bind(&tz.time_zone)
            .fetch_one(&state.db)
            .await?;
    if !known {
        return Err(ApiError::new(
            ErrorCode::InvalidTimeZone,
            format!(
                "{:?} is not a time zone name (e.g. Asia/Shanghai)",
                tz.time_zone
            ),
        ));
    }
    let done = sqlx::query("UPDATE organisations SET time_zone = $2 WHERE id = $1")
        .bind(org)
        .bind(&tz.time_zone)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    Ok(Json(tz))
}
