//! Reviews: one per learner per course — stars (1–5) and optional text —
//! created, edited and deleted by their author. They are the catalogue's
//! `course_ratings` rows, extended in place, so every reader of ratings
//! (course pages, search's `sort=rating`, analytics) sees the same rows;
//! only `published` reviews count towards a course's averages
//! ([`lectern_catalogue::ratings`]).
//!
//! Text passes moderation ([`crate::moderation::admit`]) like every post;
//! stars alone have nothing to moderate and count at once. Lists show
//! published reviews, newest first or most helpful first, each a keyset
//! walk of its own partial index. A learner marks other learners' reviews
//! helpful, once each, never their own.
//!
//! `PUT /api/v1/courses/{course_id}/rating` (stars only) keeps the path
//! it had in the catalogue; it keeps the review's text.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_catalogue::ratings::rating_of;
use lectern_catalogue::RatingSummary;
use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ApiQuery, ClientContext, Cursor, Limit, NoContent};

use crate::moderation::{self, latest_reason, Admission};
use crate::text::{self, REVIEW_MAX};
use crate::{Author, CommunityState, PostKind, PostState};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let rate = Access::Permission(Permission::RateCourses);
    api.route(
        Method::PUT,
        "/api/v1/courses/{course_id}/rating",
        rate,
        rate_course,
    )
    .route(
        Method::PUT,
        "/api/v1/courses/{course_id}/review",
        rate,
        put_review,
    )
    .route(
        Method::GET,
        "/api/v1/courses/{course_id}/review",
        rate,
        get_own_review,
    )
    .route(
        Method::DELETE,
        "/api/v1/courses/{course_id}/review",
        rate,
        delete_review,
    )
    .route(
        Method::GET,
        "/api/v1/courses/{course_id}/reviews",
        Access::Session,
        list_reviews,
    )
    .route(
        Method::PUT,
        "/api/v1/reviews/{review_id}/helpful",
        rate,
        vote_helpful,
    )
    .route(
        Method::DELETE,
        "/api/v1/reviews/{review_id}/helpful",
        rate,
        unvote_helpful,
    )
}

const REVIEW_PAGE: Limit = Limit::new(20, 100);

fn stars(rating: i16) -> Result<i16, ApiError> {
    if (1..=5).contains(&rating) {
        Ok(rating)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRating,
            "a rating is a whole number from 1 to 5",
        ))
    }
}

/// Whether `course` is a published course of the author's organisation.
async fn published_course(
    conn: &mut PgConnection,
    org: Uuid,
    course: Uuid,
) -> Result<(), ApiError> {
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM courses
                         WHERE id = $1 AND organisation_id = $2 AND state = 'published')",
    )
    .bind(course)
    .bind(org)
    .fetch_one(conn)
    .await?;
    if found {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no course {course}")))
    }
}

/// A review as its readers see it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Review {
    pub id: Uuid,
    pub course_id: Uuid,
    pub author_id: Uuid,
    /// 1–5 stars.
    pub rating: i16,
    /// Plain text (may be empty); clients escape it.
    pub body: String,
    pub state: PostState,
    /// How many learners found it helpful.
    pub helpful_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Whether the caller wrote it.
    pub mine: bool,
    /// Whether the caller marked it helpful.
    pub voted_helpful: bool,
    /// For its author: why a moderator rejected or hid it.
    pub moderation_reason: Option<String>,
}

fn review_columns() -> String {
    format!(
        "r.id, r.course_id, r.user_id AS author_id, r.rating, r.body, r.state, r.helpful_count,
         r.created_at, r.updated_at, r.user_id = $ME AS mine,
         EXISTS (SELECT 1 FROM review_votes v WHERE v.review_id = r.id AND v.user_id = $ME) AS voted_helpful,
         CASE WHEN r.user_id = $ME AND r.state IN ('rejected', 'hidden')
              THEN {} END AS moderation_reason",
        latest_reason(PostKind::Review, "r.id")
    )
}

