//! The typed contract: every registered route is in `/api/openapi.json`
//! with schemas its handler's types produced (no route answers an untyped
//! body), the checked-in `api/openapi.json` the TypeScript clients are
//! generated from is that document, and `docs/errors.md` lists exactly the
//! codes of `ErrorCode`.
//!
//! After changing a route or an error code, regenerate the checked-in
//! files with `UPDATE_CONTRACT=1 cargo nextest run -p lectern-api --test
//! contract`, then `npm run generate` in `player-sdk/`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::http::StatusCode;
use lectern_testkit::World;
use lectern_web::ErrorCode;
use serde_json::Value;
use sqlx::PgPool;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

fn update() -> bool {
    std::env::var_os("UPDATE_CONTRACT").is_some()
}

/// `schema` says nothing about the value (`true`, `{}`), following one `$ref`.
fn untyped(doc: &Value, schema: &Value) -> bool {
    let resolved = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or(&Value::Null),
        None => schema,
    };
    resolved == &Value::Bool(true) || resolved.as_object().is_some_and(|o| o.is_empty())
}

/// Why an operation's contract is incomplete, if it is.
fn gaps(doc: &Value, route: &str, op: &Value) -> Vec<String> {
    let mut gaps = Vec::new();
    if op["x-lectern-undocumented"] == Value::Bool(true) {
        gaps.push(format!(
            "{route}: the handler's return type says nothing (describe it)"
        ));
    }
    let responses = op["responses"].as_object().expect("responses");
    let successes: Vec<(&String, &Value)> = responses
        .iter()
        .filter(|(status, _)| {
            status.starts_with('1') || status.starts_with('2') || status.starts_with('3')
        })
        .collect();
    if successes.is_empty() {
        gaps.push(format!("{route}: no success response"));
    }
    for (status, r) in successes {
        if let Some(schema) = r.pointer("/content/application~1json/schema") {
            if untyped(doc, schema) {
                gaps.push(format!("{route}: the {status} body is untyped JSON"));
            }
        }
    }
    if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
        if untyped(doc, schema) {
            gaps.push(format!("{route}: the request body is untyped JSON"));
        }
    }
    gaps
}

#[sqlx::test(migrations = "../migrations")]
async fn every_route_has_a_typed_contract_and_the_checked_in_document_is_current(db: PgPool) {
    let w = World::new(db).await;
    let (status, body) = w.call_raw("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&body).expect("the document is JSON");

    // The document and the route table are the same set of operations.
    let table: BTreeSet<String> = lectern_api::route_table(&w.state)
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let mut documented = BTreeSet::new();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let route = format!("{} {path}", method.to_uppercase());
            missing.extend(gaps(&doc, &route, op));
            documented.insert(route);
        }
    }
    assert_eq!(table, documented, "the document and the router disagree");
    assert!(
        missing.is_empty(),
        "{} routes lack a typed contract:\n{}",
        missing.len(),
        missing.join("\n")
    );
    let checked_in = repo("api/openapi.json");
    let rendered = format!("{}\n", serde_json::to_string_pretty(&doc).unwrap());
    if update() {
        std::fs::write(&checked_in, &rendered).unwrap();
    }
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == rendered,
        "api/openapi.json is not the document the router serves; regenerate it with \
         UPDATE_CONTRACT=1 cargo nextest run -p lectern-api --test contract (then \
         `npm run generate` in player-sdk/)"
    );
}

/// The error reference, generated from the enum.
fn errors_md() -> String {
    let mut out = String::from(
        "# Error codes\n\n\
         Every error response of the Lectern API is JSON\n\
         `{\"error\":{\"code\":\"…\",\"message\":\"…\"}}`. The code is stable and decides the\n\
         HTTP status; the message is for people and may change. *Retryable* codes\n\
         may succeed later unchanged (a 503 also carries `Retry-After`).\n\n\
         Generated from `ErrorCode` in `web/src/error.rs` by `api/tests/contract.rs`;\n\
         do not edit by hand.\n\n\
         | code | HTTP | retryable | meaning |\n| --- | --- | --- | --- |\n",
    );
    for code in ErrorCode::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            code.as_str(),
            code.status().as_u16(),
            if code.retryable() { "yes" } else { "no" },
            code.meaning().replace('|', "\\|")
        ));
    }
    out
}

#[test]
fn the_error_reference_lists_exactly_the_codes() {
    let path = repo("docs/errors.md");
    let rendered = errors_md();
    if update() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == rendered,
        "docs/errors.md is not generated from ErrorCode; regenerate it with \
         UPDATE_CONTRACT=1 cargo nextest run -p lectern-api --test contract"
    );
}
