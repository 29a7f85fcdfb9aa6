//! The storage contract against a real S3 server (Garage in development and
//! CI). The connection comes from the `LECTERN_S3_*` variables that
//! `infra/dev/services up` writes to `.lectern/env`; without them these tests
//! fail rather than skip, so a green run always means S3 was exercised.

mod contract;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use lectern_storage::{S3Config, S3Store, Store};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set. The S3 contract tests need a real S3 server: run \
             `infra/dev/services up`, then source `.lectern/env` \
             (`set -a; . .lectern/env; set +a`) and run the tests again."
        )
    })
}

fn config() -> S3Config {
    let path_style = match env("LECTERN_S3_PATH_STYLE").as_str() {
        "true" => true,
        "false" => false,
        other => panic!("LECTERN_S3_PATH_STYLE must be `true` or `false`, not {other:?}"),
    };
    S3Config {
        endpoint: Some(env("LECTERN_S3_ENDPOINT")),
        region: env("LECTERN_S3_REGION"),
        bucket: env("LECTERN_S3_BUCKET"),
        access_key_id: env("LECTERN_S3_ACCESS_KEY_ID"),
        secret_access_key: env("LECTERN_S3_SECRET_ACCESS_KEY"),
        path_style,
    }
}

fn store() -> Arc<dyn Store> {
    let config = config();
    eprintln!(
        "S3 contract running against {} (bucket {}, region {}, path style {})",
        config.endpoint.as_deref().unwrap_or_default(),
        config.bucket,
        config.region,
        config.path_style,
    );
    Arc::new(S3Store::new(config).expect("S3 config"))
}

/// Runs one contract under a fresh prefix and removes whatever it left, even
/// when it failed, so the shared bucket does not fill up with test debris.
async fn run<F, Fut>(contract: F)
where
    F: FnOnce(Arc<dyn Store>, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = store();
    let prefix = format!("lectern-storage-test/{}/", uuid::Uuid::new_v4());
    let outcome = AssertUnwindSafe(contract(store.clone(), prefix.clone()))
        .catch_unwind()
        .await;
    contract::remove_all(store.as_ref(), &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn large_object_streams_byte_exact() {
    run(|s, p| async move { contract::large_object_streams_byte_exact(s, &p).await }).await;
}

#[tokio::test]
async fn ranged_reads() {
    run(|s, p| async move { contract::ranged_reads(s, &p).await }).await;
}

#[tokio::test]
async fn metadata_round_trips() {
    run(|s, p| async move { contract::metadata_round_trips(s, &p).await }).await;
}

#[tokio::test]
async fn overwrite_replaces_object() {
    run(|s, p| async move { contract::overwrite_replaces_object(s, &p).await }).await;
}

#[tokio::test]
async fn delete_then_not_found() {
    run(|s, p| async move { contract::delete_then_not_found(s, &p).await }).await;
}

#[tokio::test]
async fn list_pages_past_1000_keys() {
    run(|s, p| async move { contract::list_pages_past_1000_keys(s, &p).await }).await;
}

#[tokio::test]
async fn invalid_keys_rejected() {
    run(|s, p| async move { contract::invalid_keys_rejected(s, &p).await }).await;
}

#[tokio::test]
async fn concurrent_writers_leave_one_whole_object() {
    run(|s, p| async move { contract::concurrent_writers_leave_one_whole_object(s, &p).await })
        .await;
}

#[tokio::test]
async fn presigned_get_is_fetchable() {
    run(|s, p| async move { contract::presigned_get_is_fetchable(s, &p).await }).await;
}

#[tokio::test]
async fn failed_upload_stores_nothing() {
    run(|s, p| async move {
        contract::failed_upload_stores_nothing(s, &p).await;
        assert_no_unfinished_multipart_uploads(&p).await;
    })
    .await;
}

/// Parts of an unfinished multipart upload are invisible to listings but
/// stored (and billed) until aborted.
async fn assert_no_unfinished_multipart_uploads(prefix: &str) {
    let config = config();
    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(config.region))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                config.access_key_id,
                config.secret_access_key,
                None,
                None,
                "test",
            ))
            .endpoint_url(config.endpoint.expect("endpoint"))
            .force_path_style(config.path_style)
            .build(),
    );
    let uploads = client
        .list_multipart_uploads()
        .bucket(&config.bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("ListMultipartUploads");
    assert!(
        uploads.uploads().is_empty(),
        "unfinished multipart uploads left: {:?}",
        uploads.uploads()
    );
}

#[tokio::test]
async fn resumable_upload_assembles_appends() {
    run(|s, p| async move {
        contract::resumable_upload_assembles_appends(s, &p).await;
        assert_no_unfinished_multipart_uploads(&p).await;
    })
    .await;
}

#[tokio::test]
async fn resumable_upload_keeps_bytes_of_an_interrupted_append() {
    run(|s, p| async move {
        contract::resumable_upload_keeps_bytes_of_an_interrupted_append(s, &p).await;
        assert_no_unfinished_multipart_uploads(&p).await;
    })
    .await;
}

#[tokio::test]
async fn resumable_upload_rejected_append_leaves_no_trace() {
    run(|s, p| async move {
        contract::resumable_upload_rejected_append_leaves_no_trace(s, &p).await;
        assert_no_unfinished_multipart_uploads(&p).await;
    })
    .await;
}

#[tokio::test]
async fn resumable_upload_completion_is_idempotent() {
    run(|s, p| async move {
        contract::resumable_upload_completion_is_idempotent(s, &p).await;
        assert_no_unfinished_multipart_uploads(&p).await;
    })
    .await;
}

#[tokio::test]
async fn resumable_upload_abort_removes_everything() {
    run(|s, p| async move {
        contract::resumable_upload_abort_removes_everything(s, &p).await;
        assert_no_unfinished_multipart_uploads(&p).await;
    })
    .await;
}

/// S3-only: a bucket that does not exist fails the readiness probe with a
/// message naming the bucket, not a bare status code.
#[tokio::test]
async fn check_names_a_missing_bucket() {
    let bucket = format!("lectern-missing-{}", uuid::Uuid::new_v4().simple());
    let store = S3Store::new(S3Config {
        bucket: bucket.clone(),
        ..config()
    })
    .expect("config");
    let err = store
        .check()
        .await
        .expect_err("missing bucket must fail the check");
    assert!(err.to_string().contains(&bucket), "{err}");
}