/// The author's review of a course of their organisation.
async fn own_review(
    conn: &mut PgConnection,
    author: &Author,
    course: Uuid,
) -> Result<Option<Review>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {} FROM course_ratings r JOIN courses c ON c.id = r.course_id
         WHERE r.course_id = $1 AND r.user_id = $2 AND c.organisation_id = $3",
        review_columns().replace("$ME", "$2")
    ))
    .bind(course)
    .bind(author.user_id)
    .bind(author.org_id)
    .fetch_optional(conn)
    .await
}

/// The caller's rating of a course, and the course's ratings with it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CourseRating {
    pub course_id: Uuid,
    /// The caller's rating (1–5).
    pub rating: i16,
    #[serde(flatten)]
    pub summary: RatingSummary,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rating {
    /// A whole number from 1 to 5.
    rating: i16,
}

/// `PUT /api/v1/courses/{course_id}/rating {"rating": 1–5}`: the learner's
/// stars for a published course, replacing earlier ones and keeping the
/// review's text.
async fn rate_course(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Rating>,
) -> Result<Json<CourseRating>, ApiError> {
    let rating = stars(body.rating)?;
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    published_course(&mut tx, author.org_id, course_id).await?;
    sqlx::query(
        "INSERT INTO course_ratings (course_id, user_id, rating) VALUES ($1, $2, $3)
         ON CONFLICT (course_id, user_id) DO UPDATE SET rating = EXCLUDED.rating, updated_at = now()",
    )
    .bind(course_id)
    .bind(author.user_id)
    .bind(rating)
    .execute(&mut *tx)
    .await?;
    let summary = rating_of(&mut tx, course_id).await?;
    tx.commit().await?;
    Ok(Json(CourseRating {
        course_id,
        rating,
        summary,
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// A whole number from 1 to 5.
    pub rating: i16,
    /// Up to 5,000 characters; empty for stars only.
    #[serde(default)]
    pub body: String,
}

/// Writes the author's review of `course_id` (creating or replacing it),
/// moderated like every post. Shared by the handler and `benchmarks/community`.
pub async fn write_review(
    conn: &mut PgConnection,
    community: &crate::Community,
    author: &Author,
    course_id: Uuid,
    rating: i16,
    body: &str,
) -> Result<Review, ApiError> {
    published_course(conn, author.org_id, course_id).await?;
    let previous = own_review(conn, author, course_id).await?;
    let unchanged_text = previous.as_ref().is_some_and(|p| p.body == body);
    let mut admission = if body.is_empty() {
        Admission {
            state: PostState::Published,
            cause: None,
            matched: Vec::new(),
        }
    } else {
        moderation::admit(conn, community, author.org_id, body).await?
    };
    if let Some(p) = &previous {
        if unchanged_text && admission.cause != Some(crate::moderation::Cause::SensitiveWord) {
            // Only the stars changed: the text keeps the state a moderator gave it.
            admission.state = p.state;
            admission.cause = None;
        } else if p.state != PostState::Published && admission.cause.is_none() {
            // A rejected or hidden review edited goes back to a moderator.
            admission.state = PostState::Pending;
            admission.cause = Some(crate::moderation::Cause::PreModeration);
        }
    }
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO course_ratings (course_id, user_id, rating, body, state) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (course_id, user_id) DO UPDATE
             SET rating = EXCLUDED.rating, body = EXCLUDED.body, state = EXCLUDED.state,
                 updated_at = now()
         RETURNING id",
    )
    .bind(course_id)
    .bind(author.user_id)
    .bind(rating)
    .bind(body)
    .bind(admission.state)
    .fetch_one(&mut *conn)
    .await?;
    moderation::open_case(conn, author.org_id, PostKind::Review, id, &admission).await?;
    own_review(conn, author, course_id)
        .await?
        .ok_or_else(|| ApiError::internal("a review just written is gone"))
}

/// `PUT /api/v1/courses/{course_id}/review {"rating", "body"?}`: the
/// learner's review, created or replaced. In pre-moderation, or when the
/// text holds a listed word, it answers `state: pending` and shows to
/// others once approved.
async fn put_review(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> Result<Json<Review>, ApiError> {
    let rating = stars(body.rating)?;
    let text = text::checked(&body.body, "body", REVIEW_MAX, true)?;
    let author = Author::of(&principal, &context)?;
    state
        .community
        .limiter
        .admit(author.user_id, author.ip.as_deref())?;
    let mut tx = state.db.begin().await?;
    let review = write_review(&mut tx, &state.community, &author, course_id, rating, &text).await?;
    tx.commit().await?;
    Ok(Json(review))
}

/// `GET /api/v1/courses/{course_id}/review`: the caller's own review, in
/// whatever state (with the moderator's reason when rejected or hidden).
async fn get_own_review(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Review>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut conn = state.db.acquire().await?;
    own_review(&mut conn, &author, course_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("you have not reviewed course {course_id}")))
}

/// `DELETE /api/v1/courses/{course_id}/review`: the caller's own review,
/// stars and text.
async fn delete_review(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    let id: Option<Uuid> = sqlx::query_scalar(
        "DELETE FROM course_ratings r USING courses c
         WHERE r.course_id = $1 AND r.user_id = $2 AND c.id = r.course_id AND c.organisation_id = $3
         RETURNING r.id",
    )
    .bind(course_id)
    .bind(author.user_id)
    .bind(author.org_id)
    .fetch_optional(&mut *tx)
    .await?;
    let id =
        id.ok_or_else(|| ApiError::not_found(format!("you have not reviewed course {course_id}")))?;
    moderation::forget_post(&mut tx, PostKind::Review, id).await?;
    tx.commit().await?;
    Ok(NoContent)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    /// `newest` (default) or `helpful` (most helpful first).
    sort: Option<String>,
    /// The previous page's `next`, with the same sort.
    cursor: Option<String>,
    /// 1–100; 20 by default.
    limit: Option<i64>,
}

/// A page of a course's published reviews, with its ratings.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ReviewPage {
    pub rating: RatingSummary,
    pub reviews: Vec<Review>,
    pub next: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "s")]
