//! The in-app inbox: a person's notices, newest first, rendered in their
//! language when read. Only the owner sees an item — anyone else's id
//! answers 404, as if it did not exist. Secret topics never get here
//! (`enqueue` does not write them), so nothing read here can hold a code
//! or a token.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_web::page::Limit;
use lectern_web::{ApiError, ApiPath, ApiQuery, NoContent, Principal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::preferences::language_of;
use crate::templates::{render, Lang};
use crate::{Notify, Topic};

const INBOX_PAGE: Limit = Limit::new(20, 100);

/// `GET /api/v1/me/inbox?after=&limit=`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct InboxQuery {
    /// The `next` of the previous page.
    after: Option<Uuid>,
    limit: Option<i64>,
}

/// One notice, as its owner reads it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct InboxItem {
    pub id: Uuid,
    pub topic: Topic,
    /// In the reader's language (plain text).
    pub subject: String,
    /// In the reader's language (plain text: render it as text, never HTML).
    pub body: String,
    /// Where the notice leads, as a path of the apps (`/app/…` for the
    /// learner app, `/admin/…` for the console), when it leads somewhere.
    pub link: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One page of the inbox, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct InboxPage {
    pub items: Vec<InboxItem>,
    /// Pass as `after` for the next page; null when this page is the last.
    pub next: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: Uuid,
    topic: String,
    params: serde_json::Value,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

fn owner(principal: &Principal) -> Result<Uuid, ApiError> {
    principal.user_id().ok_or_else(ApiError::unauthenticated)
}

fn item(row: ItemRow, lang: Lang) -> Option<InboxItem> {
    let topic = Topic::parse(&row.topic)?;
    let params: BTreeMap<String, String> = serde_json::from_value(row.params).unwrap_or_default();
    let rendered = render(topic, lang, &params);
    let link = params
        .get("link")
        .filter(|l| l.starts_with("/app/") || l.starts_with("/admin/"))
        .cloned();
    Some(InboxItem {
        id: row.id,
        topic,
        subject: rendered.subject,
        body: rendered.body,
        link,
        read_at: row.read_at,
        created_at: row.created_at,
    })
}

/// `GET /api/v1/me/inbox`: the caller's notices, newest first.
pub async fn list(
    State(state): State<Notify>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<Json<InboxPage>, ApiError> {
    let user_id = owner(&principal)?;
    let limit = INBOX_PAGE.of(q.limit)?;
    let lang = language_of(&state.db, user_id).await?;
    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT id, topic, params, read_at, created_at FROM inbox_items \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(q.after)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let full = rows.len() as i64 == limit;
    let last = rows.last().map(|r| r.id);
    let items = rows.into_iter().filter_map(|r| item(r, lang)).collect();
    Ok(Json(InboxPage {
        items,
        next: full.then_some(last).flatten(),
    }))
}

/// How many notices the caller has not read.
#[derive(Serialize, schemars::JsonSchema)]
pub struct UnreadCount {
    pub unread: i64,
}

/// `GET /api/v1/me/inbox/unread`.
pub async fn unread(
    State(state): State<Notify>,
    principal: Principal,
) -> Result<Json<UnreadCount>, ApiError> {
    let user_id = owner(&principal)?;
    let unread: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inbox_items WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(&state.db)
    .await?;
    Ok(Json(UnreadCount { unread }))
}

/// `POST /api/v1/me/inbox/{item_id}/read`: 204; another person's item is 404.
pub async fn mark_read(
    State(state): State<Notify>,
    principal: Principal,
    ApiPath(item_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let user_id = owner(&principal)?;
    let found = sqlx::query(
        "UPDATE inbox_items SET read_at = coalesce(read_at, now()) WHERE id = $1 AND user_id = $2",
    )
    .bind(item_id)
    .bind(user_id)
    .execute(&state.db)
    .await?
    .rows_affected();
    if found == 0 {
        return Err(ApiError::not_found(format!("no inbox item {item_id}")));
    }
    Ok(NoContent)
}

/// How many notices a "mark all read" changed.
#[derive(Serialize, schemars::JsonSchema)]
pub struct MarkedRead {
    pub marked: u64,
}

/// `POST /api/v1/me/inbox/read`: marks every unread notice read.
pub async fn mark_all_read(
    State(state): State<Notify>,
    principal: Principal,
) -> Result<Json<MarkedRead>, ApiError> {
    let user_id = owner(&principal)?;
    let marked = sqlx::query(
        "UPDATE inbox_items SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
    )
    .bind(user_id)
    .execute(&state.db)
    .await?
    .rows_affected();
    Ok(Json(MarkedRead { marked }))
}
