//! Notifications that arrive: the one way a message reaches a person.
//!
//! A decision that should tell someone (an invitation, a one-time code, a
//! moderation outcome, an answer) calls [`enqueue`] inside its own
//! transaction — a transactional outbox, so the notice exists iff the
//! decision committed. `enqueue` writes a `notifications` row, an in-app
//! [`inbox`] item when the notice is for an account and its topic holds
//! no secret, and one `notification_deliveries` row per channel (e-mail,
//! SMS) the person's [`preferences`] allow. The [`dispatch`]er, a
//! background task of `serve`, claims due deliveries (`FOR UPDATE SKIP
//! LOCKED`, so any number of nodes share the queue), resolves the address
//! through an [`address::AddressBook`] (identity's, injected: notify knows
//! no accounts), renders the [`templates`] in the person's language,
//! hands the message to a [`transport`] (SMTP, Alibaba Cloud or Tencent
//! Cloud SMS, or the development outbox), and records the outcome in the
//! delivery log, retrying with exponential backoff up to a bound;
//! [`metrics`] counts the outcomes for `/metrics`.
//!
//! **Invariant:** secrets never reach the inbox or the delivery log. A
//! secret topic ([`Topic::is_secret`]: one-time codes and links carrying
//! a token) gets no inbox item; the log holds topic, channel, attempt,
//! outcome and a redacted error — never an address, a body or a
//! parameter; a notice's parameters (sealed with the field keys when
//! enqueued with [`enqueue_sealed`]) are erased once all its deliveries
//! are final.

pub mod address;
pub mod dispatch;
pub mod inbox;
pub mod metrics;
pub mod preferences;
pub mod templates;
pub mod transport;

use std::collections::BTreeMap;

use axum::http::Method;
use lectern_secrets::Keyring;
use lectern_web::{Access, ApiRouter};
use uuid::Uuid;

pub use address::{AddressBook, Contact};
pub use dispatch::{DispatchSettings, Notify, RateLimits};
pub use templates::{Lang, Rendered};

/// What a notification is about; decides the template (zh-CN and en) and
/// which channels a user's preferences allow.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// params: org_name, link, expires_at
    Invitation,
    /// params: code (secret: never in logs / inbox)
    StepUpCode,
    /// params: link
    SignUpConfirmation,
    /// params: kind (review|comment|question|answer), outcome
    /// (approved|rejected|hidden), reason, excerpt
    ModerationOutcome,
    /// params: course_title, outcome (published|rejected), reason
    CourseReviewOutcome,
    /// params: course_title, lesson_title, excerpt, link
    QuestionAsked,
    /// params: course_title, excerpt, link
    QuestionAnswered,
    /// params: excerpt, link
    AnswerAccepted,
    /// params: course_title, link
    CoursePublished,
    /// No params: someone asked to sign up with an address that already
    /// has an account (its owner is told instead of being sent a token).
    SignUpAttempted,
    /// params: code (secret): a code that signs in with, or proves, a
    /// phone number; sent by SMS to the number given.
    PhoneCode,
}

