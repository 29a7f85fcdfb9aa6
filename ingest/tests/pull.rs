//! URL pull against a real HTTP server started here (axum on a loopback
//! port) serving a real media file, into real storage (a local `fs` root
//! and the Garage bucket) and a real PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::{media_bytes, s3_store, sha256_hex, stored_sha256};
use futures::StreamExt as _;
use lectern_assets::keys::source_key;
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
    /// Holds the first download of `/gated.mp4` after its first 64 KiB.
    gate: Arc<tokio::sync::Semaphore>,
    /// Downloads of `/gated.mp4` begun so far.
    gated_requests: Arc<std::sync::atomic::AtomicUsize>,
    /// Holds every download of `/held.mp4` after its first 64 KiB, until
    /// given a permit each.
    hold: Arc<tokio::sync::Semaphore>,
}

impl Source {
    /// Waits until the first download of `/gated.mp4` is held at the gate.
    async fn first_gated_download_begun(&self) {
        while self
            .gated_requests
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Its first 64 KiB are on their way; give them time to arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Length of `/gated.mp4`.
const GATED_LEN: usize = 1024 * 1024;

async fn source_server(clip: Vec<u8>) -> Source {
    let clip = Bytes::from(clip);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = clip.clone();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let gated_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let gated = {
        let (gate, gated_requests) = (gate.clone(), gated_requests.clone());
        move |RawQuery(query): RawQuery| {
            let (gate, first) = (
                gate.clone(),
                gated_requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0,
            );
            async move {
                // Like a presigned URL: useless without its secret query.
                if query.as_deref() != Some("signature=s3cret") {
                    return (StatusCode::FORBIDDEN, "signature required").into_response();
                }
                let head = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from(common::media_slice(0, 65536)))
                });
                let rest = futures::stream::once(async move {
                    if first {
                        let _ = gate.acquire().await;
                    }
                    Ok::<_, std::io::Error>(Bytes::from(common::media_slice(
                        65536,
                        GATED_LEN - 65536,
                    )))
                });
                Body::from_stream(head.chain(rest)).into_response()
            }
        }
    };
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let held = {
        let hold = hold.clone();
        move || {
            let hold = hold.clone();
            async move {
                let head = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from(common::media_slice(0, 65536)))
                });
                let rest = futures::stream::once(async move {
                    hold.acquire().await.unwrap().forget();
                    Ok::<_, std::io::Error>(Bytes::from(common::media_slice(65536, 65536)))
                });
                Body::from_stream(head.chain(rest)).into_response()
            }
        }
    };
    let app = Router::new()
        .route("/gated.mp4", get(gated))
        .route("/held.mp4", get(held))
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
    Source {
        base,
        clip,
        gate,
        gated_requests,
        hold,
    }
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
        matches!(
            err,
            PullError::InvalidRequest(lectern_web::ErrorCode::InvalidTitle, _)
        ),
        "{err}"
    );
}

/// Seals by reversing and tagging with the pull's id, so a URL copied to
/// another row does not open: enough to exercise the protocol here. The
/// API's vault (AES-GCM with the field keys) is tested with the server.
struct TestVault;

impl pull::UrlVault for TestVault {
    fn seal(&self, pull: Uuid, url: &str) -> Vec<u8> {
        let mut sealed = pull.as_bytes().to_vec();
        sealed.extend(url.bytes().rev());
        sealed
    }

    fn open(&self, pull: Uuid, sealed: &[u8]) -> Option<String> {
        let url = sealed.strip_prefix(pull.as_bytes().as_slice())?;
        String::from_utf8(url.iter().rev().copied().collect()).ok()
    }
}