enum ReviewCursor {
    #[serde(rename = "n")]
    Newest { at: DateTime<Utc>, id: Uuid },
    #[serde(rename = "h")]
    Helpful { n: i32, id: Uuid },
}

/// `GET /api/v1/courses/{course_id}/reviews?sort=newest|helpful&cursor=&limit=`.
async fn list_reviews(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ReviewQuery>,
) -> Result<Json<ReviewPage>, ApiError> {
    let helpful = match q.sort.as_deref() {
        None | Some("newest") => false,
        Some("helpful") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidReviewSort,
                format!("sort={other:?} is not one of newest, helpful"),
            ))
        }
    };
    let limit = REVIEW_PAGE.of(q.limit)?;
    let after: Option<ReviewCursor> = q.cursor.as_deref().map(Cursor::decode).transpose()?;
    let mut conn = state.db.acquire().await?;
    let visible: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM courses WHERE id = $1
                         AND ($2::uuid IS NULL OR organisation_id = $2)
                         AND (state = 'published' OR $3))",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .bind(Permission::ManageCourses.granted_to(principal.role))
    .fetch_one(&mut *conn)
    .await?;
    if !visible {
        return Err(ApiError::not_found(format!("no course {course_id}")));
    }
    let me = principal.user_id().unwrap_or(Uuid::nil());
    let columns = review_columns().replace("$ME", "$2");
    let order = if helpful {
        "r.helpful_count DESC, r.id DESC"
    } else {
        "r.created_at DESC, r.id DESC"
    };
    // One statement per shape, each binding only what it reads, so every
    // page is planned as the keyset walk of its index.
    let sql = |keyset: &str| {
        format!(
            "SELECT {columns} FROM course_ratings r
             WHERE r.course_id = $1 AND r.state = 'published' {keyset}
             ORDER BY {order} LIMIT $3"
        )
    };
    let query = match (after, helpful) {
        (None, _) => {
            sqlx::query_as(&sql(""))
                .bind(course_id)
                .bind(me)
                .bind(limit + 1)
                .fetch_all(&mut *conn)
                .await
        }
        (Some(ReviewCursor::Newest { at, id }), false) => {
            sqlx::query_as(&sql("AND (r.created_at, r.id) < ($4, $5)"))
                .bind(course_id)
                .bind(me)
                .bind(limit + 1)
                .bind(at)
                .bind(id)
                .fetch_all(&mut *conn)
                .await
        }
        (Some(ReviewCursor::Helpful { n, id }), true) => {
            sqlx::query_as(&sql("AND (r.helpful_count, r.id) < ($4, $5)"))
                .bind(course_id)
                .bind(me)
                .bind(limit + 1)
                .bind(n)
                .bind(id)
                .fetch_all(&mut *conn)
                .await
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidCursor,
                "the cursor belongs to another sort; start again without it",
            ))
        }
    };
    let mut reviews: Vec<Review> = query?;
    let next = if reviews.len() as i64 > limit {
        reviews.truncate(limit as usize);
        reviews.last().map(|r| {
            Cursor::encode(&if helpful {
                ReviewCursor::Helpful {
                    n: r.helpful_count,
                    id: r.id,
                }
            } else {
                ReviewCursor::Newest {
                    at: r.created_at,
                    id: r.id,
                }
            })
        })
    } else {
        None
    };
    let rating = rating_of(&mut conn, course_id).await?;
    Ok(Json(ReviewPage {
        rating,
        reviews,
        next,
    }))
}

