//! The tus protocol, status by status, spoken by a plain HTTP client to the
//! router (no socket: `tower::ServiceExt::oneshot`), over a real PostgreSQL
//! database and a real fs store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use lectern_assets::keys::source_key;
use lectern_ingest::tus::{self, OrganisationQuota, TransferFloor, TusConfig, TusState};
use lectern_storage::{FsStore, Store};
use sha2::Digest;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const MIB: usize = 1024 * 1024;

struct Harness {
    app: Router,
    state: TusState,
    store: Arc<dyn Store>,
    db: PgPool,
    key: String,
    _dir: tempfile::TempDir,
}

async fn harness(db: PgPool, config: TusConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let auth = common::TableAuthenticator::install(&db).await;
    let (_, key) = common::organisation(&db, "Cardiology Society").await;
    let state = TusState::new(db.clone(), store.clone(), auth, config);
    let app = Router::new().nest("/api/v1/uploads", tus::router(state.clone()));
    Harness {
        app,
        state,
        store,
        db,
        key,
        _dir: dir,
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Harness {
    fn request(&self, method: &str, uri: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {}", self.key))
    }

    async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.app.clone().oneshot(request).await.unwrap()
    }

    /// Creates an upload of `length` bytes; returns its URL.
    async fn create(&self, length: usize) -> String {
        let response = self
            .send(
                self.request("POST", "/api/v1/uploads")
                    .header("upload-length", length)
                    .header(
                        "upload-metadata",
                        format!(
                            "filename {},title {}",
                            b64(b"ecg.mp4"),
                            b64("Reading an ECG".as_bytes())
                        ),
                    )
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with("/api/v1/uploads/"), "{location}");
        location
    }

    async fn patch(&self, url: &str, offset: usize, chunk: &[u8]) -> Response<Body> {
        self.send(
            self.request("PATCH", url)
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream")
                .header("content-length", chunk.len())
                .body(Body::from(chunk.to_vec()))
                .unwrap(),
        )
        .await
    }

    async fn head(&self, url: &str) -> Response<Body> {
        self.send(self.request("HEAD", url).body(Body::empty()).unwrap())
            .await
    }

    async fn offset(&self, url: &str) -> u64 {
        let response = self.head(url).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn count(&self, sql: &str, id: Uuid) -> i64 {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

/// Size of the (only) fs append file under `dir`.
fn append_file_len(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap_or(0)
}

fn upload_id(url: &str) -> Uuid {
    url.rsplit('/').next().unwrap().parse().unwrap()
}

/// The error body: `{"error":{"code","message"}}`; returns the code.
async fn error_code(response: Response<Body>) -> (StatusCode, String, String) {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (
        status,
        json["error"]["code"].as_str().unwrap().to_owned(),
        json["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn options_advertises_the_server(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    for uri in [
        "/api/v1/uploads",
        &format!("/api/v1/uploads/{}", Uuid::new_v4()),
    ] {
        // OPTIONS needs neither Tus-Resumable nor credentials (CORS preflights have neither).
        let response = h
            .send(
                Request::builder()
                    .method("OPTIONS")
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let headers = response.headers();
        assert_eq!(headers["tus-version"], "1.0.0");
        assert_eq!(headers["tus-resumable"], "1.0.0");
        assert_eq!(
            headers["tus-extension"],
            "creation,creation-with-upload,termination,expiration,checksum"
        );
        assert_eq!(headers["tus-max-size"], (20u64 << 30).to_string().as_str());
        assert_eq!(headers["tus-checksum-algorithm"], "sha1,sha256");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn upload_in_chunks_becomes_an_asset_with_a_queued_job(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let data = common::media_bytes(3 * MIB + 17);
    let url = h.create(data.len()).await;
    let id = upload_id(&url);
    let mut offset = 0;
    for chunk in data.chunks(MIB) {
        let response = h.patch(&url, offset, chunk).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        offset += chunk.len();
        assert_eq!(
            response.headers()["upload-offset"],
            offset.to_string().as_str()
        );
        assert_eq!(response.headers()["tus-resumable"], "1.0.0");
        if offset < data.len() {
            assert!(response.headers().contains_key("upload-expires"));
            assert_eq!(h.offset(&url).await, offset as u64);
        }
    }
    let (size, digest) = common::stored_sha256(h.store.as_ref(), &source_key(id)).await;
    assert_eq!(
        (size, digest),
        (data.len() as u64, common::sha256_hex(&data))
    );
    let (title, status): (Option<String>, String) =
        sqlx::query_as("SELECT title, status FROM assets WHERE id = $1")
            .bind(id)
            .fetch_one(&h.db)
            .await
            .unwrap();
    assert_eq!(
        (title.as_deref(), status.as_str()),
        (Some("Reading an ECG"), "uploaded")
    );
    assert_eq!(
        h.count("SELECT count(*) FROM jobs WHERE asset_id = $1", id)
            .await,
        1
    );
    let head = h.head(&url).await;
    assert_eq!(
        head.headers()["upload-offset"],
        data.len().to_string().as_str()
    );
    assert_eq!(
        head.headers()["upload-length"],
        data.len().to_string().as_str()
    );
    assert!(head.headers()["upload-metadata"]
        .to_str()
        .unwrap()
        .contains("filename"));
}

#[sqlx::test(migrations = "../migrations")]
async fn creation_with_upload_stores_the_first_chunk(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let data = common::media_bytes(2 * MIB);
    let response = h
        .send(
            h.request("POST", "/api/v1/uploads")
                .header("upload-length", data.len())
                .header("content-type", "application/offset+octet-stream")
                .body(Body::from(data[..MIB].to_vec()))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.headers()["upload-offset"],
        MIB.to_string().as_str()
    );
    let url = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        h.patch(&url, MIB, &data[MIB..]).await.status(),
        StatusCode::NO_CONTENT
    );
    let (_, digest) = common::stored_sha256(h.store.as_ref(), &source_key(upload_id(&url))).await;
    assert_eq!(digest, common::sha256_hex(&data));
}

#[sqlx::test(migrations = "../migrations")]
async fn protocol_version_is_required(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    for version in [None, Some("0.2.2")] {
        let mut request = Request::builder()
            .method("POST")
            .uri("/api/v1/uploads")
            .header("authorization", format!("Bearer {}", h.key))
            .header("upload-length", "10");
        if let Some(v) = version {
            request = request.header("tus-resumable", v);
        }
        let response = h.send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(response.headers()["tus-version"], "1.0.0");
        let (status, code, _) = error_code(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::PRECONDITION_FAILED, "unsupported_tus_version")
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn unauthenticated_requests_are_refused(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let url = h.create(100).await;
    for auth in [
        None,
        Some("Bearer lk_test_not_a_key"),
        Some("Basic Zm9vOmJhcg=="),
    ] {
        for method in ["POST", "HEAD", "PATCH", "DELETE"] {
            let uri = if method == "POST" {
                "/api/v1/uploads"
            } else {
                url.as_str()
            };
            let mut request = Request::builder()
                .method(method)
                .uri(uri)
                .header("tus-resumable", "1.0.0")
                .header("upload-length", "10")
                .header("upload-offset", "0")
                .header("content-type", "application/offset+octet-stream");
            if let Some(a) = auth {
                request = request.header("authorization", a);
            }
            let response = h.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} with {auth:?}"
            );
            if method != "HEAD" {
                assert_eq!(error_code(response).await.1, "unauthenticated");
            }
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn another_organisations_upload_does_not_exist(db: PgPool) {
    let h = harness(db.clone(), TusConfig::default()).await;
    let url = h.create(100).await;
    let (_, other_key) = common::organisation(&db, "Alumni Office").await;
    let other = |method: &str, uri: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("tus-resumable", "1.0.0")
            .header("authorization", format!("Bearer {other_key}"))
            .header("upload-offset", "0")
            .header("content-type", "application/offset+octet-stream")
    };
    let unknown = format!("/api/v1/uploads/{}", Uuid::new_v4());
    for uri in [url.as_str(), unknown.as_str(), "/api/v1/uploads/not-a-uuid"] {
        for method in ["HEAD", "PATCH", "DELETE"] {
            let response = h
                .send(other(method, uri).body(Body::from("abc")).unwrap())
                .await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {uri}");
        }
    }
    // Untouched for its owner.
    assert_eq!(h.offset(&url).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_offset_is_a_conflict(db: PgPool) {
    // Connections return to this pool slowly, as they do on a loaded
    // machine: a transaction left to roll back on its connection's return
    // would still hold the upload's lock when the next request arrives.
    let slow_return = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .after_release(|_, _| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(true)
            })
        })
        .connect_with((*db.connect_options()).clone())
        .await
        .unwrap();
    let h = harness(slow_return, TusConfig::default()).await;
    let data = common::media_bytes(1000);
    let url = h.create(data.len()).await;
    let id: Uuid = url.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(
        h.patch(&url, 0, &data[..400]).await.status(),
        StatusCode::NO_CONTENT
    );
    for offset in [0, 399, 401, 1000] {
        let (status, code, message) =
            error_code(h.patch(&url, offset, &data[400..500]).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::CONFLICT, "offset_mismatch")
        );
        assert!(message.contains("400"), "{message}");
        // The refusal rolled back before it answered: the row is free, so a
        // client correcting its offset at once is not told `upload_busy`.
        let mut tx = db.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM uploads WHERE id = $1 FOR UPDATE NOWAIT")
            .bind(id)
            .execute(&mut *tx)
            .await
            .expect("the refused PATCH still holds the upload's lock");
        tx.rollback().await.unwrap();
    }
    assert_eq!(h.offset(&url).await, 400);
    // Refused, then corrected at once, chunk after chunk.
    for start in (400..1000).step_by(100) {
        let chunk = &data[start..start + 100];
        let (_, code, _) = error_code(h.patch(&url, start + 1, chunk).await).await;
        assert_eq!(code, "offset_mismatch");
        let status = h.patch(&url, start, chunk).await.status();
        assert_eq!(status, StatusCode::NO_CONTENT, "at {start}");
    }
    assert_eq!(h.offset(&url).await, 1000);
}

#[sqlx::test(migrations = "../migrations")]
async fn size_limits_and_quotas_are_413_with_a_reason(db: PgPool) {
    let config = TusConfig {
        max_upload_size: 10 * MIB as u64,
        quota: OrganisationQuota {
            max_bytes_in_flight: 15 * MIB as u64,
            max_concurrent_uploads: 2,
        },
        ..TusConfig::default()
    };
    let h = harness(db, config).await;
    let create = |length: usize| {
        h.request("POST", "/api/v1/uploads")
            .header("upload-length", length)
            .body(Body::empty())
            .unwrap()
    };
    let (status, code, message) = error_code(h.send(create(10 * MIB + 1)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large")
    );
    assert!(message.contains(&(10 * MIB).to_string()), "{message}");

    let first = h.create(10 * MIB).await;
    let (status, code, message) = error_code(h.send(create(6 * MIB)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded")
    );
    assert!(message.contains("in flight"), "{message}");
    h.create(MIB).await;
    let (status, code, message) = error_code(h.send(create(100)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded")
    );
    assert!(message.contains("unfinished uploads"), "{message}");

    // A terminated upload frees its share.
    let response = h
        .send(h.request("DELETE", &first).body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let second = h.create(6 * MIB).await;
    let response = h
        .send(h.request("DELETE", &second).body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // A body longer than the upload is refused and nothing of it kept.
    let url = h.create(100).await;
    let (status, code, _) = error_code(h.patch(&url, 0, &common::media_bytes(101)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_exceeds_upload_length")
    );
    assert_eq!(h.offset(&url).await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn bad_checksum_is_460_and_the_chunk_is_discarded(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let data = common::media_bytes(2 * MIB);
    let url = h.create(data.len()).await;
    let patch = |offset: usize, chunk: Vec<u8>, checksum: String| {
        h.request("PATCH", &url)
            .header("upload-offset", offset)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-checksum", checksum)
            .body(Body::from(chunk))
            .unwrap()
    };
    let first = &data[..MIB];
    let wrong = format!("sha1 {}", b64(&sha1::Sha1::digest(b"something else")));
    let response = h.send(patch(0, first.to_vec(), wrong)).await;
    let (status, code, _) = error_code(response).await;
    assert_eq!((status.as_u16(), code.as_str()), (460, "checksum_mismatch"));
    assert_eq!(h.offset(&url).await, 0, "the refused chunk was discarded");

    let (status, code, _) =
        error_code(h.send(patch(0, first.to_vec(), "md5 AAAA".into())).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "unsupported_checksum_algorithm")
    );

    let good = format!("sha1 {}", b64(&sha1::Sha1::digest(first)));
    assert_eq!(
        h.send(patch(0, first.to_vec(), good)).await.status(),
        StatusCode::NO_CONTENT
    );
    let rest = &data[MIB..];
    let good = format!("sha256 {}", b64(&sha2::Sha256::digest(rest)));
    assert_eq!(
        h.send(patch(MIB, rest.to_vec(), good)).await.status(),
        StatusCode::NO_CONTENT
    );
    let (_, digest) = common::stored_sha256(h.store.as_ref(), &source_key(upload_id(&url))).await;
    assert_eq!(digest, common::sha256_hex(&data));
}

#[sqlx::test(migrations = "../migrations")]
async fn terminated_and_expired_uploads_are_gone(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let data = common::media_bytes(1000);

    let terminated = h.create(data.len()).await;
    assert_eq!(
        h.patch(&terminated, 0, &data[..10]).await.status(),
        StatusCode::NO_CONTENT
    );
    let response = h
        .send(
            h.request("DELETE", &terminated)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.head(&terminated).await.status(), StatusCode::GONE);
    let (status, code, _) = error_code(h.patch(&terminated, 10, &data[10..20]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::GONE, "upload_gone"));

    let expired = h.create(data.len()).await;
    assert_eq!(
        h.patch(&expired, 0, &data[..10]).await.status(),
        StatusCode::NO_CONTENT
    );
    sqlx::query("UPDATE uploads SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(upload_id(&expired))
        .execute(&h.db)
        .await
        .unwrap();
    assert_eq!(h.head(&expired).await.status(), StatusCode::GONE);
    let (status, code, _) = error_code(h.patch(&expired, 10, &data[10..20]).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::GONE, "upload_gone"));
    let report = tus::sweep(&h.state).await.unwrap();
    assert_eq!(report.expired, 1);
    let state: String = sqlx::query_scalar("SELECT state FROM uploads WHERE id = $1")
        .bind(upload_id(&expired))
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(state, "expired");
    assert_eq!(h.head(&expired).await.status(), StatusCode::GONE);
    let root = h._dir.path().join("uploads");
    assert_eq!(
        std::fs::read_dir(root).unwrap().count(),
        0,
        "storage of both uploads freed"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_patches_never_interleave(db: PgPool) {
    // A short lease, so the first PATCH outlives several of its terms.
    let config = TusConfig {
        lease: Duration::from_millis(1500),
        ..TusConfig::default()
    };
    let h = harness(db, config).await;
    let data = common::media_bytes(2 * MIB);
    let url = h.create(data.len()).await;
    // The first PATCH streams slowly: its body arrives in two halves.
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let slow = h
        .request("PATCH", &url)
        .header("upload-offset", 0)
        .header("content-type", "application/offset+octet-stream")
        .body(Body::from_stream(rx))
        .unwrap();
    let app = h.app.clone();
    let first = tokio::spawn(async move { app.oneshot(slow).await.unwrap() });
    let mut tx = tx;
    use futures::SinkExt;
    tx.send(Ok(Bytes::copy_from_slice(&data[..MIB])))
        .await
        .unwrap();
    // The first request holds the upload once its first half is on disk.
    let uploads_dir = h._dir.path().join("uploads");
    let mut waited = 0;
    while append_file_len(&uploads_dir) < MIB as u64 {
        waited += 1;
        assert!(waited < 500, "the first PATCH never started writing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, code, _) = error_code(h.patch(&url, 0, &[0xEE; 1000]).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "upload_busy")
    );
    // Still the first writer's after two of its lease's terms: it renews.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, code, _) = error_code(h.patch(&url, 0, &[0xEE; 1000]).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "upload_busy")
    );
    let (status, code, _) = error_code(
        h.send(h.request("DELETE", &url).body(Body::empty()).unwrap())
            .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "upload_busy"),
        "no termination under a writer"
    );
    tx.send(Ok(Bytes::copy_from_slice(&data[MIB..])))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap().status(), StatusCode::NO_CONTENT);
    let (_, digest) = common::stored_sha256(h.store.as_ref(), &source_key(upload_id(&url))).await;
    assert_eq!(
        digest,
        common::sha256_hex(&data),
        "only the first writer's bytes"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn non_media_is_refused_and_deleted(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n".repeat(100);
    let url = h.create(pdf.len()).await;
    let (status, code, message) = error_code(h.patch(&url, 0, &pdf).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "not_media")
    );
    assert!(message.contains("not a video"), "{message}");
    let id = upload_id(&url);
    assert!(
        h.store.head(&source_key(id)).await.is_err(),
        "the object is deleted"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM assets WHERE id = $1", id)
            .await,
        0
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn completion_is_idempotent(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let data = common::media_bytes(5000);
    let url = h.create(data.len()).await;
    let id = upload_id(&url);
    assert_eq!(
        h.patch(&url, 0, &data).await.status(),
        StatusCode::NO_CONTENT
    );
    // A retried final PATCH (the client never saw the first answer).
    let response = h.patch(&url, data.len(), &[]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(response.headers()["upload-offset"], "5000");
    // A crash after storage completed but before the asset was recorded
    // leaves the row `completing`; whoever comes next finishes it once.
    sqlx::query("UPDATE uploads SET state = 'completing' WHERE id = $1")
        .bind(id)
        .execute(&h.db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM assets WHERE id = $1")
        .bind(id)
        .execute(&h.db)
        .await
        .unwrap();
    assert_eq!(h.offset(&url).await, 5000);
    assert_eq!(h.head(&url).await.status(), StatusCode::OK);
    assert_eq!(
        h.count("SELECT count(*) FROM assets WHERE id = $1", id)
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM jobs WHERE asset_id = $1", id)
            .await,
        1
    );
    // And if the asset was recorded but the state not: no duplicate.
    sqlx::query("UPDATE uploads SET state = 'completing' WHERE id = $1")
        .bind(id)
        .execute(&h.db)
        .await
        .unwrap();
    assert_eq!(
        h.patch(&url, data.len(), &[]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.count("SELECT count(*) FROM assets WHERE id = $1", id)
            .await,
        1
    );
    let (_, digest) = common::stored_sha256(h.store.as_ref(), &source_key(id)).await;
    assert_eq!(digest, common::sha256_hex(&data));
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_requests_are_400_or_415_never_500(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let url = h.create(100).await;
    let cases = [
        (
            h.request("POST", "/api/v1/uploads")
                .body(Body::empty())
                .unwrap(),
            400,
            "missing_upload_length",
        ),
        (
            h.request("POST", "/api/v1/uploads")
                .header("upload-length", "-5")
                .body(Body::empty())
                .unwrap(),
            400,
            "invalid_header",
        ),
        (
            h.request("POST", "/api/v1/uploads")
                .header("upload-length", "0")
                .body(Body::empty())
                .unwrap(),
            400,
            "empty_upload",
        ),
        (
            h.request("POST", "/api/v1/uploads")
                .header("upload-defer-length", "1")
                .body(Body::empty())
                .unwrap(),
            400,
            "deferred_length_unsupported",
        ),
        (
            h.request("POST", "/api/v1/uploads")
                .header("upload-length", "10")
                .header("upload-metadata", format!("title {}", b64(b"bell\x07")))
                .body(Body::empty())
                .unwrap(),
            400,
            "invalid_metadata",
        ),
        (
            h.request("PATCH", &url)
                .header("upload-offset", "0")
                .header("content-type", "video/mp4")
                .body(Body::from("x"))
                .unwrap(),
            415,
            "unsupported_content_type",
        ),
        (
            h.request("PATCH", &url)
                .header("content-type", "application/offset+octet-stream")
                .body(Body::from("x"))
                .unwrap(),
            400,
            "missing_upload_offset",
        ),
        (
            h.request("PATCH", &url)
                .header("upload-offset", "+0")
                .header("content-type", "application/offset+octet-stream")
                .body(Body::from("x"))
                .unwrap(),
            400,
            "invalid_header",
        ),
    ];
    for (request, status, code) in cases {
        let (got_status, got_code, _) = error_code(h.send(request).await).await;
        assert_eq!((got_status.as_u16(), got_code.as_str()), (status, code));
    }
}

/// A body that sends `data` one byte every `every` (a slowloris client,
/// scaled down), stopping once `stop` is set or the server stops reading;
/// `sent` counts the bytes handed over.
struct Trickle {
    response: tokio::task::JoinHandle<Response<Body>>,
    sender: tokio::task::JoinHandle<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
}

impl Trickle {
    fn start(h: &Harness, url: &str, data: &[u8], every: Duration) -> Trickle {
        use futures::SinkExt;
        use std::sync::atomic::Ordering;
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(0);
        let request = h
            .request("PATCH", url)
            .header("upload-offset", 0)
            .header("content-type", "application/offset+octet-stream")
            .body(Body::from_stream(rx))
            .unwrap();
        let app = h.app.clone();
        let response = tokio::spawn(async move { app.oneshot(request).await.unwrap() });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sender = tokio::spawn({
            let (data, stop, sent) = (data.to_vec(), stop.clone(), sent.clone());
            async move {
                for byte in data {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if tx.send(Ok(Bytes::from(vec![byte]))).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(every).await;
                }
                // Dropping the sender ends the body.
            }
        });
        Trickle {
            response,
            sender,
            stop,
            sent,
        }
    }
}

fn offset_of(response: &Response<Body>) -> usize {
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Twenty clients trickling their PATCH bodies a byte at a time (issue
/// #16: "20 PATCHes trickling 1 byte every 50 s do not take pool
/// connections", at 50 ms) hold no database connection: with a pool of
/// four, every one of them streams, the uploads answer HEAD and another
/// upload goes through meanwhile, no session sits idle in a transaction,
/// and each keeps its bytes when it ends.
#[sqlx::test(migrations = "../migrations")]
async fn trickling_patches_hold_no_database_connection(db: PgPool) {
    const CLIENTS: usize = 20;
    let small_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect_with((*db.connect_options()).clone())
        .await
        .unwrap();
    let config = TusConfig {
        quota: OrganisationQuota {
            max_bytes_in_flight: 1 << 30,
            max_concurrent_uploads: 100,
        },
        ..TusConfig::default()
    };
    let h = harness(small_pool, config).await;
    let data = common::media_bytes(4096);
    let mut urls = Vec::new();
    for _ in 0..CLIENTS {
        urls.push(h.create(data.len()).await);
    }
    let trickles: Vec<Trickle> = urls
        .iter()
        .map(|url| Trickle::start(&h, url, &data, Duration::from_millis(50)))
        .collect();

    // Every one of them gets to write, none waits for a connection.
    let uploads_dir = h._dir.path().join("uploads");
    let streaming = || {
        std::fs::read_dir(&uploads_dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().metadata().unwrap().len() >= 2)
            .count()
    };
    let mut waited = 0;
    while streaming() < CLIENTS {
        waited += 1;
        assert!(
            waited < 500,
            "only {} of {CLIENTS} trickling PATCHes got to write; the others wait for a \
             database connection",
            streaming()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle_in_transaction: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        idle_in_transaction, 0,
        "a trickling PATCH holds a transaction open"
    );
    for url in &urls {
        assert_eq!(h.head(url).await.status(), StatusCode::OK);
    }
    let other = h.create(data.len()).await;
    let response = h.patch(&other, 0, &data).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(trickles.iter().all(|t| !t.response.is_finished()));

    for trickle in &trickles {
        trickle
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    for (url, trickle) in urls.iter().zip(trickles) {
        trickle.sender.await.unwrap();
        let sent = trickle.sent.load(std::sync::atomic::Ordering::SeqCst);
        let response = trickle.response.await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(offset_of(&response), sent, "every byte sent is kept");
        assert_eq!(h.offset(url).await, sent as u64);
    }
}

/// A body slower than the floor is ended while the client is still
/// sending, with the bytes that arrived kept; the client resumes after
/// them and the upload completes intact.
#[sqlx::test(migrations = "../migrations")]
async fn a_patch_slower_than_the_floor_ends_keeping_its_bytes(db: PgPool) {
    // 64 bytes per 300 ms, against a client sending one byte per 20 ms.
    let config = TusConfig {
        min_transfer: TransferFloor {
            bytes: 64,
            window: Duration::from_millis(300),
        },
        ..TusConfig::default()
    };
    let h = harness(db, config).await;
    let data = common::media_bytes(1000);
    let url = h.create(data.len()).await;
    // The client would trickle 250 bytes (five seconds) if let.
    let trickle = Trickle::start(&h, &url, &data[..250], Duration::from_millis(20));
    let response = trickle.response.await.unwrap();
    let still_sending = trickle.sent.load(std::sync::atomic::Ordering::SeqCst) < 250;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let kept = offset_of(&response);
    assert!(
        still_sending && kept < 250,
        "the PATCH ran until the client stopped: {kept} bytes"
    );
    assert!(kept > 0, "the bytes that arrived are kept");
    assert_eq!(h.offset(&url).await, kept as u64);
    trickle.sender.await.unwrap();

    // The client resumes where the server says, at full speed.
    let response = h.patch(&url, kept, &data[kept..]).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&response), data.len());
    let (_, digest) = common::stored_sha256(h.store.as_ref(), &source_key(upload_id(&url))).await;
    assert_eq!(digest, common::sha256_hex(&data));
}

/// A PATCH whose process died leaves its lease behind: the upload answers
/// `upload_busy` (retryable) until the lease lapses, then takes the
/// client's PATCH; HEAD answers throughout.
#[sqlx::test(migrations = "../migrations")]
async fn a_dead_writers_lease_lapses(db: PgPool) {
    let h = harness(db, TusConfig::default()).await;
    let data = common::media_bytes(1000);
    let url = h.create(data.len()).await;
    let id = upload_id(&url);
    let lease = |until: &'static str| {
        let db = h.db.clone();
        async move {
            sqlx::query(&format!(
                "UPDATE uploads SET lease_id = gen_random_uuid(), leased_until = now() + {until}
                 WHERE id = $1"
            ))
            .bind(id)
            .execute(&db)
            .await
            .unwrap();
        }
    };
    lease("interval '1 hour'").await;
    let (status, code, _) = error_code(h.patch(&url, 0, &data).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "upload_busy")
    );
    assert_eq!(h.offset(&url).await, 0);
    lease("interval '-1 second'").await;
    let response = h.patch(&url, 0, &data).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&response), data.len());
    let held = h
        .count(
            "SELECT count(*) FROM uploads WHERE id = $1 AND lease_id IS NOT NULL",
            id,
        )
        .await;
    assert_eq!(held, 0, "recording the chunk gave the lease up");
}
