//! A person's notification choices: their language (zh-CN by default)
//! and, per topic, whether it reaches the inbox, e-mail and SMS. No row
//! means the defaults (inbox and e-mail on, SMS off). E-mail of a
//! mandatory topic ([`Topic::is_mandatory`]: one-time codes, invitations,
//! sign-up messages) cannot be turned off — asking is 422
//! `notification_mandatory` — and secret topics never reach the inbox
//! whatever the choice.

use axum::extract::State;
use axum::Json;
use lectern_web::{ApiError, ApiJson, ErrorCode, Principal};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::templates::Lang;
use crate::{Notify, Topic};

/// The language `user_id` reads notices in.
pub async fn language_of(db: &PgPool, user_id: Uuid) -> Result<Lang, sqlx::Error> {
    let lang: Option<String> =
        sqlx::query_scalar("SELECT language FROM notification_preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    Ok(lang.and_then(|l| Lang::parse(&l)).unwrap_or_default())
}

/// One topic's channels.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy)]
pub struct TopicChoice {
    pub topic: Topic,
    pub inbox: bool,
    pub email: bool,
    pub sms: bool,
    /// E-mail cannot be turned off for it.
    #[serde(default)]
    pub mandatory: bool,
}

/// `GET`/`PUT /api/v1/me/notification-preferences`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Preferences {
    pub language: Lang,
    /// Every topic, in a fixed order.
    pub topics: Vec<TopicChoice>,
}

/// A change: only what is given changes.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct PreferencesChange {
    pub language: Option<Lang>,
    #[serde(default)]
    pub topics: Vec<TopicChange>,
}

/// One topic's change; an absent channel keeps its choice.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct TopicChange {
    pub topic: Topic,
    pub inbox: Option<bool>,
    pub email: Option<bool>,
    pub sms: Option<bool>,
}

#[derive(sqlx::FromRow, Default)]
struct Row {
    language: String,
    inbox_off: Vec<String>,
    email_off: Vec<String>,
    sms_on: Vec<String>,
}

async fn load(db: &PgPool, user_id: Uuid) -> Result<Row, sqlx::Error> {
    Ok(sqlx::query_as(
        "SELECT language, inbox_off, email_off, sms_on FROM notification_preferences \
         WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .unwrap_or_else(|| Row {
        language: Lang::default().as_str().to_string(),
        ..Row::default()
    }))
}

fn view(row: &Row) -> Preferences {
    let has = |list: &[String], t: Topic| list.iter().any(|x| x == t.as_str());
    Preferences {
        language: Lang::parse(&row.language).unwrap_or_default(),
        topics: Topic::ALL
            .into_iter()
            .map(|t| TopicChoice {
                topic: t,
                inbox: !t.is_secret() && !has(&row.inbox_off, t),
                email: t.is_mandatory() || !has(&row.email_off, t),
                sms: has(&row.sms_on, t),
                mandatory: t.is_mandatory(),
            })
            .collect(),
    }
}

fn caller(principal: &Principal) -> Result<Uuid, ApiError> {
    principal.user_id().ok_or_else(ApiError::unauthenticated)
}

/// `GET /api/v1/me/notification-preferences`.
pub async fn get(
    State(state): State<Notify>,
    principal: Principal,
) -> Result<Json<Preferences>, ApiError> {
    let user_id = caller(&principal)?;
    Ok(Json(view(&load(&state.db, user_id).await?)))
}

fn set(list: &mut Vec<String>, topic: Topic, present: bool) {
    list.retain(|t| t != topic.as_str());
    if present {
        list.push(topic.as_str().to_string());
    }
    list.sort();
}

/// `PUT /api/v1/me/notification-preferences`: changes what is given and
/// answers the whole set.
pub async fn put(
    State(state): State<Notify>,
    principal: Principal,
    ApiJson(change): ApiJson<PreferencesChange>,
) -> Result<Json<Preferences>, ApiError> {
    let user_id = caller(&principal)?;
    let mut row = load(&state.db, user_id).await?;
    if let Some(lang) = change.language {
        row.language = lang.as_str().to_string();
    }
    for c in &change.topics {
        if c.email == Some(false) && c.topic.is_mandatory() {
            return Err(ApiError::new(
                ErrorCode::NotificationMandatory,
                format!(
                    "{} cannot be turned off by e-mail: it is how you sign in, step up or accept an invitation",
                    c.topic.as_str()
                ),
            ));
        }
        if let Some(on) = c.inbox {
            set(&mut row.inbox_off, c.topic, !on);
        }
        if let Some(on) = c.email {
            set(&mut row.email_off, c.topic, !on);
        }
        if let Some(on) = c.sms {
            set(&mut row.sms_on, c.topic, on);
        }
    }
    sqlx::query(
        "INSERT INTO notification_preferences (user_id, language, inbox_off, email_off, sms_on) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET language = $2, inbox_off = $3, email_off = $4, \
             sms_on = $5, updated_at = now()",
    )
    .bind(user_id)
    .bind(&row.language)
    .bind(&row.inbox_off)
    .bind(&row.email_off)
    .bind(&row.sms_on)
    .execute(&state.db)
    .await?;
    Ok(Json(view(&row)))
}
