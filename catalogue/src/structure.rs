//! A course's structure: chapters, lessons (each playing one asset of the
//! same organisation) and their order. Drafts only, like every content
//! edit; lesson changes rewrite the course's search documents in the same
//! transaction.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::search::index;
use crate::view::{course_view, Chapter, Course, Lesson, LESSON_COLUMNS};
use crate::{line, lock_draft, nullable, owned, prose};
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter, ErrorCode};
use lectern_web::{ApiJson, ApiPath, Created};

use crate::CatalogueState;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    let draft = Access::Permission(Permission::ManageCourses);
    api.route(
        Method::POST,
        "/api/v1/courses/{course_id}/chapters",
        draft,
        create_chapter,
    )
    .route(
        Method::PATCH,
        "/api/v1/courses/{course_id}/chapters/{chapter_id}",
        draft,
        update_chapter,
    )
    .route(
        Method::POST,
        "/api/v1/courses/{course_id}/lessons",
        draft,
        create_lesson,
    )
    .route(
        Method::PATCH,
        "/api/v1/courses/{course_id}/lessons/{lesson_id}",
        draft,
        update_lesson,
    )
    .route(
        Method::PUT,
        "/api/v1/courses/{course_id}/order",
        draft,
        reorder,
    )
}

fn chapter_title(v: &str) -> Result<String, ApiError> {
    line(v, "title", ErrorCode::InvalidTitle, 1, 300)
}

async fn check_chapter(
    conn: &mut PgConnection,
    course: Uuid,
    chapter: Uuid,
) -> Result<(), ApiError> {
    if owned(conn, "chapters", "course_id", chapter, course).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnknownChapter,
            format!("chapter_id {chapter} is not a chapter of this course"),
        ))
    }
}

async fn check_asset(conn: &mut PgConnection, org: Uuid, asset: Uuid) -> Result<(), ApiError> {
    if owned(conn, "assets", "organisation_id", asset, org).await? {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::UnknownAsset,
            format!("asset_id {asset} is not an asset of this organisation"),
        ))
    }
}

// --- what the routes answer -------------------------------------------------

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChapter {
    /// 1–300 characters on one line.
    title: String,
    /// Defaults to after the last chapter.
    position: Option<i32>,
}

/// `POST /api/v1/courses/{course_id}/chapters {"title", "position"?}` → 201.
async fn create_chapter(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewChapter>,
) -> Result<Created<Chapter>, ApiError> {
    let title = chapter_title(&body.title)?;
    let mut tx = state.db.begin().await?;
    lock_draft(&mut tx, &principal, course_id).await?;
    let chapter: Chapter = sqlx::query_as(
        "INSERT INTO chapters (id, course_id, title, position)
         VALUES ($1, $2, $3, coalesce($4, (SELECT coalesce(max(position) + 1, 0) FROM chapters WHERE course_id = $2)))
         RETURNING id, course_id, title, position",
    )
    .bind(Uuid::now_v7())
    .bind(course_id)
    .bind(&title)
    .bind(body.position)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Created::new(chapter))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChapterPatch {
    /// 1–300 characters on one line.
    title: String,
}

