//! The catalogue: disciplines (a tree), experts, and courses — one resource
//! each (video course, clinical case, guideline, live replay) with ordered
//! chapters and lessons, tags and authors — moving through
//! draft → in_review → published → unpublished (→ draft for edits).
//!
//! Everything is scoped to the caller's organisation: another
//! organisation's rows answer 404. Content is only edited while its course
//! is a draft, so what a reviewer approved is what learners see. Every
//! change that feeds search rewrites the affected lessons' search documents
//! in the same transaction ([`search::index`]). Search ([`search`]) reads
//! those documents: Chinese and English words, filters, cursors.
//! Captions ([`captions`]) are uploaded per lesson and language, checked,
//! segmented for HLS and stored in object storage beside the video.

pub mod captions;
mod courses;
mod disciplines;
mod experts;
pub mod ratings;
pub mod search;
mod structure;
mod view;
mod vocabulary;

pub use courses::{reject_review, CourseTransition};
pub use view::{RatingSummary, ReviewOutcome};
pub use vocabulary::{ClosedSet, CourseState, ResourceType, SearchSort};

use std::sync::Arc;

use lectern_storage::Store;
use lectern_web::{ApiError, ApiRouter, ErrorCode, Permission, Principal, Role};
use serde::{Deserialize, Deserializer};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The catalogue's state: PostgreSQL, and the object store captions are
/// segmented into.
#[derive(Clone)]
pub struct CatalogueState {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
}

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    let api = disciplines::routes(api);
    let api = experts::routes(api);
    let api = courses::routes(api);
    let api = structure::routes(api);
    let api = captions::routes(api);
    search::routes(api)
}

/// A trimmed single-line text of 1..=`max` characters (`min` 0 allows
/// empty), without control characters.
pub(crate) fn line(
    value: &str,
    field: &str,
    code: ErrorCode,
    min: usize,
    max: usize,
) -> Result<String, ApiError> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min || n > max || v.chars().any(char::is_control) {
        return Err(ApiError::new(
            code,
            format!("{field} is {min}–{max} characters on one line"),
        ));
    }
    Ok(v.to_string())
}

/// A description: up to 20,000 characters; newlines and tabs allowed.
pub(crate) fn prose(value: &str, field: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.chars().count() > 20_000
        || v.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ApiError::new(
            ErrorCode::InvalidDescription,
            format!("{field} is at most 20000 characters, without control characters"),
        ));
    }
    Ok(v.to_string())
}

/// The organisation a new row goes to: the caller's own; a global super
/// admin must name one.
pub(crate) fn target_org(principal: &Principal, named: Option<Uuid>) -> Result<Uuid, ApiError> {
    principal.target_org(named)
}

/// Whether the caller sees courses that are not published: whoever may
/// draft them. Learners see the published catalogue only.
pub(crate) fn sees_unpublished(principal: &Principal) -> bool {
    Permission::ManageCourses.granted_to(principal.role)
}

/// Locks a course of the caller's organisation for an edit of its content
/// and returns its organisation; 404 when it is not theirs, 409 unless it
/// is a draft.
pub(crate) async fn lock_draft(
    conn: &mut PgConnection,
    principal: &Principal,
    course_id: Uuid,
) -> Result<Uuid, ApiError> {
    let course = lock_course(conn, principal, course_id).await?;
    if course.state != CourseState::Draft {
        return Err(ApiError::new(
            ErrorCode::CourseNotEditable,
            format!(
                "the course is {}; only drafts are edited. Move it back to draft \
                 (POST /api/v1/courses/{course_id}/draft, after unpublishing a published one), \
                 then submit it for review again",
                course.state.as_str()
            ),
        ));
    }
    Ok(course.organisation_id)
}

/// A course row held for update by [`lock_course`].
#[derive(sqlx::FromRow)]
pub(crate) struct LockedCourse {
    pub organisation_id: Uuid,
    pub state: CourseState,
    /// The caller may change it: not an expert, or an expert it credits.
    named: bool,
}

/// The caller's own expert profile in `org`, when the caller is an expert
/// with one (experts edit only the courses that credit it).
pub(crate) async fn own_profile(
    conn: &mut PgConnection,
    principal: &Principal,
    org: Uuid,
) -> Result<Option<Uuid>, ApiError> {
    let Some(user_id) = principal
        .user_id()
        .filter(|_| principal.role == Role::Expert)
    else {
        return Ok(None);
    };
    Ok(sqlx::query_scalar(
        "SELECT id FROM experts WHERE organisation_id = $1 AND user_id = $2 ORDER BY id LIMIT 1",
    )
    .bind(org)
    .bind(user_id)
    .fetch_optional(conn)
    .await?)
}

/// Locks a course of the caller's organisation for a change; 404 when it
/// is not theirs. An expert changes only courses that credit their own
/// profile (`course_experts` → `experts.user_id`): another expert's course
/// of the organisation — which they may read — is 403 `not_course_expert`.
/// Content admins and super admins change any course of their scope.
pub(crate) async fn lock_course(
    conn: &mut PgConnection,
    principal: &Principal,
    course_id: Uuid,
) -> Result<LockedCourse, ApiError> {
    let expert = principal
        .user_id()
        .filter(|_| principal.role == Role::Expert);
    let course: LockedCourse = sqlx::query_as(
        "SELECT organisation_id, state,
                $3::uuid IS NULL OR EXISTS (
                    SELECT 1 FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
                    WHERE ce.course_id = courses.id AND e.user_id = $3) AS named
         FROM courses
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2) FOR UPDATE",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .bind(expert)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no course {course_id}")))?;
    if !course.named {
        return Err(ApiError::new(
            ErrorCode::NotCourseExpert,
            "experts change only the courses that credit them; ask a content admin to add you",
        ));
    }
    Ok(course)
}

/// Whether `id` is a row of `table` whose `owner_column` is `owner` (an
/// organisation's discipline or asset, a course's chapter): what every
/// reference in a request body is checked against before it is stored.
pub(crate) async fn owned(
    conn: &mut PgConnection,
    table: &'static str,
    owner_column: &'static str,
    id: Uuid,
    owner: Uuid,
) -> Result<bool, ApiError> {
    let found: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1 AND {owner_column} = $2)"
    ))
    .bind(id)
    .bind(owner)
    .fetch_one(conn)
    .await?;
    Ok(found)
}

/// For PATCH bodies: distinguishes a field that is absent (`None`) from
/// one set to null (`Some(None)`).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
