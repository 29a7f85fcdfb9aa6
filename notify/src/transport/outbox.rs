//! The development transport: messages kept in the `outbox` table instead
//! of reaching people — development and tests only. Recipient and body
//! are sealed with the field keys, so even a development database copied
//! elsewhere does not give away codes or invitation tokens; [`last_message`]
//! opens them again for tests and developers. Key rotation does not
//! re-seal these rows: a message sealed with a retired key no longer opens.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use lectern_secrets::Keyring;
use sqlx::PgPool;
use uuid::Uuid;

use super::{EmailTransport, Message, SendError, Sms, SmsTransport};

/// The AAD names of the outbox's sealed columns.
const RECIPIENT_FIELD: &str = "outbox.recipient";
const BODY_FIELD: &str = "outbox.body";

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

    async fn keep(
        &self,
        user_id: Option<Uuid>,
        to: &str,
        subject: &str,
        body: &str,
    ) -> Result<(), SendError> {
        let keys = self.keys.as_deref().ok_or_else(|| {
            SendError::permanent("the development outbox needs the field keys to seal messages")
        })?;
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO outbox (message_id, user_id, recipient_bidx, recipient_ct, subject, body_ct) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(user_id)
        .bind(keys.email_index(to))
        .bind(keys.seal(RECIPIENT_FIELD, id, to))
        .bind(subject)
        .bind(keys.seal(BODY_FIELD, id, body))
        .execute(&self.db)
        .await
        .map_err(|e| SendError::transient(format!("outbox: {e}")))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl EmailTransport for Outbox {
    async fn send_email(&self, m: &Message<'_>) -> Result<(), SendError> {
        self.keep(m.user_id, m.to, m.subject, m.body).await
    }

    fn is_development(&self) -> bool {
        true
    }
}

#[async_trait::async_trait]
impl SmsTransport for Outbox {
    async fn send_sms(&self, sms: &Sms<'_>) -> Result<(), SendError> {
        self.keep(sms.user_id, sms.to, "SMS", sms.text).await
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
