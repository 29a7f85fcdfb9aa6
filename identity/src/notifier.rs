//! How identity reaches a person out of band (one-time step-up codes,
//! sign-up confirmations, expert invitations). Sending belongs to
//! `lectern_notify`: this module adapts its e-mail transports to the
//! [`Notifier`] identity's handlers call, and re-exports the development
//! outbox so existing callers keep working.

pub use lectern_notify::transport::outbox::{last_message, Outbox, OutboxError, OutboxMessage};
use lectern_notify::transport::{EmailTransport, Message};
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

    /// Whether messages stay inside Lectern (the development outbox)
    /// instead of reaching people: `serve` refuses such a notifier unless
    /// it is configured for development.
    fn is_development(&self) -> bool {
        false
    }
}

#[async_trait::async_trait]
impl<T: EmailTransport> Notifier for T {
    async fn deliver(&self, notice: Notice) -> Result<(), NotifyError> {
        self.send_email(&Message {
            user_id: notice.user_id,
            to: &notice.recipient,
            subject: &notice.subject,
            body: &notice.body,
        })
        .await
        .map_err(|e| NotifyError(e.message))
    }

    fn is_development(&self) -> bool {
        EmailTransport::is_development(self)
    }
}
