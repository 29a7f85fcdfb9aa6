//! Trick play and loudness as a player and a partner meet them: a real
//! source goes through the real worker (in process, on a per-test
//! database and local storage), whole and chunked, and then
//! - the master playlist, fetched through the `/media` origin with its
//!   token, lists one `EXT-X-I-FRAME-STREAM-INF` per video rung;
//! - every I-frame playlist parses (m3u8-rs), is I-frames-only with byte
//!   ranges, and every entry — its byte range fetched through the origin
//!   with the token (a `Range` request, 206), after its `EXT-X-MAP` init
//!   segment — decodes alone to exactly one picture, a keyframe (ffprobe);
//! - `GET /api/v1/assets/{id}` reports the audio's measured loudness and
//!   the gain it got.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lectern_assets::{self as intake, keys, NewAsset};
use lectern_pipelines::stage::ChunkingConfig;
use lectern_pipelines::worker::{Worker, WorkerConfig};
use lectern_storage::{FsStore, PutOptions, Store};
use lectern_testkit::World;
use lectern_web::Role;
use m3u8_rs::Playlist;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// A 12 s 854×480 lecture clip with a keyframe every 2 s and a tone:
/// the default profile plans three rungs (480p, 360p, 240p) for it.
fn source(dir: &Path) -> PathBuf {
    let path = dir.join("lecture.mp4");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=854x480:rate=25:duration=12",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=12",
        ])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"])
        .args(["-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

async fn get(w: &World, uri: &str, range: Option<(u64, u64)>) -> (StatusCode, Bytes) {
    let mut req = Request::builder().uri(uri);
    if let Some((offset, length)) = range {
        req = req.header("range", format!("bytes={offset}-{}", offset + length - 1));
    }
    let resp = w
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// `uri` (relative, with its token query) against the playlist at `base`.
fn resolve(base: &str, uri: &str) -> String {
    format!("{}{uri}", &base[..=base.rfind('/').unwrap()])
}

/// Encodes `clip` as an asset of a fresh organisation with one in-process
/// worker and returns the asset's JSON as its partner reads it.
async fn encode(
    w: &World,
    store: Arc<dyn Store>,
    clip: &Path,
    work: &Path,
    chunking: Option<ChunkingConfig>,
) -> serde_json::Value {
    let org = w.org("Trick play").await;
    w.user(Some(org), "partner@example.org", Role::Partner)
        .await;
    let token = w.login("partner@example.org").await;
    let id = Uuid::now_v7();
    let key = keys::source_key(id);
    store
        .put_file(&key, clip, PutOptions::default())
        .await
        .unwrap();
    intake::create(
        w.db(),
        &NewAsset {
            id,
            organisation_id: org,
            source_key: key,
            title: Some("trick play".into()),
            profile: "default".into(),
            priority: 0,
        },
    )
    .await
    .unwrap();
    let worker = Worker::new(
        w.db().clone(),
        store,
        WorkerConfig {
            name: format!("test-worker-{id}"),
            lease: Duration::from_secs(30),
            concurrency: 1,
            work_dir: work.to_path_buf(),
            poll_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
            chunking,
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    let path = format!("/api/v1/assets/{id}");
    let asset = loop {
        let (status, asset) = w.call("GET", &path, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        match asset["status"].as_str().unwrap() {
            "ready" => break asset,
            "failed" => panic!("the encode failed: {asset}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let _ = stop.send(());
    running.await.unwrap();
    asset
}

/// Every I-frame playlist of the master at `master_url`, checked entry by
/// entry through the origin; returns how many I-frame streams it lists.
async fn check_trick_play(w: &World, master_url: &str, dir: &Path) -> usize {
    let (status, master) = get(w, master_url, None).await;
    assert_eq!(status, StatusCode::OK);
    let master = match m3u8_rs::parse_playlist_res(&master).unwrap() {
        Playlist::MasterPlaylist(m) => m,
        Playlist::MediaPlaylist(_) => panic!("not a master playlist"),
    };
    let rungs: Vec<_> = master
        .variants
        .iter()
        .filter(|v| !v.is_i_frame && v.resolution.is_some())
        .collect();
    let iframe_streams: Vec<_> = master.variants.iter().filter(|v| v.is_i_frame).collect();
    assert_eq!(
        rungs.len(),
        iframe_streams.len(),
        "one I-frame stream per rung"
    );
    for (rung, stream) in rungs.iter().zip(&iframe_streams) {
        assert_eq!(rung.resolution, stream.resolution);
        assert!(stream.bandwidth > 0);
        let codecs = stream.codecs.as_deref().unwrap();
        assert!(
            codecs.starts_with("avc1.") && !codecs.contains("mp4a"),
            "{codecs}"
        );
    }
    let mut decoded = 0;
    for stream in &iframe_streams {
        let playlist_url = resolve(master_url, &stream.uri);
        let (status, text) = get(w, &playlist_url, None).await;
        assert_eq!(status, StatusCode::OK, "{playlist_url}");
        let playlist = m3u8_rs::parse_media_playlist_res(&text)
            .unwrap_or_else(|e| panic!("{playlist_url} does not parse: {e:?}"));
        assert!(playlist.i_frames_only, "{}", String::from_utf8_lossy(&text));
        assert!(playlist.version.unwrap() >= 4);
        assert!(playlist.end_list);
        assert!(!playlist.segments.is_empty());
        let mut init = None;
        for (n, entry) in playlist.segments.iter().enumerate() {
            if let Some(map) = &entry.map {
                let (status, bytes) = get(w, &resolve(&playlist_url, &map.uri), None).await;
                assert_eq!(status, StatusCode::OK);
                init = Some(bytes);
            }
            let range = entry.byte_range.as_ref().expect("a byte range");
            let offset = range.offset.expect("an explicit offset");
            let (status, bytes) = get(
                w,
                &resolve(&playlist_url, &entry.uri),
                Some((offset, range.length)),
            )
            .await;
            assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{}", entry.uri);
            assert_eq!(bytes.len() as u64, range.length);
            let file = dir.join(format!("iframe-{decoded}.mp4"));
            let mut alone = init
                .clone()
                .expect("an EXT-X-MAP before the first entry")
                .to_vec();
            alone.extend_from_slice(&bytes);
            std::fs::write(&file, alone).unwrap();
            assert_eq!(
                pictures(&file),
                ["I"],
                "entry {n} of {playlist_url} ({} bytes at {offset} of {})",
                range.length,
                entry.uri
            );
            decoded += 1;
        }
    }
    assert!(
        decoded >= iframe_streams.len() * 3,
        "{decoded} keyframes in 12 s"
    );
    iframe_streams.len()
}

/// The picture types ffprobe decodes from `file`.
fn pictures(file: &Path) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args(["-v", "quiet", "-select_streams", "v:0", "-show_frames"])
        .args(["-show_entries", "frame=pict_type,key_frame", "-of", "json"])
        .arg(file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["key_frame"], 1, "{f}");
            f["pict_type"].as_str().unwrap().to_string()
        })
        .collect()
}

async fn trick_play_and_loudness(
    db: PgPool,
    chunking: Option<ChunkingConfig>,
) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path().join("storage")).await.unwrap());
    let mut w = World::new(db).await;
    w.rebuild(Some(store.clone()), w.settings());
    let clip = source(dir.path());
    let asset = encode(&w, store, &clip, &dir.path().join("work"), chunking).await;

    let master_url = asset["master_url"].as_str().unwrap();
    assert_eq!(
        check_trick_play(&w, master_url, dir.path()).await,
        3,
        "480p, 360p and 240p"
    );

    // FFmpeg's sine source is a mono tone at 1/8 of full scale: about
    // −21 LUFS once played on both channels, so the rendition is raised.
    let loudness = &asset["loudness"];
    assert_eq!(loudness["outcome"], "normalised", "{asset}");
    assert_eq!(loudness["target_lufs"], -16.0);
    assert_eq!(loudness["true_peak_max_dbtp"], -1.0);
    let measured = loudness["integrated_lufs"].as_f64().unwrap();
    let gain = loudness["gain_db"].as_f64().unwrap();
    assert!((measured + gain + 16.0).abs() < 0.01, "{loudness}");
    assert!(gain > 0.0, "{loudness}");
    assert!(
        loudness["true_peak_dbtp"].as_f64().unwrap() < -1.0,
        "{loudness}"
    );
    assert!(
        loudness["range_lu"].as_f64().unwrap() < 1.0,
        "a steady tone: {loudness}"
    );
    asset
}

#[sqlx::test(migrations = "../migrations")]
async fn a_whole_encode_has_trick_play_and_normalised_audio(db: PgPool) {
    trick_play_and_loudness(db, None).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_chunked_encode_has_trick_play_and_normalised_audio(db: PgPool) {
    // 12 s in 4 s chunks: three video parts and the audio part, stitched.
    let chunking = ChunkingConfig {
        threshold_s: 8.0,
        chunk_s: 4.0,
    };
    let asset = trick_play_and_loudness(db.clone(), Some(chunking)).await;
    let parts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE asset_id = $1 AND kind = 'encode_part'",
    )
    .bind(Uuid::parse_str(asset["id"].as_str().unwrap()).unwrap())
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(parts >= 3, "the source was split: {parts} parts");
}
