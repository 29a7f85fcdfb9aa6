//! URL pull against a real HTTP server started here (axum on a loopback
//! port) serving a real media file, into real storage (a local `fs` root
//! and the Garage bucket) and a real PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{media_bytes, s3_store, sha256_hex, stored_sha256};
use futures::StreamExt as _;
use lectern_ingest::assets::source_key;
use lectern_ingest::pull::{self, PullConfig, PullError, PullRecord, PullRequest};
use lectern_storage::{FsStore, StorageError, Store};
use sqlx::PgPool;
use uuid::Uuid;

/// A new organisation (tenant) to own what the test creates.
async fn organisation(db: &PgPool, name: &str) -> (Uuid, ()) {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(db)
        .await
        .expect("insert organisation");
    (id, ())
}

/// Big Buck Bunny (Blender Foundation, CC BY) via `infra/dev/sample-clip`.
fn sample_clip() -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new(format!("{root}/infra/dev/sample-clip"))
        .output()
        .expect("run infra/dev/sample-clip");
    assert!(
        out.status.success(),
        "infra/dev/sample-clip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    std::fs::read(path.trim()).expect("read the sample clip")
}

/// A source server: the clip, oversized bodies with and without a
/// `Content-Length`, redirects, a web page, a stalling body and a 404.
struct Source {
    base: String,
    clip: Bytes,
}

async fn source_server(clip: Vec<u8>) -> Source {
    let clip = Bytes::from(clip);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = clip.clone();
    let app = Router::new()
        .route(
            "/clip.mp4",
            get(move || {
                let clip = served.clone();
                async move { ([(header::CONTENT_TYPE, "video/mp4")], clip) }
            }),
        )
        // 8 MiB in 64 KiB chunks, no Content-Length: only counting stops it.
        .route(
            "/chunked.mp4",
            get(|| async {
                let chunks = (0..128).map(|i| {
                    Ok::<_, std::io::Error>(Bytes::from(common::media_slice(i * 65536, 65536)))
                });
                Body::from_stream(futures::stream::iter(chunks))
            }),
        )
        .route(
            "/declared.mp4",
            get(|| async { Bytes::from(media_bytes(4 * 1024 * 1024)) }),
        )
        .route(
            "/to-metadata",
            get(|| async { redirect("http://169.254.169.254/latest/meta-data/") }),
        )
        .route("/to-clip", get(|| async { redirect("/clip.mp4") }))
        .route(
            "/page.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<!doctype html><title>Lecture 3</title><a href=/clip.mp4>download</a>",
                )
            }),
        )
        .route(
            "/stall.mp4",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from(media_bytes(4096)))
                });
                let stalled = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok::<_, std::io::Error>(Bytes::from_static(b"late"))
                });
                Body::from_stream(first.chain(stalled))
            }),
        )
        .route(
            "/gone.mp4",
            get(|| async { (StatusCode::NOT_FOUND, "no such lecture") }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Source { base, clip }
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned())]).into_response()
}

fn allowing_loopback() -> PullConfig {
    PullConfig {
        allow: "127.0.0.1".parse().unwrap(),
        idle_timeout: Duration::from_secs(2),
        ..PullConfig::default()
    }
}

async fn fs_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    (dir, store)
}

fn request(org: Uuid, url: String) -> PullRequest {
    PullRequest {
        organisation_id: org,
        source_url: url,
        title: Some("Grand round, week 12".into()),
        profile: None,
    }
}

async fn asset_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM assets")
        .fetch_one(db)
        .await
        .unwrap()
}

/// Runs a pull expected to fail while downloading: the pull row says why.
async fn failed_pull(
    db: &PgPool,
    store: &dyn Store,
    config: &PullConfig,
    req: PullRequest,
) -> PullRecord {
    let record = pull::pull(db, store, config, req)
        .await
        .expect("accepted, then failed while downloading");
    assert_eq!(record.state, "failed", "{record:?}");
    assert!(
        store
            .head(&source_key(record.id))
            .await
            .is_err_and(|e| matches!(e, StorageError::NotFound { .. })),
        "nothing may be left in storage after a failed pull"
    );
    record
}

