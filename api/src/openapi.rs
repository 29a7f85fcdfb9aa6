//! `GET /api/openapi.json`: the OpenAPI 3.1 document, rendered once from
//! the merged route table. Every route is in it because the table is the
//! router; each operation's schemas come from its handler's types
//! (`lectern_web::doc`), its security from its `Access`, and every error
//! response is the one error body with the codes of `ErrorCode`. The
//! checked-in copy (`api/openapi.json`, from which the TypeScript clients
//! are generated) is compared with this rendering by a test.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use lectern_web::doc::{Operation, Schemas};
use lectern_web::{Access, ApiRouter, ErrorCode, Gate, Permission, RouteSpec, Routes};
use serde_json::{json, Map, Value};

/// Adds `GET /api/openapi.json` to `api`, describing every route of `api`,
/// of `media` and itself. The document is rendered once: the route table
/// is fixed for the life of the process.
pub fn attach(api: Routes, media: &[RouteSpec], gate: &Gate) -> Routes {
    let own = ApiRouter::<Arc<String>>::new(gate.clone())
        .route(Method::GET, "/api/openapi.json", Access::Public, handler)
        .describe(|op| {
            op.summary = Some("this document");
            op.raw(
                200,
                "application/json",
                "the OpenAPI 3.1 document of this API",
            );
        });
    let mut table: Vec<RouteSpec> = api.table().to_vec();
    table.extend_from_slice(media);
    table.extend_from_slice(own.table());
    let doc =
        Arc::new(serde_json::to_string_pretty(&document(&table)).expect("the document serialises"));
    api.merge(own.with_state(doc))
}

async fn handler(State(doc): State<Arc<String>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.as_str().to_owned(),
    )
        .into_response()
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

/// The path template's parameter names, in order.
fn path_names(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

/// One parameter per path segment, typed from the handler's `ApiPath`
/// (a single value, a tuple or a struct), else as strings.
fn path_parameters(path: &str, schema: Option<&Value>) -> Vec<Value> {
    let names = path_names(path);
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let typed = schema.and_then(|s| {
                if let Some(items) = s.get("prefixItems").and_then(Value::as_array) {
                    items.get(i).cloned()
                } else if let Some(props) = s.get("properties") {
                    props.get(*name).cloned()
                } else if names.len() == 1 {
                    Some(s.clone())
                } else {
                    None
                }
            });
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": typed.unwrap_or_else(|| json!({ "type": "string" })),
            })
        })
        .collect()
}

/// The properties of the query object, one parameter each.
fn query_parameters(schema: &Value) -> Vec<Value> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, prop)| {
            let mut prop = prop.clone();
            let description = prop
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or(Value::Null);
            let mut p = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": prop,
            });
            if !description.is_null() {
                p["description"] = description;
            }
            p
        })
        .collect()
}

fn security(route: &RouteSpec, op: &mut Map<String, Value>) -> (Value, String) {
    let people = json!([{ "session": [] }, { "sessionCookie": [] }]);
    let anyone_signed = json!([{ "session": [] }, { "sessionCookie": [] }, { "partnerKey": [] }]);
    match route.access {
        Access::Public => (json!([]), "anyone".to_string()),
        Access::Session => (people, "a signed-in person (not a partner key)".to_string()),
        Access::Authenticated => (
            anyone_signed,
            "a signed-in person or a partner key".to_string(),
        ),
        Access::Permission(p) => {
            let roles: Vec<&str> = p.roles().iter().map(|r| r.as_str()).collect();
            op.insert("x-lectern-permission".into(), json!(snake(p)));
            op.insert("x-lectern-roles".into(), json!(roles));
            op.insert("x-lectern-step-up".into(), json!(p.requires_step_up()));
            let step_up = if p.requires_step_up() {
                "; needs a fresh step-up"
            } else {
                ""
            };
            (
                anyone_signed,
                format!("roles: {}{step_up}", roles.join(", ")),
            )
        }
    }
}

/// The operation of `route` as an OpenAPI operation object.
fn operation(route: &RouteSpec, doc: &Operation) -> Value {
    let mut op = Map::new();
    op.insert(
        "operationId".into(),
        json!(format!("{} {}", route.method, route.path)),
    );
    if let Some(summary) = doc.summary {
        op.insert("summary".into(), json!(summary));
    }
    let mut parameters = path_parameters(route.path, doc.path.as_ref().map(|s| s.as_value()));
    if let Some(query) = &doc.query {
        parameters.extend(query_parameters(query.as_value()));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), json!(parameters));
    }
    if let Some((content_type, schema)) = &doc.request {
        op.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { *content_type: { "schema": schema } } }),
        );
    }
    let mut responses = Map::new();
    for (status, r) in &doc.responses {
        let mut response = json!({ "description": r.description });
        if let Some((content_type, schema)) = &r.content {
            response["content"] = json!({ *content_type: { "schema": schema } });
        }
        responses.insert(status.to_string(), response);
    }
    if doc.undocumented {
        op.insert("x-lectern-undocumented".into(), json!(true));
        responses.insert("2XX".into(), json!({ "description": "undocumented" }));
    }
    responses.insert(
        "default".into(),
        json!({
            "description": "an error: the code says which (see components.schemas.ErrorCode)",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
        }),
    );
    op.insert("responses".into(), Value::Object(responses));
    let (security, who) = security(route, &mut op);
    op.insert("security".into(), security);
    op.insert("description".into(), json!(format!("Access: {who}.")));
    Value::Object(op)
}

/// The error vocabulary: the body, and every code with its status.
fn error_schemas() -> Map<String, Value> {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let described: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|c| {
            json!({
                "const": c.as_str(),
                "description": format!("HTTP {}{}: {}", c.status().as_u16(),
                    if c.retryable() { ", retryable" } else { "" }, c.meaning()),
            })
        })
        .collect();
    let mut schemas = Map::new();
    schemas.insert(
        "ErrorCode".into(),
        json!({ "type": "string", "enum": codes, "oneOf": described }),
    );
    schemas.insert(
        "ErrorBody".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "$ref": "#/components/schemas/ErrorCode" },
                        "message": { "type": "string", "description": "for people; may change" },
                    },
                },
            },
        }),
    );
    schemas
}

/// The whole document for `table`.
pub fn document(table: &[RouteSpec]) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: Map<String, Value> = Map::new();
    for route in table {
        let doc = route.operation(&mut schemas);
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_lowercase()] = operation(route, &doc);
    }
    let mut components = schemas.requests.take_definitions(true);
    for (name, schema) in schemas.responses.take_definitions(true) {
        match components.get(&name) {
            // One type used both ways with different shapes would need two
            // names; none does today, and the contract test would notice.
            Some(existing) if existing != &schema => {
                components.insert(format!("{name}Response"), schema);
            }
            _ => {
                components.insert(name, schema);
            }
        }
    }
    components.extend(error_schemas());
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Lectern API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every error is {\"error\":{\"code\",\"message\"}} with a stable code from ErrorCode.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "session": { "type": "http", "scheme": "bearer", "description": "session token from POST /api/v1/auth/login" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "lectern_session" },
                "partnerKey": { "type": "http", "scheme": "bearer", "description": "partner API key (lk_…)" },
            },
        },
    })
}
