//! Security alerts and the security counters `/metrics` shows.
//!
//! An alert is three things at once, so whichever the operator watches
//! sees it: a `tracing` warning with a stable `alert` field (for log-based
//! alerting), a row in `security_alerts` (durable, queryable), and a
//! Prometheus counter `lectern_security_alerts_total{kind=…}`. Counters are
//! per process; Prometheus sums them across nodes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lectern_web::metrics::{self, Collector, DescriptorEncoder};
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

    /// What `/metrics` shows of these counters, read at each scrape.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(SecurityCollector(self.clone()))
    }
}

#[derive(Debug)]
struct SecurityCollector(Arc<SecurityMetrics>);

impl Collector for SecurityCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metrics::counter_by(
            &mut enc,
            "lectern_security_alerts",
            "Security alerts raised, by kind.",
            "kind",
            AlertKind::ALL
                .iter()
                .zip(&m.alerts)
                .map(|(k, n)| (k.as_str(), load(n))),
        )?;
        metrics::counter_by(
            &mut enc,
            "lectern_logins",
            "Sign-in attempts, by outcome.",
            "outcome",
            LoginOutcome::ALL
                .iter()
                .zip(&m.logins)
                .map(|(o, n)| (o.as_str(), load(n))),
        )?;
        metrics::counter(
            &mut enc,
            "lectern_audit_failures",
            "Audit records that could not be written.",
            load(&m.audit_failures),
        )?;
        metrics::counter(
            &mut enc,
            "lectern_password_verifications",
            "Passwords checked with argon2 (sign-ins, unknown emails' decoy checks, passwords given again).",
            load(&m.password_verifications),
        )?;
        metrics::counter(
            &mut enc,
            "lectern_audit_noise",
            "Anonymous refused requests, sampled and aggregated in the audit log.",
            load(&m.audit_noise),
        )
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
