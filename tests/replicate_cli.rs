//! `lectern admin replicate` as an operator runs it: the configured store
//! (fs, or S3 on Garage) copied into a directory or a second bucket; a
//! second run copies nothing; nothing is deleted from the replica without
//! `--prune-after-days`. (The copy rules themselves are tested in
//! `storage/tests/replicate.rs`.)

mod common;

use std::process::Output;

use bytes::Bytes;
use lectern_storage::{FsStore, PutOptions, S3Config, S3Store, Store};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set (run `make test`, or source .lectern/env)"))
}

fn replicate(vars: &[(&str, String)], args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::lectern(dir.path());
    cmd.args(["admin", "replicate"]).args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn summary(out: &Output) -> String {
    assert!(
        out.status.success(),
        "replicate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

async fn seed(store: &dyn Store, prefix: &str) {
    for (name, body) in [("a/master.m3u8", "#EXTM3U\n"), ("a/seg-1.m4s", "segment")] {
        store
            .put_bytes(
                &format!("{prefix}{name}"),
                Bytes::from_static(body.as_bytes()),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn fs_storage_into_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let replica = dir.path().join("replica");
    let source = FsStore::open(root.clone()).await.unwrap();
    seed(&source, "").await;
    let vars = [
        ("LECTERN_STORAGE", "fs".to_string()),
        ("LECTERN_FS_ROOT", root.display().to_string()),
    ];
    let to = ["--to-dir", replica.to_str().unwrap()];

    let first = summary(&replicate(&vars, &to));
    assert!(
        first.contains("2 objects (15 bytes) in the source: 2 copied"),
        "{first}"
    );
    let copy = FsStore::open(replica.clone()).await.unwrap();
    let got = copy
        .get("a/seg-1.m4s", None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, Bytes::from_static(b"segment"));

    source.delete("a/seg-1.m4s").await.unwrap();
    let second = summary(&replicate(&vars, &to));
    assert!(
        second.contains("0 copied (0 bytes), 1 already in the replica; 1 gone from the source kept, 0 pruned; 0 failed"),
        "{second}"
    );
    assert!(
        copy.head("a/seg-1.m4s").await.is_ok(),
        "never deleted without --prune-after-days"
    );

    let neither = replicate(&vars, &[]);
    assert_eq!(neither.status.code(), Some(2), "a replica must be named");
}

#[tokio::test]
async fn s3_bucket_into_a_second_bucket() {
    let prefix = format!("replicate-cli/{}/", uuid::Uuid::new_v4());
    let s3 = |bucket: String| S3Config {
        endpoint: Some(env("LECTERN_S3_ENDPOINT")),
        region: env("LECTERN_S3_REGION"),
        bucket,
        access_key_id: env("LECTERN_S3_ACCESS_KEY_ID"),
        secret_access_key: env("LECTERN_S3_SECRET_ACCESS_KEY"),
        path_style: env("LECTERN_S3_PATH_STYLE") == "true",
    };
    let source = S3Store::new(s3(env("LECTERN_S3_BUCKET"))).unwrap();
    let replica_bucket = env("LECTERN_TEST_S3_REPLICA_BUCKET");
    let replica = S3Store::new(s3(replica_bucket.clone())).unwrap();
    seed(&source, &prefix).await;
    let vars: Vec<(&str, String)> = [
        "LECTERN_S3_ENDPOINT",
        "LECTERN_S3_REGION",
        "LECTERN_S3_BUCKET",
        "LECTERN_S3_ACCESS_KEY_ID",
        "LECTERN_S3_SECRET_ACCESS_KEY",
        "LECTERN_S3_PATH_STYLE",
    ]
    .into_iter()
    .map(|k| (k, env(k)))
    .chain([("LECTERN_STORAGE", "s3".to_string())])
    .collect();
    let args = ["--to-bucket", &replica_bucket, "--prefix", &prefix];

    let first = summary(&replicate(&vars, &args));
    assert!(
        first.contains("2 objects (15 bytes) in the source: 2 copied"),
        "{first}"
    );
    let got = replica
        .get(&format!("{prefix}a/master.m3u8"), None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, Bytes::from_static(b"#EXTM3U\n"));
    let second = summary(&replicate(&vars, &args));
    assert!(
        second.contains("0 copied (0 bytes), 2 already in the replica"),
        "{second}"
    );

    let same = replicate(&vars, &["--to-bucket", &env("LECTERN_S3_BUCKET")]);
    assert!(!same.status.success(), "the source bucket is no replica");

    for store in [&source, &replica] {
        for meta in store.list(&prefix).await.unwrap() {
            store.delete(&meta.key).await.unwrap();
        }
    }
}
