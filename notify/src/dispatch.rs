//! The dispatcher: takes due deliveries off the queue and sends them.
//!
//! A pass claims up to a batch of `pending` deliveries whose time has
//! come (`FOR UPDATE SKIP LOCKED`, so nodes never claim the same row) and
//! in the same statement counts the attempt and pushes `next_attempt_at`
//! a lease ahead: a node that dies mid-send leaves the row to be claimed
//! again after the lease, so a message is sent at least once. Each claimed
//! delivery is then opened (sealed parameters with the field keys),
//! addressed (the explicit address, or the account's through the
//! [`AddressBook`]), rate-limited per recipient and channel, rendered in
//! the person's language and handed to its transport. The outcome goes
//! to the row and to the delivery log:
//!
//! - sent: final;
//! - a transient failure before `max_attempts`: pending again after an
//!   exponential backoff (`backoff × 2^(attempt-1)`, at most `max_backoff`);
//! - a permanent failure, or the last attempt: `failed`, with why;
//! - over the recipient's hourly limit: deferred until the window allows,
//!   not counted as an attempt. Secret topics (one-time codes) have their
//!   own, separate bound, so a flood of notices cannot hold back a code
//!   and codes cannot be used to flood a mailbox.
//!
//! The log and `last_error` carry a redacted error (no address, no long
//! digit runs), never a body or a parameter. Once a notice has no pending
//! delivery left its parameters are erased.
//!
//! Each outcome is also counted for `/metrics` ([`crate::metrics`]).
//!
//! `serve` runs [`Notify::run`] in its task set; it wakes at once when a
//! request has just enqueued ([`Notify::wake`]) and polls otherwise.

use std::sync::Arc;
use std::time::Duration;

use lectern_secrets::Keyring;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::address::AddressBook;
use crate::metrics::{self, Outcome};
use crate::templates::{self, Lang};
use crate::transport::{EmailTransport, Message, SendError, Sms, SmsTransport};
use crate::{Channel, Payload, Recipient, Topic, PAYLOAD_FIELD};

/// Per recipient (address) and channel, in any hour.
#[derive(Debug, Clone, Copy)]
pub struct RateLimits {
    /// Notices that hold no secret.
    pub per_hour: i64,
    /// One-time codes and token links, counted apart.
    pub secret_per_hour: i64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_hour: 20,
            secret_per_hour: 30,
        }
    }
}

/// How the dispatcher paces itself; defaults are the documented behaviour.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// After this many attempts a delivery is given up.
    pub max_attempts: i32,
    /// The first retry's delay; each further one doubles it.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long a claimed delivery stays invisible to other nodes.
    pub lease: Duration,
    /// How often the queue is looked at when nothing wakes the dispatcher.
    pub poll: Duration,
    pub batch: i64,
    pub rate: RateLimits,
    /// The origin the apps are served from (`LECTERN_APP_URL`), without a
    /// trailing slash: a notice's `link` is an app path (`/app/…`,
    /// `/admin/…`) that the inbox follows as is and e-mail and SMS carry
    /// as `{app_url}{link}`.
    pub app_url: String,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
            lease: Duration::from_secs(120),
            poll: Duration::from_secs(5),
            batch: 32,
            rate: RateLimits::default(),
            app_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// `params` with an app-path `link` made absolute for messages that leave
/// Lectern (a link that already names its origin is left alone).
fn absolute_links(
    params: &std::collections::BTreeMap<String, String>,
    app_url: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut out = params.clone();
    if let Some(link) = out.get_mut("link") {
        if link.starts_with('/') && !link.starts_with("//") {
            *link = format!("{}{link}", app_url.trim_end_matches('/'));
        }
    }
    out
}

impl DispatchSettings {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn backoff_after(&self, attempt: i32) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(30);
        self.backoff
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_backoff)
    }
}

/// notify's state: the queue, the transports and the address book. Cheap
/// to clone (one reference count).
#[derive(Clone)]
pub struct Notify(Arc<NotifyInner>);

impl std::ops::Deref for Notify {
    type Target = NotifyInner;

    fn deref(&self) -> &NotifyInner {
        &self.0
    }
}

pub struct NotifyInner {
    pub db: PgPool,
    keys: Option<Arc<Keyring>>,
    email: Arc<dyn EmailTransport>,
    sms: Option<Arc<dyn SmsTransport>>,
    addresses: Arc<dyn AddressBook>,
    pub settings: DispatchSettings,
    wake: tokio::sync::Notify,
}

