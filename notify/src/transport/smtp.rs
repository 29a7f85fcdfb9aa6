//! E-mail over SMTP with lettre (tokio, rustls with the ring provider and
//! the webpki roots). `starttls` (the default, port 587) refuses to send
//! unless the server upgrades the connection; `tls` is implicit TLS (port
//! 465); `none` is plain SMTP for a local relay or the development
//! server. Messages are `text/plain; charset=utf-8`: nothing a user wrote
//! is ever rendered as HTML. Connection, TLS and 4xx failures are
//! transient; a 5xx answer is permanent.

use std::time::Duration;

use lettre::message::header::ContentType;
pub use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{EmailTransport, Message, SendError};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Upgrade with STARTTLS, and refuse to send without it.
    #[default]
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plain text: a relay on the same host, development.
    None,
}

impl SmtpTls {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "starttls" => Some(SmtpTls::StartTls),
            "tls" => Some(SmtpTls::Implicit),
            "none" => Some(SmtpTls::None),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::StartTls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        }
    }
}

/// Where and how to send; `password` never reaches `Debug`.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: Option<u16>,
    pub tls: SmtpTls,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `Lectern <no-reply@example.org>`
    pub from: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish()
    }
}

pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| format!("{:?} is not a sender address: {e}", settings.from))?;
        let port = settings.port.unwrap_or(settings.tls.default_port());
        let tls = match settings.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let params = TlsParameters::new(settings.host.clone())
                    .map_err(|e| format!("TLS for {}: {e}", settings.host))?;
                if mode == SmtpTls::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(port)
            .tls(tls)
            .timeout(Some(settings.timeout));
        if let Some(user) = &settings.user {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                settings.password.clone().unwrap_or_default(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }
}

#[async_trait::async_trait]
impl EmailTransport for SmtpMailer {
    async fn send_email(&self, m: &Message<'_>) -> Result<(), SendError> {
        let to: Mailbox =
            m.to.parse()
                .map_err(|_| SendError::permanent("the recipient is not an e-mail address"))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(m.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(m.body.to_string())
            .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::permanent(format!("smtp: {e}"))),
            Err(e) => Err(SendError::transient(format!("smtp: {e}"))),
        }
    }
}