impl Topic {
    pub const ALL: [Topic; 11] = [
        Topic::Invitation,
        Topic::StepUpCode,
        Topic::SignUpConfirmation,
        Topic::ModerationOutcome,
        Topic::CourseReviewOutcome,
        Topic::QuestionAsked,
        Topic::QuestionAnswered,
        Topic::AnswerAccepted,
        Topic::CoursePublished,
        Topic::SignUpAttempted,
        Topic::PhoneCode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Invitation => "invitation",
            Topic::StepUpCode => "step_up_code",
            Topic::SignUpConfirmation => "sign_up_confirmation",
            Topic::ModerationOutcome => "moderation_outcome",
            Topic::CourseReviewOutcome => "course_review_outcome",
            Topic::QuestionAsked => "question_asked",
            Topic::QuestionAnswered => "question_answered",
            Topic::AnswerAccepted => "answer_accepted",
            Topic::CoursePublished => "course_published",
            Topic::SignUpAttempted => "sign_up_attempted",
            Topic::PhoneCode => "phone_code",
        }
    }

    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The parameters the topic's template uses, in order (SMS providers
    /// whose templates take positional parameters get them so).
    pub fn param_names(self) -> &'static [&'static str] {
        match self {
            Topic::Invitation => &["org_name", "link", "expires_at"],
            Topic::StepUpCode => &["code"],
            Topic::SignUpConfirmation => &["link"],
            Topic::ModerationOutcome => &["kind", "outcome", "reason", "excerpt"],
            Topic::CourseReviewOutcome => &["course_title", "outcome", "reason"],
            Topic::QuestionAsked => &["course_title", "lesson_title", "excerpt", "link"],
            Topic::QuestionAnswered => &["course_title", "excerpt", "link"],
            Topic::AnswerAccepted => &["excerpt", "link"],
            Topic::CoursePublished => &["course_title", "link"],
            Topic::SignUpAttempted => &[],
            Topic::PhoneCode => &["code"],
        }
    }

    /// Its parameters hold a secret (a one-time code, or a link carrying a
    /// single-use token): never in the inbox, never in the delivery log.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            Topic::StepUpCode | Topic::Invitation | Topic::SignUpConfirmation | Topic::PhoneCode
        )
    }

    /// The person cannot turn its e-mail off: without it they cannot sign
    /// in, step up or accept an invitation.
    pub fn is_mandatory(self) -> bool {
        matches!(
            self,
            Topic::StepUpCode
                | Topic::Invitation
                | Topic::SignUpConfirmation
                | Topic::SignUpAttempted
                | Topic::PhoneCode
        )
    }
}

/// Where a notice goes when it is not (only) resolved from an account.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    Email(String),
    Phone(String),
}

// An address is personal data: Debug says which kind, not which address.
impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Email(_) => f.write_str("Email(…)"),
            Recipient::Phone(_) => f.write_str("Phone(…)"),
        }
    }
}

/// The channels a notice can take.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Inbox,
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Inbox => "inbox",
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

pub struct Notification {
    pub org_id: Option<Uuid>,
    /// The person; their address/phone is resolved by the dispatcher
    /// (or given explicitly in `to` for people without an account yet).
    pub user_id: Option<Uuid>,
    pub to: Option<Recipient>,
    pub topic: Topic,
    pub params: BTreeMap<String, String>,
}

// Parameters may hold a one-time code: Debug never shows their values.
impl std::fmt::Debug for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notification")
            .field("org_id", &self.org_id)
            .field("user_id", &self.user_id)
            .field("to", &self.to)
            .field("topic", &self.topic)
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// notify's routes: the caller's own inbox and preferences (a session's
/// person; nobody reads another's).
pub fn routes(api: ApiRouter<Notify>) -> ApiRouter<Notify> {
    use Access::Session;
    use Method as M;
    api.route(M::GET, "/api/v1/me/inbox", Session, inbox::list)
        .route(M::GET, "/api/v1/me/inbox/unread", Session, inbox::unread)
        .route(
            M::POST,
            "/api/v1/me/inbox/read",
            Session,
            inbox::mark_all_read,
        )
        .route(
            M::POST,
            "/api/v1/me/inbox/{item_id}/read",
            Session,
            inbox::mark_read,
        )
        .route(
            M::GET,
            "/api/v1/me/notification-preferences",
            Session,
            preferences::get,
        )
        .route(
            M::PUT,
            "/api/v1/me/notification-preferences",
            Session,
            preferences::put,
        )
}

/// The AAD name of a notice's sealed parameters and address.
pub(crate) const PAYLOAD_FIELD: &str = "notifications.payload";

/// What is sealed (or kept in the clear) for the dispatcher.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Payload {
    pub params: BTreeMap<String, String>,
    pub to: Option<Recipient>,
}

/// Transactional outbox: called inside the caller's transaction, so the
/// notice exists iff the decision committed. Creates the in-app inbox item
/// (when user_id is set and the topic is not secret) and schedules
/// deliveries (e-mail / SMS) allowed by the user's preferences for a
/// background dispatcher with retries and backoff.
///
/// Parameters and an explicit address are kept in the clear until every
/// delivery is final, then erased; a caller whose parameters hold a
/// secret or whose notice goes to an explicit address uses
/// [`enqueue_sealed`] instead.
pub async fn enqueue(conn: &mut sqlx::PgConnection, n: &Notification) -> Result<Uuid, sqlx::Error> {
    insert(conn, n, None).await
}

