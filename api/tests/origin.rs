//! The media origin through the router, on both storage backends (local
//! disk and Garage S3 from `LECTERN_S3_*`) and a real PostgreSQL per test:
//! ranges, validators, cache policy per object type, traversal, tokens
//! (forged, expired, other asset, revoked session), playlist rewriting.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use lectern_delivery::cache::MediaCache;
use lectern_delivery::{Playback, DEFAULT_TOKEN_TTL};
use lectern_secrets::PlaybackKey;
use lectern_storage::{FsStore, PutOptions, S3Config, S3Store, Store};
use lectern_testkit::World;
use lectern_web::Role;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// What the packager and the progressive publisher store (see
/// `packager::put_options` and `GROWING_PLAYLIST_CACHE`).
fn opts(content_type: &str, cache_control: &str) -> PutOptions {
    PutOptions {
        content_type: Some(content_type.into()),
        cache_control: Some(cache_control.into()),
    }
}

const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"aac\"\n\
360p/index.m3u8\n";

const VOD: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000,\nseg_00000.m4s\n#EXTINF:2.500,\nseg_00001.m4s\n#EXT-X-ENDLIST\n";

const GROWING: &str =
    "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:EVENT\n\
#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000,\nseg_00000.m4s\n";

struct Media {
    asset: Uuid,
    prefix: String,
    segment: Vec<u8>,
}

/// A published ladder as the pipeline leaves it, plus the source object.
async fn publish(store: &dyn Store, asset: Uuid) -> Media {
    let prefix = format!("assets/{asset}/out/attempt-1/");
    let segment: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let put = |key: String, bytes: Vec<u8>, o: PutOptions| async move {
        store.put_bytes(&key, Bytes::from(bytes), o).await.unwrap();
    };
    let seg = || opts("video/iso.segment", IMMUTABLE);
    put(
        format!("{prefix}360p/init.mp4"),
        vec![1; 800],
        opts("video/mp4", IMMUTABLE),
    )
    .await;
    put(
        format!("{prefix}360p/seg_00000.m4s"),
        segment.clone(),
        seg(),
    )
    .await;
    put(format!("{prefix}360p/seg_00001.m4s"), vec![2; 5000], seg()).await;
    put(
        format!("{prefix}audio/init.mp4"),
        vec![3; 600],
        opts("video/mp4", IMMUTABLE),
    )
    .await;
    put(format!("{prefix}audio/seg_00000.m4s"), vec![4; 3000], seg()).await;
    let playlist = || opts("application/vnd.apple.mpegurl", "public, max-age=300");
    put(format!("{prefix}360p/index.m3u8"), VOD.into(), playlist()).await;
    put(
        format!("{prefix}audio/index.m3u8"),
        GROWING.into(),
        opts("application/vnd.apple.mpegurl", "public, max-age=1"),
    )
    .await;
    put(format!("{prefix}master.m3u8"), MASTER.into(), playlist()).await;
    put(
        format!("{prefix}poster.jpg"),
        vec![0xff, 0xd8, 0xff, 0xe0],
        opts("image/jpeg", IMMUTABLE),
    )
    .await;
    put(
        format!("assets/{asset}/source"),
        b"the partner's original upload".to_vec(),
        PutOptions::default(),
    )
    .await;
    // A chunked encode's intermediate, beside the ladder under `out/`.
    put(
        lectern_assets::keys::chunk_key(&prefix, 0),
        b"a chunk of the partner's original upload".to_vec(),
        PutOptions::default(),
    )
    .await;
    Media {
        asset,
        prefix,
        segment,
    }
}

struct Origin {
    app: axum::Router,
    playback: Arc<Playback>,
}

