//! The router driven in-process (`oneshot`), against a real PostgreSQL
//! database created per test by `#[sqlx::test]` and a real local-disk store.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lectern_api::{router, AppState, Settings};
use lectern_secrets::Keyring;
use lectern_storage::FsStore;
use sqlx::PgPool;
use tower::ServiceExt;

async fn state(db: PgPool, schema_ready: bool, dir: &tempfile::TempDir) -> AppState {
    AppState::new(
        db,
        Arc::new(FsStore::open(dir.path()).await.unwrap()),
        Settings {
            keys: Some(Arc::new(keyring())),
            schema_ready: Arc::new(AtomicBool::new(schema_ready)),
            ..Settings::default()
        },
    )
}

fn keyring() -> Keyring {
    let (field_keys, blind, token) = Keyring::generate_settings();
    Keyring::parse(&field_keys, &blind, &token).unwrap()
}

async fn call(
    app: axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"));
    (status, headers, json)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn ready_when_database_and_storage_answer(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, body) = call(router(state(db, true, &dir).await), get("/readyz")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["storage"], "ok");
}

#[sqlx::test(migrations = "../migrations")]
async fn not_ready_until_migrations_are_applied(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, body) = call(router(state(db, false, &dir).await), get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "not_ready");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("migrations"),
        "{body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn not_ready_when_storage_is_gone(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(db, true, &dir).await);
    std::fs::remove_dir_all(dir.path()).unwrap();
    let (status, _, body) = call(app, get("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage"),
        "{body}"
    );
    assert_eq!(body["checks"]["database"], "ok");
}

#[sqlx::test(migrations = "../migrations")]
async fn unknown_routes_are_json_404s_with_request_ids(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(db, true, &dir).await);
    let (status, headers, body) = call(app.clone(), get("/no/such/thing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let generated = headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a uuid request id: {generated}");

    let req = Request::get("/healthz")
        .header("x-request-id", "partner-trace-42")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = call(app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(headers["x-request-id"], "partner-trace-42");
}

/// `/metrics` shows requests by route template (never a raw path or an
/// id), the job queue as PostgreSQL holds it, and every area's counters.
#[sqlx::test(migrations = "../migrations")]
async fn metrics_show_route_templates_the_queue_and_every_area(db: PgPool) {
    use lectern_testkit::World;
    use lectern_web::Role;

    let w = World::new(db).await;
    let org = w.org("Metrics Hospital").await;
    w.user(None, "root@metrics.example", Role::SuperAdmin).await;
    let root = w.login("root@metrics.example").await;
    let asset = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key) VALUES ($1, $2, 'uploaded', 'sources/x')",
    )
    .bind(asset)
    .bind(org)
    .execute(w.db())
    .await
    .unwrap();
    // It was transcoded once before: 120 s of media in 60 s of wall time.
    sqlx::query("UPDATE assets SET duration_s = 120 WHERE id = $1;")
        .bind(asset)
        .execute(w.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO asset_events (asset_id, at, to_status) VALUES \
         ($1, now() - interval '90 seconds', 'transcoding'), ($1, now() - interval '30 seconds', 'ready')",
    )
    .bind(asset)
    .execute(w.db())
    .await
    .unwrap();
    let missing = uuid::Uuid::new_v4();
    let (status, _) = w
        .call(
            "GET",
            &format!("/api/v1/courses/{missing}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The same route and class again, then one route's other methods (its
    // 405 answer is one service for every method): each label set counts
    // apart, whichever the layer saw first.
    let (status, _) = w
        .call(
            "GET",
            &format!("/api/v1/courses/{}", uuid::Uuid::new_v4()),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for method in ["PATCH", "PUT", "PATCH"] {
        let (status, _) = w.call_raw(method, "/metrics", Some(&root), None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    let (status, _) = w.call_raw("GET", "/metrics", Some(&root), None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, text) = w.call_raw("GET", "/metrics", Some(&root), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for line in [
        "lectern_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/courses/{course_id}\",status=\"4xx\"} 2",
        "lectern_http_request_duration_seconds_count{method=\"PATCH\",route=\"/metrics\",status=\"4xx\"} 2",
        "lectern_http_request_duration_seconds_count{method=\"PUT\",route=\"/metrics\",status=\"4xx\"} 1",
        "lectern_http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\",status=\"2xx\"} 1",
    ] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line:?} missing:\n{text}");
    }
    for line in [
        "lectern_database_up 1.0",
        "lectern_jobs{kind=\"transcode\",state=\"queued\"} 1.0",
        "lectern_transcodes_last_hour 1.0",
        "lectern_transcode_wall_seconds_last_hour 60.0",
        "lectern_transcode_media_seconds_last_hour 120.0",
        "lectern_origin_cache_hits_total 0",
        "lectern_progress_flushed_rows_total 0",
        "lectern_logins_total{outcome=\"success\"} 1",
        "lectern_webhook_deliveries_total{outcome=\"delivered\"} 0",
        "lectern_webhook_deliveries_total{outcome=\"given_up\"} 0",
        "# TYPE lectern_notification_deliveries counter",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }
    for channel in ["inbox", "email", "sms"] {
        let series = format!(
            "lectern_notification_deliveries_total{{channel=\"{channel}\",outcome=\"sent\"}} "
        );
        assert!(
            text.lines().any(|l| l.starts_with(&series)),
            "{series:?} missing:\n{text}"
        );
    }
    assert!(
        !text.contains(&missing.to_string()),
        "an id in a label:\n{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

/// Many distinct learners, courses and media paths add no series: labels
/// are templates and closed sets. Every counter ends in `_total`, every
/// duration is in seconds, and the whole exposition stays small.
#[sqlx::test(migrations = "../migrations")]
async fn metrics_series_stay_bounded_whatever_the_paths(db: PgPool) {
    use lectern_testkit::World;
    use lectern_web::Role;

    let w = World::new(db).await;
    w.user(None, "root@metrics.example", Role::SuperAdmin).await;
    let root = w.login("root@metrics.example").await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let (_, before) = w.call_raw("GET", "/metrics", Some(&root), None).await;
    for i in 0..2_000 {
        let id = uuid::Uuid::new_v4();
        let path = match i % 4 {
            0 => format!("/api/v1/courses/{id}"),
            1 => format!("/api/v1/lessons/{id}/playback"),
            2 => format!("/media/assets/{id}/out/attempt-1/720p/seg-{i}.m4s?token=x"),
            _ => format!("/api/v1/no-such-route/{id}"),
        };
        let method = if i % 4 == 1 { "POST" } else { "GET" };
        w.call_raw(method, &path, Some(&root), None).await;
    }
    let (status, after) = w.call_raw("GET", "/metrics", Some(&root), None).await;
    assert_eq!(status, StatusCode::OK);
    // A handful of new route × status series, not one per path.
    assert!(
        series(&after) < series(&before) + 100,
        "{} series before, {} after:\n{after}",
        series(&before),
        series(&after)
    );
    assert!(series(&after) < 5_000);
    for line in after.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name.starts_with("lectern_"), "{line}");
            if kind == "counter" {
                assert!(
                    after
                        .lines()
                        .any(|l| l.starts_with(&format!("{name}_total"))),
                    "counter {name} has no _total sample"
                );
            }
            if kind == "histogram" {
                assert!(
                    name.ends_with("_seconds"),
                    "a histogram in another unit: {line}"
                );
            }
        }
    }
}
