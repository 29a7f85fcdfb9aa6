//! Comments on lessons: a comment, optionally at a moment of the video
//! (`at_s`, seconds, within the lesson's duration, so a player can seek
//! to it), and one level of replies.
//!
//! A lesson's comments are listed newest first by keyset on the comment
//! id (a UUIDv7, so id order is posting order): the first page is the
//! first ~20 entries of the partial index `lesson_comments_page (lesson_id,
//! id DESC) WHERE parent_id IS NULL`, and each next page starts below the
//! previous page's last id, so a lesson with 100k comments answers its
//! first page as fast as one with ten. Replies are listed oldest first
//! the same way. Others see published comments only; an author also sees
//! their own in any state, a moderator every one.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ApiQuery, ClientContext, Created, Limit, NoContent};

use crate::moderation::{self, latest_reason, Cause};
use crate::text::{self, COMMENT_MAX};
use crate::{moderates, Author, Community, CommunityState, PostKind, PostState};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let post = Access::Permission(Permission::PostComments);
    api.route(
        Method::GET,
        "/api/v1/lessons/{lesson_id}/comments",
        Access::Session,
        list,
    )
    .route(
        Method::POST,
        "/api/v1/lessons/{lesson_id}/comments",
        post,
        create,
    )
    .route(
        Method::GET,
        "/api/v1/comments/{comment_id}/replies",
        Access::Session,
        replies,
    )
    .route(Method::PATCH, "/api/v1/comments/{comment_id}", post, edit)
    .route(
        Method::DELETE,
        "/api/v1/comments/{comment_id}",
        post,
        delete,
    )
}

/// How many comments a page holds.
pub const COMMENT_PAGE: Limit = Limit::new(20, 100);

/// A comment as its readers see it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Comment {
    pub id: Uuid,
    pub lesson_id: Uuid,
    /// The comment this replies to; null for a comment on the lesson.
    pub parent_id: Option<Uuid>,
    pub author_id: Uuid,
    /// Plain text; clients escape it and do not turn it into links.
    pub body: String,
    /// The moment of the video it is about, in seconds; a player seeks there.
    pub at_s: Option<f64>,
    pub state: PostState,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    /// Published replies (comments on the lesson only; 0 for a reply).
    pub reply_count: i64,
    /// Whether the caller wrote it.
    pub mine: bool,
    /// For its author: why a moderator rejected or hid it.
    pub moderation_reason: Option<String>,
}

/// The columns of a [`Comment`] over `c`, for the viewer bound as `$ME`.
fn columns(me: &str) -> String {
    format!(
        "c.id, c.lesson_id, c.parent_id, c.author_id, c.body, c.at_s, c.state, c.created_at,
         c.edited_at,
         CASE WHEN c.parent_id IS NULL THEN
             (SELECT count(*) FROM lesson_comments r WHERE r.parent_id = c.id AND r.state = 'published')
         ELSE 0 END AS reply_count,
         c.author_id = {me} AS mine,
         CASE WHEN c.author_id = {me} AND c.state IN ('rejected', 'hidden')
              THEN {} END AS moderation_reason",
        latest_reason(PostKind::Comment, "c.id")
    )
}

async fn comment_by_id(conn: &mut PgConnection, id: Uuid, me: Uuid) -> Result<Comment, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {} FROM lesson_comments c WHERE c.id = $1",
        columns("$2")
    ))
    .bind(id)
    .bind(me)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no comment {id}")))
}

#[derive(sqlx::FromRow)]
struct LessonRef {
    duration_s: Option<f64>,
}

/// A lesson the caller may read: of their organisation, and published
/// unless they draft courses. 404 otherwise.
async fn visible_lesson(
    conn: &mut PgConnection,
    principal: &Principal,
    lesson_id: Uuid,
) -> Result<LessonRef, ApiError> {
    sqlx::query_as(
        "SELECT a.duration_s FROM lessons l
         LEFT JOIN assets a ON a.id = l.asset_id
         WHERE l.id = $1 AND ($2::uuid IS NULL OR l.organisation_id = $2) AND (l.published OR $3)",
    )
    .bind(lesson_id)
    .bind(principal.org_scope())
    .bind(Permission::ManageCourses.granted_to(principal.role))
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no lesson {lesson_id}")))
}

