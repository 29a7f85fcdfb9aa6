//! Sign-in throttling, per account and per client address, kept in
//! PostgreSQL so every API node sees the same counts. Accounts are keyed by
//! the email's blind index, so unknown emails are throttled exactly like
//! real ones and the lockout reveals nothing about who has an account.
//! Addresses are keyed by the IPv4 address, or by the IPv6 /64 (one
//! customer's network: a client given a /64 has 2^64 addresses to rotate
//! through).
//!
//! An attempt is counted *before* it is evaluated ([`reserve`]): deciding
//! whether the subject is locked and counting the attempt are one SQL
//! statement, so however many attempts arrive at once, at most the limit
//! get past it and the rest are refused without the password (or code)
//! being checked. An attempt that turns out right gives its reservation
//! back ([`Reservation::succeeded`]), so only failures stay counted.

use std::net::{IpAddr, Ipv6Addr};
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

/// How a client address is counted: an IPv4 address as it is (an
/// IPv4-mapped IPv6 address as its IPv4 address), an IPv6 address by its
/// /64, `2001:db8:1:2::/64`.
pub fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64));
            format!("{network}/64")
        }
        // Addresses come from the socket or a parsed header; anything
        // else is still counted, as written.
        Err(_) => ip.to_owned(),
    }
}

/// The sign-in subject of a client address: `ip:` and its [`address_key`].
pub fn address_subject(ip: &str) -> String {
    format!("ip:{}", address_key(ip))
}

/// What [`reserve`] decided for one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted; `locks` when this attempt was the last the limit allows,
    /// so the subject is locked from now on.
    Allowed { locks: bool },
    /// The subject is locked: nothing was counted.
    Locked { retry_after: u64 },
}

/// Counts an attempt against `subject` unless it is locked, in one
/// statement: the row is locked while the statement decides, so
/// concurrent attempts are decided one after another on the latest count.
/// The attempt that brings the count to `limit` within the policy's
/// window locks the subject for the policy's lockout; a lapsed window or
/// lockout starts the count again.
pub async fn reserve(
    db: &PgPool,
    subject: &str,
    limit: i32,
    policy: &ThrottlePolicy,
) -> Result<Attempt, sqlx::Error> {
    let reserved: Option<bool> = sqlx::query_scalar(
        "INSERT INTO login_throttle AS t (subject, failures, window_start, locked_until) \
         VALUES ($1, 1, now(), CASE WHEN $2 <= 1 THEN now() + make_interval(secs => $4) END) \
         ON CONFLICT (subject) DO UPDATE SET \
           failures = CASE WHEN t.locked_until IS NOT NULL \
                        OR t.window_start < now() - make_interval(secs => $3) \
                      THEN 1 ELSE t.failures + 1 END, \
           window_start = CASE WHEN t.locked_until IS NOT NULL \
                            OR t.window_start < now() - make_interval(secs => $3) \
                          THEN now() ELSE t.window_start END, \
           locked_until = CASE WHEN \
                            CASE WHEN t.locked_until IS NOT NULL \
                              OR t.window_start < now() - make_interval(secs => $3) \
                            THEN 1 ELSE t.failures + 1 END >= $2 \
                          THEN now() + make_interval(secs => $4) END \
         WHERE t.locked_until IS NULL OR t.locked_until <= now() \
         RETURNING locked_until IS NOT NULL",
    )
    .bind(subject)
    .bind(limit)
    .bind(policy.window.as_secs_f64())
    .bind(policy.lockout.as_secs_f64())
    .fetch_optional(db)
    .await?;
    if let Some(locks) = reserved {
        return Ok(Attempt::Allowed { locks });
    }
    // Locked: only how long is left to read (the decision is made).
    let left: Option<i64> = sqlx::query_scalar(
        "SELECT ceil(extract(epoch FROM locked_until - now()))::bigint FROM login_throttle \
         WHERE subject = $1 AND locked_until > now()",
    )
    .bind(subject)
    .fetch_optional(db)
    .await?;
    let retry_after = left.and_then(|s| u64::try_from(s).ok()).unwrap_or(1).max(1);
    Ok(Attempt::Locked { retry_after })
}

/// Takes back one attempt [`reserve`] counted for `subject` (the attempt
/// was right, or was never evaluated), and the lock it may have set.
pub async fn give_back(db: &PgPool, subject: &str, limit: i32) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE login_throttle SET failures = greatest(failures - 1, 0), \
           locked_until = CASE WHEN failures - 1 < $2 THEN NULL ELSE locked_until END \
         WHERE subject = $1",
    )
    .bind(subject)
    .bind(limit)
    .execute(db)
    .await?;
    Ok(())
}

