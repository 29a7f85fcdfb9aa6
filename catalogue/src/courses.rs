//! Courses: creating, editing (drafts only), reading, the publication state
//! machine, and deleting (critical: step-up, audited). Ratings and reviews
//! are the community crate's; a review sent back with a reason
//! ([`reject_review`]) is called from there, which also notifies the
//! course's experts in the same transaction.
//!
//! Each transition is its own route, so the permission matrix says who may
//! make it (experts draft and submit; content admins publish and
//! unpublish) and the audit log names it (`POST
//! /api/v1/courses/{course_id}/publish`).
//!
//! The transitions: draft → in_review (`submit`); in_review or unpublished
//! → published; published → unpublished; in_review (withdrawn or sent
//! back) or unpublished → draft; in_review → draft with a reason
//! (`reject`, the reason kept on the course for its experts and admins).
//! Anything else is 409
//! `invalid_transition`; content edits outside `draft` are 409
//! `course_not_editable`. Learners read published courses only; the rest
//! answer 404.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::search::index;
use crate::view::{course_view, Course};
use crate::{
    line, lock_course, lock_draft, nullable, own_profile, owned, prose, sees_unpublished,
    target_org, ClosedSet, CourseState, ResourceType,
};
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter, ErrorCode};
use lectern_web::{ApiJson, ApiPath, ApiQuery};
use lectern_web::{Created, Limit, NoContent};

use crate::CatalogueState;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    let draft = Access::Permission(Permission::ManageCourses);
    let publish = Access::Permission(Permission::PublishCourses);
    api.route(Method::POST, "/api/v1/courses", draft, create)
        .route(Method::GET, "/api/v1/courses", Access::Session, list)
        .route(
            Method::GET,
            "/api/v1/courses/{course_id}",
            Access::Session,
            get,
        )
        .route(Method::PATCH, "/api/v1/courses/{course_id}", draft, update)
        .route(
            Method::DELETE,
            "/api/v1/courses/{course_id}",
            Access::Permission(Permission::DeleteCourses),
            delete,
        )
        .route(
            Method::POST,
            "/api/v1/courses/{course_id}/submit",
            draft,
            submit,
        )
        .route(
            Method::POST,
            "/api/v1/courses/{course_id}/publish",
            publish,
            publish_course,
        )
        .route(
            Method::POST,
            "/api/v1/courses/{course_id}/unpublish",
            publish,
            unpublish,
        )
        .route(
            Method::POST,
            "/api/v1/courses/{course_id}/draft",
            draft,
            back_to_draft,
        )
}

/// How many courses a page of the editors' list (`GET /api/v1/courses`) holds.
const COURSE_PAGE: Limit = Limit::new(50, 200);

fn title(value: &str) -> Result<String, ApiError> {
    line(value, "title", ErrorCode::InvalidTitle, 1, 300)
}

/// Trimmed, de-duplicated tags of 1–50 characters, at most 30.
fn tags(values: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let t = v.trim();
        if t.is_empty() || t.chars().count() > 50 || t.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::InvalidTag,
                format!("tag {v:?}: a tag is 1–50 characters without control characters"),
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    if out.len() > 30 {
        return Err(ApiError::new(
            ErrorCode::InvalidTag,
            "a course has at most 30 tags",
        ));
    }
    Ok(out)
}

fn resource_type(text: &str) -> Result<ResourceType, ApiError> {
    ResourceType::read(text, "resource_type", ErrorCode::InvalidResourceType)
}

async fn check_discipline(conn: &mut PgConnection, org: Uuid, id: Uuid) -> Result<(), ApiError> {
    if owned(conn, "disciplines", "organisation_id", id, org).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnknownDiscipline,
            format!("discipline_id {id} is not a discipline of this organisation"),
        ))
    }
}

