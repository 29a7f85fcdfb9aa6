//! Courses: creating, editing (drafts only), reading, the publication state
//! machine, ratings, and deleting (critical: step-up, audited).
//!
//! Each transition is its own route, so the permission matrix says who may
//! make it (experts draft and submit; content admins publish and
//! unpublish) and the audit log names it (`POST
//! /api/v1/courses/{course_id}/publish`).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::search::{check_resource_type, index};
use crate::{
    lock_course, lock_draft, nullable, prose, sees_unpublished, target_org, unprocessable,
};
use lectern_web::ErrorCode;
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiJson, ApiPath, ApiQuery};

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
        .route(
            Method::PUT,
            "/api/v1/courses/{course_id}/rating",
            Access::Permission(Permission::RateCourses),
            rate,
        )
}

fn title(value: &str) -> Result<String, ApiError> {
    let t = value.trim();
    if t.is_empty() || t.chars().count() > 300 || t.chars().any(char::is_control) {
        return Err(unprocessable(
            ErrorCode::InvalidTitle,
            "a course title is 1–300 characters without control characters",
        ));
    }
    Ok(t.to_string())
}

/// Trimmed, de-duplicated tags of 1–50 characters, at most 30.
fn tags(values: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        let t = v.trim();
        if t.is_empty() || t.chars().count() > 50 || t.chars().any(char::is_control) {
            return Err(unprocessable(
                ErrorCode::InvalidTag,
                format!("tag {v:?}: a tag is 1–50 characters without control characters"),
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    if out.len() > 30 {
        return Err(unprocessable(
            ErrorCode::InvalidTag,
            "a course has at most 30 tags",
        ));
    }
    Ok(out)
}

async fn check_discipline(conn: &mut PgConnection, org: Uuid, id: Uuid) -> Result<(), ApiError> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM disciplines WHERE id = $1 AND organisation_id = $2")
            .bind(id)
            .bind(org)
            .fetch_optional(conn)
            .await?;
    found.map(|_| ()).ok_or_else(|| {
        unprocessable(
            ErrorCode::UnknownDiscipline,
            format!("discipline_id {id} is not a discipline of this organisation"),
        )
    })
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
        return Err(unprocessable(
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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCourse {
    title: String,
    #[serde(default)]
    description: String,
    resource_type: Option<String>,
    discipline_id: Option<Uuid>,
    #[serde(default)]
    expert_ids: Vec<Uuid>,
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
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let title = title(&course.title)?;
    let description = prose(&course.description, "description")?;
    let resource_type = course.resource_type.as_deref().unwrap_or("video_course");
    check_resource_type(resource_type)?;
    let tags = tags(&course.tags)?;
    let org = target_org(&principal, course.org_id)?;
    let mut tx = state.db.begin().await?;
    if let Some(d) = course.discipline_id {
        check_discipline(&mut tx, org, d).await?;
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
    .bind(resource_type)
    .bind(course.discipline_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    set_experts(&mut tx, org, id, &course.expert_ids).await?;
    set_tags(&mut tx, id, &tags).await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "title": title,
            "org_id": org,
            "state": "draft",
            "resource_type": resource_type,
        })),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoursePatch {
    title: Option<String>,
    description: Option<String>,
    resource_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    discipline_id: Option<Option<Uuid>>,
    expert_ids: Option<Vec<Uuid>>,
    tags: Option<Vec<String>>,
}

/// `PATCH /api/v1/courses/{id}`: any of the fields of a new course; drafts
/// only (409 `course_not_editable`).
async fn update(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<CoursePatch>,
) -> Result<Json<Value>, ApiError> {
    let new_title = patch.title.as_deref().map(title).transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(|d| prose(d, "description"))
        .transpose()?;
    if let Some(t) = &patch.resource_type {
        check_resource_type(t)?;
    }
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
    .bind(&patch.resource_type)
    .bind(patch.discipline_id.is_some())
    .bind(patch.discipline_id.flatten())
    .execute(&mut *tx)
    .await?;
    if let Some(experts) = &patch.expert_ids {
        set_experts(&mut tx, org, course_id, experts).await?;
    }
    if let Some(tags) = &tags {
        set_tags(&mut tx, course_id, tags).await?;
    }
    index::reindex_course(&mut tx, course_id).await?;
    let body = course_json(&mut tx, course_id).await?;
    tx.commit().await?;
    Ok(Json(body))
}

/// The full course: metadata, authors, tags, rating, and its chapters with
/// their lessons in order (lessons outside any chapter under `lessons`).
pub(super) async fn course_json(conn: &mut PgConnection, id: Uuid) -> Result<Value, ApiError> {
    #[allow(clippy::type_complexity)]
    let c: (
        Uuid,
        String,
        String,
        String,
        String,
        Option<Uuid>,
        Option<String>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        DateTime<Utc>,
    ) = sqlx::query_as(
        "SELECT c.organisation_id, c.title, c.description, c.resource_type, c.state,
                c.discipline_id, d.name, c.published_at, c.created_at, c.updated_at
         FROM courses c LEFT JOIN disciplines d ON d.id = c.discipline_id WHERE c.id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let experts: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT e.id, e.name, e.title FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
         WHERE ce.course_id = $1 ORDER BY ce.position, e.name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let tags: Vec<String> =
        sqlx::query_scalar("SELECT tag FROM course_tags WHERE course_id = $1 ORDER BY tag")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    let (rating_avg, rating_count): (Option<f64>, i64) = sqlx::query_as(
        "SELECT avg(rating)::float8, count(*) FROM course_ratings WHERE course_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    let chapters: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT id, title, position FROM chapters WHERE course_id = $1 ORDER BY position, created_at, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    #[allow(clippy::type_complexity)]
    let lessons: Vec<(
        Uuid,
        Option<Uuid>,
        String,
        String,
        i32,
        Option<Uuid>,
        Option<f64>,
    )> = sqlx::query_as(
        "SELECT l.id, l.chapter_id, l.title, l.description, l.position, l.asset_id, a.duration_s
             FROM lessons l LEFT JOIN assets a ON a.id = l.asset_id
             WHERE l.course_id = $1 ORDER BY l.position, l.created_at, l.id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let lesson = |l: &(
        Uuid,
        Option<Uuid>,
        String,
        String,
        i32,
        Option<Uuid>,
        Option<f64>,
    )| {
        json!({
            "id": l.0, "chapter_id": l.1, "title": l.2, "description": l.3,
            "position": l.4, "asset_id": l.5, "duration_s": l.6,
        })
    };
    let chapters: Vec<Value> = chapters
        .iter()
        .map(|(cid, title, position)| {
            json!({
                "id": cid,
                "title": title,
                "position": position,
                "lessons": lessons.iter().filter(|l| l.1 == Some(*cid)).map(lesson).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "id": id,
        "org_id": c.0,
        "title": c.1,
        "description": c.2,
        "resource_type": c.3,
        "state": c.4,
        "discipline": c.5.map(|d| json!({ "id": d, "name": c.6 })),
        "experts": experts.iter().map(|e| json!({ "id": e.0, "name": e.1, "title": e.2 })).collect::<Vec<_>>(),
        "tags": tags,
        "rating": { "average": rating_avg, "count": rating_count },
        "published_at": c.7,
        "created_at": c.8,
        "updated_at": c.9,
        "chapters": chapters,
        "lessons": lessons.iter().filter(|l| l.1.is_none()).map(lesson).collect::<Vec<_>>(),
    }))
}

/// `GET /api/v1/courses/{id}`: learners see published courses only; the
/// others answer 404 as if they did not exist.
async fn get(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let visible: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM courses WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)
           AND ($3 OR state = 'published')",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .bind(sees_unpublished(&principal))
    .fetch_optional(&mut *conn)
    .await?;
    if visible.is_none() {
        return Err(ApiError::not_found(format!("no course {course_id}")));
    }
    Ok(Json(course_json(&mut conn, course_id).await?))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    /// Continue after this course id (from the previous page's `next`).
    after: Option<Uuid>,
    limit: Option<i64>,
}

/// `GET /api/v1/courses?state=&after=&limit=`: the organisation's courses,
/// newest first (learners: published only). Finding content is search's
/// job; this is the editors' list.
async fn list(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &q.state {
        if !["draft", "in_review", "published", "unpublished"].contains(&s.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!("state={s:?}; expected draft, in_review, published or unpublished"),
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::new(ErrorCode::InvalidLimit, "limit is 1–200"));
    }
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        Uuid,
        String,
        String,
        String,
        Option<Uuid>,
        Option<DateTime<Utc>>,
    )> = sqlx::query_as(
        "SELECT id, organisation_id, title, resource_type, state, discipline_id, published_at
             FROM courses
             WHERE ($1::uuid IS NULL OR organisation_id = $1)
               AND ($2 OR state = 'published')
               AND ($3::text IS NULL OR state = $3)
               AND ($4::uuid IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5",
    )
    .bind(principal.org_scope())
    .bind(sees_unpublished(&principal))
    .bind(&q.state)
    .bind(q.after)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.0))
        .flatten();
    let courses: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.0, "org_id": r.1, "title": r.2, "resource_type": r.3,
                "state": r.4, "discipline_id": r.5, "published_at": r.6,
            })
        })
        .collect();
    Ok(Json(json!({ "courses": courses, "next": next })))
}

/// Moves a course from one of `from` to `to`; 409 `invalid_transition`
/// naming the current state otherwise.
async fn transition(
    state: &CatalogueState,
    principal: &Principal,
    course_id: Uuid,
    from: &[&str],
    to: &str,
) -> Result<Json<Value>, ApiError> {
    let mut tx = state.db.begin().await?;
    let (_, current) = lock_course(&mut tx, principal, course_id).await?;
    if !from.contains(&current.as_str()) {
        return Err(ApiError::new(
            ErrorCode::InvalidTransition,
            format!(
                "the course is {current}; it can become {to} only from {}",
                from.join(" or ")
            ),
        ));
    }
    if to == "published" {
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
    let published_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE courses SET state = $2, updated_at = now(),
             published_at = CASE WHEN $2 = 'published' THEN now() ELSE published_at END
         WHERE id = $1 RETURNING published_at",
    )
    .bind(course_id)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({
        "id": course_id,
        "from": current,
        "state": to,
        "published_at": published_at,
    })))
}

