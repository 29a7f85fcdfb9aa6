//! The storage contract against the fs backend, each test in its own
//! temporary root.

mod contract;

use std::path::Path;
use std::sync::Arc;

use lectern_storage::{FsStore, Store};

/// The store lives at `<outer>/root`, so tests can prove nothing leaks into `<outer>`.
async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let outer = tempfile::tempdir().expect("tempdir");
    let store = FsStore::open(outer.path().join("root"))
        .await
        .expect("open fs store");
    (outer, Arc::new(store))
}

const PREFIX: &str = "contract/";

/// Every file anywhere below `dir`, for leak checks.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn large_object_streams_byte_exact() {
    let (_dir, store) = store().await;
    contract::large_object_streams_byte_exact(store, PREFIX).await;
}

#[tokio::test]
async fn ranged_reads() {
    let (_dir, store) = store().await;
    contract::ranged_reads(store, PREFIX).await;
}

#[tokio::test]
async fn metadata_round_trips() {
    let (_dir, store) = store().await;
    contract::metadata_round_trips(store, PREFIX).await;
}

#[tokio::test]
async fn overwrite_replaces_object() {
    let (_dir, store) = store().await;
    contract::overwrite_replaces_object(store, PREFIX).await;
}

#[tokio::test]
async fn delete_then_not_found() {
    let (dir, store) = store().await;
    contract::delete_then_not_found(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root/objects")).is_empty(),
        "deleting leaves no files behind"
    );
}

#[tokio::test]
async fn list_pages_past_1000_keys() {
    let (_dir, store) = store().await;
    contract::list_pages_past_1000_keys(store, PREFIX).await;
}

#[tokio::test]
async fn invalid_keys_rejected() {
    let (dir, store) = store().await;
    contract::invalid_keys_rejected(store, PREFIX).await;
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read outer dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(outside, ["root"], "nothing written beside the root");
    assert!(
        files_below(dir.path()).is_empty(),
        "nothing written anywhere"
    );
    assert!(!Path::new("/tmp/lectern-escape.txt").exists());
}

#[tokio::test]
async fn concurrent_writers_leave_one_whole_object() {
    let (dir, store) = store().await;
    contract::concurrent_writers_leave_one_whole_object(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root/tmp")).is_empty(),
        "no temp files left behind by the race"
    );
}

#[tokio::test]
async fn presigned_get_is_fetchable() {
    let (_dir, store) = store().await;
    contract::presigned_get_is_fetchable(store, PREFIX).await;
}

#[tokio::test]
async fn failed_upload_stores_nothing() {
    let (dir, store) = store().await;
    contract::failed_upload_stores_nothing(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root")).is_empty(),
        "no object or temp file left behind"
    );
}

#[tokio::test]
async fn resumable_upload_assembles_appends() {
    let (dir, store) = store().await;
    contract::resumable_upload_assembles_appends(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root/uploads")).is_empty(),
        "no append file left behind"
    );
}

#[tokio::test]
async fn resumable_upload_keeps_bytes_of_an_interrupted_append() {
    let (dir, store) = store().await;
    contract::resumable_upload_keeps_bytes_of_an_interrupted_append(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root/uploads")).is_empty(),
        "no append file left behind"
    );
}

#[tokio::test]
async fn resumable_upload_rejected_append_leaves_no_trace() {
    let (dir, store) = store().await;
    contract::resumable_upload_rejected_append_leaves_no_trace(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root/uploads")).is_empty(),
        "no append file left behind"
    );
}

#[tokio::test]
async fn resumable_upload_completion_is_idempotent() {
    let (dir, store) = store().await;
    contract::resumable_upload_completion_is_idempotent(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root/uploads")).is_empty(),
        "no append file left behind"
    );
}

#[tokio::test]
async fn resumable_upload_abort_removes_everything() {
    let (dir, store) = store().await;
    contract::resumable_upload_abort_removes_everything(store, PREFIX).await;
    assert!(
        files_below(&dir.path().join("root")).is_empty(),
        "no object or append file left behind"
    );
}

/// fs-only: a symlink planted inside the root must not let reads or writes
/// reach outside it.
#[tokio::test]
async fn symlinks_out_of_the_root_are_not_followed() {
    let (dir, store) = store().await;
    let secret_dir = dir.path().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("passwd"), b"secret").unwrap();
    std::os::unix::fs::symlink(&secret_dir, dir.path().join("root/objects/link")).unwrap();

    let read = store.get("link/passwd", None).await;
    assert!(read.is_err(), "read through symlink: {read:?}");
    let write = store
        .put_bytes(
            "link/planted",
            bytes::Bytes::from_static(b"x"),
            Default::default(),
        )
        .await;
    assert!(write.is_err(), "write through symlink: {write:?}");
    assert!(!secret_dir.join("planted").exists());
    store.delete("link/passwd").await.ok();
    assert!(secret_dir.join("passwd").exists(), "delete through symlink");
    assert!(
        store.list("").await.unwrap().is_empty(),
        "listing does not follow the link"
    );
}

/// fs-only: a key cannot be both an object and a prefix on disk; the error says so.
#[tokio::test]
async fn object_and_prefix_conflict_is_explained() {
    let (_dir, store) = store().await;
    let put = |key: &'static str| {
        let store = store.clone();
        async move {
            store
                .put_bytes(key, bytes::Bytes::from_static(b"x"), Default::default())
                .await
        }
    };
    put("a").await.unwrap();
    let err = put("a/b").await.unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
    put("c/d").await.unwrap();
    let err = put("c").await.unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
    // Once `c/d` is gone its directory is pruned, and `c` may be an object.
    store.delete("c/d").await.unwrap();
    put("c").await.unwrap();
}
