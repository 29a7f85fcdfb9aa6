//! Quality of experience: what the player saw (startup time, rebuffering,
//! bitrate switches, fatal errors), reported by the player SDK and
//! summarised for content admins. A few events per playback: inserted
//! directly, one multi-row insert per report.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{signed_in, unprocessable};
use lectern_web::ErrorCode;
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiJson, ApiQuery};

use crate::LearningState;

pub fn routes(api: ApiRouter<LearningState>) -> ApiRouter<LearningState> {
    api.route(Method::POST, "/api/v1/qoe", Access::Session, report)
        .route(
            Method::GET,
            "/api/v1/qoe/summary",
            // Operators (content admins) see how delivery performs for their
            // learners; it is not a publishing decision.
            Access::Permission(Permission::ReadPlaybackQuality),
            summary,
        )
}

const MAX_EVENTS: usize = 50;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Startup,
    Rebuffer,
    BitrateSwitch,
    FatalError,
}

impl Kind {
    fn as_str(&self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Rebuffer => "rebuffer",
            Kind::BitrateSwitch => "bitrate_switch",
            Kind::FatalError => "fatal_error",
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Event {
    kind: Kind,
    startup_ms: Option<i64>,
    rebuffer_count: Option<i64>,
    rebuffer_ms: Option<i64>,
    from_bitrate: Option<i64>,
    to_bitrate: Option<i64>,
    error_code: Option<String>,
}

/// One event, or several of one playback.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Report {
    lesson_id: Option<Uuid>,
    /// The playback's id, if the player has one (correlates events).
    session_id: Option<Uuid>,
    #[serde(default)]
    events: Vec<Event>,
    /// A single event may be sent inline instead of in `events`.
    kind: Option<Kind>,
    startup_ms: Option<i64>,
    rebuffer_count: Option<i64>,
    rebuffer_ms: Option<i64>,
    from_bitrate: Option<i64>,
    to_bitrate: Option<i64>,
    error_code: Option<String>,
}

fn in_range(name: &str, v: Option<i64>, max: i64) -> Result<Option<i32>, ApiError> {
    match v {
        None => Ok(None),
        Some(v) if (0..=max).contains(&v) => Ok(Some(v as i32)),
        Some(v) => Err(unprocessable(
            ErrorCode::InvalidQoe,
            format!("{name} must be between 0 and {max}, got {v}"),
        )),
    }
}

struct Row {
    kind: &'static str,
    startup_ms: Option<i32>,
    rebuffer_count: Option<i32>,
    rebuffer_ms: Option<i32>,
    from_bitrate: Option<i32>,
    to_bitrate: Option<i32>,
    error_code: Option<String>,
}

fn check(e: Event) -> Result<Row, ApiError> {
    let required = |field: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(unprocessable(
                ErrorCode::InvalidQoe,
                format!("a {} event needs {field}", e.kind.as_str()),
            ))
        }
    };
    match e.kind {
        Kind::Startup => required("startup_ms", e.startup_ms.is_some())?,
        Kind::Rebuffer => required("rebuffer_ms", e.rebuffer_ms.is_some())?,
        Kind::BitrateSwitch => required("to_bitrate", e.to_bitrate.is_some())?,
        Kind::FatalError => required("error_code", e.error_code.is_some())?,
    }
    if let Some(code) = &e.error_code {
        let ok = (1..=100).contains(&code.len())
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !ok {
            return Err(unprocessable(
                ErrorCode::InvalidQoe,
                "error_code is 1–100 characters of letters, digits and _ - . :",
            ));
        }
    }
    Ok(Row {
        kind: e.kind.as_str(),
        startup_ms: in_range("startup_ms", e.startup_ms, 600_000)?,
        rebuffer_count: in_range("rebuffer_count", e.rebuffer_count, 100_000)?,
        rebuffer_ms: in_range("rebuffer_ms", e.rebuffer_ms, 86_400_000)?,
        from_bitrate: in_range("from_bitrate", e.from_bitrate, i32::MAX as i64)?,
        to_bitrate: in_range("to_bitrate", e.to_bitrate, i32::MAX as i64)?,
        error_code: e.error_code,
    })
}

