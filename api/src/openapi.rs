//! `GET /api/openapi.json`: an OpenAPI 3.1 document generated from the
//! route table of [`crate::api`], so every registered route is in it with
//! its access rule; request and response schemas are added here for the
//! routes whose contract integrators rely on (search, playback, progress,
//! the catalogue's learner reads).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::IntoResponse;
use lectern_catalogue::search;
use lectern_web::{Access, ApiRouter, Gate, Permission, RouteSpec, Routes};
use serde_json::{json, Map, Value};

/// Adds `GET /api/openapi.json` to `api`, describing every route of `api`,
/// of `media` and itself. The document is rendered once: the route table
/// is fixed for the life of the process.
pub fn attach(api: Routes, media: &[RouteSpec], gate: &Gate) -> Routes {
    let own = ApiRouter::<Arc<String>>::new(gate.clone()).route(
        Method::GET,
        "/api/openapi.json",
        Access::Public,
        handler,
    );
    let mut table: Vec<RouteSpec> = api.table().to_vec();
    table.extend_from_slice(media);
    table.extend_from_slice(own.table());
    let doc = Arc::new(document(&table).to_string());
    api.merge(own.with_state(doc))
}

async fn handler(State(doc): State<Arc<String>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
}

/// `/api/v1/lessons/{lesson_id}/playback` → `/api/v1/lessons/{}/playback`,
/// so contracts match whatever a parameter is called.
fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

fn snake(p: Permission) -> String {
    let mut out = String::new();
    for (i, c) in format!("{p:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_body(schema: Value) -> Value {
    json!({ "content": { "application/json": { "schema": schema } } })
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description })
}

