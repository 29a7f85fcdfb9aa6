//! Disciplines (学科): a tree per organisation. Renaming rewrites the search
//! documents of the courses filed under it; moving refuses cycles.
//!
//! A move checks with a recursive CTE that the new parent is not below the
//! discipline (409 `discipline_cycle`), holding a transaction-scoped
//! advisory lock per organisation: two concurrent moves, each acyclic
//! alone, could otherwise make a cycle together.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::search::index;
use crate::{line, nullable, owned, target_org};
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter, ErrorCode};
use lectern_web::{ApiJson, ApiPath, ApiQuery, Created};

use crate::CatalogueState;

pub fn routes(api: ApiRouter<CatalogueState>) -> ApiRouter<CatalogueState> {
    api.route(Method::GET, "/api/v1/disciplines", Access::Session, list)
        .route(
            Method::POST,
            "/api/v1/disciplines",
            Access::Permission(Permission::ManageCatalogue),
            create,
        )
        .route(
            Method::PATCH,
            "/api/v1/disciplines/{discipline_id}",
            Access::Permission(Permission::ManageCatalogue),
            update,
        )
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgQuery {
    /// Only a global super admin names the organisation; everyone else
    /// reads their own.
    pub(super) org_id: Option<Uuid>,
}

/// A discipline (学科) of an organisation's tree.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Discipline {
    pub id: Uuid,
    pub name: String,
    /// The discipline it is filed under; null at the top level.
    pub parent_id: Option<Uuid>,
    /// Its place among its siblings (ascending; ties by name).
    pub position: i32,
}

/// A discipline with everything filed under it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DisciplineNode {
    pub id: Uuid,
    pub name: String,
    /// Its place among its siblings (ascending; ties by name).
    pub position: i32,
    /// The disciplines directly under it, in order.
    pub children: Vec<DisciplineNode>,
}

/// The organisation's disciplines as a tree.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DisciplineTree {
    /// The top-level disciplines, in order.
    pub disciplines: Vec<DisciplineNode>,
}

const DISCIPLINE_COLUMNS: &str = "id, name, parent_id, position";

/// `GET /api/v1/disciplines` → the organisation's tree.
async fn list(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
) -> Result<Json<DisciplineTree>, ApiError> {
    let org = target_org(&principal, q.org_id)?;
    let rows: Vec<Discipline> = sqlx::query_as(&format!(
        "SELECT {DISCIPLINE_COLUMNS} FROM disciplines
         WHERE organisation_id = $1 ORDER BY position, name"
    ))
    .bind(org)
    .fetch_all(&state.db)
    .await?;
    let mut children: HashMap<Option<Uuid>, Vec<Discipline>> = HashMap::new();
    for row in rows {
        children.entry(row.parent_id).or_default().push(row);
    }
    // The tree has no cycles (moves refuse them), so this terminates.
    fn build(
        parent: Option<Uuid>,
        children: &mut HashMap<Option<Uuid>, Vec<Discipline>>,
    ) -> Vec<DisciplineNode> {
        children
            .remove(&parent)
            .unwrap_or_default()
            .into_iter()
            .map(|d| DisciplineNode {
                children: build(Some(d.id), children),
                id: d.id,
                name: d.name,
                position: d.position,
            })
            .collect()
    }
    Ok(Json(DisciplineTree {
        disciplines: build(None, &mut children),
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDiscipline {
    /// 1–100 characters on one line, unique among its siblings.
    name: String,
    /// A discipline of the same organisation; none for the top level.
    parent_id: Option<Uuid>,
    /// Its place among its siblings; 0 by default.
    #[serde(default)]
    position: i32,
    /// Only a global super admin names the organisation.
    org_id: Option<Uuid>,
}

fn name_taken(e: &sqlx::Error) -> Option<ApiError> {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => Some(ApiError::new(
            ErrorCode::DisciplineExists,
            "a discipline of that name already exists under the same parent",
        )),
        _ => None,
    }
}

/// Serialises tree changes of one organisation, so two concurrent moves
/// cannot together make a cycle that neither makes alone.
async fn lock_tree(conn: &mut sqlx::PgConnection, org: Uuid) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('disciplines:' || $1::text, 0))")
        .bind(org)
        .execute(conn)
        .await?;
    Ok(())
}

async fn check_parent(
    conn: &mut sqlx::PgConnection,
    org: Uuid,
    parent: Uuid,
) -> Result<(), ApiError> {
    if owned(conn, "disciplines", "organisation_id", parent, org).await? {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no discipline {parent} (parent_id)"
        )))
    }
}