impl Notify {
    pub fn new(
        db: PgPool,
        keys: Option<Arc<Keyring>>,
        email: Arc<dyn EmailTransport>,
        sms: Option<Arc<dyn SmsTransport>>,
        addresses: Arc<dyn AddressBook>,
        settings: DispatchSettings,
    ) -> Self {
        Notify(Arc::new(NotifyInner {
            db,
            keys,
            email,
            sms,
            addresses,
            settings,
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// The field keys (sealed parameters), when configured.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// Whether e-mail stays in the development outbox.
    pub fn email_is_development(&self) -> bool {
        self.email.is_development()
    }

    /// Tells the dispatcher a notice was just committed, so it goes out
    /// now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends what is due until cancelled; `schema_ready` holds it back
    /// until migrations have run.
    pub async fn run(self, schema_ready: impl Fn() -> bool + Send, cancel: CancellationToken) {
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if schema_ready() {
                match self.run_once().await {
                    // More may be due: go again at once.
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "notification dispatch failed"),
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Until nothing is due (tests, and `lectern demo`'s outbox).
    pub async fn drain(&self) -> Result<usize, sqlx::Error> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// One pass: claims a batch of due deliveries and handles each, in
    /// the order they fell due: `UPDATE … RETURNING` hands rows back in
    /// whatever order its join produced (a hash join over the table yields
    /// its physical order, which updates and vacuum reshuffle), and a
    /// person's second one-time code must not be sent before the first,
    /// which it replaced. Returns how many were claimed.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        let claimed: Vec<Claimed> = sqlx::query_as(
            "WITH due AS ( \
                 SELECT id, next_attempt_at AS due_at FROM notification_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
             claimed AS ( \
                 UPDATE notification_deliveries d \
                 SET attempts = d.attempts + 1, \
                     next_attempt_at = now() + make_interval(secs => $2) \
                 FROM due WHERE d.id = due.id \
                 RETURNING d.id, d.notification_id, d.topic, d.channel, d.attempts, \
                           due.due_at, d.created_at) \
             SELECT id, notification_id, topic, channel, attempts FROM claimed \
             ORDER BY due_at, created_at, id",
        )
        .bind(self.settings.batch)
        .bind(self.settings.lease.as_secs_f64())
        .fetch_all(&self.db)
        .await?;
        let n = claimed.len();
        for delivery in claimed {
            self.handle(delivery).await?;
        }
        Ok(n)
    }

    async fn handle(&self, d: Claimed) -> Result<(), sqlx::Error> {
        let channel = if d.channel == "sms" {
            Channel::Sms
        } else {
            Channel::Email
        };
        let outcome = match self.attempt(&d).await? {
            Attempt::Sent(bidx) => {
                sqlx::query(
                    "UPDATE notification_deliveries SET status = 'sent', sent_at = now(), \
                     recipient_bidx = $2, last_error = NULL WHERE id = $1",
                )
                .bind(d.id)
                .bind(bidx)
                .execute(&self.db)
                .await?;
                metrics::count(channel, Outcome::Sent);
                ("sent", None, None)
            }
            Attempt::Deferred { until_secs } => {
                sqlx::query(
                    "UPDATE notification_deliveries SET attempts = attempts - 1, \
                     next_attempt_at = now() + make_interval(secs => $2) WHERE id = $1",
                )
                .bind(d.id)
                .bind(until_secs)
                .execute(&self.db)
                .await?;
                metrics::count(channel, Outcome::Deferred);
                (
                    "deferred",
                    Some("the recipient's hourly limit for this channel is reached".to_string()),
                    Some((until_secs * 1000.0) as i64),
                )
            }
            Attempt::Failed(e) => {
                let reason = redact(&e.message);
                if e.transient && d.attempts < self.settings.max_attempts {
                    let delay = self.settings.backoff_after(d.attempts);
                    sqlx::query(
                        "UPDATE notification_deliveries SET last_error = $2, \
                         next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                    )
                    .bind(d.id)
                    .bind(&reason)
                    .bind(delay.as_secs_f64())
                    .execute(&self.db)
                    .await?;
                    metrics::count(channel, Outcome::Retried);
                    ("retry", Some(reason), i64::try_from(delay.as_millis()).ok())
                } else {
                    let reason = if e.transient {
                        metrics::count(channel, Outcome::GivenUp);
                        format!("gave up after {} attempts: {reason}", d.attempts)
                    } else {
                        metrics::count(channel, Outcome::Failed);
                        reason
                    };
                    sqlx::query(
                        "UPDATE notification_deliveries SET status = 'failed', last_error = $2 \
                         WHERE id = $1",
                    )
                    .bind(d.id)
                    .bind(&reason)
                    .execute(&self.db)
                    .await?;
                    tracing::warn!(delivery = %d.id, topic = %d.topic, channel = %d.channel, reason = %reason, "notification delivery failed");
                    ("failed", Some(reason), None)
                }
            }
        };
        sqlx::query(
            "INSERT INTO notification_delivery_log \
               (delivery_id, topic, channel, attempt, outcome, detail, backoff_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(d.id)
        .bind(&d.topic)
        .bind(&d.channel)
        .bind(d.attempts)
        .bind(outcome.0)
        .bind(outcome.1)
        .bind(outcome.2)
        .execute(&self.db)
        .await?;
        // Nothing left to send: the parameters (codes, tokens) go.
        sqlx::query(
            "UPDATE notifications SET payload = NULL, payload_ct = NULL \
             WHERE id = $1 AND (payload IS NOT NULL OR payload_ct IS NOT NULL) \
               AND NOT EXISTS (SELECT 1 FROM notification_deliveries \
                               WHERE notification_id = $1 AND status = 'pending')",
        )
        .bind(d.notification_id)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Opens, addresses, rate-limits, renders and sends one delivery.
    async fn attempt(&self, d: &Claimed) -> Result<Attempt, sqlx::Error> {
        let Some(topic) = Topic::parse(&d.topic) else {
            return Ok(Attempt::Failed(SendError::permanent(format!(
                "unknown topic {}",
                d.topic
            ))));
        };
        let channel = if d.channel == "sms" {
            Channel::Sms
        } else {
            Channel::Email
        };
        let row: Option<NoticeRow> =
            sqlx::query_as("SELECT user_id, payload, payload_ct FROM notifications WHERE id = $1")
                .bind(d.notification_id)
                .fetch_optional(&self.db)
                .await?;
        let Some(row) = row else {
            return Ok(Attempt::Failed(SendError::permanent("the notice is gone")));
        };
        let payload = match self.open(d.notification_id, &row) {
            Ok(p) => p,
            Err(e) => return Ok(Attempt::Failed(e)),
        };
        let address = match self.address(channel, &row, &payload).await {
            Ok(a) => a,
            Err(e) => return Ok(Attempt::Failed(e)),
        };
        let bidx = match &self.keys {
            Some(keys) => keys.email_index(&address),
            None => lectern_secrets::token_fingerprint(&address.trim().to_lowercase()),
        };
        if let Some(until_secs) = self.over_limit(topic, &d.channel, &bidx).await? {
            return Ok(Attempt::Deferred { until_secs });
        }
        let lang = match row.user_id {
            Some(user_id) => Some(
                sqlx::query_scalar::<_, String>(
                    "SELECT language FROM notification_preferences WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_optional(&self.db)
                .await?
                .and_then(|l| Lang::parse(&l))
                .unwrap_or_default(),
            ),
            None => None,
        };
        let params = absolute_links(&payload.params, &self.settings.app_url);
        let result = match channel {
            Channel::Sms => {
                let text = templates::sms_text(topic, lang.unwrap_or_default(), &params);
                match &self.sms {
                    Some(sms) => {
                        sms.send_sms(&Sms {
                            user_id: row.user_id,
                            to: &address,
                            topic,
                            params: &params,
                            text: &text,
                        })
                        .await
                    }
                    None => Err(SendError::permanent("no SMS provider is configured")),
                }
            }
            _ => {
                let rendered = match lang {
                    Some(lang) => templates::render(topic, lang, &params),
                    None => templates::render_bilingual(topic, &params),
                };
                self.email
                    .send_email(&Message {
                        user_id: row.user_id,
                        to: &address,
                        subject: &rendered.subject,
                        body: &rendered.body,
                    })
                    .await
            }
        };
        Ok(match result {
            Ok(()) => Attempt::Sent(bidx),
            Err(e) => Attempt::Failed(e),
        })
    }

    fn open(&self, id: Uuid, row: &NoticeRow) -> Result<Payload, SendError> {
        if let Some(sealed) = &row.payload_ct {
            let keys = self.keys.as_deref().ok_or_else(|| {
                SendError::transient("the notice is sealed and the field keys are not configured")
            })?;
            let json = keys
                .open(PAYLOAD_FIELD, id, sealed)
                .map_err(|_| SendError::permanent("the notice's sealed parameters do not open"))?;
            return serde_json::from_str(&json)
                .map_err(|_| SendError::permanent("the notice's parameters do not parse"));
        }
        match &row.payload {
            Some(value) => serde_json::from_value(value.clone())
                .map_err(|_| SendError::permanent("the notice's parameters do not parse")),
            None => Err(SendError::permanent("the notice's parameters were erased")),
        }
    }

    async fn address(
        &self,
        channel: Channel,
        row: &NoticeRow,
        payload: &Payload,
    ) -> Result<String, SendError> {
        match (&payload.to, channel) {
            (Some(Recipient::Email(a)), Channel::Email)
            | (Some(Recipient::Phone(a)), Channel::Sms) => return Ok(a.clone()),
            _ => {}
        }
        let user_id = row
            .user_id
            .ok_or_else(|| SendError::permanent("the notice names no person and no address"))?;
        let contact = self
            .addresses
            .contact(user_id)
            .await
            .map_err(|e| SendError::transient(e.to_string()))?
            .ok_or_else(|| SendError::permanent("the account no longer exists"))?;
        let address = match channel {
            Channel::Sms => contact.phone,
            _ => contact.email,
        };
        address.ok_or_else(|| {
            SendError::permanent(format!(
                "the account has no address for {}",
                channel.as_str()
            ))
        })
    }

    /// Seconds until the recipient's window has room, when it has none.
    async fn over_limit(
        &self,
        topic: Topic,
        channel: &str,
        bidx: &[u8],
    ) -> Result<Option<f64>, sqlx::Error> {
        let secret: Vec<String> = Topic::ALL
            .into_iter()
            .filter(|t| t.is_secret())
            .map(|t| t.as_str().to_string())
            .collect();
        let limit = if topic.is_secret() {
            self.settings.rate.secret_per_hour
        } else {
            self.settings.rate.per_hour
        };
        let window: Window = sqlx::query_as(
            "SELECT count(*) AS sent, \
                    extract(epoch FROM min(sent_at) + interval '1 hour' - now())::float8 AS wait \
             FROM notification_deliveries \
             WHERE recipient_bidx = $1 AND channel = $2 AND status = 'sent' \
               AND sent_at > now() - interval '1 hour' AND (topic = ANY($3)) = $4",
        )
        .bind(bidx)
        .bind(channel)
        .bind(&secret)
        .bind(topic.is_secret())
        .fetch_one(&self.db)
        .await?;
        Ok((window.sent >= limit).then(|| window.wait.unwrap_or(60.0).max(1.0)))
    }
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    notification_id: Uuid,
    topic: String,
    channel: String,
    attempts: i32,
}

#[derive(sqlx::FromRow)]
struct NoticeRow {
    user_id: Option<Uuid>,
    payload: Option<serde_json::Value>,
    payload_ct: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
struct Window {
    sent: i64,
    wait: Option<f64>,
}

enum Attempt {
    /// With the recipient's blind index, for rate limits.
    Sent(Vec<u8>),
    Deferred {
        until_secs: f64,
    },
    Failed(SendError),
}

/// An error as the log may keep it: no address (a word with `@`), no
/// number that could be a code or a phone number, at most 300 characters.
pub fn redact(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            if word.contains('@') {
                return "<address>".to_string();
            }
            let mut out = String::with_capacity(word.len());
            let mut digits = String::new();
            for c in word.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_digit() {
                    digits.push(c);
                    continue;
                }
                if digits.len() >= 5 {
                    out.push('#');
                } else {
                    out.push_str(&digits);
                }
                digits.clear();
                if c != ' ' {
                    out.push(c);
                }
            }
            out
        })
        .collect();
    words.join(" ").chars().take(300).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn app_paths_leave_lectern_absolute_and_nothing_else_changes() {
        let params = |link: &str| {
            std::collections::BTreeMap::from([
                ("link".to_string(), link.to_string()),
                ("excerpt".to_string(), "/not a link".to_string()),
            ])
        };
        let out = super::absolute_links(&params("/app/courses/1"), "https://learn.example.org/");
        assert_eq!(out["link"], "https://learn.example.org/app/courses/1");
        assert_eq!(out["excerpt"], "/not a link");
        for kept in ["https://elsewhere.example/x", "//cdn.example/x"] {
            let out = super::absolute_links(&params(kept), "https://learn.example.org");
            assert_eq!(out["link"], kept);
        }
    }
    use super::*;

    #[test]
    fn redaction_removes_addresses_and_long_numbers() {
        let r = redact(
            "550 5.1.1 <dr.wang@hospital.example.cn>: no such user; code 424242 to +8613800138000",
        );
        assert!(
            !r.contains("hospital") && !r.contains("424242") && !r.contains("13800138000"),
            "{r}"
        );
        assert!(r.starts_with("550 5.1.1"), "{r}");
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let s = DispatchSettings {
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(300),
            ..DispatchSettings::default()
        };
        assert_eq!(s.backoff_after(1), Duration::from_secs(30));
        assert_eq!(s.backoff_after(2), Duration::from_secs(60));
        assert_eq!(s.backoff_after(3), Duration::from_secs(120));
        assert_eq!(s.backoff_after(5), Duration::from_secs(300));
        assert_eq!(s.backoff_after(60), Duration::from_secs(300));
    }
}