/// What we say beyond the route table: summary, extra parameters, body,
/// success responses.
struct Contract {
    summary: &'static str,
    parameters: Vec<Value>,
    request: Option<Value>,
    responses: Vec<(&'static str, Value)>,
}

fn contract(method: &Method, path: &str) -> Option<Contract> {
    let c = |summary, request, responses| Contract {
        summary,
        parameters: Vec::new(),
        request,
        responses,
    };
    Some(match (method.as_str(), shape(path).as_str()) {
        ("GET", "/api/v1/search") => Contract {
            parameters: vec![
                query(
                    "q",
                    json!({ "type": "string", "maxLength": 200 }),
                    "words to find, Chinese and/or English; every word must match",
                ),
                query(
                    "discipline",
                    json!({ "type": "string", "format": "uuid" }),
                    "a discipline; its descendants match too",
                ),
                query(
                    "type",
                    json!({ "enum": search::RESOURCE_TYPES }),
                    "resource type",
                ),
                query(
                    "expert",
                    json!({ "type": "string", "format": "uuid" }),
                    "an expert credited on the course",
                ),
                query(
                    "min_duration",
                    json!({ "type": "number", "minimum": 0 }),
                    "seconds",
                ),
                query(
                    "max_duration",
                    json!({ "type": "number", "minimum": 0 }),
                    "seconds",
                ),
                query(
                    "from",
                    json!({ "type": "string" }),
                    "published at or after (YYYY-MM-DD or RFC 3339)",
                ),
                query(
                    "to",
                    json!({ "type": "string" }),
                    "published at or before (YYYY-MM-DD: the whole day)",
                ),
                query(
                    "sort",
                    json!({ "enum": search::SORTS, "default": "relevance" }),
                    "relevance falls back to newest without q",
                ),
                query(
                    "cursor",
                    json!({ "type": "string" }),
                    "next_cursor of the previous page, with the same other parameters",
                ),
                query(
                    "limit",
                    json!({ "type": "integer", "minimum": 1, "maximum": 100, "default": 20 }),
                    "results per page",
                ),
            ],
            ..c(
                "Search published lessons of the caller's organisation",
                None,
                vec![("200", json_body(schema_ref("SearchPage")))],
            )
        },
        ("POST", "/api/v1/lessons/{}/playback") => c(
            "Start a playback session: signed master playlist, resume position and speed",
            None,
            vec![("200", json_body(schema_ref("Playback")))],
        ),
        ("POST", "/api/v1/progress") => c(
            "Report a progress heartbeat",
            Some(json_body(schema_ref("Heartbeat"))),
            vec![("204", json!({ "description": "absorbed" }))],
        ),
        ("GET", "/api/v1/courses/{}") => c(
            "A course with its chapters and lessons (learners: published only)",
            None,
            vec![("200", json_body(schema_ref("Course")))],
        ),
        ("POST", "/api/v1/courses") => c(
            "Create a course (a draft)",
            Some(json_body(schema_ref("NewCourse"))),
            vec![("201", json!({ "description": "created" }))],
        ),
        ("PUT", "/api/v1/courses/{}/rating") => c(
            "Rate a published course 1–5",
            Some(json_body(
                json!({ "type": "object", "required": ["rating"], "properties": { "rating": { "type": "integer", "minimum": 1, "maximum": 5 } } }),
            )),
            vec![("200", json!({ "description": "the course's new average" }))],
        ),
        ("POST", "/api/v1/courses/{}/submit") => c(
            "draft → in_review",
            None,
            vec![("200", json!({ "description": "moved" }))],
        ),
        ("POST", "/api/v1/courses/{}/publish") => c(
            "in_review or unpublished → published",
            None,
            vec![("200", json!({ "description": "moved" }))],
        ),
        ("POST", "/api/v1/courses/{}/unpublish") => c(
            "published → unpublished",
            None,
            vec![("200", json!({ "description": "moved" }))],
        ),
        ("POST", "/api/v1/courses/{}/draft") => c(
            "in_review or unpublished → draft",
            None,
            vec![("200", json!({ "description": "moved" }))],
        ),
        ("GET", "/api/openapi.json") => c(
            "This document",
            None,
            vec![("200", json!({ "description": "OpenAPI 3.1" }))],
        ),
        _ => return None,
    })
}

fn schemas() -> Value {
    let uuid = json!({ "type": "string", "format": "uuid" });
    let named =
        json!({ "type": "object", "properties": { "id": uuid, "name": { "type": "string" } } });
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string", "description": "stable, machine-readable" },
                    "message": { "type": "string", "description": "for people" },
                },
            } },
        },
        "SearchResult": {
            "type": "object",
            "properties": {
                "lesson_id": uuid,
                "title": { "type": "string" },
                "course": {
                    "type": "object",
                    "properties": {
                        "id": uuid,
                        "title": { "type": "string" },
                        "resource_type": { "enum": search::RESOURCE_TYPES },
                        "discipline": { "oneOf": [named, { "type": "null" }] },
                        "experts": { "type": "array", "items": named },
                        "tags": { "type": "array", "items": { "type": "string" } },
                    },
                },
                "duration_s": { "type": ["number", "null"] },
                "published_at": { "type": "string", "format": "date-time" },
                "score": { "type": ["number", "null"], "description": "relevance (sort=relevance with q)" },
                "watchers": { "type": "integer" },
                "rating": { "type": "object", "properties": {
                    "average": { "type": ["number", "null"] }, "count": { "type": "integer" } } },
            },
        },
        "SearchPage": {
            "type": "object",
            "required": ["results", "next_cursor"],
            "properties": {
                "results": { "type": "array", "items": schema_ref("SearchResult") },
                "next_cursor": { "type": ["string", "null"], "description": "opaque; null on the last page" },
            },
        },
        "Playback": {
            "type": "object",
            "required": ["master_url", "resume_position_s", "speed", "duration_s"],
            "properties": {
                "master_url": { "type": "string", "description": "signed URL of the HLS master playlist" },
                "resume_position_s": { "type": "number", "minimum": 0 },
                "speed": { "type": "number", "minimum": 0.25, "maximum": 4 },
                "duration_s": { "type": "number", "minimum": 0 },
            },
        },
        "Heartbeat": {
            "type": "object",
            "required": ["lesson_id", "position_s", "speed", "played_from_s", "played_to_s"],
            "properties": {
                "lesson_id": uuid,
                "position_s": { "type": "number", "minimum": 0 },
                "speed": { "type": "number", "minimum": 0.25, "maximum": 4 },
                "played_from_s": { "type": "number", "minimum": 0 },
                "played_to_s": { "type": "number", "minimum": 0 },
            },
        },
        "NewCourse": {
            "type": "object",
            "required": ["title"],
            "properties": {
                "title": { "type": "string", "minLength": 1, "maxLength": 300 },
                "description": { "type": "string", "maxLength": 20000 },
                "resource_type": { "enum": search::RESOURCE_TYPES, "default": "video_course" },
                "discipline_id": uuid,
                "expert_ids": { "type": "array", "items": uuid },
                "tags": { "type": "array", "items": { "type": "string", "maxLength": 50 }, "maxItems": 30 },
                "org_id": { "type": "string", "format": "uuid", "description": "global super admins only" },
            },
        },
        "Lesson": {
            "type": "object",
            "properties": {
                "id": uuid, "chapter_id": { "type": ["string", "null"] }, "title": { "type": "string" },
                "description": { "type": "string" }, "position": { "type": "integer" },
                "asset_id": { "type": ["string", "null"] }, "duration_s": { "type": ["number", "null"] },
            },
        },
        "Course": {
            "type": "object",
            "properties": {
                "id": uuid, "org_id": uuid, "title": { "type": "string" }, "description": { "type": "string" },
                "resource_type": { "enum": search::RESOURCE_TYPES },
                "state": { "enum": ["draft", "in_review", "published", "unpublished"] },
                "discipline": { "oneOf": [named, { "type": "null" }] },
                "experts": { "type": "array", "items": named },
                "tags": { "type": "array", "items": { "type": "string" } },
                "chapters": { "type": "array", "items": { "type": "object", "properties": {
                    "id": uuid, "title": { "type": "string" }, "position": { "type": "integer" },
                    "lessons": { "type": "array", "items": schema_ref("Lesson") } } } },
                "lessons": { "type": "array", "items": schema_ref("Lesson"), "description": "lessons outside any chapter" },
            },
        },
    })
}

