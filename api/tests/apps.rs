//! The web apps (`/app/`, `/admin/`) as `lectern serve` answers them,
//! through the whole router (security headers included), from a build laid
//! out as Vite writes it: hashed files cached forever, the page never
//! cached, client routes answered with the page, a strict policy, and a
//! page saying how to build an app that is not built.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use lectern_api::apps::AppsSettings;
use lectern_api::{router, AppState, Settings};
use lectern_secrets::Keyring;
use lectern_storage::FsStore;
use sqlx::PgPool;
use tower::ServiceExt;

async fn app(db: PgPool, store: &tempfile::TempDir, apps: &Path) -> axum::Router {
    let (field_keys, blind, token) = Keyring::generate_settings();
    let state = AppState::new(
        db,
        Arc::new(FsStore::open(store.path()).await.unwrap()),
        Settings {
            keys: Some(Arc::new(
                Keyring::parse(&field_keys, &blind, &token).unwrap(),
            )),
            apps: AppsSettings {
                dir: apps.to_path_buf(),
            },
            ..Settings::default()
        },
    );
    router(state)
}

async fn get(app: &axum::Router, path: &str, gzip: bool) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::get(path);
    if gzip {
        request = request.header(header::ACCEPT_ENCODING, "gzip, deflate, br");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
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

const PAGE: &str =
    "<!doctype html><script type=\"module\" src=\"/app/assets/index-Ab12.js\"></script>";

fn build(dir: &Path) {
    let dist = dir.join("learner/dist");
    std::fs::create_dir_all(dist.join("assets")).unwrap();
    std::fs::create_dir_all(dist.join(".vite")).unwrap();
    std::fs::write(dist.join("index.html"), PAGE).unwrap();
    std::fs::write(dist.join("assets/index-Ab12.js"), "console.log(1)").unwrap();
    std::fs::write(dist.join("assets/index-Ab12.js.gz"), b"\x1f\x8bgz").unwrap();
    std::fs::write(dist.join("assets/index-Cd34.css"), "body{}").unwrap();
    std::fs::write(dist.join(".vite/manifest.json"), "{}").unwrap();
    std::fs::write(dir.join("learner/secret.txt"), "not for the web").unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn hashed_files_are_immutable_and_routes_get_the_page(db: PgPool) {
    let store = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    build(apps.path());
    let app = app(db, &store, apps.path()).await;

    // The page, at the root and at any client route (a deep link, a reload).
    for path in ["/app/", "/app/courses/0193/lessons/0194", "/app/search"] {
        let (status, headers, body) = get(&app, path, true).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "no inline code, no eval: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(String::from_utf8(body).unwrap(), PAGE);
    }

    // A hashed file: cached for good; gzip when the build wrote it and the client takes it.
    let (status, headers, body) = get(&app, "/app/assets/index-Ab12.js", true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert_eq!(body, b"\x1f\x8bgz");
    let (status, headers, body) = get(&app, "/app/assets/index-Ab12.js", false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::CONTENT_ENCODING).is_none());
    assert_eq!(body, b"console.log(1)");
    let (status, headers, _) = get(&app, "/app/assets/index-Cd34.css", true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get(header::CONTENT_ENCODING).is_none(),
        "no .gz written: plain"
    );
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");

    // Nothing else under the build, nothing outside it.
    for path in [
        "/app/assets/missing-0000.js",
        "/app/.vite/manifest.json",
        "/app/favicon.ico",
        "/app/assets/..%2F..%2Fsecret.txt",
        "/app/assets/%2e%2e/index.html",
    ] {
        let (status, _, body) = get(&app, path, false).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "not_found", "{path}: {json}");
    }

    // Without the trailing slash: redirected, so relative routing works.
    let (status, headers, _) = get(&app, "/app", false).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "/app/");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_app_not_built_says_how_to_build_it(db: PgPool) {
    let store = tempfile::tempdir().unwrap();
    let apps = tempfile::tempdir().unwrap();
    build(apps.path());
    let app = app(db, &store, apps.path()).await;

    // The learner app is built in this layout, the console is not.
    let (status, headers, body) = get(&app, "/admin/users", false).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("make apps"), "{html}");
    assert!(html.contains("admin"), "{html}");
    assert!(
        html.contains(&apps.path().join("admin/dist").display().to_string()),
        "names where it looked: {html}"
    );
}