impl Origin {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    async fn get(&self, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
        self.call("GET", uri, &[]).await
    }
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

fn code(body: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    v["error"]["code"].as_str().unwrap().to_string()
}

fn origin(w: &World, store: Arc<dyn Store>, playback: Playback) -> Origin {
    let playback = Arc::new(playback);
    let state = lectern_api::AppState::new(
        w.db().clone(),
        store,
        lectern_api::Settings {
            playback: playback.clone(),
            ..w.settings()
        },
    );
    Origin {
        app: lectern_api::router(state),
        playback,
    }
}

fn s3_store() -> Arc<dyn Store> {
    let env = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run `infra/dev/services up` and source .lectern/env")
        })
    };
    Arc::new(
        S3Store::new(S3Config {
            endpoint: Some(env("LECTERN_S3_ENDPOINT")),
            region: env("LECTERN_S3_REGION"),
            bucket: env("LECTERN_S3_BUCKET"),
            access_key_id: env("LECTERN_S3_ACCESS_KEY_ID"),
            secret_access_key: env("LECTERN_S3_SECRET_ACCESS_KEY"),
            path_style: env("LECTERN_S3_PATH_STYLE") == "true",
        })
        .unwrap(),
    )
}

async fn remove_asset(store: &dyn Store, asset: Uuid) {
    for o in store.list(&format!("assets/{asset}/")).await.unwrap() {
        store.delete(&o.key).await.unwrap();
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn serves_media_from_local_disk(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    suite(db, store).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn serves_media_from_s3(db: PgPool) {
    let store = s3_store();
    let asset = Uuid::new_v4();
    // In its own task so the bucket is cleaned up even when it fails.
    let outcome = tokio::spawn(suite_for(db, store.clone(), asset)).await;
    remove_asset(store.as_ref(), asset).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn suite(db: PgPool, store: Arc<dyn Store>) {
    suite_for(db, store, Uuid::new_v4()).await;
}

async fn suite_for(db: PgPool, store: Arc<dyn Store>, asset: Uuid) {
    let w = World::new(db).await;
    let media = publish(store.as_ref(), asset).await;
    // Once reading storage on every request, once with hot objects served
    // from memory (the default): the answers must be the same.
    // The token checks run once, with the cache (the path that could
    // skip them): they create users, which exist only once.
    for cache in [MediaCache::disabled(), MediaCache::default()] {
        let cached = cache.enabled();
        let o = origin(
            &w,
            store.clone(),
            Playback::generate().with_media_cache(cache),
        );
        objects_ranges_and_validators(&o, &media).await;
        cache_policy_and_playlist_rewrite(&o, &media).await;
        traversal_and_sources(&o, &media).await;
        if cached {
            tokens(&w, &o, &media, store.clone()).await;
        }
    }
}

/// `n` concurrent GETs of `uri`.
async fn crowd(o: &Origin, uri: &str, n: usize) -> Vec<(StatusCode, Bytes)> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (app, uri) = (o.app.clone(), uri.to_string());
        tasks.spawn(async move {
            let req = Request::get(uri).body(Body::empty()).unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        });
    }
    tasks.join_all().await
}

/// Hot objects come from memory, but only after the token check, never
/// playlists, within the byte bound, one storage read for a crowd of
/// misses, and not for longer than the revalidation bound once deleted.
#[sqlx::test(migrations = "../migrations")]
async fn hot_segments_are_served_from_memory_after_the_token_check(db: PgPool) {
    let w = World::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let m = publish(store.as_ref(), Uuid::new_v4()).await;
    let cache = MediaCache::new(16 << 20, Duration::from_millis(300));
    let o = origin(
        &w,
        store.clone(),
        Playback::generate().with_media_cache(cache),
    );
    let stats = || o.playback.media_cache.stats();
    let token = o.playback.token(m.asset, None).unwrap();
    let segment = format!("/media/{}360p/seg_00000.m4s", m.prefix);
    let url = format!("{segment}?token={token}");

    let (status, _, body) = o.get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), m.segment.as_slice());
    assert_eq!((stats().fills, stats().hits, stats().entries), (1, 0, 1));
    let (status, headers, body) = o.get(&url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), m.segment.as_slice());
    assert_eq!(h(&headers, "cache-control"), IMMUTABLE);
    assert_eq!((stats().fills, stats().hits), (1, 1));
    assert!(stats().bytes >= m.segment.len() as u64);

    // Cached or not, no token, a forged one or another asset's is refused.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let other = o.playback.token(Uuid::new_v4(), None).unwrap();
    for (uri, expected) in [
        (segment.clone(), StatusCode::UNAUTHORIZED),
        (format!("{segment}?token={forged}"), StatusCode::FORBIDDEN),
        (format!("{segment}?token={other}"), StatusCode::FORBIDDEN),
    ] {
        let (status, _, body) = o.get(&uri).await;
        assert_eq!(status, expected, "{uri}");
        assert!(
            !body.starts_with(&m.segment[..16]),
            "{uri} leaked the segment"
        );
    }
    assert_eq!(stats().hits, 1, "a refused request reached the cache");

    // Ranges, HEAD and validators from memory.
    let (status, headers, body) = o.call("GET", &url, &[("range", "bytes=100-199")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body.as_ref(), &m.segment[100..200]);
    assert_eq!(
        h(&headers, "content-range"),
        format!("bytes 100-199/{}", m.segment.len())
    );
    let (status, headers, body) = o.call("HEAD", &url, &[]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(h(&headers, "content-length"), m.segment.len().to_string());
    let etag = h(&headers, "etag").to_string();
    let (status, _, _) = o.call("GET", &url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!((stats().fills, stats().hits), (1, 4));

    // Playlists are read from storage each time (a growing one changes).
    let playlist = format!("/media/{}360p/index.m3u8?token={token}", m.prefix);
    for _ in 0..2 {
        assert_eq!(o.get(&playlist).await.0, StatusCode::OK);
    }
    assert_eq!((stats().fills, stats().entries), (1, 1));

    // A crowd missing one object at once: one request fills the cache on
    // its way through, the others read storage meanwhile; all get the
    // bytes, and the object is held afterwards.
    let audio = format!("/media/{}audio/seg_00000.m4s?token={token}", m.prefix);
    for (status, body) in crowd(&o, &audio, 24).await {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), &[4u8; 3000][..]);
    }
    assert_eq!((stats().fills, stats().entries), (2, 2));
    let hits = stats().hits;
    assert_eq!(o.get(&audio).await.0, StatusCode::OK);
    assert_eq!(stats().hits, hits + 1);

    // Deleted behind the origin's back: gone once the bound has passed.
    store
        .delete(&format!("{}360p/seg_00000.m4s", m.prefix))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (status, _, body) = o.get(&url).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// PostgreSQL restarting under a class: media of assets and sessions this
/// node has checked keeps playing on the last state it read (however
/// old), while what it never saw is refused with a 503 that says why.
#[sqlx::test(migrations = "../migrations")]
async fn media_keeps_playing_while_postgresql_is_unreachable(db: PgPool) {
    let w = World::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let m = publish(store.as_ref(), Uuid::new_v4()).await;
    let unseen = publish(store.as_ref(), Uuid::new_v4()).await;
    let mut playback = Playback::generate();
    playback.key_recheck = Duration::from_millis(50);
    playback.session_recheck = Duration::from_millis(50);
    let o = origin(&w, store.clone(), playback);
    let org = w.org("Continuing Medical Education").await;
    let email = format!("learner-{}@cme.example.org", Uuid::new_v4().simple());
    let user = w.user(Some(org), &email, Role::Learner).await;
    w.login(&email).await;
    let session: Uuid = sqlx::query_scalar("SELECT id FROM sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(w.db())
        .await
        .unwrap();
    let token = o.playback.token(m.asset, Some(session)).unwrap();
    let segment = format!("/media/{}360p/seg_00001.m4s?token={token}", m.prefix);
    let master = format!("/media/{}master.m3u8?token={token}", m.prefix);
    assert_eq!(o.get(&segment).await.0, StatusCode::OK);
    assert_eq!(o.get(&master).await.0, StatusCode::OK);

    // The same node (same caches), its database gone.
    let gone = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:1/gone")
        .unwrap();
    let down = lectern_api::AppState::new(
        gone,
        store.clone(),
        lectern_api::Settings {
            playback: o.playback.clone(),
            ..w.settings()
        },
    );
    let down = Origin {
        app: lectern_api::router(down),
        playback: o.playback.clone(),
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for uri in [&segment, &master] {
        let (status, _, body) = down.get(uri).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let other = o.playback.token(unseen.asset, Some(session)).unwrap();
    let stranger = o.playback.token(m.asset, Some(Uuid::new_v4())).unwrap();
    for uri in [
        format!("/media/{}360p/seg_00001.m4s?token={other}", unseen.prefix),
        format!("/media/{}360p/seg_00001.m4s?token={stranger}", m.prefix),
    ] {
        let (status, _, body) = down.get(&uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(code(&body), "database_unavailable");
    }
}

/// Objects too large to keep are streamed, to a crowd too, and never
/// enter the cache; the cache stays within its byte bound.
#[sqlx::test(migrations = "../migrations")]
async fn objects_too_large_for_the_cache_are_streamed(db: PgPool) {
    let w = World::new(db).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let m = publish(store.as_ref(), Uuid::new_v4()).await;
    // 16 shards of 64 KiB: objects up to 16 KiB are kept, the 100 kB
    // segment is not.
    let cache = MediaCache::new(1 << 20, Duration::from_secs(60));
    assert!(cache.max_object() < m.segment.len() as u64);
    let o = origin(
        &w,
        store.clone(),
        Playback::generate().with_media_cache(cache),
    );
    let token = o.playback.token(m.asset, None).unwrap();
    let url = format!("/media/{}360p/seg_00000.m4s?token={token}", m.prefix);
    for (status, body) in crowd(&o, &url, 8).await {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), m.segment.as_slice());
    }
    let stats = o.playback.media_cache.stats();
    assert_eq!(stats.entries, 0, "{stats:?}");
    for file in ["360p/init.mp4", "360p/seg_00001.m4s", "audio/init.mp4"] {
        let (status, _, _) = o
            .get(&format!("/media/{}{file}?token={token}", m.prefix))
            .await;
        assert_eq!(status, StatusCode::OK, "{file}");
    }
    let stats = o.playback.media_cache.stats();
    assert_eq!(stats.entries, 3, "{stats:?}");
    assert!(
        stats.bytes <= o.playback.media_cache.capacity(),
        "{stats:?}"
    );
}

async fn objects_ranges_and_validators(o: &Origin, m: &Media) {
    let token = o.playback.token(m.asset, None).unwrap();
    let url = format!("/media/{}360p/seg_00000.m4s?token={token}", m.prefix);
    let len = m.segment.len();

    let (status, headers, body) = o.get(&url).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.as_ref(), m.segment.as_slice());
    assert_eq!(h(&headers, "content-type"), "video/iso.segment");
    assert_eq!(h(&headers, "cache-control"), IMMUTABLE);
    assert_eq!(h(&headers, "content-length"), len.to_string());
    assert_eq!(h(&headers, "accept-ranges"), "bytes");
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");
    let exposed = h(&headers, "access-control-expose-headers").to_ascii_lowercase();
    for name in ["content-range", "content-length", "accept-ranges", "etag"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    // The same answer for every origin: a CDN keeps one copy, not one per site.
    assert!(headers.get("vary").is_none(), "{headers:?}");
    let etag = h(&headers, "etag").to_string();
    let last_modified = h(&headers, "last-modified").to_string();
    assert!(etag.starts_with('"') && etag.len() > 2, "{etag}");
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");

    // Ranges: explicit, open-ended, suffix, clamped.
    for (range, start, end) in [
        ("bytes=10-19", 10, 20),
        ("bytes=99990-", 99_990, len),
        ("bytes=-7", len - 7, len),
        ("bytes=99000-5000000", 99_000, len),
        ("bytes=-5000000", 0, len),
    ] {
        let (status, headers, body) = o.call("GET", &url, &[("range", range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            h(&headers, "content-range"),
            format!("bytes {start}-{}/{len}", end - 1),
            "{range}"
        );
        assert_eq!(body.as_ref(), &m.segment[start..end], "{range}");
        assert_eq!(h(&headers, "content-length"), (end - start).to_string());
    }
    // Unsatisfiable: 416 naming the size.
    for range in [
        format!("bytes={len}-"),
        "bytes=-0".to_string(),
        format!("bytes={}-{}", len + 5, len + 9),
    ] {
        let (status, headers, body) = o.call("GET", &url, &[("range", &range)]).await;
        assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(h(&headers, "content-range"), format!("bytes */{len}"));
        assert_eq!(code(&body), "range_not_satisfiable");
    }
    // Malformed or multiple ranges are ignored: the whole object.
    for range in ["bytes=abc", "bytes=5-2", "bytes=0-1,4-5", "lines=1-2"] {
        let (status, _, body) = o.call("GET", &url, &[("range", range)]).await;
        assert_eq!(status, StatusCode::OK, "{range}");
        assert_eq!(body.len(), len, "{range}");
    }

    // HEAD: the same headers, no body; ranges too.
    let (status, headers, body) = o.call("HEAD", &url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(h(&headers, "content-length"), len.to_string());
    assert_eq!(h(&headers, "etag"), etag);
    let (status, headers, _) = o.call("HEAD", &url, &[("range", "bytes=-100")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        h(&headers, "content-range"),
        format!("bytes {}-{}/{len}", len - 100, len - 1)
    );

    // Conditional requests, with dates in each of the three formats RFC
    // 9110 §5.6.7 asks a server to accept.
    let modified = chrono::DateTime::parse_from_rfc2822(&last_modified).unwrap();
    let rfc850 = modified.format("%A, %d-%b-%y %H:%M:%S GMT").to_string();
    let asctime = modified.format("%a %b %e %H:%M:%S %Y").to_string();
    for cond in [
        ("if-none-match", etag.as_str()),
        ("if-none-match", &format!("\"nope\", {etag}")),
        ("if-none-match", "*"),
        ("if-modified-since", last_modified.as_str()),
        ("if-modified-since", &rfc850),
        ("if-modified-since", &asctime),
    ] {
        let (status, headers, body) = o.call("GET", &url, &[cond]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{cond:?}");
        assert!(body.is_empty());
        assert_eq!(h(&headers, "etag"), etag);
        assert_eq!(h(&headers, "cache-control"), IMMUTABLE);
    }
    let (status, _, body) = o.call("GET", &url, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), len);
    let (status, _, _) = o
        .call(
            "GET",
            &url,
            &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // If-Range with a stale validator: the whole object instead of a range.
    let (status, _, body) = o
        .call(
            "GET",
            &url,
            &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), len);
    let (status, _, body) = o
        .call("GET", &url, &[("range", "bytes=0-9"), ("if-range", &etag)])
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body.len(), 10);
    // A date names the object only when it is exactly its Last-Modified.
    for (date, status) in [
        (last_modified.as_str(), StatusCode::PARTIAL_CONTENT),
        (&rfc850, StatusCode::PARTIAL_CONTENT),
        (&asctime, StatusCode::PARTIAL_CONTENT),
        ("Mon, 01 Jan 2001 00:00:00 GMT", StatusCode::OK),
        ("yesterday", StatusCode::OK),
        (&format!("W/{etag}"), StatusCode::OK),
    ] {
        let (got, _, _) = o
            .call("GET", &url, &[("range", "bytes=0-9"), ("if-range", date)])
            .await;
        assert_eq!(got, status, "If-Range: {date}");
    }

    // CORS preflight (the delivery's layer answers it, 200 with no body).
    let (status, headers, _) = o
        .call(
            "OPTIONS",
            &format!("/media/{}360p/seg_00000.m4s", m.prefix),
            &[
                ("origin", "https://learn.example.org"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "range"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&headers, "access-control-allow-origin"), "*");
    let allowed = h(&headers, "access-control-allow-headers").to_ascii_lowercase();
    for name in ["range", "if-none-match", "if-modified-since", "if-range"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(h(&headers, "access-control-allow-methods").contains("GET"));
    assert!(h(&headers, "access-control-allow-methods").contains("HEAD"));
    assert_eq!(h(&headers, "access-control-max-age"), "86400");
    assert!(headers.get("vary").is_none(), "{headers:?}");

    let (status, _, body) = o
        .get(&format!(
            "/media/{}360p/seg_09999.m4s?token={token}",
            m.prefix
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
}

async fn cache_policy_and_playlist_rewrite(o: &Origin, m: &Media) {
    let token = o.playback.token(m.asset, None).unwrap();
    let base = format!("/media/{}", m.prefix);
    for (file, content_type, cache) in [
        ("360p/init.mp4", "video/mp4", IMMUTABLE),
        ("poster.jpg", "image/jpeg", IMMUTABLE),
        ("audio/seg_00000.m4s", "video/iso.segment", IMMUTABLE),
        (
            "360p/index.m3u8",
            "application/vnd.apple.mpegurl",
            "private, max-age=300",
        ),
        (
            "master.m3u8",
            "application/vnd.apple.mpegurl",
            "private, max-age=300",
        ),
        (
            "audio/index.m3u8",
            "application/vnd.apple.mpegurl",
            "private, max-age=1",
        ),
    ] {
        let (status, headers, _) = o.get(&format!("{base}{file}?token={token}")).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(h(&headers, "content-type"), content_type, "{file}");
        assert_eq!(h(&headers, "cache-control"), cache, "{file}");
    }
    // A playlist never outlives its token in any cache.
    let short = o
        .playback
        .token_until(m.asset, lectern_testkit::now_unix() + 90, None)
        .unwrap();
    let (_, headers, _) = o.get(&format!("{base}360p/index.m3u8?token={short}")).await;
    let max_age: u64 = h(&headers, "cache-control")
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age <= 90, "{max_age}");

    // Every URI in every playlist carries the token, and every one of them
    // can be fetched with it.
    let mut queue = vec![format!("{base}master.m3u8?token={token}")];
    let mut fetched = 0;
    while let Some(url) = queue.pop() {
        let (status, headers, body) = o.get(&url).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{url}: {}",
            String::from_utf8_lossy(&body)
        );
        fetched += 1;
        if !url.contains(".m3u8") {
            continue;
        }
        let text = String::from_utf8(body.to_vec()).unwrap();
        let dir = url[..url.rfind('/').unwrap() + 1].to_string();
        let mut uris: Vec<String> = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                let mut rest = line;
                while let Some(i) = rest.find("URI=\"") {
                    let v = &rest[i + 5..];
                    let end = v.find('"').unwrap();
                    uris.push(v[..end].to_string());
                    rest = &v[end..];
                }
            } else if !line.trim().is_empty() {
                uris.push(line.to_string());
            }
        }
        assert!(!uris.is_empty(), "{text}");
        for uri in uris {
            assert!(uri.ends_with(&format!("?token={token}")), "{uri} in {text}");
            queue.push(format!("{dir}{uri}"));
        }
        // The validator depends on the token: another learner's copy is
        // never "current" for this one.
        let etag = h(&headers, "etag").to_string();
        let (status, _, _) = o.call("GET", &url, &[("if-none-match", &etag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let other = o
            .playback
            .token_until(m.asset, lectern_testkit::now_unix() + 1000, None)
            .unwrap();
        let (status, other_headers, _) = o.get(&url.replace(&token, &other)).await;
        assert_eq!(status, StatusCode::OK);
        let other_etag = h(&other_headers, "etag");
        assert_ne!(other_etag, etag);
        let (status, _, _) = o.call("GET", &url, &[("if-none-match", other_etag)]).await;
        assert_eq!(status, StatusCode::OK);
    }
    // master, 2 media playlists, 2 inits, 3 segments.
    assert_eq!(fetched, 8);
}

async fn traversal_and_sources(o: &Origin, m: &Media) {
    let token = o.playback.token(m.asset, None).unwrap();
    let a = m.asset;
    // The source exists in storage; it is never served.
    let (status, _, body) = o
        .get(&format!("/media/assets/{a}/source?token={token}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&body).contains("original upload"));
    // Nor a chunked encode's intermediate, though it sits under `out/`:
    // only the files a rendition is made of are.
    let chunk = lectern_assets::keys::chunk_key(&m.prefix, 0);
    let (status, _, body) = o.get(&format!("/media/{chunk}?token={token}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{chunk}");
    assert_eq!(code(&body), "not_found");
    assert!(!String::from_utf8_lossy(&body).contains("original upload"));
    for path in [
        format!("/media/assets/{a}/out/../source"),
        format!("/media/assets/{a}/out/%2e%2e/source"),
        format!("/media/assets/{a}/out/%2E%2E/%2E%2E/{a}/source"),
        format!("/media/assets/{a}/out/attempt-1/..%2f..%2fsource"),
        format!("/media/assets/{a}/out/attempt-1/..%5c..%5csource"),
        format!("/media/assets/{a}/out/attempt-1/360p%00/init.mp4"),
        format!("/media//assets/{a}/out/attempt-1/360p/init.mp4"),
        "/media/%2fetc%2fpasswd".to_string(),
        "/media//etc/passwd".to_string(),
        "/media/../../etc/passwd".to_string(),
        format!("/media/assets/{a}/out/attempt-1/"),
        format!("/media/assets/{a}/out/attempt-1/360p/"),
        format!(
            "/media/assets/{}/out/attempt-1/360p/init.mp4",
            a.to_string().to_uppercase()
        ),
        "/media/".to_string(),
    ] {
        let (status, _, body) = o.get(&format!("{path}?token={token}")).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            body.starts_with(b"{\"error\""),
            "{path}: JSON error expected"
        );
    }
}

async fn tokens(w: &World, o: &Origin, m: &Media, store: Arc<dyn Store>) {
    let segment = format!("/media/{}360p/seg_00001.m4s", m.prefix);
    let refused = |expected_status: StatusCode, expected_code: &'static str| {
        move |(status, _, body): (StatusCode, HeaderMap, Bytes)| {
            assert_eq!(
                status,
                expected_status,
                "{}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(code(&body), expected_code);
        }
    };
    refused(StatusCode::UNAUTHORIZED, "missing_token")(o.get(&segment).await);
    refused(StatusCode::UNAUTHORIZED, "missing_token")(o.get(&format!("{segment}?token=")).await);

    let good = o.playback.token(m.asset, None).unwrap();
    // Flip one character of each field in turn.
    for i in 0..good.len() {
        let c = good.as_bytes()[i];
        if c == b'.' {
            continue;
        }
        let mut forged = good.clone().into_bytes();
        forged[i] = if c == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        let (status, _, body) = o.get(&format!("{segment}?token={forged}")).await;
        // Changing base64 padding bits can decode to the same bytes; only
        // a token that still verifies may pass, and it must be identical.
        if status == StatusCode::OK {
            assert_eq!(
                o.playback.verify(&forged, m.asset),
                o.playback.verify(&good, m.asset)
            );
            continue;
        }
        assert_eq!(status, StatusCode::FORBIDDEN, "{forged}");
        assert_eq!(code(&body), "invalid_token", "{forged}");
    }
    let (status, _, body) = o.get(&format!("{segment}?token=not-a-token")).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::FORBIDDEN, "invalid_token")
    );
    // Another deployment's key (same id, other secret) is a forgery.
    let stranger = Playback::generate().token(m.asset, None).unwrap();
    refused(StatusCode::FORBIDDEN, "invalid_token")(
        o.get(&format!("{segment}?token={stranger}")).await,
    );
    // Expired.
    let expired = o
        .playback
        .token_until(m.asset, lectern_testkit::now_unix() - 1, None)
        .unwrap();
    refused(StatusCode::FORBIDDEN, "expired_token")(
        o.get(&format!("{segment}?token={expired}")).await,
    );
    // Another asset's genuine token.
    let other = o.playback.token(Uuid::new_v4(), None).unwrap();
    refused(StatusCode::FORBIDDEN, "wrong_asset")(o.get(&format!("{segment}?token={other}")).await);
    refused(StatusCode::FORBIDDEN, "wrong_asset")(
        o.get(&format!("/media/{}master.m3u8?token={other}", m.prefix))
            .await,
    );

    // Rotation: a token of the retired key keeps working while that key
    // is still listed for verification.
    let old = PlaybackKey::generate("old");
    let new = PlaybackKey::generate("new");
    let before = origin(
        w,
        store.clone(),
        Playback::new(vec![old.clone()], DEFAULT_TOKEN_TTL, None),
    );
    let old_token = before.playback.token(m.asset, None).unwrap();
    let rotated = origin(
        w,
        store.clone(),
        Playback::new(vec![new.clone(), old], DEFAULT_TOKEN_TTL, None),
    );
    assert_eq!(
        rotated.get(&format!("{segment}?token={old_token}")).await.0,
        StatusCode::OK
    );
    assert!(rotated
        .playback
        .token(m.asset, None)
        .unwrap()
        .starts_with("new."));
    let dropped = origin(
        w,
        store.clone(),
        Playback::new(vec![new], DEFAULT_TOKEN_TTL, None),
    );
    refused(StatusCode::FORBIDDEN, "invalid_token")(
        dropped.get(&format!("{segment}?token={old_token}")).await,
    );

    // Session-bound tokens die with the session.
    let org = w.org("Continuing Medical Education").await;
    let email = format!("learner-{}@cme.example.org", Uuid::new_v4().simple());
    let user = w.user(Some(org), &email, Role::Learner).await;
    let bearer = w.login(&email).await;
    let session: Uuid = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1",
    )
    .bind(user)
    .fetch_one(w.db())
    .await
    .unwrap();
    let mut fresh = Playback::generate();
    fresh.session_recheck = Duration::ZERO;
    let strict = origin(w, store.clone(), fresh);
    let mut lenient = Playback::generate();
    lenient.session_recheck = Duration::from_secs(3600);
    let cached = origin(w, store.clone(), lenient);
    let bound = strict.playback.token(m.asset, Some(session)).unwrap();
    let bound_cached = cached.playback.token(m.asset, Some(session)).unwrap();
    assert_eq!(
        strict.get(&format!("{segment}?token={bound}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        cached
            .get(&format!("{segment}?token={bound_cached}"))
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = w
        .call("POST", "/api/v1/auth/logout", Some(&bearer), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    refused(StatusCode::FORBIDDEN, "session_ended")(
        strict.get(&format!("{segment}?token={bound}")).await,
    );
    refused(StatusCode::FORBIDDEN, "session_ended")(
        strict
            .get(&format!("/media/{}master.m3u8?token={bound}", m.prefix))
            .await,
    );
    // Within the recheck bound the cached verdict still stands: that is
    // the documented revocation delay, traded for no query per segment.
    assert_eq!(
        cached
            .get(&format!("{segment}?token={bound_cached}"))
            .await
            .0,
        StatusCode::OK
    );
    // A session that never existed.
    let ghost = strict
        .playback
        .token(m.asset, Some(Uuid::new_v4()))
        .unwrap();
    refused(StatusCode::FORBIDDEN, "session_ended")(
        strict.get(&format!("{segment}?token={ghost}")).await,
    );

    // The CDN's auth subrequest applies the same checks without storage.
    let check = |uri: String| async move {
        let (status, _, body) = o
            .call("GET", "/media-auth", &[("x-original-uri", &uri)])
            .await;
        (status, body)
    };
    let (status, _) = check(format!("{segment}?token={good}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = check(format!("{segment}?token={other}")).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::FORBIDDEN, "wrong_asset")
    );
    let (status, body) = check(segment.clone()).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    let (status, _) = check(format!("/media/assets/{}/source?token={good}", m.asset)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let chunk = lectern_assets::keys::chunk_key(&m.prefix, 0);
    let (status, _) = check(format!("/media/{chunk}?token={good}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = check(format!(
        "/media/assets/{}/out/%2e%2e/source?token={good}",
        m.asset
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, body) = o.get("/media-auth").await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "missing_original_uri")
    );
}