async fn set_experts(
    conn: &mut PgConnection,
    org: Uuid,
    course: Uuid,
    experts: &[Uuid],
) -> Result<(), ApiError> {
    let mut unique: Vec<Uuid> = Vec::new();
    for e in experts {
        if !unique.contains(e) {
            unique.push(*e);
        }
    }
    let known: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM experts WHERE organisation_id = $1 AND id = ANY($2)")
            .bind(org)
            .bind(&unique)
            .fetch_all(&mut *conn)
            .await?;
    if let Some(missing) = unique.iter().find(|e| !known.contains(e)) {
        return Err(ApiError::new(
            ErrorCode::UnknownExpert,
            format!("expert {missing} is not an expert of this organisation"),
        ));
    }
    sqlx::query("DELETE FROM course_experts WHERE course_id = $1")
        .bind(course)
        .execute(&mut *conn)
        .await?;
    let positions: Vec<i32> = (0..unique.len() as i32).collect();
    sqlx::query(
        "INSERT INTO course_experts (course_id, expert_id, position)
         SELECT $1, e, p FROM unnest($2::uuid[], $3::int[]) AS t(e, p)",
    )
    .bind(course)
    .bind(&unique)
    .bind(&positions)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn set_tags(conn: &mut PgConnection, course: Uuid, tags: &[String]) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM course_tags WHERE course_id = $1")
        .bind(course)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO course_tags (course_id, tag) SELECT $1, unnest($2::text[])")
        .bind(course)
        .bind(tags)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// --- what the routes answer -------------------------------------------------

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCourse {
    /// 1–300 characters on one line.
    title: String,
    /// Up to 20,000 characters.
    #[serde(default)]
    description: String,
    /// Defaults to `video_course`.
    #[schemars(with = "Option<ResourceType>")]
    resource_type: Option<String>,
    /// A discipline of the same organisation.
    discipline_id: Option<Uuid>,
    /// Experts of the same organisation, in the order they are credited.
    #[serde(default)]
    expert_ids: Vec<Uuid>,
    /// Up to 30 tags of 1–50 characters; duplicates are dropped.
    #[serde(default)]
    tags: Vec<String>,
    /// Only a global super admin names the organisation; everyone else
    /// creates in their own.
    org_id: Option<Uuid>,
}

/// `POST /api/v1/courses {"title", "description"?, "resource_type"?,
/// "discipline_id"?, "expert_ids"?, "tags"?}` → 201, a draft.
async fn create(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiJson(course): ApiJson<NewCourse>,
) -> Result<Created<Course>, ApiError> {
    let title = title(&course.title)?;
    let description = prose(&course.description, "description")?;
    let kind = course
        .resource_type
        .as_deref()
        .map(resource_type)
        .transpose()?
        .unwrap_or(ResourceType::VideoCourse);
    let tags = tags(&course.tags)?;
    let org = target_org(&principal, course.org_id)?;
    let mut tx = state.db.begin().await?;
    if let Some(d) = course.discipline_id {
        check_discipline(&mut tx, org, d).await?;
    }
    // An expert's draft credits them, or they could never edit it again.
    let mut expert_ids = course.expert_ids.clone();
    if principal.role == lectern_web::Role::Expert {
        let own = own_profile(&mut tx, &principal, org)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ExpertProfileRequired,
                    "your account has no expert profile in this organisation; ask a content admin \
                 to create one (POST /api/v1/experts with your user_id)",
                )
            })?;
        if !expert_ids.contains(&own) {
            expert_ids.push(own);
        }
    }
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, description, resource_type, discipline_id)
         SELECT $1, id, $3, $4, $5, $6 FROM organisations WHERE id = $2",
    )
    .bind(id)
    .bind(org)
    .bind(&title)
    .bind(&description)
    .bind(kind)
    .bind(course.discipline_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    set_experts(&mut tx, org, id, &expert_ids).await?;
    set_tags(&mut tx, id, &tags).await?;
    let body = course_view(&mut tx, &principal, id).await?;
    tx.commit().await?;
    Ok(Created::at(format!("/api/v1/courses/{id}"), body))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoursePatch {
    title: Option<String>,
    description: Option<String>,
    #[schemars(with = "Option<ResourceType>")]
    resource_type: Option<String>,
    /// `null` files the course under no discipline.
    #[serde(default, deserialize_with = "nullable")]
    discipline_id: Option<Option<Uuid>>,
    /// Replaces the authors.
    expert_ids: Option<Vec<Uuid>>,
    /// Replaces the tags.
    tags: Option<Vec<String>>,
}

/// `PATCH /api/v1/courses/{id}`: any of the fields of a new course; drafts
/// only (409 `course_not_editable`).
async fn update(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<CoursePatch>,
) -> Result<Json<Course>, ApiError> {
    let new_title = patch.title.as_deref().map(title).transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(|d| prose(d, "description"))
        .transpose()?;
    let kind = patch
        .resource_type
        .as_deref()
        .map(resource_type)
        .transpose()?;
    let tags = patch.tags.as_deref().map(tags).transpose()?;
    let mut tx = state.db.begin().await?;
    let org = lock_draft(&mut tx, &principal, course_id).await?;
    if let Some(Some(d)) = patch.discipline_id {
        check_discipline(&mut tx, org, d).await?;
    }
    sqlx::query(
        "UPDATE courses SET title = coalesce($2, title), description = coalesce($3, description),
             resource_type = coalesce($4, resource_type),
             discipline_id = CASE WHEN $5 THEN $6 ELSE discipline_id END,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(course_id)
    .bind(&new_title)
    .bind(&description)
    .bind(kind)
    .bind(patch.discipline_id.is_some())
    .bind(patch.discipline_id.flatten())
    .execute(&mut *tx)
    .await?;
    if let Some(experts) = &patch.expert_ids {
        // An expert stays credited on what they edit (removing themselves
        // would lock them out of their own draft).
        let mut experts = experts.clone();
        if let Some(own) = own_profile(&mut tx, &principal, org).await? {
            if !experts.contains(&own) {
                experts.push(own);
            }
        }
        set_experts(&mut tx, org, course_id, &experts).await?;
    }
    if let Some(tags) = &tags {
        set_tags(&mut tx, course_id, tags).await?;
    }
    index::reindex_course(&mut tx, course_id).await?;
    let body = course_view(&mut tx, &principal, course_id).await?;
    tx.commit().await?;
    Ok(Json(body))
}

/// `GET /api/v1/courses/{id}`: learners see published courses only; the
/// others answer 404 as if they did not exist.
async fn get(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Course>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(course_view(&mut conn, &principal, course_id).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only courses in this state.
    #[schemars(with = "Option<CourseState>")]
    state: Option<String>,
    /// Continue after this course id (from the previous page's `next`).
    after: Option<Uuid>,
    /// 1–200; 50 by default.
    limit: Option<i64>,
}

/// A course as the editors' list shows it.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct CourseSummary {
    pub id: Uuid,
    /// The organisation that owns the course.
    pub org_id: Uuid,
    pub title: String,
    pub resource_type: ResourceType,
    pub state: CourseState,
    pub discipline_id: Option<Uuid>,
    /// When it was last published; kept while it is unpublished.
    pub published_at: Option<DateTime<Utc>>,
}

/// One page of `GET /api/v1/courses`, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CoursePage {
    pub courses: Vec<CourseSummary>,
    /// Pass as `after` for the next page; null when this page is the last.
    pub next: Option<Uuid>,
}

/// `GET /api/v1/courses?state=&after=&limit=`: the organisation's courses,
/// newest first (learners: published only). Finding content is search's
/// job; this is the editors' list.
async fn list(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<CoursePage>, ApiError> {
    let wanted = q
        .state
        .as_deref()
        .map(|s| CourseState::read(s, "state", ErrorCode::InvalidState))
        .transpose()?;
    let limit = COURSE_PAGE.of(q.limit)?;
    let courses: Vec<CourseSummary> = sqlx::query_as(
        "SELECT id, organisation_id AS org_id, title, resource_type, state, discipline_id,
                published_at
         FROM courses
         WHERE ($1::uuid IS NULL OR organisation_id = $1)
           AND ($2 OR state = 'published')
           AND ($3::text IS NULL OR state = $3)
           AND ($4::uuid IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
    )
    .bind(principal.org_scope())
    .bind(sees_unpublished(&principal))
    .bind(wanted)
    .bind(q.after)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (courses.len() as i64 == limit)
        .then(|| courses.last().map(|c| c.id))
        .flatten();
    Ok(Json(CoursePage { courses, next }))
}

/// A course's move through review, as `POST …/{submit,publish,unpublish,draft}` answer it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CourseTransition {
    pub id: Uuid,
    /// The state it left.
    pub from: CourseState,
    /// The state it is in now.
    pub state: CourseState,
    /// When it was last published; set now when it was published.
    pub published_at: Option<DateTime<Utc>>,
}

/// Moves a course from one of `from` to `to`; 409 `invalid_transition`
/// naming the current state otherwise.
async fn transition(
    state: &CatalogueState,
    principal: &Principal,
    course_id: Uuid,
    from: &[CourseState],
    to: CourseState,
) -> Result<Json<CourseTransition>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = lock_course(&mut tx, principal, course_id).await?.state;
    if !from.contains(&current) {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        return Err(ApiError::new(
            ErrorCode::InvalidTransition,
            format!(
                "the course is {}; it can become {} only from {}",
                current.as_str(),
                to.as_str(),
                from.join(" or ")
            ),
        ));
    }
    if to == CourseState::Published {
        let lessons: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons WHERE course_id = $1")
            .bind(course_id)
            .fetch_one(&mut *tx)
            .await?;
        if lessons == 0 {
            return Err(ApiError::new(
                ErrorCode::CourseEmpty,
                "a course needs at least one lesson before it is published",
            ));
        }
    }
    // The search documents need no rewrite: a trigger copies the state
    // onto the lessons' `published` flag in this transaction, so a lesson
    // is findable exactly while this committed state says published.
    // An approved review is recorded as the course's review outcome, so
    // a reason from an earlier rejection no longer shows.
    let published_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE courses SET state = $2, updated_at = now(),
             published_at = CASE WHEN $2 = 'published' THEN now() ELSE published_at END,
             review_outcome = CASE WHEN $3 THEN 'published' ELSE review_outcome END,
             review_reason = CASE WHEN $3 THEN NULL ELSE review_reason END,
             reviewed_at = CASE WHEN $3 THEN now() ELSE reviewed_at END
         WHERE id = $1 RETURNING published_at",
    )
    .bind(course_id)
    .bind(to)
    .bind(current == CourseState::InReview && to == CourseState::Published)
    .fetch_one(&mut *tx)
    .await?;
    if current == CourseState::InReview && to == CourseState::Published {
        notify_review_approved(&mut tx, course_id).await?;
    }
    tx.commit().await?;
    Ok(Json(CourseTransition {
        id: course_id,
        from: current,
        state: to,
        published_at,
    }))
}

