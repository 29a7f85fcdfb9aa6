//! xAPI (Experience API 1.0.3) statements of a learner's record, for an
//! organisation's learning record store or an audit to import:
//!
//! - **experienced** a lesson on a day (from the per-learner daily rollup),
//!   with the wall time as `result.duration` and the unique seconds gained
//!   as an extension;
//! - **completed** a lesson (`lesson_progress.completed_at`);
//! - **rated** a course (`course_ratings`, scaled score).
//!
//! Statement ids are UUID v5 of what they state, so exporting the same
//! range twice yields the same statements and an LRS stores them once.
//! The actor is an account on this Lectern (`homePage` + learner id), not
//! an email: the record names no more personal data than it needs.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use lectern_identity::audit::{self, AuditEvent};
use lectern_web::{ApiError, ApiPath, ApiQuery, ClientContext, ErrorCode, Principal};

use crate::filter::MAX_DAYS;
use crate::reports::learner_org;
use crate::AnalyticsState;

/// A date range in the organisation's time zone, both ends included;
/// by default the last 30 days.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct RangeQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Account {
    #[serde(rename = "homePage")]
    pub home_page: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Actor {
    #[serde(rename = "objectType")]
    pub object_type: String,
    pub account: Account,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LanguageMap {
    #[serde(rename = "zh-CN", skip_serializing_if = "Option::is_none")]
    pub zh_cn: Option<String>,
    #[serde(rename = "en-US", skip_serializing_if = "Option::is_none")]
    pub en_us: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Verb {
    pub id: String,
    pub display: LanguageMap,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActivityDefinition {
    pub name: LanguageMap,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Activity {
    #[serde(rename = "objectType")]
    pub object_type: String,
    pub id: String,
    pub definition: ActivityDefinition,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Score {
    pub raw: f64,
    pub min: f64,
    pub max: f64,
    pub scaled: f64,
}

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct XapiResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<bool>,
    /// ISO 8601 duration, e.g. `PT1H2M3.5S`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    /// `<base>/xapi/extensions/unique-seconds`: media seconds watched for
    /// the first time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extensions: Option<std::collections::BTreeMap<String, f64>>,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct XapiStatement {
    pub id: Uuid,
    pub actor: Actor,
    pub verb: Verb,
    pub object: Activity,
    pub result: XapiResult,
    pub timestamp: DateTime<Utc>,
}

/// `GET …/xapi`: the statements, oldest first.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct XapiStatements {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub statements: Vec<XapiStatement>,
}

/// ISO 8601 duration of `seconds`.
pub fn iso_duration(seconds: f64) -> String {
    let total = (seconds.max(0.0) * 100.0).round() / 100.0;
    let h = (total / 3600.0).floor();
    let m = ((total - h * 3600.0) / 60.0).floor();
    let s = total - h * 3600.0 - m * 60.0;
    let s = (s * 100.0).round() / 100.0;
    format!("PT{}H{}M{}S", h as u64, m as u64, s)
}

const EXPERIENCED: &str = "http://adlnet.gov/expapi/verbs/experienced";
const COMPLETED: &str = "http://adlnet.gov/expapi/verbs/completed";
const RATED: &str = "http://id.tincanapi.com/verb/rated";
const LESSON: &str = "http://adlnet.gov/expapi/activities/lesson";
const COURSE: &str = "http://adlnet.gov/expapi/activities/course";

fn verb(id: &str, zh: &str, en: &str) -> Verb {
    Verb {
        id: id.into(),
        display: LanguageMap {
            zh_cn: Some(zh.into()),
            en_us: Some(en.into()),
        },
    }
}

pub(crate) async fn statements(
    state: &AnalyticsState,
    org: Uuid,
    user_id: Uuid,
    q: &RangeQuery,
) -> Result<XapiStatements, ApiError> {
    let db = &state.db;
    let (tz, today): (String, NaiveDate) = {
        #[derive(sqlx::FromRow)]
        struct Row {
            time_zone: String,
            today: NaiveDate,
        }
        let r: Row = sqlx::query_as(
            "SELECT time_zone, (now() AT TIME ZONE time_zone)::date AS today
             FROM organisations WHERE id = $1",
        )
        .bind(org)
        .fetch_one(db)
        .await?;
        (r.time_zone, r.today)
    };
    let to = q.to.unwrap_or(today);
    let from = q.from.unwrap_or(to - Duration::days(29));
    if from > to || (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::new(
            ErrorCode::InvalidDateRange,
            format!("from..to must be ordered and at most {MAX_DAYS} days; got {from}..{to}"),
        ));
    }
    let base = state
        .settings
        .public_base_url
        .trim_end_matches('/')
        .to_string();
    let actor = || Actor {
        object_type: "Agent".into(),
        account: Account {
            home_page: base.clone(),
            name: user_id.to_string(),
        },
    };
    let activity = |kind: &str, path: &str, id: Uuid, title: &str| Activity {
        object_type: "Activity".into(),
        id: format!("{base}/{path}/{id}"),
        definition: ActivityDefinition {
            name: LanguageMap {
                zh_cn: Some(title.to_string()),
                en_us: None,
            },
            kind: kind.into(),
        },
    };
    let statement_id = |what: String| Uuid::new_v5(&Uuid::NAMESPACE_URL, what.as_bytes());
    let mut out = Vec::new();

    #[derive(sqlx::FromRow)]
    struct Watched {
        day: NaiveDate,
        lesson_id: Uuid,
        title: String,
        watch_s: f64,
        unique_s: f64,
        at: DateTime<Utc>,
    }
    let watched: Vec<Watched> = sqlx::query_as(
        "SELECT r.day, r.lesson_id, l.title, r.watch_s, r.unique_s,
                ((r.day + 1)::timestamp AT TIME ZONE $4) - interval '1 second' AS at
         FROM rollup_learner_daily r JOIN lessons l ON l.id = r.lesson_id
         WHERE r.user_id = $1 AND r.organisation_id = $5 AND r.day BETWEEN $2 AND $3
           AND r.watch_s > 0
         ORDER BY r.day, r.lesson_id",
    )
    .bind(user_id)
    .bind(from)
    .bind(to)
    .bind(&tz)
    .bind(org)
    .fetch_all(db)
    .await?;
    for w in watched {
        let mut ext = std::collections::BTreeMap::new();
        ext.insert(format!("{base}/xapi/extensions/unique-seconds"), w.unique_s);
        out.push(XapiStatement {
            id: statement_id(format!(
                "{base}/experienced/{user_id}/{}/{}",
                w.lesson_id, w.day
            )),
            actor: actor(),
            verb: verb(EXPERIENCED, "观看", "experienced"),
            object: activity(LESSON, "lessons", w.lesson_id, &w.title),
            result: XapiResult {
                duration: Some(iso_duration(w.watch_s)),
                extensions: Some(ext),
                ..XapiResult::default()
            },
            timestamp: w.at,
        });
    }

    #[derive(sqlx::FromRow)]
    struct Done {
        lesson_id: Uuid,
        title: String,
        completed_at: DateTime<Utc>,
        watch_time_s: f64,
    }
    let done: Vec<Done> = sqlx::query_as(
        "SELECT lp.lesson_id, l.title, lp.completed_at, lp.watch_time_s
         FROM lesson_progress lp JOIN lessons l ON l.id = lp.lesson_id
         WHERE lp.user_id = $1 AND lp.organisation_id = $5
           AND lp.completed_at >= ($2::timestamp AT TIME ZONE $4)
           AND lp.completed_at < (($3 + 1)::timestamp AT TIME ZONE $4)
         ORDER BY lp.completed_at",
    )
    .bind(user_id)
    .bind(from)
    .bind(to)
    .bind(&tz)
    .bind(org)
    .fetch_all(db)
    .await?;
    for d in done {
        out.push(XapiStatement {
            id: statement_id(format!("{base}/completed/{user_id}/{}", d.lesson_id)),
            actor: actor(),
            verb: verb(COMPLETED, "完成", "completed"),
            object: activity(LESSON, "lessons", d.lesson_id, &d.title),
            result: XapiResult {
                completion: Some(true),
                duration: Some(iso_duration(d.watch_time_s)),
                ..XapiResult::default()
            },
            timestamp: d.completed_at,
        });
    }

    #[derive(sqlx::FromRow)]
    struct Rated {
        course_id: Uuid,
        title: String,
        rating: i16,
        updated_at: DateTime<Utc>,
    }
    let rated: Vec<Rated> = sqlx::query_as(
        "SELECT r.course_id, c.title, r.rating, r.updated_at
         FROM course_ratings r JOIN courses c ON c.id = r.course_id
         WHERE r.user_id = $1 AND c.organisation_id = $5
           AND r.updated_at >= ($2::timestamp AT TIME ZONE $4)
           AND r.updated_at < (($3 + 1)::timestamp AT TIME ZONE $4)
         ORDER BY r.updated_at",
    )
    .bind(user_id)
    .bind(from)
    .bind(to)
    .bind(&tz)
    .bind(org)
    .fetch_all(db)
    .await?;
    for r in rated {
        let raw = f64::from(r.rating);
        out.push(XapiStatement {
            id: statement_id(format!(
                "{base}/rated/{user_id}/{}/{}",
                r.course_id,
                r.updated_at.timestamp_micros()
            )),
            actor: actor(),
            verb: verb(RATED, "评分", "rated"),
            object: activity(COURSE, "courses", r.course_id, &r.title),
            result: XapiResult {
                score: Some(Score {
                    raw,
                    min: 1.0,
                    max: 5.0,
                    scaled: (raw - 1.0) / 4.0,
                }),
                ..XapiResult::default()
            },
            timestamp: r.updated_at,
        });
    }
    out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
    Ok(XapiStatements {
        from,
        to,
        statements: out,
    })
}

/// `GET /api/v1/reports/learners/{user_id}/xapi`: personal data (a
/// step-up), audited.
pub async fn learner(
    State(state): State<AnalyticsState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<XapiStatements>, ApiError> {
    let org = learner_org(&state.db, &principal, user_id).await?;
    let out = statements(&state, org, user_id, &q).await?;
    audit::record_or_log(
        &state.identity,
        &AuditEvent {
            action: "reports.xapi".into(),
            outcome: "ok",
            target: Some(format!("user:{user_id}")),
            detail: Some(
                serde_json::json!({
                    "from": out.from, "to": out.to,
                    "statements": out.statements.len(), "step_up": "consumed",
                })
                .to_string(),
            ),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(out))
}

/// `GET /api/v1/me/xapi`: the caller's own record.
pub async fn own(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<XapiStatements>, ApiError> {
    let (Some(user_id), Some(org)) = (principal.user_id(), principal.org_scope()) else {
        // A global account learns nowhere: its record is empty.
        let today = Utc::now().date_naive();
        return Ok(Json(XapiStatements {
            from: q.from.unwrap_or(today - Duration::days(29)),
            to: q.to.unwrap_or(today),
            statements: Vec::new(),
        }));
    };
    Ok(Json(statements(&state, org, user_id, &q).await?))
}

#[cfg(test)]
mod tests {
    use super::iso_duration;

    #[test]
    fn durations_are_iso_8601() {
        assert_eq!(iso_duration(0.0), "PT0H0M0S");
        assert_eq!(iso_duration(87.5), "PT0H1M27.5S");
        assert_eq!(iso_duration(3723.25), "PT1H2M3.25S");
    }
}
