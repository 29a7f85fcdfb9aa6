//! How a rendered message leaves Lectern: [`EmailTransport`] (SMTP,
//! [`smtp`]) and [`SmsTransport`] (Alibaba Cloud, [`aliyun`]; Tencent
//! Cloud, [`tencent`]), and the development [`outbox`], which implements
//! both and keeps messages sealed in a table. A transport says whether a
//! failure is worth retrying ([`SendError::transient`]); the dispatcher
//! decides when.

pub mod outbox;

use std::collections::BTreeMap;

use crate::Topic;

/// One message to one address.
pub struct Message<'a> {
    pub user_id: Option<uuid::Uuid>,
    /// An email address or phone number.
    pub to: &'a str,
    pub subject: &'a str,
    /// May hold a one-time secret: never log it.
    pub body: &'a str,
}

/// Why a message did not leave. The text is logged (redacted by the
/// dispatcher): transports never put the message in it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Worth trying again later (a server down, a timeout, a 5xx).
    pub transient: bool,
    pub message: String,
}

impl SendError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            transient: true,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }
}

#[async_trait::async_trait]
pub trait EmailTransport: Send + Sync {
    async fn send_email(&self, message: &Message<'_>) -> Result<(), SendError>;

    /// Whether messages stay inside Lectern (the development outbox)
    /// instead of reaching people: `serve` refuses that unless it is
    /// configured for development.
    fn is_development(&self) -> bool {
        false
    }
}

/// SMS providers send registered templates with parameters, not free
/// text: a transport gets both and uses what its provider takes.
pub struct Sms<'a> {
    pub user_id: Option<uuid::Uuid>,
    pub to: &'a str,
    pub topic: Topic,
    /// May hold a one-time secret: never log it.
    pub params: &'a BTreeMap<String, String>,
    /// The rendered text, for transports that send text.
    pub text: &'a str,
}

#[async_trait::async_trait]
pub trait SmsTransport: Send + Sync {
    async fn send_sms(&self, sms: &Sms<'_>) -> Result<(), SendError>;
}
