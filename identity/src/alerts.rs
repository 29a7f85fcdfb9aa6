//! Security alerts and the security counters `/metrics` shows.
//!
//! An alert is three things at once, so whichever the operator watches
//! sees it: a `tracing` warning with a stable `alert` field (for log-based
//! alerting), a row in `security_alerts` (durable, queryable), and a
//! Prometheus counter `lectern_security_alerts_total{kind=…}`. Counters are
//! per process; Prometheus sums them across nodes. With a syslog receiver
//! configured (`LECTERN_SECURITY_SYSLOG`), each alert is also sent to it as
//! one RFC 5424 message over UDP (facility authpriv, severity warning,
//! the alert's kind as MSGID and its fields as structured data), the form
//! SIEMs ingest; UDP so a SIEM that is down never slows a sign-in.

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
    if let Some(to) = state.settings.alert_syslog {
        forward(
            to,
            &syslog_message(&alert, chrono::Utc::now(), &host_name(), std::process::id()),
        )
        .await;
    }
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

/// `<84>1 <time> <host> lectern <pid> <kind> [lectern@32473 …] <detail>`:
/// RFC 5424 with facility authpriv (10) and severity warning (4); 32473 is
/// the private enterprise number RFC 5612 reserves for examples, as no
/// number is registered for Lectern.
fn syslog_message(
    alert: &Alert<'_>,
    at: chrono::DateTime<chrono::Utc>,
    host: &str,
    pid: u32,
) -> String {
    // PARAM-VALUE escapes `"`, `\` and `]` (RFC 5424 §6.3.3).
    fn param(v: &str) -> String {
        v.chars()
            .flat_map(|c| match c {
                '"' | '\\' | ']' => vec!['\\', c],
                c => vec![c],
            })
            .collect()
    }
    let mut data = format!("[lectern@32473 kind=\"{}\"", alert.kind.as_str());
    if let Some(org) = alert.org_id {
        data.push_str(&format!(" org=\"{org}\""));
    }
    if let Some(user) = alert.user_id {
        data.push_str(&format!(" user=\"{user}\""));
    }
    if let Some(ip) = alert.ip {
        data.push_str(&format!(" ip=\"{}\"", param(ip)));
    }
    data.push(']');
    format!(
        "<84>1 {} {} lectern {pid} {} {data} \u{feff}{}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        host,
        alert.kind.as_str(),
        alert.detail
    )
}

/// The machine's name as syslog's HOSTNAME wants it (printable ASCII, no
/// spaces), or `-` when unknown.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic()) {
        name.to_string()
    } else {
        "-".to_string()
    }
}

async fn forward(to: std::net::SocketAddr, message: &str) {
    let from: std::net::SocketAddr = if to.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sent = async {
        let socket = tokio::net::UdpSocket::bind(from).await?;
        socket.send_to(message.as_bytes(), to).await
    };
    if let Err(e) = sent.await {
        tracing::warn!(error = %e, syslog = %to, "could not forward a security alert to syslog");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_one_rfc5424_message_with_its_fields_as_structured_data() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-05T05:43:31.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let user = Uuid::nil();
        let alert = Alert {
            kind: AlertKind::BruteForce,
            org_id: None,
            user_id: Some(user),
            ip: Some("2001:db8::\"]"),
            detail: "5 failed sign-ins".into(),
        };
        assert_eq!(
            syslog_message(&alert, at, "api-1", 4242),
            "<84>1 2026-12-05T05:43:31.123Z api-1 lectern 4242 brute_force \
             [lectern@32473 kind=\"brute_force\" user=\"00000000-0000-0000-0000-000000000000\" \
             ip=\"2001:db8::\\\"\\]\"] \u{feff}5 failed sign-ins"
        );
    }
}
