//! The learner demo page and the player bundle it loads, through the whole
//! router (security headers included), against a real PostgreSQL database.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use lectern_api::demo::DemoSettings;
use lectern_api::{router, AppState, Settings};
use lectern_secrets::Keyring;
use lectern_storage::FsStore;
use sqlx::PgPool;
use tower::ServiceExt;

async fn app(db: PgPool, store: &tempfile::TempDir, player_dir: &std::path::Path) -> axum::Router {
    let (field_keys, blind, token) = Keyring::generate_settings();
    let state = AppState::new(
        db,
        Arc::new(FsStore::open(store.path()).await.unwrap()),
        Settings {
            keys: Some(Arc::new(
                Keyring::parse(&field_keys, &blind, &token).unwrap(),
            )),
            demo: DemoSettings {
                player_dir: player_dir.to_path_buf(),
            },
            ..Settings::default()
        },
    );
    router(state)
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

#[sqlx::test(migrations = "../migrations")]
async fn page_and_bundle_are_served_with_a_strict_policy(db: PgPool) {
    let store = tempfile::tempdir().unwrap();
    let player = tempfile::tempdir().unwrap();
    std::fs::write(
        player.path().join("lectern-player.js"),
        "var LecternPlayer={};",
    )
    .unwrap();
    std::fs::write(player.path().join("secret.txt"), "not for the web").unwrap();
    let app = app(db, &store, player.path()).await;

    let (status, headers, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<script src=\"/player/lectern-player.js\">"));

    let (status, headers, body) = get(&app, "/player/lectern-player.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(body, b"var LecternPlayer={};");

    for (path, code) in [
        ("/player/lectern-player.mjs", "player_not_built"),
        ("/player/secret.txt", "not_found"),
        ("/player/..%2Fsecret.txt", "not_found"),
    ] {
        let (status, _, body) = get(&app, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], code, "{path}: {json}");
    }

    let (status, headers, body) = get(&app, "/demo/app.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(String::from_utf8(body).unwrap().contains("createPlayer"));
    let (status, _, _) = get(&app, "/demo/style.css").await;
    assert_eq!(status, StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn page_explains_how_to_build_a_missing_sdk(db: PgPool) {
    let store = tempfile::tempdir().unwrap();
    let missing = store.path().join("no-such-dist");
    let app = app(db, &store, &missing).await;

    let (status, headers, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("npm run build"), "{html}");
    assert!(
        html.contains("no-such-dist"),
        "names where it looked: {html}"
    );

    let (status, _, body) = get(&app, "/player/lectern-player.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["code"], "player_not_built");
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("LECTERN_PLAYER_DIR"));
}
