//! Learning analytics: who learned what, how well it played, and what it
//! earned.
//!
//! - [`figures`] defines every figure exactly (views, watch time, unique
//!   seconds, completion, retention, re-watched moments) from viewings;
//! - [`rollup`] keeps hourly and daily rollups up to date from the queue of
//!   what changed in `lesson_progress` (a background task; no rescans);
//! - [`reports`] answers the report routes from the rollups (and, for a
//!   lesson's retention, from the learners' watched unions);
//! - [`export`] writes reports as streamed CSV or XLSX, small ones in the
//!   response and large ones as background jobs stored in object storage;
//! - [`credits`] turns unique watched seconds into CME credits, and
//!   [`certificate`] issues certificates (PDF with a subset CJK font and a
//!   QR code to the public verification page);
//! - [`xapi`] writes a learner's record as xAPI statements.
//!
//! Everything an organisation sees is scoped to it
//! ([`Principal::org_scope`]): another organisation's courses, lessons,
//! learners and experts answer 404.

pub mod certificate;
pub mod credits;
pub mod export;
pub mod figures;
pub mod filter;
pub mod reports;
pub mod rollup;
mod settings;
pub mod xapi;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::http::Method;
use lectern_identity::Identity;
use lectern_storage::Store;
use lectern_web::{Access, ApiRouter, Permission};
use sqlx::PgPool;

/// What a deployment decides about analytics.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// The public address of the API, e.g. `https://learn.example.org`:
    /// certificates' QR codes point to `<base>/verify/<serial>`.
    pub public_base_url: String,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            public_base_url: "http://localhost:8080".into(),
        }
    }
}

/// The analytics area's state.
#[derive(Clone)]
pub struct AnalyticsState {
    pub db: PgPool,
    /// Field keys (learners' names on certificates and exports) and the
    /// audit log.
    pub identity: Identity,
    /// Where finished exports are kept for download.
    pub store: Arc<dyn Store>,
    pub settings: Arc<AnalyticsSettings>,
    /// Set once migrations have been applied; background work waits.
    pub schema_ready: Arc<AtomicBool>,
}

pub fn routes(api: ApiRouter<AnalyticsState>) -> ApiRouter<AnalyticsState> {
    use Access::{Permission as may, Public, Session};
    use Method as M;
    api.route(
        M::GET,
        "/api/v1/reports/overview",
        may(Permission::ReadReports),
        reports::overview,
    )
    .route(
        M::GET,
        "/api/v1/reports/courses",
        may(Permission::ReadReports),
        reports::courses,
    )
    .route(
        M::GET,
        "/api/v1/reports/courses/{course_id}",
        may(Permission::ReadReports),
        reports::course,
    )
    .route(
        M::GET,
        "/api/v1/reports/lessons/{lesson_id}",
        may(Permission::ReadReports),
        reports::lesson,
    )
    .route(
        M::GET,
        "/api/v1/reports/experts/{expert_id}",
        may(Permission::ReadReports),
        reports::expert,
    )
    .route(
        M::GET,
        "/api/v1/me/expert-report",
        may(Permission::ReadOwnCourseReports),
        reports::own_expert,
    )
    .route(
        M::GET,
        "/api/v1/reports/qoe",
        may(Permission::ReadReports),
        reports::qoe,
    )
    .route(
        M::GET,
        "/api/v1/reports/learners/{user_id}/transcript",
        may(Permission::ReadReports),
        reports::transcript,
    )
    .route(
        M::GET,
        "/api/v1/me/transcript",
        Session,
        reports::own_transcript,
    )
    .route(
        M::GET,
        "/api/v1/reports/courses.csv",
        may(Permission::ReadReports),
        export::courses_csv,
    )
    .describe(|op| {
        op.raw(
            200,
            "text/csv",
            "the course report (one row per course), streamed",
        );
    })
    .route(
        M::GET,
        "/api/v1/reports/learner-activity.csv",
        may(Permission::ExportLearnerRecords),
        export::learner_activity_csv,
    )
    .describe(|op| {
        op.raw(
            200,
            "text/csv",
            "one row per learner × lesson × day in the range (learner id and email), streamed",
        );
    })
    .route(
        M::POST,
        "/api/v1/reports/exports",
        may(Permission::ExportLearnerRecords),
        export::start,
    )
    .route(
        M::GET,
        "/api/v1/reports/exports/{export_id}",
        // Progress names no one: polling it needs no step-up each time.
        may(Permission::ReadReports),
        export::status,
    )
    .route(
        M::GET,
        "/api/v1/reports/exports/{export_id}/download",
        may(Permission::ExportLearnerRecords),
        export::download,
    )
    .describe(|op| {
        op.raw(
            200,
            "application/octet-stream",
            "the finished export (text/csv or an XLSX workbook)",
        );
    })
    .route(
        M::GET,
        "/api/v1/reports/learners/{user_id}/xapi",
        may(Permission::ExportLearnerRecords),
        xapi::learner,
    )
    .route(M::GET, "/api/v1/me/xapi", Session, xapi::own)
    .route(
        M::GET,
        "/api/v1/credit-rule",
        may(Permission::ManageCredits),
        settings::get_rule,
    )
    .route(
        M::PUT,
        "/api/v1/credit-rule",
        may(Permission::ManageCredits),
        settings::put_rule,
    )
    .route(
        M::PUT,
        "/api/v1/courses/{course_id}/credit-designation",
        may(Permission::ManageCredits),
        settings::put_designation,
    )
    .route(
        M::PUT,
        "/api/v1/reporting/time-zone",
        may(Permission::ManageCredits),
        settings::put_time_zone,
    )
    .route(
        M::POST,
        "/api/v1/me/courses/{course_id}/certificate",
        Session,
        certificate::issue,
    )
    .route(
        M::GET,
        "/api/v1/me/certificates",
        Session,
        certificate::mine,
    )
    .route(
        M::GET,
        "/api/v1/me/certificates/{serial}/pdf",
        Session,
        certificate::pdf,
    )
    .describe(|op| {
        op.raw(200, "application/pdf", "the certificate as PDF");
    })
    .route(
        M::GET,
        "/api/v1/certificates/{serial}",
        Public,
        certificate::verify,
    )
    .route(M::GET, "/verify/{serial}", Public, certificate::verify_page)
    .describe(|op| {
        op.raw(
            200,
            "text/html",
            "the public verification page: what the certificate states, nothing more",
        );
    })
}