/// `POST /api/v1/disciplines {"name", "parent_id"?, "position"?}` → 201.
async fn create(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewDiscipline>,
) -> Result<Created<Discipline>, ApiError> {
    let name = line(&body.name, "name", ErrorCode::InvalidName, 1, 100)?;
    let org = target_org(&principal, body.org_id)?;
    let mut tx = state.db.begin().await?;
    lock_tree(&mut tx, org).await?;
    if let Some(parent) = body.parent_id {
        check_parent(&mut tx, org, parent).await?;
    }
    let created: Discipline = sqlx::query_as(&format!(
        "INSERT INTO disciplines (id, organisation_id, parent_id, name, position)
         SELECT $1, id, $3, $4, $5 FROM organisations WHERE id = $2
         RETURNING {DISCIPLINE_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(body.parent_id)
    .bind(&name)
    .bind(body.position)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| name_taken(&e).unwrap_or_else(|| e.into()))?
    .ok_or_else(|| ApiError::not_found(format!("no organisation {org}")))?;
    tx.commit().await?;
    Ok(Created::new(created))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisciplinePatch {
    /// 1–100 characters on one line, unique among its siblings.
    name: Option<String>,
    /// `null` moves the discipline to the top level.
    #[serde(default, deserialize_with = "nullable")]
    parent_id: Option<Option<Uuid>>,
    position: Option<i32>,
}

/// `PATCH /api/v1/disciplines/{id} {"name"?, "parent_id"?, "position"?}`:
/// rename and/or move; 409 `discipline_cycle` for a move under itself.
async fn update(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<DisciplinePatch>,
) -> Result<Json<Discipline>, ApiError> {
    let name = patch
        .name
        .as_deref()
        .map(|n| line(n, "name", ErrorCode::InvalidName, 1, 100))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let org: Uuid = sqlx::query_scalar(
        "SELECT organisation_id FROM disciplines WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no discipline {id}")))?;
    lock_tree(&mut tx, org).await?;
    if let Some(Some(parent)) = patch.parent_id {
        check_parent(&mut tx, org, parent).await?;
        let cycle: bool = sqlx::query_scalar(
            "WITH RECURSIVE below AS (
                 SELECT id FROM disciplines WHERE id = $1
                 UNION ALL
                 SELECT d.id FROM disciplines d JOIN below ON d.parent_id = below.id)
             SELECT EXISTS (SELECT 1 FROM below WHERE id = $2)",
        )
        .bind(id)
        .bind(parent)
        .fetch_one(&mut *tx)
        .await?;
        if cycle {
            return Err(ApiError::new(
                ErrorCode::DisciplineCycle,
                "a discipline cannot move under itself or one of its descendants",
            ));
        }
    }
    let updated: Discipline = sqlx::query_as(&format!(
        "UPDATE disciplines SET
             name = coalesce($2, name),
             parent_id = CASE WHEN $3 THEN $4 ELSE parent_id END,
             position = coalesce($5, position)
         WHERE id = $1 RETURNING {DISCIPLINE_COLUMNS}"
    ))
    .bind(id)
    .bind(&name)
    .bind(patch.parent_id.is_some())
    .bind(patch.parent_id.flatten())
    .bind(patch.position)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| name_taken(&e).unwrap_or_else(|| e.into()))?;
    if name.is_some() {
        index::reindex_discipline(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(Json(updated))
}