/// A successful sign-in forgets the account's earlier failures.
pub async fn clear(db: &PgPool, subject: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_throttle WHERE subject = $1")
        .bind(subject)
        .execute(db)
        .await?;
    Ok(())
}

/// Attempts counted on every subject of one request.
#[derive(Debug)]
pub struct Reservation {
    /// Each subject, its limit, and whether this attempt locked it.
    subjects: Vec<(String, i32, bool)>,
}

/// Why [`reserve_all`] refused: one subject is locked.
#[derive(Debug)]
pub struct Refused {
    pub subject: String,
    pub retry_after: u64,
}

impl Refused {
    /// What kind of subject is locked (`email`, `ip`, `step-up`…), for
    /// audit and alerts, which must not name it.
    pub fn kind(&self) -> &str {
        self.subject.split(':').next().unwrap_or("subject")
    }
}

/// Reserves an attempt on each of `subjects` (with its limit), in order,
/// or on none: when one is locked, those already reserved are given back,
/// since the request is refused without being evaluated.
pub async fn reserve_all(
    db: &PgPool,
    subjects: &[(String, i32)],
    policy: &ThrottlePolicy,
) -> Result<Result<Reservation, Refused>, sqlx::Error> {
    let mut reserved: Vec<(String, i32, bool)> = Vec::with_capacity(subjects.len());
    for (subject, limit) in subjects {
        match reserve(db, subject, *limit, policy).await? {
            Attempt::Allowed { locks } => reserved.push((subject.clone(), *limit, locks)),
            Attempt::Locked { retry_after } => {
                for (earlier, limit, _) in &reserved {
                    give_back(db, earlier, *limit).await?;
                }
                return Ok(Err(Refused {
                    subject: subject.clone(),
                    retry_after,
                }));
            }
        }
    }
    Ok(Ok(Reservation { subjects: reserved }))
}

impl Reservation {
    /// The subjects this attempt locked (it was the last their limit
    /// allows): if it fails, each is worth a `brute_force` alert.
    pub fn locked(&self) -> impl Iterator<Item = &str> {
        self.subjects
            .iter()
            .filter(|(_, _, locks)| *locks)
            .map(|(subject, _, _)| subject.as_str())
    }

    /// Whether this attempt locked `subject`.
    pub fn locks(&self, subject: &str) -> bool {
        self.locked().any(|s| s == subject)
    }

    /// The attempt was not a failure, and named no account (a WeChat or
    /// hand-off code that worked): every subject gets it back and keeps
    /// its earlier failures, so one success from a shared address does
    /// not wipe the guesses counted against it.
    pub async fn returned(self, db: &PgPool) -> Result<(), sqlx::Error> {
        for (subject, limit, _) in &self.subjects {
            give_back(db, subject, *limit).await?;
        }
        Ok(())
    }

    /// The attempt was right: the first subject (the account) forgets its
    /// failures; the others (addresses, which other accounts may be
    /// guessed from) get this attempt back and keep their failures.
    pub async fn succeeded(self, db: &PgPool) -> Result<(), sqlx::Error> {
        let mut subjects = self.subjects.iter();
        if let Some((account, _, _)) = subjects.next() {
            clear(db, account).await?;
        }
        for (subject, limit, _) in subjects {
            give_back(db, subject, *limit).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_by_its_64_and_ipv4_by_the_address() {
        assert_eq!(address_subject("203.0.113.9"), "ip:203.0.113.9");
        assert_eq!(
            address_subject("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "ip:2001:db8:1:2::/64"
        );
        // Every address of one /64 is one subject; the next /64 another.
        assert_eq!(
            address_subject("2001:db8:1:2::1"),
            address_subject("2001:0db8:0001:0002:ffff:ffff:ffff:ffff")
        );
        assert_eq!(address_subject("2001:db8:1:3::1"), "ip:2001:db8:1:3::/64");
        assert_eq!(address_subject("2001:db8::1"), "ip:2001:db8::/64");
        assert_eq!(address_subject("::1"), "ip:::/64");
        // An IPv4 client seen through an IPv6 socket is the IPv4 client.
        assert_eq!(address_subject("::ffff:198.51.100.7"), "ip:198.51.100.7");
        assert_eq!(address_key("::ffff:c633:6407"), "198.51.100.7");
        assert_eq!(address_key("2001:db8:1:2::5"), "2001:db8:1:2::/64");
    }
}