/// `PATCH /api/v1/courses/{course_id}/chapters/{chapter_id} {"title"}`.
async fn update_chapter(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath((course_id, chapter_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<ChapterPatch>,
) -> Result<Json<Chapter>, ApiError> {
    let title = chapter_title(&body.title)?;
    let mut tx = state.db.begin().await?;
    lock_draft(&mut tx, &principal, course_id).await?;
    let chapter: Chapter = sqlx::query_as(
        "UPDATE chapters SET title = $3 WHERE id = $1 AND course_id = $2
         RETURNING id, course_id, title, position",
    )
    .bind(chapter_id)
    .bind(course_id)
    .bind(&title)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no chapter {chapter_id} in course {course_id}")))?;
    tx.commit().await?;
    Ok(Json(chapter))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLesson {
    /// 1–300 characters on one line.
    title: String,
    /// Up to 20,000 characters.
    #[serde(default)]
    description: String,
    /// A chapter of the same course; none puts the lesson outside any chapter.
    chapter_id: Option<Uuid>,
    /// The video it plays: an asset of the same organisation.
    asset_id: Option<Uuid>,
    /// Defaults to after the last lesson of its chapter.
    position: Option<i32>,
}

/// `POST /api/v1/courses/{course_id}/lessons {"title", "description"?,
/// "chapter_id"?, "asset_id"?, "position"?}` → 201.
async fn create_lesson(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<NewLesson>,
) -> Result<Created<Lesson>, ApiError> {
    let title = line(&body.title, "title", ErrorCode::InvalidTitle, 1, 300)?;
    let description = prose(&body.description, "description")?;
    let mut tx = state.db.begin().await?;
    let org = lock_draft(&mut tx, &principal, course_id).await?;
    if let Some(chapter) = body.chapter_id {
        check_chapter(&mut tx, course_id, chapter).await?;
    }
    if let Some(asset) = body.asset_id {
        check_asset(&mut tx, org, asset).await?;
    }
    let lesson: Lesson = sqlx::query_as(&format!(
        "WITH l AS (
             INSERT INTO lessons (id, organisation_id, course_id, chapter_id, title, description, position, asset_id)
             VALUES ($1, $2, $3, $4, $5, $6,
                     coalesce($7, (SELECT coalesce(max(position) + 1, 0) FROM lessons
                                   WHERE course_id = $3 AND chapter_id IS NOT DISTINCT FROM $4)),
                     $8)
             RETURNING *)
         SELECT {LESSON_COLUMNS} FROM l LEFT JOIN assets a ON a.id = l.asset_id"
    ))
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(course_id)
    .bind(body.chapter_id)
    .bind(&title)
    .bind(&description)
    .bind(body.position)
    .bind(body.asset_id)
    .fetch_one(&mut *tx)
    .await?;
    index::reindex_course(&mut tx, course_id).await?;
    tx.commit().await?;
    Ok(Created::new(lesson))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LessonPatch {
    /// 1–300 characters on one line.
    title: Option<String>,
    /// Up to 20,000 characters.
    description: Option<String>,
    /// An asset of the same organisation; `null` leaves the lesson without a video.
    #[serde(default, deserialize_with = "nullable")]
    asset_id: Option<Option<Uuid>>,
}

/// `PATCH /api/v1/courses/{course_id}/lessons/{lesson_id} {"title"?,
/// "description"?, "asset_id"?}` (moving between chapters is `PUT …/order`).
async fn update_lesson(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath((course_id, lesson_id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(patch): ApiJson<LessonPatch>,
) -> Result<Json<Lesson>, ApiError> {
    let title = patch
        .title
        .as_deref()
        .map(|t| line(t, "title", ErrorCode::InvalidTitle, 1, 300))
        .transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(|d| prose(d, "description"))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let org = lock_draft(&mut tx, &principal, course_id).await?;
    if let Some(Some(asset)) = patch.asset_id {
        check_asset(&mut tx, org, asset).await?;
    }
    let lesson: Lesson = sqlx::query_as(&format!(
        "WITH l AS (
             UPDATE lessons SET title = coalesce($3, title), description = coalesce($4, description),
                 asset_id = CASE WHEN $5 THEN $6 ELSE asset_id END, updated_at = now()
             WHERE id = $1 AND course_id = $2
             RETURNING *)
         SELECT {LESSON_COLUMNS} FROM l LEFT JOIN assets a ON a.id = l.asset_id"
    ))
    .bind(lesson_id)
    .bind(course_id)
    .bind(&title)
    .bind(&description)
    .bind(patch.asset_id.is_some())
    .bind(patch.asset_id.flatten())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no lesson {lesson_id} in course {course_id}")))?;
    index::reindex_course(&mut tx, course_id).await?;
    tx.commit().await?;
    Ok(Json(lesson))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChapterOrder {
    /// A chapter of the course.
    id: Uuid,
    /// Its lessons, in their new order.
    #[serde(default)]
    lessons: Vec<Uuid>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// Every chapter of the course, in the new order.
    #[serde(default)]
    chapters: Vec<ChapterOrder>,
    /// Lessons outside any chapter.
    #[serde(default)]
    lessons: Vec<Uuid>,
}

/// `PUT /api/v1/courses/{course_id}/order {"chapters": [{"id", "lessons":
/// [ids]}], "lessons": [ids]}`: the complete new order; every chapter and
/// lesson of the course exactly once (lessons may change chapter).
async fn reorder(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(order): ApiJson<Order>,
) -> Result<Json<Course>, ApiError> {
    let mut tx = state.db.begin().await?;
    lock_draft(&mut tx, &principal, course_id).await?;
    let chapters: HashSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM chapters WHERE course_id = $1")
            .bind(course_id)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let lessons: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM lessons WHERE course_id = $1")
        .bind(course_id)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let given_chapters: Vec<Uuid> = order.chapters.iter().map(|c| c.id).collect();
    let given_lessons: Vec<Uuid> = order
        .chapters
        .iter()
        .flat_map(|c| c.lessons.iter().copied())
        .chain(order.lessons.iter().copied())
        .collect();
    check_permutation("chapter", &given_chapters, &chapters)?;
    check_permutation("lesson", &given_lessons, &lessons)?;

    let (mut ids, mut chapter_ids, mut positions) = (Vec::new(), Vec::new(), Vec::new());
    for c in &order.chapters {
        for (i, l) in c.lessons.iter().enumerate() {
            ids.push(*l);
            chapter_ids.push(Some(c.id));
            positions.push(i as i32);
        }
    }
    for (i, l) in order.lessons.iter().enumerate() {
        ids.push(*l);
        chapter_ids.push(None);
        positions.push(i as i32);
    }
    let chapter_positions: Vec<i32> = (0..given_chapters.len() as i32).collect();
    sqlx::query(
        "UPDATE chapters SET position = o.p FROM unnest($1::uuid[], $2::int[]) AS o(id, p)
         WHERE chapters.id = o.id",
    )
    .bind(&given_chapters)
    .bind(&chapter_positions)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE lessons SET chapter_id = o.c, position = o.p, updated_at = now()
         FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS o(id, c, p)
         WHERE lessons.id = o.id",
    )
    .bind(&ids)
    .bind(&chapter_ids)
    .bind(&positions)
    .execute(&mut *tx)
    .await?;
    let body = course_view(&mut tx, &principal, course_id).await?;
    tx.commit().await?;
    Ok(Json(body))
}

fn check_permutation(what: &str, given: &[Uuid], actual: &HashSet<Uuid>) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidOrder, message);
    let mut seen = HashSet::new();
    for id in given {
        if !actual.contains(id) {
            return Err(invalid(format!(
                "{what} {id} is not a {what} of this course"
            )));
        }
        if !seen.insert(*id) {
            return Err(invalid(format!("{what} {id} is listed twice")));
        }
    }
    if let Some(missing) = actual.iter().find(|id| !seen.contains(id)) {
        return Err(invalid(format!(
            "{what} {missing} is missing; the order lists every {what} of the course once"
        )));
    }
    Ok(())
}