/// The whole document for `table`.
pub fn document(table: &[RouteSpec]) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in table {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "id" || name.ends_with("_id") {
                    json!({ "type": "string", "format": "uuid" })
                } else {
                    json!({ "type": "string" })
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        let extra = contract(&route.method, route.path);
        let mut op = Map::new();
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        let mut responses = Map::new();
        match &extra {
            Some(c) => {
                op.insert("summary".into(), json!(c.summary));
                parameters.extend(c.parameters.iter().cloned());
                if let Some(body) = &c.request {
                    op.insert("requestBody".into(), body.clone());
                }
                for (status, response) in &c.responses {
                    let mut r = response.clone();
                    if let Some(o) = r.as_object_mut() {
                        o.entry("description").or_insert(json!("success"));
                    }
                    responses.insert((*status).into(), r);
                }
            }
            None => {
                responses.insert("2XX".into(), json!({ "description": "success" }));
            }
        }
        responses.insert(
            "default".into(),
            json!({ "description": "an error", "content": { "application/json": { "schema": schema_ref("Error") } } }),
        );
        if !parameters.is_empty() {
            op.insert("parameters".into(), json!(parameters));
        }
        let (security, who) = match route.access {
            Access::Public => (json!([]), "anyone".to_string()),
            Access::Session => (
                json!([{ "session": [] }, { "sessionCookie": [] }]),
                "a signed-in person (not a partner key)".to_string(),
            ),
            Access::Authenticated => (
                json!([{ "session": [] }, { "sessionCookie": [] }, { "partnerKey": [] }]),
                "a signed-in person or a partner key".to_string(),
            ),
            Access::Permission(p) => {
                op.insert("x-lectern-permission".into(), json!(snake(p)));
                op.insert(
                    "x-lectern-roles".into(),
                    json!(p.roles().iter().map(|r| r.as_str()).collect::<Vec<_>>()),
                );
                op.insert("x-lectern-step-up".into(), json!(p.requires_step_up()));
                (
                    json!([{ "session": [] }, { "sessionCookie": [] }, { "partnerKey": [] }]),
                    format!(
                        "roles: {}{}",
                        p.roles()
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if p.requires_step_up() {
                            "; needs a fresh step-up"
                        } else {
                            ""
                        }
                    ),
                )
            }
        };
        op.insert("security".into(), security);
        op.insert("description".into(), json!(format!("Access: {who}.")));
        op.insert("responses".into(), Value::Object(responses));
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_lowercase()] = Value::Object(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Lectern API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every error is {\"error\":{\"code\",\"message\"}} with a stable code.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "session": { "type": "http", "scheme": "bearer", "description": "session token from POST /api/v1/auth/login" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "lectern_session" },
                "partnerKey": { "type": "http", "scheme": "bearer", "description": "partner API key (lk_…)" },
            },
        },
    })
}
