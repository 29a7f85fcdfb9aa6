//! The CDN stand-in (`infra/cdn/nginx.conf.template`) in front of a real
//! `lectern serve` origin: a second learner, with a token of their own, is
//! served every segment of a real transcoded ladder from the cache, and the
//! origin (counted from its own log) saw each object once; no spelling of a
//! path (`..`, encoded dots and slashes, double encoding, backslashes,
//! `//`) makes one asset's token fetch another asset's cached bytes; and
//! turning an asset's encryption on stops its cached clear segments at the
//! edge.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use lectern_delivery::{Playback, DEFAULT_TOKEN_TTL};
use lectern_secrets::PlaybackKey;
use lectern_storage::{FsStore, PutOptions, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real clip, transcoded by `lectern transcode` into an HLS ladder.
fn transcode(dir: &Path) -> PathBuf {
    let clip = Command::new(root().join("infra/dev/sample-clip"))
        .output()
        .expect("infra/dev/sample-clip");
    assert!(
        clip.status.success(),
        "{}",
        String::from_utf8_lossy(&clip.stderr)
    );
    let clip = String::from_utf8(clip.stdout).unwrap().trim().to_string();
    let out = dir.join("ladder");
    let status = common::lectern(dir)
        .args(["transcode", &clip, "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "lectern transcode failed");
    out
}

async fn wait_until_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().as_u16() < 500 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fetches a whole presentation as a player would: the master playlist,
/// every media playlist, every init and media segment. Returns the cache
/// status nginx reported for each non-playlist object, by path.
async fn play(client: &reqwest::Client, base: &str, master: &str) -> BTreeMap<String, String> {
    let mut statuses = BTreeMap::new();
    let mut queue = vec![master.to_string()];
    while let Some(url) = queue.pop() {
        let resp = client.get(format!("{base}{url}")).send().await.unwrap();
        let status = resp.status();
        let cache = resp
            .headers()
            .get("x-cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
        let path = url.split('?').next().unwrap().to_string();
        if !path.ends_with(".m3u8") {
            assert!(!body.is_empty());
            statuses.insert(path, cache);
            continue;
        }
        let dir = &url[..url.rfind('/').unwrap() + 1];
        let text = String::from_utf8(body.to_vec()).unwrap();
        let playlist = m3u8_rs::parse_playlist_res(text.as_bytes()).expect("a valid playlist");
        let uris: Vec<String> = match playlist {
            m3u8_rs::Playlist::MasterPlaylist(m) => m
                .variants
                .iter()
                .map(|v| v.uri.clone())
                .chain(m.alternatives.iter().filter_map(|a| a.uri.clone()))
                .collect(),
            m3u8_rs::Playlist::MediaPlaylist(m) => m
                .segments
                .iter()
                .flat_map(|s| {
                    std::iter::once(s.uri.clone()).chain(s.map.as_ref().map(|m| m.uri.clone()))
                })
                .collect(),
        };
        for uri in uris {
            assert!(uri.contains("token="), "{uri} carries no token");
            // An encrypted asset's playlists send the player to the
            // key-marked path, root-relative.
            let full = if uri.starts_with('/') {
                uri
            } else {
                format!("{dir}{uri}")
            };
            if !queue.contains(&full) && !statuses.contains_key(full.split('?').next().unwrap()) {
                queue.push(full);
            }
        }
    }
    statuses
}

/// Media requests the origin logged, by key and status.
fn origin_log(log: &Path) -> (Vec<(String, u64)>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut served = Vec::new();
    let mut checks = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["fields"]["message"].as_str() {
            Some("media served") => served.push((
                v["fields"]["key"].as_str().unwrap_or_default().to_string(),
                v["fields"]["status"].as_u64().unwrap_or_default(),
            )),
            Some("media token checked") => checks += 1,
            _ => {}
        }
    }
    (served, checks)
}

/// One request sent byte for byte as written: no client-side path
/// normalisation (reqwest and curl resolve `..` before sending). HTTP/1.0,
/// so the answer is neither chunked nor kept alive. Returns (status, body).
async fn raw_get(addr: &str, target: &str) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{target}: no HTTP answer: {answer:?}"));
    let head = String::from_utf8_lossy(&answer[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{target}: {head}"));
    (status, answer[end + 4..].to_vec())
}

/// A `lectern serve` origin on the test's own database and an nginx from
/// the template in front of it; both stop when this is dropped.
struct Stand {
    cdn_addr: String,
    /// `http://<cdn_addr>`.
    cdn: String,
    origin_addr: String,
    log: PathBuf,
    playback: Playback,
    store: FsStore,
    _origin: common::Server,
    _nginx: common::nginx::Nginx,
}

impl Stand {
    async fn start(dir: &Path, db: &sqlx::PgPool) -> Stand {
        let data = dir.join("data");
        let store = FsStore::open(data.join("storage")).await.unwrap();

        // The origin, with a key the test can sign with too, and the
        // identity keys `PUT …/encryption` seals asset keys with.
        let key = PlaybackKey::generate("cdn1");
        let playback = Playback::new(vec![key.clone()], DEFAULT_TOKEN_TTL, None);
        let origin_addr = common::free_addr();
        let log = dir.join("origin.log");
        let mut cmd = common::lectern(dir);
        for (name, value) in common::deployment_secrets() {
            if name != "LECTERN_PLAYBACK_KEYS" {
                cmd.env(name, value);
            }
        }
        cmd.arg("serve")
            .env("LECTERN_HTTP_ADDR", &origin_addr)
            .env("LECTERN_DATA_DIR", &data)
            .env("LECTERN_SERVE_WORKERS", "0")
            .env("LECTERN_PLAYBACK_KEYS", key.to_setting())
            .env("LECTERN_LOG_FORMAT", "json")
            .env("LECTERN_LOG", "warn,lectern_delivery=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        cmd.env("DATABASE_URL", common::database_url(db).await);
        let origin = common::Server(cmd.spawn().unwrap());
        wait_until_up(&format!("http://{origin_addr}/healthz")).await;
        // /media reads the asset's encryption state from the schema: wait
        // until migrations are applied (other readiness checks do not matter here).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = match reqwest::get(format!("http://{origin_addr}/readyz")).await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|v| v["checks"]["database"] == "ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the origin's database never became ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // nginx from the template.
        let cdn_addr = common::free_addr();
        let nginx = common::nginx::start(
            "infra/cdn/nginx.conf.template",
            dir,
            &[("@@LISTEN@@", &cdn_addr), ("@@ORIGIN@@", &origin_addr)],
        );
        let cdn = format!("http://{cdn_addr}");
        // Any answer from nginx itself (a 404 outside /media) means it is up.
        wait_until_up(&format!("{cdn}/up")).await;
        Stand {
            cdn_addr,
            cdn,
            origin_addr,
            log,
            playback,
            store,
            _origin: origin,
            _nginx: nginx,
        }
    }
}

/// The ladder of a real clip published as the pipeline does, under
/// `assets/<asset>/out/attempt-1`; returns the prefix and every key.
async fn publish(dir: &Path, store: &FsStore, asset: Uuid) -> (String, Vec<String>) {
    let ladder = transcode(dir);
    let prefix = format!("assets/{asset}/out/attempt-1");
    let keys = lectern_packager::publish(&ladder, store, &prefix)
        .await
        .unwrap();
    (prefix, keys)
}

// A database of its own: the origin reads each asset's encryption state
// from the schema, which a shared database migrated by another checkout
// may not match.
#[sqlx::test(migrations = "./migrations")]
async fn second_learner_is_served_from_the_cdn_cache(db: sqlx::PgPool) {
    let work = common::workdir();
    let dir = work.path();
    let stand = Stand::start(dir, &db).await;
    let asset = Uuid::new_v4();
    let (prefix, keys) = publish(dir, &stand.store, asset).await;
    // What players fetch through playlists: init and media segments.
    let cacheable: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".m4s") || k.ends_with(".mp4"))
        .collect();
    assert!(cacheable.len() >= 4, "{keys:?}");
    let (cdn, playback) = (&stand.cdn, &stand.playback);

    let client = reqwest::Client::new();
    let master = |t: &str| format!("/media/{prefix}/master.m3u8?token={t}");
    let token_a = playback.token(asset, None).unwrap();
    let token_b = playback
        .token_until(asset, common::now_unix() + 3600, None)
        .unwrap();
    assert_ne!(token_a, token_b);

    let first = play(&client, cdn, &master(&token_a)).await;
    assert_eq!(first.len(), cacheable.len(), "{first:?}");
    assert!(first.values().all(|s| s == "MISS"), "learner A: {first:?}");
    let second = play(&client, cdn, &master(&token_b)).await;
    assert_eq!(second.len(), cacheable.len());
    assert!(
        second.values().all(|s| s == "HIT"),
        "learner B must be served from the cache: {second:?}"
    );

    // The cache does not bypass the token check.
    let segment = format!("{cdn}/media/{}", cacheable[0]);
    let forged = format!("{}x", &token_b[..token_b.len() - 1]);
    for url in [segment.clone(), format!("{segment}?token={forged}")] {
        let status = client.get(&url).send().await.unwrap().status();
        assert!(status == 401 || status == 403, "{url}: {status}");
    }
    let other_asset = playback.token(Uuid::new_v4(), None).unwrap();
    let status = client
        .get(format!("{segment}?token={other_asset}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);

    // From the origin's side: every cacheable object served exactly once,
    // and about one token check per learner per kind of object (init and
    // media segments; verdicts are cached by nginx), plus the 3 refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, checks) = origin_log(&stand.log);
    for key in &cacheable {
        let times = served
            .iter()
            .filter(|(k, s)| k == *key && *s == 200)
            .count();
        assert_eq!(times, 1, "origin served {key} {times} times: {served:?}");
    }
    assert!(
        (5..2 * cacheable.len() + 3).contains(&checks),
        "expected about one token check per learner and kind of object (plus the refused \
         ones), not one per object: {checks} for {} objects",
        2 * cacheable.len() + 3
    );
}

/// An object stored as the packager stores segments.
async fn put_segment(store: &FsStore, key: &str, bytes: &[u8]) {
    store
        .put_bytes(
            key,
            Bytes::copy_from_slice(bytes),
            PutOptions {
                content_type: Some("video/iso.segment".into()),
                cache_control: Some("public, max-age=31536000, immutable".into()),
            },
        )
        .await
        .unwrap();
}

/// nginx resolves `..`, `%2e%2e`, `%2F`, `//` in `$uri`, the origin and
/// the verdict read the raw request line: a learner of asset A must not
/// be able to spell a path that is checked as A's and answered from the
/// cache as B's.
#[sqlx::test(migrations = "./migrations")]
async fn no_spelling_of_a_path_serves_another_assets_cached_bytes(db: sqlx::PgPool) {
    let work = common::workdir();
    let stand = Stand::start(work.path(), &db).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let rest = "out/attempt-1/v";
    let secret = format!("asset {b}'s segment, for B's learners only").into_bytes();
    put_segment(
        &stand.store,
        &format!("assets/{a}/{rest}/seg_00001.m4s"),
        b"asset A's segment",
    )
    .await;
    put_segment(
        &stand.store,
        &format!("assets/{a}/{rest}/init.mp4"),
        b"A init",
    )
    .await;
    put_segment(
        &stand.store,
        &format!("assets/{b}/{rest}/seg_00001.m4s"),
        &secret,
    )
    .await;
    put_segment(
        &stand.store,
        &format!("assets/{b}/{rest}/init.mp4"),
        &secret,
    )
    .await;
    let token_a = stand.playback.token(a, None).unwrap();
    let token_b = stand.playback.token(b, None).unwrap();
    let get = |target: String| {
        let addr = stand.cdn_addr.clone();
        async move { raw_get(&addr, &target).await }
    };

    // B's learner fills the cache with B's objects; A's learner plays A,
    // so verdicts for A's token are cached too.
    for object in ["seg_00001.m4s", "init.mp4"] {
        for _ in 0..2 {
            let (status, body) =
                get(format!("/media/assets/{b}/{rest}/{object}?token={token_b}")).await;
            assert_eq!((status, &body), (200, &secret));
        }
        let (status, _) = get(format!("/media/assets/{a}/{rest}/{object}?token={token_a}")).await;
        assert_eq!(status, 200);
    }

    let tail = format!("{b}/{rest}/seg_00001.m4s?token={token_a}");
    let init_tail = format!("{b}/{rest}/init.mp4?token={token_a}");
    let mut attempts = vec![
        format!("/media/assets/{a}/../{tail}"),
        format!("/media/assets/{a}/../{init_tail}"),
        format!("/media/assets/{a}/out/../../{tail}"),
        format!("/media/assets/{a}/./../{tail}"),
        format!("/media/assets/{a}//../{tail}"),
        format!("/media/assets/{a}/%2e%2e/{tail}"),
        format!("/media/assets/{a}/%2E%2E/{tail}"),
        format!("/media/assets/{a}/.%2e/{tail}"),
        format!("/media/assets/{a}/%2e./{tail}"),
        format!("/media/assets/{a}/out/..%2F..%2F{tail}"),
        format!("/media/assets/{a}/out/%2e%2e%2f%2e%2e%2f{tail}"),
        format!("/media/assets/{a}/%252e%252e/{tail}"),
        format!("/media/assets/{a}/%252E%252E/{tail}"),
        format!("/media/assets/{a}\\..\\{tail}"),
        format!("/media/assets/{a}/..%5c{tail}"),
        format!("/media/assets/{a}/out/..;/../{tail}"),
        format!("http://{}/media/assets/{a}/../{tail}", stand.cdn_addr),
    ];
    // A verdict cached under no asset at all: a path the edge could not
    // read the asset from (an escaped id character) but the origin
    // decodes into A's, then paths the edge cannot read the asset from
    // either but normalises into B's.
    let a_text = a.to_string();
    let (first, id_rest) = a_text.split_at(1);
    let escaped_a = format!("%{:02x}{id_rest}", first.as_bytes()[0]);
    get(format!(
        "/media/assets/{escaped_a}/{rest}/init.mp4?token={token_a}"
    ))
    .await;
    attempts.extend([
        format!("/media/../media/assets/{tail}"),
        format!("/x/../media/assets/{tail}"),
        format!("/media%2fassets/{tail}"),
        format!("/media//assets/{tail}"),
        format!("/media/./assets/{tail}"),
    ]);

    // Every spelling is tried before failing, so a failure lists them all.
    let mut holes = Vec::new();
    for target in &attempts {
        let (status, body) = get(target.clone()).await;
        let leaked = body.windows(secret.len()).any(|w| w == secret.as_slice());
        if leaked || !(400..500).contains(&status) {
            let what = if leaked { "B's bytes" } else { "not a 4xx" };
            holes.push(format!("{status} ({what}): {target}"));
        }
    }
    assert!(
        holes.is_empty(),
        "with A's token (every one should be a 4xx without B's bytes):\n{}",
        holes.join("\n")
    );

    // The canonical spelling still works.
    let (status, body) = get(format!(
        "/media/assets/{b}/{rest}/seg_00001.m4s?token={token_b}"
    ))
    .await;
    assert_eq!((status, body), (200, secret));
}

/// Turning encryption on: a clear segment cached at the edge before is
/// not served again (a fresh token is refused at once, a token whose
/// verdict the edge cached within the documented bound), the encrypted
/// rendition plays through the edge, a replaced key's path is refused,
/// and turning encryption off serves the cached clear copies again.
#[sqlx::test(migrations = "./migrations")]
async fn turning_encryption_on_stops_clear_segments_at_the_edge(db: sqlx::PgPool) {
    let work = common::workdir();
    let dir = work.path();
    let stand = Stand::start(dir, &db).await;

    let org = lectern_identity::users::create_organisation(&db, "CDN Lectures")
        .await
        .unwrap();
    let (_, partner) = lectern_identity::users::create_partner_key(&db, org, "cdn")
        .await
        .unwrap();
    let asset = Uuid::now_v7();
    let (prefix, keys) = publish(dir, &stand.store, asset).await;
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, output_prefix)
         VALUES ($1, $2, 'ready', $3, $4)",
    )
    .bind(asset)
    .bind(org)
    .bind(format!("sources/{asset}"))
    .bind(format!("{prefix}/"))
    .execute(&db)
    .await
    .unwrap();
    let segments: Vec<&String> = keys.iter().filter(|k| k.ends_with(".m4s")).collect();
    assert!(!segments.is_empty(), "{keys:?}");
    let client = reqwest::Client::new();
    let master = |t: &str| format!("/media/{prefix}/master.m3u8?token={t}");
    // Tokens differing in expiry only, so each is one the edge has never
    // seen.
    let issued = AtomicI64::new(0);
    let fresh = || {
        let expires = common::now_unix() + 3600 + issued.fetch_add(1, Ordering::Relaxed);
        stand.playback.token_until(asset, expires, None).unwrap()
    };
    // (status, body) of `/media/<key>` through the edge, and its cache
    // status in `last_cache`.
    let last_cache = std::sync::Mutex::new(String::new());
    let edge = |key: &str, token: &str| {
        let url = format!("{}/media/{key}?token={token}", stand.cdn);
        let (client, last_cache) = (client.clone(), &last_cache);
        async move {
            let resp = client.get(&url).send().await.unwrap();
            let status = resp.status().as_u16();
            *last_cache.lock().unwrap() = resp
                .headers()
                .get("x-cache-status")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, resp.bytes().await.unwrap())
        }
    };
    let encryption = |enabled: bool| {
        let url = format!(
            "http://{}/api/v1/assets/{asset}/encryption",
            stand.origin_addr
        );
        let (client, partner) = (client.clone(), partner.clone());
        async move {
            let resp = client
                .put(&url)
                .bearer_auth(&partner)
                .json(&serde_json::json!({ "enabled": enabled }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: serde_json::Value = resp.json().await.unwrap();
            body["key_id"].as_str().map(str::to_string)
        }
    };

    // Learner A plays the clear asset: every segment is now at the edge.
    let token_a = stand.playback.token(asset, None).unwrap();
    let played = play(&client, &stand.cdn, &master(&token_a)).await;
    assert!(played.values().all(|s| s == "MISS"), "{played:?}");
    let stored: Vec<Bytes> = {
        let mut v = Vec::new();
        for key in &segments {
            v.push(
                stand
                    .store
                    .get(key, None)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap(),
            );
        }
        v
    };

    let kid = encryption(true).await.expect("a key id");

    // A token the edge has no verdict for: refused at once, for every
    // clear segment it holds.
    let token_c = fresh();
    for (key, bytes) in segments.iter().zip(&stored) {
        let (status, body) = edge(key, &token_c).await;
        assert!(
            (400..500).contains(&status) && body != *bytes,
            "{key}: a clear segment of an encrypted asset was served ({status}) from the edge"
        );
    }
    // A's verdict on clear segments was cached while the asset was clear:
    // it is believed for at most 5 s more (nginx), plus the origin's 5 s
    // of key caching on nodes that did not take the PUT. The deadline is
    // far above that bound; it only keeps a regression from hanging.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = edge(segments[0], &token_a).await;
        if status != 200 {
            assert!((400..500).contains(&status), "{status}");
            assert_ne!(body, stored[0]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edge still serves clear segments of an encrypted asset to a cached verdict"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The encrypted rendition plays through the edge, from the key-marked
    // path, and is not the clear bytes.
    let token_d = fresh();
    let played = play(&client, &stand.cdn, &master(&token_d)).await;
    let marked = format!("/media/assets/{asset}/aes-{kid}/out/");
    assert!(played.keys().all(|p| p.starts_with(&marked)), "{played:?}");
    let first = segments[0]
        .strip_prefix(&format!("assets/{asset}/out/"))
        .unwrap();
    let (status, body) = edge(&format!("assets/{asset}/aes-{kid}/out/{first}"), &token_d).await;
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, (stored[0].len() as u64 / 16 + 1) * 16);
    assert_ne!(&body[..16], &stored[0][..16]);

    // A new key: the old key's path is refused at the edge too.
    let new_kid = encryption(true).await.expect("a key id");
    assert_ne!(new_kid, kid);
    let (status, _) = edge(&format!("assets/{asset}/aes-{kid}/out/{first}"), &fresh()).await;
    assert!((400..500).contains(&status), "stale key path: {status}");

    // Off again: the clear copies the edge kept are served, from the cache.
    assert_eq!(encryption(false).await, None);
    let (status, body) = edge(segments[0], &fresh()).await;
    assert_eq!((status, body), (200, stored[0].clone()));
    assert_eq!(*last_cache.lock().unwrap(), "HIT");
}

/// A live LL-HLS media playlist as the live ladder writes it, at segment
/// `msn` with `open` parts of the next one listed and the next hinted.
fn live_playlist(first: u64, open: u64) -> String {
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500\n\
         #EXT-X-PART-INF:PART-TARGET=0.500\n#EXT-X-MEDIA-SEQUENCE:{first}\n\
         #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.0,\nc1-seg_{first:05}.m4s\n"
    );
    let next = first + 1;
    for part in 0..open {
        text.push_str(&format!(
            "#EXT-X-PART:DURATION=0.50000,URI=\"c1-part_{next}_{part}.m4s\"{}\n",
            if part == 0 { ",INDEPENDENT=YES" } else { "" }
        ));
    }
    text.push_str(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"c1-part_{next}_{open}.m4s\"\n\
         #EXT-X-RENDITION-REPORT:URI=\"../../a/audio/index.m3u8\",LAST-MSN={next},LAST-PART=0\n"
    ));
    text
}

/// A playlist stored as the live ladder and the packager store them.
async fn put_playlist(store: &FsStore, key: &str, text: &str, cache_control: &str) {
    store
        .put_bytes(
            key,
            Bytes::copy_from_slice(text.as_bytes()),
            PutOptions {
                content_type: Some("application/vnd.apple.mpegurl".into()),
                cache_control: Some(cache_control.into()),
            },
        )
        .await
        .unwrap();
}

/// (status, X-Cache-Status, Cache-Control, body) of a GET through the edge.
async fn edge_get(client: &reqwest::Client, url: &str) -> (u16, String, String, String) {
    let resp = client.get(url).send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, cache, policy) = (
        resp.status().as_u16(),
        header("x-cache-status"),
        header("cache-control"),
    );
    (status, cache, policy, resp.text().await.unwrap())
}

/// Answers to LL-HLS blocking reloads are the same for every viewer: two
/// viewers with their own tokens get one cached copy of a blocking reload
/// — the second viewer's request waits for the first one's at the edge,
/// and the origin answers it once —, the copy names no token, and its
/// URIs work with the second viewer's token substituted. A plain request
/// for the same playlist carries each viewer's token and is never stored. A forged or expired token is still refused at the edge
/// with the playlist cached, a query the edge cannot key safely is passed
/// through uncached, and VOD and master playlists, which embed a token,
/// are never served from the cache to another token.
#[sqlx::test(migrations = "./migrations")]
async fn blocking_reloads_are_cached_once_for_every_viewer(db: sqlx::PgPool) {
    let work = common::workdir();
    let stand = Stand::start(work.path(), &db).await;
    let (store, cdn) = (&stand.store, stand.cdn.clone());
    let asset = Uuid::new_v4();
    let dir = format!("assets/{asset}/out/attempt-1/v/720p");
    let playlist = format!("{dir}/index.m3u8");
    for object in [
        "init.mp4",
        "c1-seg_00004.m4s",
        "c1-part_5_0.m4s",
        "c1-part_5_1.m4s",
    ] {
        put_segment(store, &format!("{dir}/{object}"), object.as_bytes()).await;
    }
    put_playlist(store, &playlist, &live_playlist(4, 1), "public, max-age=1").await;
    let client = reqwest::Client::new();
    let now = common::now_unix();
    let token_a = stand.playback.token_until(asset, now + 3600, None).unwrap();
    let token_b = stand.playback.token_until(asset, now + 3601, None).unwrap();
    let url = |token: &str, query: &str| format!("{cdn}/media/{playlist}?token={token}{query}");
    let served = |log: &Path| {
        origin_log(log)
            .0
            .iter()
            .filter(|(k, s)| *k == playlist && *s == 200)
            .count()
    };

    // The plain request (a player's first load, or a client that does
    // not speak LL-HLS): each viewer's own token written in, never stored.
    for token in [&token_a, &token_b] {
        let (status, cache, policy, body) = edge_get(&client, &url(token, "")).await;
        assert_eq!((status, cache.as_str()), (200, "MISS"), "{body}");
        assert_eq!(policy, "private, max-age=1");
        assert!(
            body.contains(&format!("c1-part_5_0.m4s?token={token}")),
            "{body}"
        );
        assert!(!body.contains("#EXT-X-DEFINE"), "{body}");
    }

    // A blocking reload for part 1 of segment 5, which is not there yet:
    // A's request goes to the origin and is held; B's, the same URL with
    // B's token, waits at the edge for A's answer.
    let blocking = "&_HLS_msn=5&_HLS_part=1";
    let (a, b) = (url(&token_a, blocking), url(&token_b, blocking));
    let first = tokio::spawn({
        let client = client.clone();
        async move { edge_get(&client, &a).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = tokio::spawn({
        let client = client.clone();
        async move { edge_get(&client, &b).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !first.is_finished() && !second.is_finished(),
        "both are held"
    );
    put_playlist(store, &playlist, &live_playlist(4, 2), "public, max-age=1").await;
    let (status, cache, policy, body_a) = first.await.unwrap();
    assert_eq!((status, cache.as_str()), (200, "MISS"), "{body_a}");
    assert_eq!(policy, "public, max-age=3", "six part targets");
    let (status, cache, _, body_b) = second.await.unwrap();
    assert_eq!((status, cache.as_str()), (200, "HIT"), "{body_b}");
    assert_eq!(body_a, body_b);
    assert!(
        body_b.contains("URI=\"c1-part_5_1.m4s?token={$token}\""),
        "{body_b}"
    );
    assert!(!body_b.contains(&token_a) && !body_b.contains(&token_b));
    assert!(
        body_b.contains("#EXT-X-DEFINE:QUERYPARAM=\"token\"\n"),
        "{body_b}"
    );
    // The origin answered each plain request and the blocking one once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(&stand.log), 3, "{:?}", origin_log(&stand.log).0);

    // The URIs of the shared copy, with B's token filled in as hls.js
    // does, are served through the edge; so is the rendition report's
    // playlist URI shape (relative, with the variable).
    let uris: Vec<String> = body_b
        .lines()
        .filter_map(|l| {
            if l.starts_with("#EXT-X-PART:") || l.starts_with("#EXT-X-MAP:") {
                l.split("URI=\"")
                    .nth(1)?
                    .split('"')
                    .next()
                    .map(str::to_string)
            } else if !l.starts_with('#') && !l.is_empty() {
                Some(l.to_string())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(uris.len(), 4, "{uris:?}");
    for uri in &uris {
        let uri = uri.replace("{$token}", &token_b);
        let (status, _, _, body) = edge_get(&client, &format!("{cdn}/media/{dir}/{uri}")).await;
        assert_eq!(status, 200, "{uri}: {body}");
    }
    assert!(
        body_b.contains("#EXT-X-RENDITION-REPORT:URI=\"../../a/audio/index.m3u8?token={$token}\""),
        "{body_b}"
    );

    // The cached copy does not bypass the token check.
    let forged = format!("{}x", &token_b[..token_b.len() - 1]);
    let expired = stand.playback.token_until(asset, now - 10, None).unwrap();
    let other = stand.playback.token(Uuid::new_v4(), None).unwrap();
    for token in [&forged, &expired, &other] {
        for query in ["", blocking] {
            let (status, cache, _, body) = edge_get(&client, &url(token, query)).await;
            assert_eq!(status, 403, "{query}: {body}");
            assert!(!body.contains("#EXTM3U") && cache != "HIT", "{body}");
        }
    }
    let (status, _, _, _) = edge_get(
        &client,
        &format!("{cdn}/media/{playlist}?_HLS_msn=5&_HLS_part=1"),
    )
    .await;
    assert_eq!(status, 401);

    // Queries the edge cannot key as the origin reads them are answered
    // by the origin, never stored or served from the cache.
    for query in [
        format!("?_HLS_msn=5&_HLS_part=1&token={token_b}"),
        format!("?token={token_b}&_hls_msn=5&_hls_part=1"),
        format!("?token={token_b}&_HLS_msn=5&_HLS_part=1&_HLS_part=0"),
        format!("?token={token_b}&token={token_a}&_HLS_msn=5&_HLS_part=1"),
    ] {
        for _ in 0..2 {
            let (status, cache, _, body) =
                edge_get(&client, &format!("{cdn}/media/{playlist}{query}")).await;
            assert_eq!((status, cache.as_str()), (200, "BYPASS"), "{query}: {body}");
        }
    }

    // VOD: the master and a finished media playlist embed each viewer's
    // token and are never a HIT for another one.
    let vod = format!("assets/{asset}/out/attempt-1");
    put_playlist(
        store,
        &format!("{vod}/master.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv/360p/index.m3u8\n",
        "public, max-age=300",
    )
    .await;
    put_playlist(
        store,
        &format!("{vod}/v/360p/index.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n\
         #EXTINF:2.0,\nseg_00000.m4s\n#EXT-X-ENDLIST\n",
        "public, max-age=300",
    )
    .await;
    for key in ["master.m3u8", "v/360p/index.m3u8"] {
        for token in [&token_a, &token_b, &token_a] {
            let (status, cache, policy, body) =
                edge_get(&client, &format!("{cdn}/media/{vod}/{key}?token={token}")).await;
            assert_eq!(status, 200, "{key}: {body}");
            assert_eq!(cache, "MISS", "{key} was served from the cache");
            assert!(policy.starts_with("private, "), "{key}: {policy}");
            assert!(body.contains(&format!("?token={token}")), "{key}: {body}");
            let theirs = if token == &token_a {
                &token_b
            } else {
                &token_a
            };
            assert!(!body.contains(theirs.as_str()), "{key}: {body}");
        }
    }
}