/// An approved review tells the course's experts (those with an account),
/// in the transaction that publishes it, as a rejection does with its
/// reason (`community::course_review`).
async fn notify_review_approved(
    conn: &mut sqlx::PgConnection,
    course_id: Uuid,
) -> Result<(), sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Recipient {
        organisation_id: Uuid,
        title: String,
        user_id: Uuid,
    }
    let recipients: Vec<Recipient> = sqlx::query_as(
        "SELECT DISTINCT c.organisation_id, c.title, e.user_id
         FROM courses c JOIN course_experts ce ON ce.course_id = c.id
         JOIN experts e ON e.id = ce.expert_id
         WHERE c.id = $1 AND e.user_id IS NOT NULL",
    )
    .bind(course_id)
    .fetch_all(&mut *conn)
    .await?;
    // The learner app's page of the course (a path: notices do not know
    // the deployment's address yet).
    let link = format!("/app/courses/{course_id}");
    for r in recipients {
        let params = [("course_title", r.title.as_str()), ("link", link.as_str())];
        lectern_notify::enqueue(
            conn,
            &lectern_notify::Notification {
                org_id: Some(r.organisation_id),
                user_id: Some(r.user_id),
                to: None,
                topic: lectern_notify::Topic::CoursePublished,
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        )
        .await?;
    }
    Ok(())
}