/// A review's helpful votes after the caller's vote.
#[derive(Serialize, schemars::JsonSchema)]
pub struct HelpfulVotes {
    pub review_id: Uuid,
    pub helpful_count: i32,
    /// Whether the caller's vote is counted now.
    pub voted_helpful: bool,
}

#[derive(sqlx::FromRow)]
struct VotedReview {
    author: Uuid,
}

/// The published review `review_id` of the caller's organisation, locked.
async fn lock_visible_review(
    conn: &mut PgConnection,
    org: Uuid,
    review_id: Uuid,
) -> Result<VotedReview, ApiError> {
    sqlx::query_as(
        "SELECT r.user_id AS author FROM course_ratings r JOIN courses c ON c.id = r.course_id
         WHERE r.id = $1 AND c.organisation_id = $2 AND r.state = 'published'
         FOR UPDATE OF r",
    )
    .bind(review_id)
    .bind(org)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no review {review_id}")))
}

/// `PUT /api/v1/reviews/{review_id}/helpful`: the caller found it helpful
/// (once; again changes nothing). Not on one's own review (409 `own_post`).
async fn vote_helpful(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(review_id): ApiPath<Uuid>,
) -> Result<Json<HelpfulVotes>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    let review = lock_visible_review(&mut tx, author.org_id, review_id).await?;
    if review.author == author.user_id {
        return Err(ApiError::new(
            ErrorCode::OwnPost,
            "one does not vote for one's own review",
        ));
    }
    let added = sqlx::query(
        "INSERT INTO review_votes (review_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(review_id)
    .bind(author.user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let helpful_count: i32 = sqlx::query_scalar(
        "UPDATE course_ratings SET helpful_count = helpful_count + $2 WHERE id = $1
         RETURNING helpful_count",
    )
    .bind(review_id)
    .bind(added as i32)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(HelpfulVotes {
        review_id,
        helpful_count,
        voted_helpful: true,
    }))
}

/// `DELETE /api/v1/reviews/{review_id}/helpful`: withdraws the caller's vote.
async fn unvote_helpful(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(review_id): ApiPath<Uuid>,
) -> Result<Json<HelpfulVotes>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let mut tx = state.db.begin().await?;
    lock_visible_review(&mut tx, author.org_id, review_id).await?;
    let removed = sqlx::query("DELETE FROM review_votes WHERE review_id = $1 AND user_id = $2")
        .bind(review_id)
        .bind(author.user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let helpful_count: i32 = sqlx::query_scalar(
        "UPDATE course_ratings SET helpful_count = helpful_count - $2 WHERE id = $1
         RETURNING helpful_count",
    )
    .bind(review_id)
    .bind(removed as i32)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(HelpfulVotes {
        review_id,
        helpful_count,
        voted_helpful: false,
    }))
}
