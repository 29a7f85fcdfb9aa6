//! Sign-in throttling, per account and per client address, kept in
//! PostgreSQL so every API node sees the same counts. Accounts are keyed by
//! the email's blind index, so unknown emails are throttled exactly like
//! real ones and the lockout reveals nothing about who has an account.

use std::time::Duration;

use sqlx::PgPool;

#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures of one account within `window` that lock it.
    pub account_failures: i32,
    /// Failures from one address within `window` that lock the address.
    pub address_failures: i32,
    pub window: Duration,
    pub lockout: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_failures: 5,
            address_failures: 50,
            window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

pub fn account_subject(email_index: &[u8]) -> String {
    format!("email:{}", hex::encode(email_index))
}

pub fn address_subject(ip: &str) -> String {
    format!("ip:{ip}")
}

/// Seconds until `subject` may try again, if it is locked out now.
pub async fn locked_for(db: &PgPool, subject: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT ceil(extract(epoch FROM locked_until - now()))::bigint FROM login_throttle \
         WHERE subject = $1 AND locked_until > now()",
    )
    .bind(subject)
    .fetch_optional(db)
    .await
}

/// Counts a failure; returns true when this failure locked the subject.
pub async fn record_failure(
    db: &PgPool,
    subject: &str,
    limit: i32,
    policy: &ThrottlePolicy,
) -> Result<bool, sqlx::Error> {
    let failures: i32 = sqlx::query_scalar(
        "INSERT INTO login_throttle (subject, failures, window_start) VALUES ($1, 1, now()) \
         ON CONFLICT (subject) DO UPDATE SET \
           failures = CASE WHEN login_throttle.window_start < now() - make_interval(secs => $2) \
                      THEN 1 ELSE login_throttle.failures + 1 END, \
           window_start = CASE WHEN login_throttle.window_start < now() - make_interval(secs => $2) \
                          THEN now() ELSE login_throttle.window_start END \
         RETURNING failures",
    )
    .bind(subject)
    .bind(policy.window.as_secs_f64())
    .fetch_one(db)
    .await?;
    if failures < limit {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE login_throttle SET locked_until = now() + make_interval(secs => $2), \
         failures = 0, window_start = now() WHERE subject = $1",
    )
    .bind(subject)
    .bind(policy.lockout.as_secs_f64())
    .execute(db)
    .await?;
    Ok(true)
}

/// A successful sign-in forgets the account's earlier failures.
pub async fn clear(db: &PgPool, subject: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE subject = $1")
        .bind(subject)
        .execute(db)
        .await?;
    Ok(())
}
