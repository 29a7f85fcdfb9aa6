//! A course review sent back with a reason: `POST
//! /api/v1/courses/{course_id}/reject {"reason"}` moves an in-review
//! course back to draft ([`lectern_catalogue::reject_review`]), keeps the
//! reason on the course (its experts and admins read it as the course's
//! `review`), and notifies the course's experts in the same transaction.
//! Approval is the catalogue's `publish`.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use lectern_catalogue::CourseTransition;
use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath};

use crate::text::{self, REASON_MAX};
use crate::{notices, CommunityState};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    api.route(
        Method::POST,
        "/api/v1/courses/{course_id}/reject",
        Access::Permission(Permission::PublishCourses),
        reject,
    )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// What the experts must change: 1–500 characters, shown to them.
    reason: String,
}

/// `POST /api/v1/courses/{course_id}/reject {"reason"}`: in_review → draft.
async fn reject(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Rejection>,
) -> Result<Json<CourseTransition>, ApiError> {
    let reason = text::checked(&body.reason, "reason", REASON_MAX, true)?;
    if reason.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ReasonRequired,
            "a rejection needs a reason (1–500 characters) for the course's experts",
        ));
    }
    let mut tx = state.db.begin().await?;
    let moved = lectern_catalogue::reject_review(&mut tx, &principal, course_id, &reason).await?;
    #[derive(sqlx::FromRow)]
    struct Course {
        organisation_id: Uuid,
        title: String,
        experts: Vec<Uuid>,
    }
    let course: Course = sqlx::query_as(
        "SELECT c.organisation_id, c.title,
                ARRAY(SELECT DISTINCT e.user_id FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
                       WHERE ce.course_id = c.id AND e.user_id IS NOT NULL) AS experts
         FROM courses c WHERE c.id = $1",
    )
    .bind(course_id)
    .fetch_one(&mut *tx)
    .await?;
    notices::course_review_rejected(
        &mut tx,
        course.organisation_id,
        &course.experts,
        &course.title,
        &reason,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(moved))
}