/// Makes a pull look as if its process stopped reporting long ago.
async fn silence(db: &PgPool, id: Uuid) {
    sqlx::query("UPDATE pulls SET updated_at = now() - interval '10 minutes' WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .unwrap();
}

async fn received_bytes(db: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT received_bytes FROM pulls WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn is_absent(store: &dyn Store, key: &str) -> bool {
    store
        .head(key)
        .await
        .is_err_and(|e| matches!(e, StorageError::NotFound { .. }))
}

/// A pull of `/gated.mp4` (with its secret query) running in a task of its
/// own, its first download held at the gate after 64 KiB.
struct InFlight {
    source: Source,
    config: PullConfig,
    org: Uuid,
    id: Uuid,
    task: tokio::task::JoinHandle<Result<PullRecord, PullError>>,
}

async fn gated_pull_in_flight(db: &PgPool, store: &Arc<dyn Store>) -> InFlight {
    let (org, _) = organisation(db, "District Training Centre").await;
    let source = source_server(media_bytes(16)).await;
    let config = allowing_loopback();
    let url = format!("{}/gated.mp4?signature=s3cret", source.base);
    let accepted = pull::begin(db, &config, Some(&TestVault), request(org, url))
        .await
        .unwrap();
    let id = accepted.record.id;
    let task = tokio::spawn({
        let (db, store, config) = (db.clone(), store.clone(), config.clone());
        async move { pull::run(&db, store.as_ref(), &config, accepted).await }
    });
    source.first_gated_download_begun().await;
    InFlight {
        source,
        config,
        org,
        id,
        task,
    }
}

/// The process running a pull dies mid-download: the pull is not failed
/// but resumed by another node from its sealed URL (secret query and all),
/// and becomes the asset, stored under the second attempt's key.
#[sqlx::test(migrations = "../migrations")]
async fn a_pull_whose_process_died_is_resumed_elsewhere(db: PgPool) {
    let (_dir, store) = fs_store().await;
    let InFlight {
        config,
        org,
        id,
        task: dying,
        ..
    } = gated_pull_in_flight(&db, &store).await;
    dying.abort();
    let _ = dying.await;

    // Not yet silent long enough: nobody takes it, and it is not failed.
    assert!(pull::claim_interrupted(&db, &TestVault)
        .await
        .unwrap()
        .is_none());
    silence(&db, id).await;
    let polled = pull::status(&db, id, Some(org)).await.unwrap().unwrap();
    assert_eq!(polled.state, "pulling", "a resumable pull is not failed");

    let resumed = pull::claim_interrupted(&db, &TestVault)
        .await
        .unwrap()
        .expect("the silent pull is claimed");
    assert_eq!((resumed.record.id, resumed.record.attempt), (id, 2));
    assert!(pull::claim_interrupted(&db, &TestVault)
        .await
        .unwrap()
        .is_none());
    let record = pull::run(&db, store.as_ref(), &config, resumed)
        .await
        .unwrap();
    assert_eq!(record.state, "completed", "{record:?}");
    assert_eq!(record.attempt, 2);
    assert_eq!(record.received_bytes, GATED_LEN as i64);
    assert!(!record.source_url.contains("s3cret"));
    let key: String = sqlx::query_scalar("SELECT source_key FROM assets WHERE id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .expect("the resumed pull made the asset");
    assert_eq!(key, lectern_assets::keys::pull_attempt_key(id, 2));
    let (size, digest) = stored_sha256(store.as_ref(), &key).await;
    assert_eq!(size, GATED_LEN as u64);
    assert_eq!(digest, sha256_hex(&media_bytes(GATED_LEN)));
    assert!(
        is_absent(
            store.as_ref(),
            &lectern_assets::keys::pull_attempt_key(id, 1)
        )
        .await
    );
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT source_url_sealed FROM pulls WHERE id = $1")
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed.unwrap()).contains("s3cret"),
        "the URL is only stored sealed"
    );
}

/// A process that only looked dead (a long pause) and finishes its
/// download after a newer attempt took the pull over records nothing —
/// no asset, no failure — and removes only its own object; the newer
/// attempt then makes the asset.
#[sqlx::test(migrations = "../migrations")]
async fn a_superseded_attempt_records_nothing(db: PgPool) {
    let (_dir, store) = fs_store().await;
    let InFlight {
        source,
        config,
        id,
        task: paused,
        ..
    } = gated_pull_in_flight(&db, &store).await;
    silence(&db, id).await;
    let resumed = pull::claim_interrupted(&db, &TestVault)
        .await
        .unwrap()
        .expect("claimed while the first attempt is paused");

    // The first attempt wakes up and finishes its download first.
    source.gate.add_permits(1);
    let seen = paused.await.unwrap().unwrap();
    assert_eq!(
        (seen.state.as_str(), seen.attempt),
        ("pulling", 2),
        "{seen:?}"
    );
    assert_eq!(asset_count(&db).await, 0);
    assert!(
        is_absent(
            store.as_ref(),
            &lectern_assets::keys::pull_attempt_key(id, 1)
        )
        .await
    );

    let record = pull::run(&db, store.as_ref(), &config, resumed)
        .await
        .unwrap();
    assert_eq!((record.state.as_str(), record.attempt), ("completed", 2));
    let (size, _) = stored_sha256(
        store.as_ref(),
        &lectern_assets::keys::pull_attempt_key(id, 2),
    )
    .await;
    assert_eq!(size, GATED_LEN as u64);
    assert_eq!(asset_count(&db).await, 1);
    assert_eq!(received_bytes(&db, id).await, GATED_LEN as i64);
}

/// Pulls that cannot be resumed end as `pull_interrupted` with a message a
/// partner can act on: one begun without a vault, one whose sealed URL no
/// longer opens, one whose attempts are used up.
#[sqlx::test(migrations = "../migrations")]
async fn unresumable_pulls_end_as_interrupted(db: PgPool) {
    let (org, _) = organisation(&db, "District Training Centre").await;
    let source = source_server(media_bytes(16)).await;
    let config = allowing_loopback();
    let url = || format!("{}/gated.mp4?signature=s3cret", source.base);
    let unsealed = pull::begin(&db, &config, None, request(org, url()))
        .await
        .unwrap()
        .record
        .id;
    let retired = pull::begin(&db, &config, Some(&TestVault), request(org, url()))
        .await
        .unwrap()
        .record
        .id;
    sqlx::query("UPDATE pulls SET source_url_sealed = 'garbage' WHERE id = $1")
        .bind(retired)
        .execute(&db)
        .await
        .unwrap();
    let exhausted = pull::begin(&db, &config, Some(&TestVault), request(org, url()))
        .await
        .unwrap()
        .record
        .id;
    sqlx::query("UPDATE pulls SET attempt = $2 WHERE id = $1")
        .bind(exhausted)
        .bind(pull::MAX_ATTEMPTS)
        .execute(&db)
        .await
        .unwrap();
    for id in [unsealed, retired, exhausted] {
        silence(&db, id).await;
    }
    assert!(pull::claim_interrupted(&db, &TestVault)
        .await
        .unwrap()
        .is_none());
    // Settled by the resumer itself, before anyone polls.
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pulls WHERE id = ANY($1) AND error_code = 'pull_interrupted'",
    )
    .bind(vec![unsealed, retired, exhausted])
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(failed, 3);
    for id in [unsealed, retired, exhausted] {
        let record = pull::status(&db, id, Some(org)).await.unwrap().unwrap();
        assert_eq!(record.state, "failed", "{record:?}");
        assert_eq!(record.error_code.as_deref(), Some("pull_interrupted"));
        assert!(record
            .error_message
            .unwrap()
            .contains("submit the URL again"));
    }
}

