//! How a rendered message leaves Lectern: [`EmailTransport`] (SMTP,
//! [`smtp`]) and [`SmsTransport`] (Alibaba Cloud, [`aliyun`]; Tencent
//! Cloud, [`tencent`]), and the development [`outbox`], which implements
//! both and keeps messages sealed in a table. A transport says whether a
//! failure is worth retrying ([`SendError::transient`]); the dispatcher
//! decides when.

pub mod aliyun;
pub mod outbox;
pub mod smtp;
pub mod tencent;

use std::collections::BTreeMap;
use std::time::Duration;

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

/// What an SMS provider needs; the secret never reaches `Debug`.
#[derive(Clone)]
pub struct SmsProviderSettings {
    /// Alibaba AccessKey ID / Tencent SecretId.
    pub access_key_id: String,
    /// Alibaba AccessKey secret / Tencent SecretKey.
    pub access_key_secret: String,
    /// The registered signature (签名) messages carry.
    pub sign_name: String,
    /// Tencent's SmsSdkAppId.
    pub app_id: Option<String>,
    pub region: Option<String>,
    /// The API's base URL; the provider's public one when `None` (tests
    /// point it at a local server).
    pub endpoint: Option<String>,
    /// The registered template of each topic SMS may carry.
    pub templates: BTreeMap<Topic, String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmsProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsProviderSettings")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field("sign_name", &self.sign_name)
            .field("app_id", &self.app_id)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("templates", &self.templates)
            .finish()
    }
}

impl SmsProviderSettings {
    fn template(&self, topic: Topic) -> Result<&str, SendError> {
        self.templates
            .get(&topic)
            .map(String::as_str)
            .ok_or_else(|| {
                SendError::permanent(format!(
                    "no SMS template is configured for {}",
                    topic.as_str()
                ))
            })
    }

    /// `step_up_code=SMS_1,invitation=SMS_2` → the template map.
    pub fn parse_templates(text: &str) -> Result<BTreeMap<Topic, String>, String> {
        let mut map = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (topic, template) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not topic=template"))?;
            let topic = Topic::parse(topic.trim())
                .ok_or_else(|| format!("{:?} is not a notification topic", topic.trim()))?;
            map.insert(topic, template.trim().to_string());
        }
        Ok(map)
    }
}