#[sqlx::test(migrations = "../migrations")]
async fn loopback_is_refused_without_the_allow_list(db: PgPool) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let source = source_server(sample_clip()).await;
    let (_dir, store) = fs_store().await;
    for url in [
        format!("{}/clip.mp4", source.base),
        format!("{}/clip.mp4", source.base.replace("127.0.0.1", "localhost")),
        format!(
            "{}/clip.mp4",
            source.base.replace("127.0.0.1", "[::ffff:127.0.0.1]")
        ),
    ] {
        let err = pull::pull(
            &db,
            store.as_ref(),
            &PullConfig::default(),
            request(org, url.clone()),
        )
        .await
        .expect_err("loopback must be refused");
        assert_eq!(err.code(), "private_address", "{url}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("127.0.0.1") || message.contains("::1"),
            "the message names the resolved address: {message}"
        );
    }
    for url in ["file:///etc/passwd", "ftp://127.0.0.1/a.mp4"] {
        let err = pull::pull(
            &db,
            store.as_ref(),
            &PullConfig::default(),
            request(org, url.into()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "url_not_allowed", "{url}");
    }
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM pulls")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "refused URLs never become pulls");
    assert_eq!(asset_count(&db).await, 0);
}

async fn pulls_the_clip(db: PgPool, store: Arc<dyn Store>) {
    let (org, _) = organisation(&db, "Alumni Office").await;
    let source = source_server(sample_clip()).await;
    let config = allowing_loopback();
    // Through a redirect, so the hop logic is exercised on the happy path.
    let url = format!("{}/to-clip?token=s3cret", source.base);
    let record = pull::pull(&db, store.as_ref(), &config, request(org, url))
        .await
        .expect("pull from an allowed loopback server");
    assert_eq!(record.state, "completed", "{record:?}");
    assert_eq!(record.received_bytes, source.clip.len() as i64);
    assert!(
        !record.source_url.contains("s3cret"),
        "query strings are not stored"
    );
    let (size, digest) = stored_sha256(store.as_ref(), &source_key(record.id)).await;
    assert_eq!(size, source.clip.len() as u64);
    assert_eq!(digest, sha256_hex(&source.clip));
    let (asset_org, title, status, jobs): (Uuid, Option<String>, String, i64) = sqlx::query_as(
        "SELECT organisation_id, title, status,
                (SELECT count(*) FROM jobs WHERE asset_id = assets.id AND state = 'queued')
         FROM assets WHERE id = $1",
    )
    .bind(record.id)
    .fetch_one(&db)
    .await
    .expect("the asset exists, with the pull's id");
    assert_eq!(asset_org, org);
    assert_eq!(title.as_deref(), Some("Grand round, week 12"));
    assert_eq!(status, "uploaded");
    assert_eq!(jobs, 1, "the transcode job is enqueued with the asset");
    store.delete(&source_key(record.id)).await.unwrap();
}

