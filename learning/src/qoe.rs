//! Quality of experience: what the player saw (startup time, rebuffering,
//! bitrate switches, fatal errors), reported by the player SDK and
//! summarised for content admins. A few events per playback: inserted
//! directly, one multi-row insert per report.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::signed_in;
use lectern_web::ErrorCode;
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiJson, ApiQuery, NoContent};

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

/// What the player saw.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum QoeEventKind {
    /// Playback started: `startup_ms` from the play request to the first frame.
    Startup,
    /// Playback stalled for data: `rebuffer_ms` (and `rebuffer_count` stalls).
    Rebuffer,
    /// The player changed rung: `to_bitrate` (and `from_bitrate`).
    BitrateSwitch,
    /// The player gave up: `error_code`.
    FatalError,
}

impl QoeEventKind {
    fn as_str(&self) -> &'static str {
        match self {
            QoeEventKind::Startup => "startup",
            QoeEventKind::Rebuffer => "rebuffer",
            QoeEventKind::BitrateSwitch => "bitrate_switch",
            QoeEventKind::FatalError => "fatal_error",
        }
    }
}

/// One thing the player saw; which fields it needs depends on `kind`.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct QoeEvent {
    kind: QoeEventKind,
    /// Milliseconds from the play request to the first frame (0–600000).
    startup_ms: Option<i64>,
    /// How many stalls this event sums up (default 1).
    rebuffer_count: Option<i64>,
    /// Milliseconds spent stalled (0–86400000).
    rebuffer_ms: Option<i64>,
    /// Bits per second of the rung left.
    from_bitrate: Option<i64>,
    /// Bits per second of the rung switched to.
    to_bitrate: Option<i64>,
    /// The player's error code: 1–100 letters, digits and `_ - . :`.
    error_code: Option<String>,
}

/// One event, or several (1–50) of one playback.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct QoeReport {
    /// The lesson played; without it, the events count for the caller's
    /// organisation.
    lesson_id: Option<Uuid>,
    /// The playback session's `playback_id`, if the player has one
    /// (correlates events).
    session_id: Option<Uuid>,
    #[serde(default)]
    events: Vec<QoeEvent>,
    /// A single event may be sent inline instead of in `events`.
    kind: Option<QoeEventKind>,
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
        Some(v) => Err(ApiError::new(
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

fn check(e: QoeEvent) -> Result<Row, ApiError> {
    let required = |field: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidQoe,
                format!("a {} event needs {field}", e.kind.as_str()),
            ))
        }
    };
    match e.kind {
        QoeEventKind::Startup => required("startup_ms", e.startup_ms.is_some())?,
        QoeEventKind::Rebuffer => required("rebuffer_ms", e.rebuffer_ms.is_some())?,
        QoeEventKind::BitrateSwitch => required("to_bitrate", e.to_bitrate.is_some())?,
        QoeEventKind::FatalError => required("error_code", e.error_code.is_some())?,
    }
    if let Some(code) = &e.error_code {
        let ok = (1..=100).contains(&code.len())
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !ok {
            return Err(ApiError::new(
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
    ApiJson(report): ApiJson<QoeReport>,
) -> Result<NoContent, ApiError> {
    let user_id = signed_in(&principal)?;
    let mut events = report.events;
    if let Some(kind) = report.kind {
        events.push(QoeEvent {
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
        return Err(ApiError::new(
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
    Ok(NoContent)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct SummaryParams {
    /// Look back this many hours (1–720, default 24).
    hours: Option<i64>,
    /// For a global super admin: one organisation.
    org_id: Option<Uuid>,
}

/// Startup time percentiles, in milliseconds.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StartupPercentiles {
    /// Median; null without startups.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// How many fatal errors had one code.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct FatalErrorCount {
    pub code: String,
    pub count: i64,
}

/// How playback went for an organisation's learners over a window.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct QoeSummary {
    /// The window, in hours back from now.
    pub hours: i64,
    /// The organisation summarised; null for all (a global super admin).
    pub org_id: Option<Uuid>,
    /// Playbacks that started.
    pub startups: i64,
    pub startup_ms: StartupPercentiles,
    /// Stalls for data.
    pub rebuffers: i64,
    /// Milliseconds spent stalled, all together.
    pub rebuffer_ms: i64,
    pub bitrate_switches: i64,
    /// The 20 most frequent fatal error codes, most frequent first.
    pub fatal_errors: Vec<FatalErrorCount>,
}

#[derive(sqlx::FromRow)]
struct Totals {
    startups: i64,
    p50: Option<f64>,
    p95: Option<f64>,
    rebuffers: i64,
    rebuffer_ms: Option<i64>,
    switches: i64,
}

/// `GET /api/v1/qoe/summary?hours=24` → startup percentiles, rebuffering,
/// bitrate switches and fatal errors by code, for the caller's
/// organisation.
async fn summary(
    State(state): State<LearningState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<SummaryParams>,
) -> Result<Json<QoeSummary>, ApiError> {
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
    let totals: Totals = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'startup') AS startups,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY startup_ms) FILTER (WHERE kind = 'startup') AS p50,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY startup_ms) FILTER (WHERE kind = 'startup') AS p95,
                coalesce(sum(coalesce(rebuffer_count, 1)) FILTER (WHERE kind = 'rebuffer'), 0)::bigint AS rebuffers,
                sum(rebuffer_ms) FILTER (WHERE kind = 'rebuffer')::bigint AS rebuffer_ms,
                count(*) FILTER (WHERE kind = 'bitrate_switch') AS switches
         FROM qoe_events
         WHERE ($1::uuid IS NULL OR organisation_id = $1) AND at > now() - make_interval(hours => $2::int)",
    )
    .bind(org)
    .bind(hours as i32)
    .fetch_one(&state.db)
    .await?;
    let fatal_errors: Vec<FatalErrorCount> = sqlx::query_as(
        "SELECT error_code AS code, count(*) AS count FROM qoe_events
         WHERE kind = 'fatal_error' AND ($1::uuid IS NULL OR organisation_id = $1)
           AND at > now() - make_interval(hours => $2::int)
         GROUP BY error_code ORDER BY count(*) DESC, error_code LIMIT 20",
    )
    .bind(org)
    .bind(hours as i32)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(QoeSummary {
        hours,
        org_id: org,
        startups: totals.startups,
        startup_ms: StartupPercentiles {
            p50: totals.p50,
            p95: totals.p95,
        },
        rebuffers: totals.rebuffers,
        rebuffer_ms: totals.rebuffer_ms.unwrap_or(0),
        bitrate_switches: totals.switches,
        fatal_errors,
    }))
}
