//! Incremental replication (`lectern_storage::replicate`) between real
//! stores: fs → fs, S3 → S3 across two Garage buckets (`LECTERN_S3_BUCKET`
//! and `LECTERN_TEST_S3_REPLICA_BUCKET`, both made by `infra/dev/services up`),
//! and S3 → fs, where ETags are computed differently on each side and a
//! second run must still copy nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use lectern_storage::replicate::{replicate, ReplicateOptions, ReplicateReport, STATE_KEY};
use lectern_storage::{FsStore, PutOptions, S3Config, S3Store, StorageError, Store};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run `infra/dev/services up` (it creates the replica bucket \
             too), then source `.lectern/env` and run the tests again"
        )
    })
}

fn s3(bucket: String) -> Arc<dyn Store> {
    Arc::new(
        S3Store::new(S3Config {
            endpoint: Some(env("LECTERN_S3_ENDPOINT")),
            region: env("LECTERN_S3_REGION"),
            bucket,
            access_key_id: env("LECTERN_S3_ACCESS_KEY_ID"),
            secret_access_key: env("LECTERN_S3_SECRET_ACCESS_KEY"),
            path_style: env("LECTERN_S3_PATH_STYLE") == "true",
        })
        .expect("S3 config"),
    )
}

async fn fs(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
    Arc::new(
        FsStore::open(dir.path().join(name))
            .await
            .expect("fs store"),
    )
}

fn options(prefix: &str) -> ReplicateOptions {
    ReplicateOptions {
        prefix: prefix.to_string(),
        concurrency: 4,
        prune_after: None,
        now: Utc::now(),
    }
}

async fn put(store: &dyn Store, key: &str, bytes: Vec<u8>, content_type: &str) {
    store
        .put_bytes(
            key,
            Bytes::from(bytes),
            PutOptions {
                content_type: Some(content_type.into()),
                cache_control: Some("public, max-age=31536000, immutable".into()),
            },
        )
        .await
        .expect("put");
}

async fn read(store: &dyn Store, key: &str) -> Bytes {
    store
        .get(key, None)
        .await
        .expect("get")
        .bytes()
        .await
        .unwrap()
}

fn ok(report: ReplicateReport) -> ReplicateReport {
    assert!(report.failed.is_empty(), "failures: {:?}", report.failed);
    report
}

/// The whole life of a replica, on any pair of stores.
async fn replica_follows_source(source: Arc<dyn Store>, target: Arc<dyn Store>) {
    let prefix = format!("replicate-test/{}/", uuid::Uuid::new_v4());
    let key = |name: &str| format!("{prefix}{name}");
    // 9 MiB: a multipart upload on S3, whose ETag is not an MD5.
    let big: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    put(
        source.as_ref(),
        &key("v/master.m3u8"),
        b"#EXTM3U\n".to_vec(),
        "application/vnd.apple.mpegurl",
    )
    .await;
    put(
        source.as_ref(),
        &key("v/seg-1.m4s"),
        vec![7u8; 1000],
        "video/iso.segment",
    )
    .await;
    put(
        source.as_ref(),
        &key("v/source.mp4"),
        big.clone(),
        "video/mp4",
    )
    .await;
    put(
        source.as_ref(),
        &key("_replica/not-media"),
        vec![1],
        "text/plain",
    )
    .await;

    let first = ok(
        replicate(source.as_ref(), target.as_ref(), &options(&prefix))
            .await
            .unwrap(),
    );
    assert_eq!(
        (first.source_objects, first.copied, first.up_to_date),
        (4, 4, 0),
        "{first:?}"
    );
    assert_eq!(first.copied_bytes, 8 + 1000 + big.len() as u64 + 1);
    assert_eq!(
        read(target.as_ref(), &key("v/source.mp4")).await,
        Bytes::from(big.clone())
    );
    let head = target.head(&key("v/master.m3u8")).await.unwrap();
    assert_eq!(
        head.content_type.as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(
        head.cache_control.as_deref(),
        Some("public, max-age=31536000, immutable")
    );

    // Nothing changed: nothing is copied, whatever the backends' ETags.
    let again = ok(
        replicate(source.as_ref(), target.as_ref(), &options(&prefix))
            .await
            .unwrap(),
    );
    assert_eq!((again.copied, again.up_to_date), (0, 4), "{again:?}");

    // A run cut short (one object never reached the target) and a source
    // object rewritten: the next run copies exactly those two.
    target.delete(&key("v/seg-1.m4s")).await.unwrap();
    put(
        source.as_ref(),
        &key("v/master.m3u8"),
        b"#EXTM3U\n#EXT-X-VERSION:7\n".to_vec(),
        "application/vnd.apple.mpegurl",
    )
    .await;
    let resumed = ok(
        replicate(source.as_ref(), target.as_ref(), &options(&prefix))
            .await
            .unwrap(),
    );
    assert_eq!((resumed.copied, resumed.up_to_date), (2, 2), "{resumed:?}");
    assert_eq!(
        read(target.as_ref(), &key("v/master.m3u8")).await,
        Bytes::from_static(b"#EXTM3U\n#EXT-X-VERSION:7\n")
    );

    // Deleted from the source: kept in the replica, without a retention
    // flag and within the retention period…
    source.delete(&key("v/seg-1.m4s")).await.unwrap();
    let kept = ok(
        replicate(source.as_ref(), target.as_ref(), &options(&prefix))
            .await
            .unwrap(),
    );
    assert_eq!(
        (kept.kept_missing_from_source, kept.pruned),
        (1, 0),
        "{kept:?}"
    );
    let mut within = options(&prefix);
    within.prune_after = Some(Duration::from_secs(30 * 86_400));
    within.now = Utc::now() + chrono::Duration::days(29);
    let kept = ok(replicate(source.as_ref(), target.as_ref(), &within)
        .await
        .unwrap());
    assert_eq!(
        (kept.kept_missing_from_source, kept.pruned),
        (1, 0),
        "{kept:?}"
    );
    assert_eq!(read(target.as_ref(), &key("v/seg-1.m4s")).await.len(), 1000);
    // …and removed once it has been gone from the source that long.
    let mut past = within.clone();
    past.now = Utc::now() + chrono::Duration::days(31);
    let pruned = ok(replicate(source.as_ref(), target.as_ref(), &past)
        .await
        .unwrap());
    assert_eq!(
        (pruned.kept_missing_from_source, pruned.pruned),
        (0, 1),
        "{pruned:?}"
    );
    assert!(matches!(
        target.head(&key("v/seg-1.m4s")).await,
        Err(StorageError::NotFound { .. })
    ));

    for store in [&source, &target] {
        for meta in store.list(&prefix).await.unwrap() {
            store.delete(&meta.key).await.unwrap();
        }
    }
    target.delete(STATE_KEY).await.unwrap();
}

#[tokio::test]
async fn fs_to_fs() {
    let dir = tempfile::tempdir().unwrap();
    replica_follows_source(fs(&dir, "source").await, fs(&dir, "replica").await).await;
}

#[tokio::test]
async fn s3_bucket_to_another_bucket() {
    replica_follows_source(
        s3(env("LECTERN_S3_BUCKET")),
        s3(env("LECTERN_TEST_S3_REPLICA_BUCKET")),
    )
    .await;
}

#[tokio::test]
async fn s3_to_fs() {
    let dir = tempfile::tempdir().unwrap();
    replica_follows_source(s3(env("LECTERN_S3_BUCKET")), fs(&dir, "replica").await).await;
}