#[sqlx::test(migrations = "../migrations")]
async fn allowed_loopback_pull_creates_the_asset_on_fs(db: PgPool) {
    let (_dir, store) = fs_store().await;
    pulls_the_clip(db, store).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn allowed_loopback_pull_creates_the_asset_on_garage(db: PgPool) {
    pulls_the_clip(db, s3_store()).await;
}

async fn oversized_sources_leave_nothing(db: PgPool, store: Arc<dyn Store>) {
    let (org, _) = organisation(&db, "SME Centre").await;
    let source = source_server(sample_clip()).await;
    let config = PullConfig {
        max_bytes: 1024 * 1024,
        ..allowing_loopback()
    };
    // Announced up front: refused before the body is read.
    let declared = failed_pull(
        &db,
        store.as_ref(),
        &config,
        request(org, format!("{}/declared.mp4", source.base)),
    )
    .await;
    assert_eq!(declared.error_code.as_deref(), Some("source_too_large"));
    assert!(
        declared
            .error_message
            .as_deref()
            .unwrap()
            .contains("4.0 MiB"),
        "{declared:?}"
    );
    // Not announced: counted while streaming, stopped past the limit.
    let chunked = failed_pull(
        &db,
        store.as_ref(),
        &config,
        request(org, format!("{}/chunked.mp4", source.base)),
    )
    .await;
    assert_eq!(
        chunked.error_code.as_deref(),
        Some("source_too_large"),
        "{chunked:?}"
    );
    assert!(chunked.received_bytes <= 2 * 1024 * 1024);
    assert_eq!(asset_count(&db).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn oversized_sources_are_refused_on_fs(db: PgPool) {
    let (dir, store) = fs_store().await;
    oversized_sources_leave_nothing(db, store.clone()).await;
    assert!(
        store.list("").await.unwrap().is_empty(),
        "no object left behind"
    );
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "no temp file left behind: {tmp:?}");
}

#[sqlx::test(migrations = "../migrations")]
async fn oversized_sources_are_refused_on_garage(db: PgPool) {
    oversized_sources_leave_nothing(db, s3_store()).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_redirect_to_a_private_address_is_refused(db: PgPool) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let source = source_server(sample_clip()).await;
    let (_dir, store) = fs_store().await;
    let record = failed_pull(
        &db,
        store.as_ref(),
        &allowing_loopback(),
        request(org, format!("{}/to-metadata", source.base)),
    )
    .await;
    assert_eq!(
        record.error_code.as_deref(),
        Some("private_address"),
        "{record:?}"
    );
    assert!(record.error_message.unwrap().contains("169.254.169.254"));
    assert_eq!(asset_count(&db).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_web_page_is_not_media(db: PgPool) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let source = source_server(sample_clip()).await;
    let (dir, store) = fs_store().await;
    let record = failed_pull(
        &db,
        store.as_ref(),
        &allowing_loopback(),
        request(org, format!("{}/page.html", source.base)),
    )
    .await;
    assert_eq!(
        record.error_code.as_deref(),
        Some("not_media"),
        "{record:?}"
    );
    assert!(store.list("").await.unwrap().is_empty());
    drop(dir);
    assert_eq!(asset_count(&db).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn stalls_and_http_errors_have_their_codes(db: PgPool) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let source = source_server(sample_clip()).await;
    let (_dir, store) = fs_store().await;
    let config = allowing_loopback();
    let stalled = failed_pull(
        &db,
        store.as_ref(),
        &config,
        request(org, format!("{}/stall.mp4", source.base)),
    )
    .await;
    assert_eq!(
        stalled.error_code.as_deref(),
        Some("source_timeout"),
        "{stalled:?}"
    );
    let gone = failed_pull(
        &db,
        store.as_ref(),
        &config,
        request(org, format!("{}/gone.mp4", source.base)),
    )
    .await;
    assert_eq!(gone.error_code.as_deref(), Some("source_http_error"));
    assert!(gone.error_message.unwrap().contains("404"));
    // Nothing listens on port 9 of loopback.
    let refused = failed_pull(
        &db,
        store.as_ref(),
        &config,
        request(org, "http://127.0.0.1:9/a.mp4".into()),
    )
    .await;
    assert_eq!(
        refused.error_code.as_deref(),
        Some("source_unreachable"),
        "{refused:?}"
    );
    assert_eq!(asset_count(&db).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_fields_are_refused_before_any_download(db: PgPool) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let (_dir, store) = fs_store().await;
    let config = allowing_loopback();
    let mut req = request(org, "http://127.0.0.1:9/a.mp4".into());
    req.profile = Some("ultra".into());
    let err = pull::pull(&db, store.as_ref(), &config, req.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_profile");
    assert!(err.to_string().contains("default"), "{err}");
    req.profile = None;
    req.title = Some("a\u{0}b".into());
    let err = pull::pull(&db, store.as_ref(), &config, req)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::InvalidRequest("invalid_title", _)),
        "{err}"
    );
}