/// `POST …/submit`: draft → in_review.
async fn submit(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    transition(&state, &principal, course_id, &["draft"], "in_review").await
}

/// `POST …/publish`: in_review (approved) or unpublished (relisted) → published.
async fn publish_course(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    transition(
        &state,
        &principal,
        course_id,
        &["in_review", "unpublished"],
        "published",
    )
    .await
}

/// `POST …/unpublish`: published → unpublished (下架).
async fn unpublish(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    transition(&state, &principal, course_id, &["published"], "unpublished").await
}

/// `POST …/draft`: in_review (withdrawn or sent back) or unpublished → draft.
async fn back_to_draft(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    transition(
        &state,
        &principal,
        course_id,
        &["in_review", "unpublished"],
        "draft",
    )
    .await
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rating {
    rating: i16,
}

/// `PUT /api/v1/courses/{id}/rating {"rating": 1–5}`: the learner's rating
/// of a published course, replacing an earlier one.
async fn rate(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Rating>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=5).contains(&body.rating) {
        return Err(unprocessable(
            ErrorCode::InvalidRating,
            "a rating is a whole number from 1 to 5",
        ));
    }
    let user = principal.user_id().ok_or_else(|| {
        ApiError::new(ErrorCode::Forbidden, "ratings come from signed-in learners")
    })?;
    let mut tx = state.db.begin().await?;
    let rated = sqlx::query(
        "INSERT INTO course_ratings (course_id, user_id, rating)
         SELECT id, $3, $4 FROM courses
         WHERE id = $1 AND state = 'published' AND ($2::uuid IS NULL OR organisation_id = $2)
         ON CONFLICT (course_id, user_id) DO UPDATE SET rating = EXCLUDED.rating, updated_at = now()",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .bind(user)
    .bind(body.rating)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if rated == 0 {
        return Err(ApiError::not_found(format!("no course {course_id}")));
    }
    let (average, count): (Option<f64>, i64) = sqlx::query_as(
        "SELECT avg(rating)::float8, count(*) FROM course_ratings WHERE course_id = $1",
    )
    .bind(course_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(json!({
        "course_id": course_id,
        "rating": body.rating,
        "average": average,
        "count": count,
    })))
}

/// `DELETE /api/v1/courses/{course_id}`: needs a fresh step-up.
async fn delete(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
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
    Ok(StatusCode::NO_CONTENT)
}
