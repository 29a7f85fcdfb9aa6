//! How Lectern reaches a person out of band: one-time step-up codes,
//! sign-up confirmations and expert invitations. [`Notifier`] is the
//! extension point — an SMTP mailer or an SMS provider implements it;
//! [`Outbox`] is the implementation for development and tests, which keeps
//! messages in the `outbox` table, recipient and body sealed with the
//! field keys (bodies hold one-time secrets), and [`last_message`] opens
//! them again for tests and developers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lectern_secrets::Keyring;
use sqlx::PgPool;
use uuid::Uuid;

/// One message to one person.
pub struct Notice {
    pub user_id: Option<Uuid>,
    /// An email address or phone number.
    pub recipient: String,
    pub subject: String,
    /// May hold a one-time secret: never log it.
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("notification not delivered: {0}")]
pub struct NotifyError(pub String);

#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    async fn deliver(&self, notice: Notice) -> Result<(), NotifyError>;

    /// Whether messages stay inside Lectern (the development [`Outbox`])
    /// instead of reaching people: `serve` refuses such a notifier unless
    /// it is configured for development.
    fn is_development(&self) -> bool {
        false
    }
}

/// The AAD names of the outbox's sealed columns.
const RECIPIENT_FIELD: &str = "outbox.recipient";
const BODY_FIELD: &str = "outbox.body";

/// Delivers into the `outbox` table: development and tests only, since
/// nobody receives the messages. Recipient and body are sealed with the
/// field keys, so even a development database copied elsewhere does not
/// give away codes or invitation tokens. Key rotation does not re-seal
/// these rows: a message sealed with a retired key no longer opens.
pub struct Outbox {
    db: PgPool,
    keys: Option<Arc<Keyring>>,
}

impl Outbox {
    /// `keys`: `None` only when the deployment has no field keys, and
    /// then every route that would send a message answers 503 first.
    pub fn new(db: PgPool, keys: Option<Arc<Keyring>>) -> Self {
        Self { db, keys }
    }
}

#[async_trait::async_trait]
impl Notifier for Outbox {
    async fn deliver(&self, notice: Notice) -> Result<(), NotifyError> {
        let keys = self.keys.as_deref().ok_or_else(|| {
            NotifyError("the development outbox needs the field keys to seal messages".into())
        })?;
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO outbox (message_id, user_id, recipient_bidx, recipient_ct, subject, body_ct) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(notice.user_id)
        .bind(keys.email_index(&notice.recipient))
        .bind(keys.seal(RECIPIENT_FIELD, id, &notice.recipient))
        .bind(&notice.subject)
        .bind(keys.seal(BODY_FIELD, id, &notice.body))
        .execute(&self.db)
        .await
        .map_err(|e| NotifyError(e.to_string()))?;
        Ok(())
    }

    fn is_development(&self) -> bool {
        true
    }
}

/// A message of the development outbox, opened.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SealedMessage {
    message_id: Uuid,
    recipient_ct: Vec<u8>,
    subject: String,
    body_ct: Vec<u8>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Seal(#[from] lectern_secrets::SealError),
}

/// The newest message the outbox holds for `recipient` (matched as an
/// email is: case and surrounding spaces do not matter), opened with
/// `keys`.
pub async fn last_message(
    db: &PgPool,
    keys: &Keyring,
    recipient: &str,
) -> Result<Option<OutboxMessage>, OutboxError> {
    let row: Option<SealedMessage> = sqlx::query_as(
        "SELECT message_id, recipient_ct, subject, body_ct, created_at FROM outbox \
         WHERE recipient_bidx = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(keys.email_index(recipient))
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(OutboxMessage {
        recipient: keys.open(RECIPIENT_FIELD, row.message_id, &row.recipient_ct)?,
        subject: row.subject,
        body: keys.open(BODY_FIELD, row.message_id, &row.body_ct)?,
        created_at: row.created_at,
    }))
}