/// URL pulls have quotas like uploads (issue #16), per organisation and
/// answered with `pull_quota_exceeded` (429, retryable): concurrent pulls
/// and bytes in flight. Bytes count as they arrive: a new pull is refused
/// while the running ones hold the limit, and a running pull that takes the
/// organisation past it stops, the newest first.
#[sqlx::test(migrations = "../migrations")]
async fn pulls_have_quotas_per_organisation(db: PgPool) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let (other, _) = organisation(&db, "Alumni Office").await;
    let source = source_server(media_bytes(16)).await;
    let (_dir, store) = fs_store().await;
    // Each held pull has 64 KiB; two of them pass the 100 KiB in flight.
    let config = PullConfig {
        quota: pull::PullQuota {
            max_concurrent_pulls: 2,
            max_bytes_in_flight: 100 * 1024,
        },
        // Held sources are quiet until the heartbeats have had their say.
        idle_timeout: Duration::from_secs(60),
        ..allowing_loopback()
    };
    let held = || format!("{}/held.mp4", source.base);
    let start = |org: Uuid| {
        let (db, store, config, url) = (db.clone(), store.clone(), config.clone(), held());
        async move {
            let accepted = pull::begin(&db, &config, None, request(org, url)).await?;
            let id = accepted.record.id;
            let task =
                tokio::spawn(
                    async move { pull::run(&db, store.as_ref(), &config, accepted).await },
                );
            Ok::<_, PullError>((id, task))
        }
    };
    let (older, older_task) = start(org).await.unwrap();
    let (newer, newer_task) = start(org).await.unwrap();

    // A third at once is refused, with a code a client can act on.
    let refused = start(org)
        .await
        .expect_err("a third concurrent pull is refused");
    assert_eq!(refused.code(), "pull_quota_exceeded", "{refused}");
    assert_eq!(refused.code().status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.code().retryable());
    assert!(refused.to_string().contains("at once is 2"), "{refused}");
    // Another organisation's quota is its own.
    let (elsewhere, elsewhere_task) = start(other).await.unwrap();

    // At their first heartbeat the two have 128 KiB: the newer one stops.
    let stopped = newer_task.await.unwrap().unwrap();
    assert_eq!(stopped.id, newer);
    assert_eq!(
        (stopped.state.as_str(), stopped.error_code.as_deref()),
        ("failed", Some("pull_quota_exceeded")),
        "{stopped:?}"
    );
    assert!(is_absent(store.as_ref(), &source_key(newer)).await);
    let running = pull::status(&db, older, Some(org)).await.unwrap().unwrap();
    assert_eq!(running.state, "pulling", "the older pull goes on");

    // Bytes in flight at the limit refuse a new pull outright: one pull
    // (of another node, say) already received 100 KiB.
    let (third, _) = organisation(&db, "District Training Centre").await;
    sqlx::query(
        "INSERT INTO pulls (id, organisation_id, source_url, profile, received_bytes)
         VALUES ($1, $2, 'http://example.org/big.mp4', 'default', 100 * 1024)",
    )
    .bind(Uuid::now_v7())
    .bind(third)
    .execute(&db)
    .await
    .unwrap();
    let refused = start(third)
        .await
        .expect_err("refused while bytes are at the limit");
    assert_eq!(refused.code(), "pull_quota_exceeded");
    assert!(refused.to_string().contains("102400"), "{refused}");

    source.hold.add_permits(2);
    let done = older_task.await.unwrap().unwrap();
    assert_eq!(done.state, "completed", "{done:?}");
    let done = elsewhere_task.await.unwrap().unwrap();
    assert_eq!((done.id, done.state.as_str()), (elsewhere, "completed"));
    // Finished pulls free the quota.
    let (_, again) = start(org)
        .await
        .expect("room again once the others finished");
    source.hold.add_permits(1);
    assert_eq!(again.await.unwrap().unwrap().state, "completed");
}