/// As [`enqueue`], with parameters and the explicit address sealed with
/// the field keys until the dispatcher opens them (so a copy of the
/// database does not give away codes, tokens or addresses).
pub async fn enqueue_sealed(
    conn: &mut sqlx::PgConnection,
    keys: &Keyring,
    n: &Notification,
) -> Result<Uuid, sqlx::Error> {
    insert(conn, n, Some(keys)).await
}

/// A person's channel choices as `enqueue` reads them.
#[derive(sqlx::FromRow, Default)]
struct ChannelChoices {
    inbox_off: Vec<String>,
    email_off: Vec<String>,
    sms_on: Vec<String>,
}

async fn insert(
    conn: &mut sqlx::PgConnection,
    n: &Notification,
    keys: Option<&Keyring>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let topic = n.topic;
    let mut channels = Vec::new();
    let mut to_inbox = false;
    if let Some(user_id) = n.user_id {
        let choices: ChannelChoices = sqlx::query_as(
            "SELECT inbox_off, email_off, sms_on FROM notification_preferences WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or_default();
        let has = |list: &[String]| list.iter().any(|t| t == topic.as_str());
        to_inbox = !topic.is_secret() && !has(&choices.inbox_off);
        // An explicit address replaces the account's for its channel.
        let explicit_email = matches!(n.to, Some(Recipient::Email(_)));
        let explicit_phone = matches!(n.to, Some(Recipient::Phone(_)));
        if !explicit_email && (topic.is_mandatory() || !has(&choices.email_off)) {
            channels.push(Channel::Email);
        }
        if !explicit_phone && has(&choices.sms_on) {
            channels.push(Channel::Sms);
        }
    }
    match n.to {
        Some(Recipient::Email(_)) => channels.push(Channel::Email),
        Some(Recipient::Phone(_)) => channels.push(Channel::Sms),
        None => {}
    }
    // Parameters are kept only while a delivery needs them.
    let (plain, sealed) = if channels.is_empty() {
        (None, None)
    } else {
        let payload = Payload {
            params: n.params.clone(),
            to: n.to.clone(),
        };
        match keys {
            Some(keys) => {
                let json = serde_json::to_string(&payload).expect("a payload serialises");
                (None, Some(keys.seal(PAYLOAD_FIELD, id, &json)))
            }
            None => (
                Some(serde_json::to_value(&payload).expect("a payload serialises")),
                None,
            ),
        }
    };
    sqlx::query(
        "INSERT INTO notifications (id, org_id, user_id, topic, payload, payload_ct) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(n.org_id)
    .bind(n.user_id)
    .bind(topic.as_str())
    .bind(plain)
    .bind(sealed)
    .execute(&mut *conn)
    .await?;
    if let (true, Some(user_id)) = (to_inbox, n.user_id) {
        let params = serde_json::to_value(&n.params).expect("params serialise");
        sqlx::query(
            "INSERT INTO inbox_items (id, notification_id, user_id, org_id, topic, params) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(user_id)
        .bind(n.org_id)
        .bind(topic.as_str())
        .bind(params)
        .execute(&mut *conn)
        .await?;
        metrics::count(Channel::Inbox, metrics::Outcome::Sent);
    }
    for channel in channels {
        sqlx::query(
            "INSERT INTO notification_deliveries (id, notification_id, topic, channel) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(id)
        .bind(topic.as_str())
        .bind(channel.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_secrets_are_mandatory() {
        for t in Topic::ALL {
            assert_eq!(Topic::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::Value::String(t.as_str().into())
            );
            if t.is_secret() {
                assert!(t.is_mandatory(), "{t:?}");
            }
        }
        assert!(Topic::StepUpCode.is_secret());
        assert!(!Topic::CoursePublished.is_secret());
    }

    #[test]
    fn debug_shows_no_parameter_or_address() {
        let n = Notification {
            org_id: None,
            user_id: None,
            to: Some(Recipient::Email("someone@example.org".into())),
            topic: Topic::StepUpCode,
            params: BTreeMap::from([("code".into(), "123456".into())]),
        };
        let text = format!("{n:?}");
        assert!(
            !text.contains("123456") && !text.contains("someone@"),
            "{text}"
        );
    }
}
