//! Disciplines (学科): a tree per organisation. Renaming rewrites the search
//! documents of the courses filed under it; moving refuses cycles.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::search::index;
use crate::{line, nullable, target_org};
use lectern_web::ErrorCode;
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter};
use lectern_web::{ApiJson, ApiPath, ApiQuery};

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
    pub(super) org_id: Option<Uuid>,
}

/// (id, parent, name, position)
type Row = (Uuid, Option<Uuid>, String, i32);
type Children<'a> = HashMap<Option<Uuid>, Vec<&'a Row>>;

/// `GET /api/v1/disciplines` → `{"disciplines": [{id, name, position, children: […]}]}`.
async fn list(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
) -> Result<Json<Value>, ApiError> {
    let org = target_org(&principal, q.org_id)?;
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, parent_id, name, position FROM disciplines
         WHERE organisation_id = $1 ORDER BY position, name",
    )
    .bind(org)
    .fetch_all(&state.db)
    .await?;
    let mut children: Children = HashMap::new();
    for row in &rows {
        children.entry(row.1).or_default().push(row);
    }
    // The tree has no cycles (moves refuse them), so this terminates.
    fn build(parent: Option<Uuid>, children: &Children) -> Vec<Value> {
        children
            .get(&parent)
            .map(|rows| {
                rows.iter()
                    .map(|(id, _, name, position)| {
                        json!({
                            "id": id,
                            "name": name,
                            "position": position,
                            "children": build(Some(*id), children),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    Ok(Json(json!({ "disciplines": build(None, &children) })))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDiscipline {
    name: String,
    parent_id: Option<Uuid>,
    #[serde(default)]
    position: i32,
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
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM disciplines WHERE id = $1 AND organisation_id = $2")
            .bind(parent)
            .bind(org)
            .fetch_optional(conn)
            .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found(format!("no discipline {parent} (parent_id)")))
}

/// `POST /api/v1/disciplines {"name", "parent_id"?, "position"?}` → 201.
async fn create(
    State(state): State<CatalogueState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewDiscipline>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = line(&body.name, "name", ErrorCode::InvalidName, 1, 100)?;
    let org = target_org(&principal, body.org_id)?;
    let mut tx = state.db.begin().await?;
    lock_tree(&mut tx, org).await?;
    if let Some(parent) = body.parent_id {
        check_parent(&mut tx, org, parent).await?;
    }
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "INSERT INTO disciplines (id, organisation_id, parent_id, name, position)
         SELECT $1, id, $3, $4, $5 FROM organisations WHERE id = $2",
    )
    .bind(id)
    .bind(org)
    .bind(body.parent_id)
    .bind(&name)
    .bind(body.position)
    .execute(&mut *tx)
    .await
    .map_err(|e| name_taken(&e).unwrap_or_else(|| e.into()))?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id, "name": name, "parent_id": body.parent_id, "position": body.position }),
        ),
    ))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisciplinePatch {
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
) -> Result<Json<Value>, ApiError> {
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
    let row: (String, Option<Uuid>, i32) = sqlx::query_as(
        "UPDATE disciplines SET
             name = coalesce($2, name),
             parent_id = CASE WHEN $3 THEN $4 ELSE parent_id END,
             position = coalesce($5, position)
         WHERE id = $1 RETURNING name, parent_id, position",
    )
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
    Ok(Json(
        json!({ "id": id, "name": row.0, "parent_id": row.1, "position": row.2 }),
    ))
}
