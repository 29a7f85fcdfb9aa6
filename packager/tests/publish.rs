//! Publishing a package directory to the filesystem store.

use lectern_storage::{FsStore, Store};

#[tokio::test]
async fn publish_uploads_media_before_playlists_with_types_and_cache_policy() {
    let local = tempfile::tempdir().unwrap();
    let root = local.path();
    std::fs::create_dir_all(root.join("v/360p")).unwrap();
    for (path, body) in [
        ("v/360p/init.mp4", &b"init"[..]),
        ("v/360p/seg_00000.m4s", b"segment"),
        ("v/360p/index.m3u8", b"#EXTM3U\n"),
        ("master.m3u8", b"#EXTM3U\n"),
        ("manifest.json", b"{}"),
        ("poster.jpg", b"\xff\xd8"),
        ("storyboard.vtt", b"WEBVTT\n"),
    ] {
        std::fs::write(root.join(path), body).unwrap();
    }
    let store_dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(store_dir.path()).await.unwrap();

    let keys = lectern_packager::publish(root, &store, "/assets/abc/")
        .await
        .unwrap();
    assert_eq!(keys.len(), 7);
    assert!(
        keys.iter().all(|k| k.starts_with("assets/abc/")),
        "{keys:?}"
    );
    assert_eq!(
        keys[4], "assets/abc/v/360p/index.m3u8",
        "media playlists after media: {keys:?}"
    );
    assert_eq!(keys[5], "assets/abc/master.m3u8");
    assert_eq!(keys[6], "assets/abc/manifest.json", "manifest last");

    let segment = store.head("assets/abc/v/360p/seg_00000.m4s").await.unwrap();
    assert_eq!(segment.size, 7);
    assert_eq!(segment.content_type.as_deref(), Some("video/iso.segment"));
    assert_eq!(
        segment.cache_control.as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    let master = store.head("assets/abc/master.m3u8").await.unwrap();
    assert_eq!(
        master.content_type.as_deref(),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.cache_control.as_deref(), Some("public, max-age=300"));
    let vtt = store.head("assets/abc/storyboard.vtt").await.unwrap();
    assert_eq!(vtt.content_type.as_deref(), Some("text/vtt"));
}