/// `at_s` within the video: not negative, not beyond its end.
fn moment(at_s: Option<f64>, duration_s: Option<f64>) -> Result<Option<f64>, ApiError> {
    let Some(at) = at_s else { return Ok(None) };
    if !at.is_finite() || at < 0.0 {
        return Err(ApiError::new(
            ErrorCode::NegativeValue,
            "at_s is a number of seconds, 0 or more",
        ));
    }
    match duration_s {
        Some(d) if at <= d => Ok(Some(at)),
        Some(d) => Err(ApiError::new(
            ErrorCode::PastDuration,
            format!("at_s {at} lies beyond the video's end ({d:.1} s)"),
        )),
        None => Err(ApiError::new(
            ErrorCode::PastDuration,
            "the lesson has no video of known length yet, so a comment cannot point into it",
        )),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// 1–2,000 characters of plain text.
    pub body: String,
    /// A moment of the video, in seconds (0 … the lesson's duration).
    pub at_s: Option<f64>,
    /// Reply to this comment of the same lesson (itself not a reply).
    pub parent_id: Option<Uuid>,
}

/// Writes a comment by `author` on `lesson_id` (visible to them),
/// moderated like every post. Shared by the handler and
/// `benchmarks/community`; the caller checks the text and the limits.
pub async fn post_comment(
    conn: &mut PgConnection,
    community: &Community,
    author: &Author,
    lesson_id: Uuid,
    duration_s: Option<f64>,
    new: &NewComment,
) -> Result<Comment, ApiError> {
    let (body, parent_id) = (new.body.as_str(), new.parent_id);
    let at_s = moment(new.at_s, duration_s)?;
    if let Some(parent) = parent_id {
        let parent_of_parent: Option<Option<Uuid>> = sqlx::query_scalar(
            "SELECT parent_id FROM lesson_comments
             WHERE id = $1 AND lesson_id = $2 AND state = 'published'",
        )
        .bind(parent)
        .bind(lesson_id)
        .fetch_optional(&mut *conn)
        .await?;
        match parent_of_parent {
            None => {
                return Err(ApiError::not_found(format!(
                    "no comment {parent} on this lesson"
                )))
            }
            Some(Some(_)) => {
                return Err(ApiError::new(
                    ErrorCode::NestedReply,
                    "replies are one level deep: reply to the comment it answers",
                ))
            }
            Some(None) => {}
        }
    }
    let admission = moderation::admit(conn, community, author.org_id, body).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO lesson_comments (id, organisation_id, lesson_id, parent_id, author_id, body, at_s, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(author.org_id)
    .bind(lesson_id)
    .bind(parent_id)
    .bind(author.user_id)
    .bind(body)
    .bind(at_s)
    .bind(admission.state)
    .execute(&mut *conn)
    .await?;
    moderation::open_case(conn, author.org_id, PostKind::Comment, id, &admission).await?;
    comment_by_id(conn, id, author.user_id).await
}

/// `POST /api/v1/lessons/{lesson_id}/comments {"body", "at_s"?, "parent_id"?}`
/// → 201. In pre-moderation, or with a listed word, it answers
/// `state: pending` and others see it once approved.
async fn create(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(lesson_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewComment>,
) -> Result<Created<Comment>, ApiError> {
    let text = text::checked(&body.body, "body", COMMENT_MAX, false)?;
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    let lesson = visible_lesson(&mut tx, &principal, lesson_id).await?;
    state
        .community
        .limiter
        .admit(author.user_id, author.ip.as_deref())?;
    let comment = post_comment(
        &mut tx,
        &state.community,
        &author,
        lesson_id,
        lesson.duration_s,
        &NewComment { body: text, ..body },
    )
    .await?;
    tx.commit().await?;
    Ok(Created::at(
        format!("/api/v1/comments/{}", comment.id),
        comment,
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The previous page's `next`.
    after: Option<Uuid>,
    /// 1–100; 20 by default.
    limit: Option<i64>,
}

/// A page of comments.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CommentPage {
    pub comments: Vec<Comment>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<Uuid>,
}

/// One page of a lesson's comments (not replies), newest first, as
/// `viewer` sees them. Shared by the handler and `benchmarks/community`.
pub async fn lesson_page(
    conn: &mut PgConnection,
    lesson_id: Uuid,
    viewer: Uuid,
    sees_all: bool,
    after: Option<Uuid>,
    limit: i64,
) -> Result<CommentPage, sqlx::Error> {
    let visible = "(c.state = 'published' OR c.author_id = $2 OR $3)";
    let base = format!(
        "SELECT {} FROM lesson_comments c
         WHERE c.lesson_id = $1 AND c.parent_id IS NULL AND {visible}",
        columns("$2")
    );
    // Two statements rather than `$5 IS NULL OR c.id < $5`, so a cached
    // generic plan is still the backward walk of the index.
    let mut comments: Vec<Comment> = match after {
        None => {
            sqlx::query_as(&format!("{base} ORDER BY c.id DESC LIMIT $4"))
                .bind(lesson_id)
                .bind(viewer)
                .bind(sees_all)
                .bind(limit + 1)
                .fetch_all(conn)
                .await?
        }
        Some(after) => {
            sqlx::query_as(&format!("{base} AND c.id < $5 ORDER BY c.id DESC LIMIT $4"))
                .bind(lesson_id)
                .bind(viewer)
                .bind(sees_all)
                .bind(limit + 1)
                .bind(after)
                .fetch_all(conn)
                .await?
        }
    };
    let next = if comments.len() as i64 > limit {
        comments.truncate(limit as usize);
        comments.last().map(|c| c.id)
    } else {
        None
    };
    Ok(CommentPage { comments, next })
}

/// `GET /api/v1/lessons/{lesson_id}/comments?after=&limit=`: newest first.
async fn list(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(lesson_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<CommentPage>, ApiError> {
    let limit = COMMENT_PAGE.of(q.limit)?;
    let mut conn = state.db.acquire().await?;
    visible_lesson(&mut conn, &principal, lesson_id).await?;
    let me = principal.user_id().unwrap_or(Uuid::nil());
    Ok(Json(
        lesson_page(
            &mut conn,
            lesson_id,
            me,
            moderates(&principal),
            q.after,
            limit,
        )
        .await?,
    ))
}

/// `GET /api/v1/comments/{comment_id}/replies?after=&limit=`: oldest first.
async fn replies(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(comment_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<CommentPage>, ApiError> {
    let limit = COMMENT_PAGE.of(q.limit)?;
    let mut conn = state.db.acquire().await?;
    let me = principal.user_id().unwrap_or(Uuid::nil());
    let sees_all = moderates(&principal);
    let parent = comment_by_id(&mut conn, comment_id, me).await?;
    visible_lesson(&mut conn, &principal, parent.lesson_id).await?;
    if parent.state != PostState::Published && !parent.mine && !sees_all {
        return Err(ApiError::not_found(format!("no comment {comment_id}")));
    }
    let mut comments: Vec<Comment> = sqlx::query_as(&format!(
        "SELECT {} FROM lesson_comments c
         WHERE c.parent_id = $1 AND (c.state = 'published' OR c.author_id = $2 OR $3)
           AND c.id > coalesce($5, '00000000-0000-0000-0000-000000000000'::uuid)
         ORDER BY c.id LIMIT $4",
        columns("$2")
    ))
    .bind(comment_id)
    .bind(me)
    .bind(sees_all)
    .bind(limit + 1)
    .bind(q.after)
    .fetch_all(&mut *conn)
    .await?;
    let next = if comments.len() as i64 > limit {
        comments.truncate(limit as usize);
        comments.last().map(|c| c.id)
    } else {
        None
    };
    Ok(Json(CommentPage { comments, next }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentEdit {
    /// 1–2,000 characters.
    body: Option<String>,
    /// The moment of the video; `null` leaves it unchanged.
    at_s: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct OwnComment {
    organisation_id: Uuid,
    lesson_id: Uuid,
    body: String,
    state: PostState,
}

async fn lock_own(
    conn: &mut PgConnection,
    author: &Author,
    comment_id: Uuid,
) -> Result<OwnComment, ApiError> {
    sqlx::query_as(
        "SELECT organisation_id, lesson_id, body, state FROM lesson_comments
         WHERE id = $1 AND author_id = $2 AND organisation_id = $3 FOR UPDATE",
    )
    .bind(comment_id)
    .bind(author.user_id)
    .bind(author.org_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no comment {comment_id} of yours")))
}

/// `PATCH /api/v1/comments/{comment_id} {"body"?, "at_s"?}`: the author's
/// own comment. Changed text is moderated again; a rejected or hidden
/// comment that is edited goes back to a moderator.
async fn edit(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(comment_id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<CommentEdit>,
) -> Result<Json<Comment>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let body = patch
        .body
        .as_deref()
        .map(|b| text::checked(b, "body", COMMENT_MAX, false))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let own = lock_own(&mut tx, &author, comment_id).await?;
    let duration: Option<f64> = sqlx::query_scalar(
        "SELECT a.duration_s FROM lessons l LEFT JOIN assets a ON a.id = l.asset_id WHERE l.id = $1",
    )
    .bind(own.lesson_id)
    .fetch_one(&mut *tx)
    .await?;
    let at_s = moment(patch.at_s, duration)?;
    let mut new_state = own.state;
    if let Some(body) = body.as_deref().filter(|b| *b != own.body) {
        state
            .community
            .limiter
            .admit(author.user_id, author.ip.as_deref())?;
        let mut admission =
            moderation::admit(&mut tx, &state.community, own.organisation_id, body).await?;
        if own.state != PostState::Published && admission.cause.is_none() {
            admission.state = PostState::Pending;
            admission.cause = Some(Cause::PreModeration);
        }
        moderation::open_case(
            &mut tx,
            own.organisation_id,
            PostKind::Comment,
            comment_id,
            &admission,
        )
        .await?;
        new_state = admission.state;
    }
    sqlx::query(
        "UPDATE lesson_comments SET body = coalesce($2, body), at_s = coalesce($3, at_s),
             state = $4, edited_at = now()
         WHERE id = $1",
    )
    .bind(comment_id)
    .bind(&body)
    .bind(at_s)
    .bind(new_state)
    .execute(&mut *tx)
    .await?;
    let comment = comment_by_id(&mut tx, comment_id, author.user_id).await?;
    tx.commit().await?;
    Ok(Json(comment))
}

/// `DELETE /api/v1/comments/{comment_id}`: the author's own comment, with
/// its replies.
async fn delete(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(comment_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    lock_own(&mut tx, &author, comment_id).await?;
    let replies: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM lesson_comments WHERE parent_id = $1")
            .bind(comment_id)
            .fetch_all(&mut *tx)
            .await?;
    for id in replies.iter().chain(std::iter::once(&comment_id)) {
        moderation::forget_post(&mut tx, PostKind::Comment, *id).await?;
    }
    sqlx::query("DELETE FROM lesson_comments WHERE id = $1")
        .bind(comment_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(NoContent)
}
