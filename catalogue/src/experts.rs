//! Experts (专家): the authors courses credit. An expert may have an account
//! (invited experts do) or be a name only. Their names are searchable, so a
//! rename rewrites the search documents of their courses. Content admins
//! manage every profile of their organisation; an expert reads and edits
//! only their own (`/api/v1/me/expert-profile`, the profile whose
//! `user_id` is theirs).

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::disciplines::OrgQuery;
use crate::search::index;
use crate::{line, prose, target_org};
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter, ErrorCode};
use lectern_web::{ApiJson, ApiPath, ApiQuery, Created};

use crate::CatalogueState;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    api.route(Method::GET, "/api/v1/experts", Access::Session, list)
        .route(
            Method::POST,
            "/api/v1/experts",
            Access::Permission(Permission::ManageCatalogue),
            create,
        )
        .route(
            Method::PATCH,
            "/api/v1/experts/{expert_id}",
            Access::Permission(Permission::ManageCatalogue),
            update,
        )
        .route(
            Method::GET,
            "/api/v1/me/expert-profile",
            Access::Permission(Permission::ManageCourses),
            own,
        )
        .route(
            Method::PATCH,
            "/api/v1/me/expert-profile",
            Access::Permission(Permission::ManageCourses),
            update_own,
        )
}

/// The caller's own profile id: the one linked to their account in
/// their organisation; 404 when they have none.
async fn own_id(state: &CatalogueState, principal: &Principal) -> Result<Uuid, ApiError> {
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    sqlx::query_scalar(
        "SELECT id FROM experts WHERE user_id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)
         ORDER BY id LIMIT 1",
    )
    .bind(user_id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("your account has no expert profile"))
}

/// `GET /api/v1/me/expert-profile`: the caller's own expert profile.
async fn own(
    State(state): State<CatalogueState>,
    principal: Principal,
) -> Result<Json<Expert>, ApiError> {
    let id = own_id(&state, &principal).await?;
    let expert: Expert = sqlx::query_as(&format!(
        "SELECT {EXPERT_COLUMNS} FROM experts WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    Ok(Json(expert))
}

/// `PATCH /api/v1/me/expert-profile {"name"?, "title"?, "bio"?}`: an
/// expert edits their own profile, and no other.
async fn update_own(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiJson(patch): ApiJson<ExpertPatch>,
) -> Result<Json<Expert>, ApiError> {
    let id = own_id(&state, &principal).await?;
    apply(&state, principal.org_scope(), id, patch).await
}

/// An expert (专家) courses may credit as an author.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Expert {
    pub id: Uuid,
    pub name: String,
    /// Their professional title (主任医师, Professor of Cardiology); may be empty.
    pub title: String,
    /// Plain text; may be empty.
    pub bio: String,
    /// Their own account in the organisation, if they have one.
    pub user_id: Option<Uuid>,
}

/// The organisation's experts, by name.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ExpertList {
    pub experts: Vec<Expert>,
}

const EXPERT_COLUMNS: &str = "id, name, title, bio, user_id";

/// `GET /api/v1/experts` → `{"experts": [{id, name, title, bio, user_id}]}`.
async fn list(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
) -> Result<Json<ExpertList>, ApiError> {
    let org = target_org(&principal, q.org_id)?;
    let experts: Vec<Expert> = sqlx::query_as(&format!(
        "SELECT {EXPERT_COLUMNS} FROM experts WHERE organisation_id = $1 ORDER BY name, id"
    ))
    .bind(org)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(ExpertList { experts }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewExpert {
    /// 1–200 characters on one line.
    name: String,
    /// Up to 200 characters on one line.
    #[serde(default)]
    title: String,
    /// Up to 20,000 characters.
    #[serde(default)]
    bio: String,
    /// The expert's own account in the same organisation, if any.
    user_id: Option<Uuid>,
    /// Only a global super admin names the organisation.
    org_id: Option<Uuid>,
}

/// `POST /api/v1/experts {"name", "title"?, "bio"?, "user_id"?}` → 201.
async fn create(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewExpert>,
) -> Result<Created<Expert>, ApiError> {
    let name = line(&body.name, "name", ErrorCode::InvalidName, 1, 200)?;
    let title = line(&body.title, "title", ErrorCode::InvalidTitle, 0, 200)?;
    let bio = prose(&body.bio, "bio")?;
    let org = target_org(&principal, body.org_id)?;
    let created: Option<Expert> = sqlx::query_as(&format!(
        "INSERT INTO experts (id, organisation_id, name, title, bio, user_id)
         SELECT $1, o.id, $3, $4, $5, $6 FROM organisations o
         WHERE o.id = $2
           AND ($6::uuid IS NULL OR EXISTS (SELECT 1 FROM users u WHERE u.id = $6 AND u.org_id = o.id))
         RETURNING {EXPERT_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(&name)
    .bind(&title)
    .bind(&bio)
    .bind(body.user_id)
    .fetch_optional(&state.db)
    .await?;
    match created {
        Some(expert) => Ok(Created::new(expert)),
        None if body.user_id.is_some() => Err(ApiError::not_found(
            "no such organisation, or user_id is not a user of it",
        )),
        None => Err(ApiError::not_found(format!("no organisation {org}"))),
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpertPatch {
    /// 1–200 characters on one line.
    name: Option<String>,
    /// Up to 200 characters on one line.
    title: Option<String>,
    /// Up to 20,000 characters.
    bio: Option<String>,
}

/// `PATCH /api/v1/experts/{id} {"name"?, "title"?, "bio"?}`.
async fn update(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<ExpertPatch>,
) -> Result<Json<Expert>, ApiError> {
    apply(&state, principal.org_scope(), id, patch).await
}

async fn apply(
    state: &CatalogueState,
    org_scope: Option<Uuid>,
    id: Uuid,
    patch: ExpertPatch,
) -> Result<Json<Expert>, ApiError> {
    let name = patch
        .name
        .as_deref()
        .map(|v| line(v, "name", ErrorCode::InvalidName, 1, 200))
        .transpose()?;
    let title = patch
        .title
        .as_deref()
        .map(|v| line(v, "title", ErrorCode::InvalidTitle, 0, 200))
        .transpose()?;
    let bio = patch.bio.as_deref().map(|v| prose(v, "bio")).transpose()?;
    let mut tx = state.db.begin().await?;
    let expert: Expert = sqlx::query_as(&format!(
        "UPDATE experts SET name = coalesce($3, name), title = coalesce($4, title), bio = coalesce($5, bio)
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)
         RETURNING {EXPERT_COLUMNS}"
    ))
    .bind(id)
    .bind(org_scope)
    .bind(&name)
    .bind(&title)
    .bind(&bio)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no expert {id}")))?;
    if name.is_some() {
        index::reindex_expert(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(Json(expert))
}