/// A course review sent back: in_review → draft, with the reviewer's
/// reason kept on the course (its experts and admins see it as
/// `review`). Runs in the caller's transaction, so the caller can notify
/// in the same one; 404 for another organisation's course, 409
/// `invalid_transition` unless it is in review.
pub async fn reject_review(
    conn: &mut PgConnection,
    principal: &Principal,
    course_id: Uuid,
    reason: &str,
) -> Result<CourseTransition, ApiError> {
    let current = lock_course(conn, principal, course_id).await?.state;
    if current != CourseState::InReview {
        return Err(ApiError::new(
            ErrorCode::InvalidTransition,
            format!(
                "the course is {}; only a course in review can be rejected",
                current.as_str()
            ),
        ));
    }
    let published_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE courses SET state = 'draft', updated_at = now(),
             review_outcome = 'rejected', review_reason = $2, reviewed_at = now()
         WHERE id = $1 RETURNING published_at",
    )
    .bind(course_id)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    Ok(CourseTransition {
        id: course_id,
        from: current,
        state: CourseState::Draft,
        published_at,
    })
}

/// `POST …/submit`: draft → in_review.
async fn submit(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<CourseTransition>, ApiError> {
    use CourseState::*;
    transition(&state, &principal, course_id, &[Draft], InReview).await
}

/// `POST …/publish`: in_review (approved) or unpublished (relisted) → published.
async fn publish_course(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<CourseTransition>, ApiError> {
    use CourseState::*;
    transition(
        &state,
        &principal,
        course_id,
        &[InReview, Unpublished],
        Published,
    )
    .await
}

/// `POST …/unpublish`: published → unpublished (下架).
async fn unpublish(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<CourseTransition>, ApiError> {
    use CourseState::*;
    transition(&state, &principal, course_id, &[Published], Unpublished).await
}

/// `POST …/draft`: in_review (withdrawn or sent back) or unpublished → draft.
async fn back_to_draft(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<CourseTransition>, ApiError> {
    use CourseState::*;
    transition(
        &state,
        &principal,
        course_id,
        &[InReview, Unpublished],
        Draft,
    )
    .await
}

/// `DELETE /api/v1/courses/{course_id}`: needs a fresh step-up.
async fn delete(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let deleted = sqlx::query(
        "DELETE FROM courses WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .execute(&state.db)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found(format!("no course {course_id}")));
    }
    Ok(NoContent)
}
