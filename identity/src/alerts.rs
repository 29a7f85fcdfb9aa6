//! Security alerts and the counters behind `/metrics`.
//!
//! An alert is three things at once, so whichever the operator watches
//! sees it: a `tracing` warning with a stable `alert` field (for log-based
//! alerting), a row in `security_alerts` (durable, queryable), and a
//! Prometheus counter `lectern_security_alerts_total{kind=…}`. Counters are
//! per process; Prometheus sums them across nodes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::Identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// An account or address was locked after repeated failed sign-ins.
    BruteForce,
    /// A sign-in from a network the account never used before.
    NewIpRange,
    /// Personal data of many people left in one response.
    BulkExport,
}

impl AlertKind {
    const ALL: [AlertKind; 3] = [
        AlertKind::BruteForce,
        AlertKind::NewIpRange,
        AlertKind::BulkExport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BruteForce => "brute_force",
            AlertKind::NewIpRange => "new_ip_range",
            AlertKind::BulkExport => "bulk_export",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    Success,
    Failure,
    Locked,
}

impl LoginOutcome {
    const ALL: [LoginOutcome; 3] = [
        LoginOutcome::Success,
        LoginOutcome::Failure,
        LoginOutcome::Locked,
    ];

    fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Success => "success",
            LoginOutcome::Failure => "failure",
            LoginOutcome::Locked => "locked",
        }
    }
}

#[derive(Debug, Default)]
pub struct SecurityMetrics {
    alerts: [AtomicU64; 3],
    logins: [AtomicU64; 3],
    audit_failures: AtomicU64,
    password_verifications: AtomicU64,
    audit_noise: AtomicU64,
}

impl SecurityMetrics {
    pub fn login(&self, outcome: LoginOutcome) {
        let i = LoginOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.logins[i].fetch_add(1, Ordering::Relaxed);
    }

    fn alert(&self, kind: AlertKind) {
        let i = AlertKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.alerts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failed(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// One argon2 check of a password ran (unknown emails' decoys included).
    pub fn password_verified(&self) {
        self.password_verifications.fetch_add(1, Ordering::Relaxed);
    }

    /// One anonymous refusal seen by the audit writer's noise ledger.
    pub fn noise_seen(&self) {
        self.audit_noise.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let alerts = AlertKind::ALL.iter().zip(&self.alerts);
        counter(
            &mut out,
            "lectern_security_alerts_total",
            "Security alerts raised, by kind.",
            alerts.map(|(k, n)| (Some(("kind", k.as_str())), n)),
        );
        let logins = LoginOutcome::ALL.iter().zip(&self.logins);
        counter(
            &mut out,
            "lectern_logins_total",
            "Sign-in attempts, by outcome.",
            logins.map(|(o, n)| (Some(("outcome", o.as_str())), n)),
        );
        for (name, help, value) in [
            (
                "lectern_audit_failures_total",
                "Audit records that could not be written.",
                &self.audit_failures,
            ),
            (
                "lectern_password_verifications_total",
                "Passwords checked with argon2 (sign-ins, unknown emails' decoy checks, passwords given again).",
                &self.password_verifications,
            ),
            (
                "lectern_audit_noise_total",
                "Anonymous refused requests, sampled and aggregated in the audit log.",
                &self.audit_noise,
            ),
        ] {
            counter(&mut out, name, help, [(None, value)]);
        }
        out
    }
}

/// One counter in the Prometheus text format: its help, its type, and a
/// sample per label value (or one unlabelled sample).
fn counter<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Option<(&'a str, &'a str)>, &'a AtomicU64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (label, value) in samples {
        let value = value.load(Ordering::Relaxed);
        let _ = match label {
            Some((key, label)) => writeln!(out, "{name}{{{key}=\"{label}\"}} {value}"),
            None => writeln!(out, "{name} {value}"),
        };
    }
}

/// Who and what an alert is about. `detail` must hold no personal data.
pub struct Alert<'a> {
    pub kind: AlertKind,
    pub org_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub ip: Option<&'a str>,
    pub detail: String,
}

pub async fn raise(state: &Identity, alert: Alert<'_>) {
    state.metrics.alert(alert.kind);
    tracing::warn!(
        alert = alert.kind.as_str(),
        org_id = ?alert.org_id,
        user_id = ?alert.user_id,
        ip = alert.ip.unwrap_or("-"),
        detail = %alert.detail,
        "security alert"
    );
    let stored = sqlx::query(
        "INSERT INTO security_alerts (kind, org_id, user_id, ip, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(alert.kind.as_str())
    .bind(alert.org_id)
    .bind(alert.user_id)
    .bind(alert.ip)
    .bind(&alert.detail)
    .execute(&state.db)
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, alert = alert.kind.as_str(), "could not store a security alert");
    }
}

/// `GET /metrics`: for a super admin, or a scraper on this machine.
pub async fn metrics(State(state): State<Identity>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