/// `POST /api/v1/qoe` with one event (`{"kind": "startup", "startup_ms":
/// 850, "lesson_id": …}`) or `{"lesson_id", "events": [...]}` → 204.
async fn report(
    State(state): State<LearningState>,
    principal: Principal,
    ApiJson(report): ApiJson<Report>,
) -> Result<StatusCode, ApiError> {
    let user_id = signed_in(&principal)?;
    let mut events = report.events;
    if let Some(kind) = report.kind {
        events.push(Event {
            kind,
            startup_ms: report.startup_ms,
            rebuffer_count: report.rebuffer_count,
            rebuffer_ms: report.rebuffer_ms,
            from_bitrate: report.from_bitrate,
            to_bitrate: report.to_bitrate,
            error_code: report.error_code,
        });
    }
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(unprocessable(
            ErrorCode::InvalidQoe,
            format!("send 1 to {MAX_EVENTS} events"),
        ));
    }
    let rows = events
        .into_iter()
        .map(check)
        .collect::<Result<Vec<_>, _>>()?;
    // The organisation of the lesson reported on, which must be one the
    // caller can see; without a lesson, the caller's own.
    let org = match report.lesson_id {
        Some(id) => {
            let lesson = state.learning.lessons.get(&state.db, id).await?;
            match lesson.filter(|l| l.in_scope(principal.org_scope())) {
                Some(l) => l.org_id,
                None => return Err(ApiError::not_found(format!("no lesson {id}"))),
            }
        }
        None => principal.target_org(None)?,
    };
    let mut qb = sqlx::QueryBuilder::new(
        "INSERT INTO qoe_events (organisation_id, user_id, lesson_id, session_id, kind, startup_ms,
         rebuffer_count, rebuffer_ms, from_bitrate, to_bitrate, error_code) ",
    );
    qb.push_values(rows, |mut b, r| {
        b.push_bind(org)
            .push_bind(user_id)
            .push_bind(report.lesson_id)
            .push_bind(report.session_id)
            .push_bind(r.kind)
            .push_bind(r.startup_ms)
            .push_bind(r.rebuffer_count)
            .push_bind(r.rebuffer_ms)
            .push_bind(r.from_bitrate)
            .push_bind(r.to_bitrate)
            .push_bind(r.error_code);
    });
    qb.build().execute(&state.db).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SummaryParams {
    /// Look back this many hours (1–720, default 24).
    hours: Option<i64>,
    /// For a global super admin: one organisation.
    org_id: Option<Uuid>,
}

/// `GET /api/v1/qoe/summary?hours=24` → startup percentiles, rebuffering,
/// bitrate switches and fatal errors by code, for the caller's
/// organisation.
async fn summary(
    State(state): State<LearningState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<SummaryParams>,
) -> Result<Json<Value>, ApiError> {
    let hours = params.hours.unwrap_or(24);
    if !(1..=720).contains(&hours) {
        return Err(ApiError::new(
            ErrorCode::InvalidHours,
            format!("hours must be between 1 and 720, got {hours}"),
        ));
    }
    let org = match (principal.org_scope(), params.org_id) {
        (Some(_), _) => Some(principal.target_org(params.org_id)?),
        (None, named) => named,
    };
    let (startups, p50, p95, rebuffers, rebuffer_ms, switches): (
        i64,
        Option<f64>,
        Option<f64>,
        i64,
        Option<i64>,
        i64,
    ) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'startup'),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY startup_ms) FILTER (WHERE kind = 'startup'),
                percentile_cont(0.95) WITHIN GROUP (ORDER BY startup_ms) FILTER (WHERE kind = 'startup'),
                coalesce(sum(coalesce(rebuffer_count, 1)) FILTER (WHERE kind = 'rebuffer'), 0)::bigint,
                sum(rebuffer_ms) FILTER (WHERE kind = 'rebuffer')::bigint,
                count(*) FILTER (WHERE kind = 'bitrate_switch')
         FROM qoe_events
         WHERE ($1::uuid IS NULL OR organisation_id = $1) AND at > now() - make_interval(hours => $2::int)",
    )
    .bind(org)
    .bind(hours as i32)
    .fetch_one(&state.db)
    .await?;
    let errors: Vec<(String, i64)> = sqlx::query_as(
        "SELECT error_code, count(*) FROM qoe_events
         WHERE kind = 'fatal_error' AND ($1::uuid IS NULL OR organisation_id = $1)
           AND at > now() - make_interval(hours => $2::int)
         GROUP BY error_code ORDER BY count(*) DESC, error_code LIMIT 20",
    )
    .bind(org)
    .bind(hours as i32)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(json!({
        "hours": hours,
        "org_id": org,
        "startups": startups,
        "startup_ms": { "p50": p50, "p95": p95 },
        "rebuffers": rebuffers,
        "rebuffer_ms": rebuffer_ms.unwrap_or(0),
        "bitrate_switches": switches,
        "fatal_errors": errors.into_iter().map(|(code, n)| json!({ "code": code, "count": n })).collect::<Vec<_>>(),
    })))
}
