//! Courses: for now, creating one and deleting it. Deleting content is a
//! critical operation (step-up, audited); the catalogue extends this area.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::authz::{Access, Permission, Principal};
use crate::error::{ApiJson, ApiPath};
use crate::{ApiError, ApiRouter, AppState};

pub fn routes(api: ApiRouter) -> ApiRouter {
    api.route(
        Method::POST,
        "/api/v1/courses",
        Access::Permission(Permission::ManageCourses),
        create,
    )
    .route(
        Method::DELETE,
        "/api/v1/courses/{course_id}",
        Access::Permission(Permission::DeleteCourses),
        delete,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCourse {
    title: String,
    /// Only a global super admin names the organisation; everyone else
    /// creates in their own.
    org_id: Option<Uuid>,
}

/// `POST /api/v1/courses {"title"}` → 201 `{"id","title","org_id"}`.
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(course): ApiJson<NewCourse>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let title = course.title.trim();
    if title.is_empty() || title.chars().count() > 300 || title.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_title",
            "a course title is 1–300 characters without control characters",
        ));
    }
    let org =
        match (principal.org_scope(), course.org_id) {
            (Some(own), None) => own,
            (Some(own), Some(named)) if named == own => own,
            // Naming another organisation is indistinguishable from a missing one.
            (Some(_), Some(named)) => {
                return Err(ApiError::not_found(format!("no organisation {named}")))
            }
            (None, Some(named)) => named,
            (None, None) => return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "org_required",
                "a global super admin must say which organisation the course belongs to (org_id)",
            )),
        };
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO courses (id, organisation_id, title)
         SELECT $1, id, $3 FROM organisations WHERE id = $2",
    )
    .bind(id)
    .bind(org)
    .bind(title)
    .execute(&state.db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "title": title, "org_id": org })),
    ))
}

/// `DELETE /api/v1/courses/{course_id}`: needs a fresh step-up.
async fn delete(
    State(state): State<AppState>,
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
