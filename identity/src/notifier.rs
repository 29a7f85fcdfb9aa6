//! How Lectern reaches a person out of band: one-time step-up codes and
//! expert invitations. [`Notifier`] is the extension point — an SMTP mailer
//! or an SMS provider implements it; [`Outbox`] is the implementation for
//! development and tests, which keeps messages in the `outbox` table.

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
}

/// Delivers into the `outbox` table (development and tests only: the
/// table holds the recipient and one-time secrets in the clear).
pub struct Outbox {
    pub db: PgPool,
}

#[async_trait::async_trait]
impl Notifier for Outbox {
    async fn deliver(&self, notice: Notice) -> Result<(), NotifyError> {
        sqlx::query(
            "INSERT INTO outbox (user_id, recipient, subject, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(notice.user_id)
        .bind(&notice.recipient)
        .bind(&notice.subject)
        .bind(&notice.body)
        .execute(&self.db)
        .await
        .map_err(|e| NotifyError(e.to_string()))?;
        Ok(())
    }
}
