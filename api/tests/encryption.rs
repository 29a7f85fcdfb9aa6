//! HLS AES-128 encryption per asset through the router and over a real
//! socket, on a real PostgreSQL per test: the key tag after the map, the
//! served segments decrypting to exactly the stored bytes, the key URI's
//! token checks, ranges over encrypted bytes, turning encryption off, and
//! FFmpeg (a real HLS client) decoding the encrypted rendition.

use std::net::SocketAddr;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use lectern_delivery::Playback;
use lectern_storage::PutOptions;
use lectern_testkit::now_unix;
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=320x240,CODECS=\"avc1.64000d\"\n\
360p/index.m3u8\n";

fn opts(content_type: &str, cache_control: &str) -> PutOptions {
    PutOptions {
        content_type: Some(content_type.into()),
        cache_control: Some(cache_control.into()),
    }
}

struct Fixture {
    w: World,
    org: Uuid,
    asset: Uuid,
    prefix: String,
    /// A partner key of the owning organisation.
    partner: String,
    /// A playback token bound to a learner's live session.
    token: String,
}

async fn fixture(db: PgPool) -> Fixture {
    let w = World::new(db).await;
    let org = w.org("Encrypted Lectures").await;
    let asset = Uuid::now_v7();
    let prefix = format!("assets/{asset}/out/attempt-1/");
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
         VALUES ($1, $2, 'ready', $3, 4, $4)",
    )
    .bind(asset)
    .bind(org)
    .bind(format!("sources/{asset}"))
    .bind(&prefix)
    .execute(w.db())
    .await
    .unwrap();
    let (_, partner) = lectern_identity::users::create_partner_key(w.db(), org, "enc")
        .await
        .unwrap();
    let email = format!("learner-{}@enc.example.org", Uuid::new_v4().simple());
    let user = w.user(Some(org), &email, Role::Learner).await;
    w.login(&email).await;
    let session: Uuid = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL LIMIT 1",
    )
    .bind(user)
    .fetch_one(w.db())
    .await
    .unwrap();
    let token = w
        .state
        .delivery
        .playback
        .token(asset, Some(session))
        .unwrap();
    Fixture {
        w,
        org,
        asset,
        prefix,
        partner,
        token,
    }
}

impl Fixture {
    async fn put(&self, key: &str, bytes: Vec<u8>, o: PutOptions) {
        self.w
            .state
            .store
            .put_bytes(&format!("{}{key}", self.prefix), Bytes::from(bytes), o)
            .await
            .unwrap();
    }

    /// Publishes a one-rung ladder of two segments; returns the first.
    async fn publish(&self) -> Vec<u8> {
        let segment: Vec<u8> = (0..100_003u32).map(|i| (i * 13 % 251) as u8).collect();
        let seg = || opts("video/iso.segment", IMMUTABLE);
        let pl = || opts("application/vnd.apple.mpegurl", "public, max-age=300");
        self.put("master.m3u8", MASTER.into(), pl()).await;
        self.put(
            "360p/index.m3u8",
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.000,\nseg_00000.m4s\n#EXTINF:2.500,\nseg_00001.m4s\n\
             #EXT-X-ENDLIST\n"
                .into(),
            pl(),
        )
        .await;
        self.put("360p/init.mp4", vec![1; 800], opts("video/mp4", IMMUTABLE))
            .await;
        self.put("360p/seg_00000.m4s", segment.clone(), seg()).await;
        self.put("360p/seg_00001.m4s", vec![2; 4096], seg()).await;
        segment
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().method("GET").uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .w
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (
            status,
            headers,
            resp.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    async fn text(&self, uri: &str) -> String {
        let (status, _, body) = self.get(uri, &[]).await;
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        body
    }

    /// Turns encryption on or off as the partner; returns the key id.
    async fn encryption(&self, enabled: bool) -> Option<String> {
        let (status, body) = self
            .w
            .call(
                "PUT",
                &format!("/api/v1/assets/{}/encryption", self.asset),
                Some(&self.partner),
                Some(json!({ "enabled": enabled })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["enabled"], enabled);
        body["key_id"].as_str().map(str::to_string)
    }
}

fn code(body: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    v["error"]["code"].as_str().unwrap().to_string()
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

fn decrypt(key: &[u8], iv: &[u8], body: &[u8]) -> Vec<u8> {
    let key: [u8; 16] = key.try_into().unwrap();
    let iv: [u8; 16] = iv.try_into().unwrap();
    cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(body)
        .unwrap()
}

/// `(key URI, IV)` of every `#EXT-X-KEY:METHOD=AES-128` in `playlist`, in
/// order, each with the segment URI it applies to.
fn keys(playlist: &str) -> Vec<(String, Vec<u8>, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<u8>)> = None;
    for line in playlist.lines() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-KEY:") {
            current = if attrs.starts_with("METHOD=AES-128,") {
                let uri = attrs
                    .split("URI=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                let iv = attrs.split("IV=0x").nth(1).unwrap();
                Some((uri.to_string(), hex::decode(iv).unwrap()))
            } else {
                None
            };
        } else if !line.starts_with('#') && !line.is_empty() {
            if let Some((uri, iv)) = &current {
                out.push((uri.clone(), iv.clone(), line.to_string()));
            }
        }
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn encrypted_assets_are_served_aes_128_and_keys_only_to_learners(db: PgPool) {
    let f = fixture(db).await;
    let segment = f.publish().await;
    let t = &f.token;
    let plain = format!("/media/{}", f.prefix);
    let clear_etag = h(
        &f.get(&format!("{plain}360p/seg_00000.m4s?token={t}"), &[])
            .await
            .1,
        "etag",
    )
    .to_string();

    // Another organisation's partner does not see the asset.
    let other = f.w.org("Elsewhere").await;
    let (_, stranger) = lectern_identity::users::create_partner_key(f.w.db(), other, "x")
        .await
        .unwrap();
    let (status, body) =
        f.w.call(
            "PUT",
            &format!("/api/v1/assets/{}/encryption", f.asset),
            Some(&stranger),
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) =
        f.w.call(
            "PUT",
            &format!("/api/v1/assets/{}/encryption", f.asset),
            Some(&f.partner),
            Some(json!({ "enabled": "yes" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let kid = f.encryption(true).await.unwrap();
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'PUT /api/v1/assets/{asset_id}/encryption'
         AND outcome = 'ok'",
    )
    .fetch_one(f.w.db())
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The master on the plain path sends the player to the key's path.
    let master = f.text(&format!("{plain}master.m3u8?token={t}")).await;
    let marked = format!("/media/assets/{}/aes-{kid}/out/attempt-1/", f.asset);
    assert!(
        master.contains(&format!("\n{marked}360p/index.m3u8?token={t}\n")),
        "{master}"
    );
    let media = f.text(&format!("{marked}360p/index.m3u8?token={t}")).await;
    let map_at = media.find("#EXT-X-MAP:URI=\"init.mp4?token=").expect("map");
    let key_at = media.find("#EXT-X-KEY:METHOD=AES-128").expect("key tag");
    let first_segment = media.find("#EXTINF").unwrap();
    assert!(map_at < key_at && key_at < first_segment, "{media}");
    let tags = keys(&media);
    assert_eq!(tags.len(), 2, "{media}");
    assert_ne!(tags[0].1, tags[1].1, "one IV per segment: {media}");
    let key_uri = &tags[0].0;
    assert_eq!(key_uri, &format!("/media-key/{}/{kid}?token={t}", f.asset));

    // The key, only for a session-bound token of this asset.
    let (status, headers, key) = f.get(key_uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(key.len(), 16);
    assert_eq!(h(&headers, "content-type"), "application/octet-stream");
    assert_eq!(h(&headers, "cache-control"), "private, no-store");
    let key_path = format!("/media-key/{}/{kid}", f.asset);
    let mut forged = t.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let playback = &f.w.state.delivery.playback;
    let session = playback.verify(t, f.asset).unwrap().session;
    for (token, expected) in [
        (forged, "invalid_token"),
        (
            playback
                .token_until(f.asset, now_unix() - 1, session)
                .unwrap(),
            "expired_token",
        ),
        (
            playback.token(Uuid::now_v7(), session).unwrap(),
            "wrong_asset",
        ),
        (playback.token(f.asset, None).unwrap(), "session_required"),
        (
            Playback::generate().token(f.asset, session).unwrap(),
            "invalid_token",
        ),
    ] {
        let (status, _, body) = f.get(&format!("{key_path}?token={token}"), &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{expected}");
        assert_eq!(code(&body), expected);
    }
    let (status, _, _) = f.get(&key_path, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = f
        .get(
            &format!("/media-key/{}/0000000000000000?token={t}", f.asset),
            &[],
        )
        .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "key_not_found")
    );
    // Refused media tokens are not audit rows (a flood must not fill the log).
    let media_audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE target LIKE '/media%'")
            .fetch_one(f.w.db())
            .await
            .unwrap();
    assert_eq!(media_audits, 0);

    // Segments decrypt to exactly the stored bytes; validators and lengths
    // describe the encrypted body.
    for (_, iv, uri) in &tags {
        let stored = if uri.starts_with("seg_00000") {
            &segment
        } else {
            &vec![2; 4096]
        };
        let (status, headers, body) = f.get(&format!("{marked}360p/{uri}"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h(&headers, "content-length"), body.len().to_string());
        assert_eq!(body.len(), (stored.len() / 16 + 1) * 16);
        assert_ne!(&body[..64], &stored[..64]);
        assert_eq!(&decrypt(&key, iv, &body), stored);
        assert_ne!(h(&headers, "etag"), clear_etag);
        assert_eq!(h(&headers, "cache-control"), IMMUTABLE);
    }
    let whole_uri = format!("{marked}360p/{}", tags[0].2);
    let (_, headers, whole) = f.get(&whole_uri, &[]).await;
    let etag = h(&headers, "etag").to_string();
    let (status, headers, part) = f.get(&whole_uri, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&part[..], &whole[1000..2000]);
    assert_eq!(
        h(&headers, "content-range"),
        format!("bytes 1000-1999/{}", whole.len())
    );
    let (status, _, tail) = f.get(&whole_uri, &[("range", "bytes=-20")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&tail[..], &whole[whole.len() - 20..]);
    let (status, _, _) = f
        .get(&whole_uri, &[("range", &format!("bytes={}-", whole.len()))])
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    let (status, _, _) = f.get(&whole_uri, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, _, _) = f.get(&whole_uri, &[("if-none-match", &clear_etag)]).await;
    assert_eq!(status, StatusCode::OK);
    let resp =
        f.w.app
            .clone()
            .oneshot(
                Request::head(&whole_uri)
                    .header("range", "bytes=16-31")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(h(resp.headers(), "content-length"), "16");
    // Init segments stay clear, also on the key's path; plain-path media
    // segments of an encrypted asset are not served (a CDN would keep them).
    let (_, _, init) = f
        .get(&format!("{marked}360p/init.mp4?token={t}"), &[])
        .await;
    assert_eq!(&init[..], &[1; 800][..]);
    let (status, _, body) = f
        .get(&format!("{plain}360p/seg_00000.m4s?token={t}"), &[])
        .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "encrypted_path")
    );

    // A new key moves the path; the old one is gone.
    let kid2 = f.encryption(true).await.unwrap();
    assert_ne!(kid2, kid);
    let (status, _, body) = f
        .get(&format!("{marked}360p/index.m3u8?token={t}"), &[])
        .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "stale_media_path")
    );
    let (status, _, _) = f.get(key_uri, &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Off: clear playlists on the plain path, clear bytes, no key tag.
    assert_eq!(f.encryption(false).await, None);
    let master = f.text(&format!("{plain}master.m3u8?token={t}")).await;
    assert!(
        master.contains(&format!("\n360p/index.m3u8?token={t}\n")),
        "{master}"
    );
    let media = f.text(&format!("{plain}360p/index.m3u8?token={t}")).await;
    assert!(!media.contains("EXT-X-KEY"), "{media}");
    let (status, headers, body) = f
        .get(&format!("{plain}360p/seg_00000.m4s?token={t}"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &segment[..]);
    assert_eq!(h(&headers, "etag"), clear_etag);
    let _ = f.org;
}

/// FFmpeg, a real HLS client, plays the encrypted rendition over HTTP:
/// it fetches the key with the token and decodes every frame.
#[sqlx::test(migrations = "../migrations")]
async fn ffmpeg_decodes_the_encrypted_rendition(db: PgPool) {
    let f = fixture(db).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args([
            "-t",
            "4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args(["-pix_fmt", "yuv420p", "-f", "hls", "-hls_time", "1"])
        .args(["-hls_segment_type", "fmp4", "-hls_playlist_type", "vod"])
        .arg("-hls_segment_filename")
        .arg(out.join("seg_%05d.m4s"))
        .arg(out.join("index.m3u8"))
        .status()
        .await
        .expect("ffmpeg is installed (infra/dev/setup)");
    assert!(status.success());
    let pl = || opts("application/vnd.apple.mpegurl", "public, max-age=300");
    f.put("master.m3u8", MASTER.into(), pl()).await;
    let mut segments = 0;
    for entry in std::fs::read_dir(out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let o = match name.rsplit('.').next().unwrap() {
            "m3u8" => pl(),
            "m4s" => {
                segments += 1;
                opts("video/iso.segment", IMMUTABLE)
            }
            _ => opts("video/mp4", IMMUTABLE),
        };
        f.put(&format!("360p/{name}"), std::fs::read(&path).unwrap(), o)
            .await;
    }
    assert!(segments >= 3);
    let kid = f.encryption(true).await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = f.w.app.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let url = format!(
        "http://{addr}/media/{}master.m3u8?token={}",
        f.prefix, f.token
    );
    let frames = |url: String| async move {
        let out = tokio::process::Command::new("ffprobe")
            .args(["-v", "error", "-allowed_extensions", "ALL", "-count_frames"])
            .args(["-protocol_whitelist", "file,http,tcp,crypto,data"])
            .args([
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames",
            ])
            .args(["-of", "csv=p=0"])
            .arg(&url)
            .output()
            .await
            .unwrap();
        (
            // The stream is listed once per program too: the first count.
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim()
                .to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (count, errors) = frames(url.clone()).await;
    assert_eq!(count, "100", "ffprobe: {errors}");
    assert!(errors.trim().is_empty(), "{errors}");

    // What the origin served really was encrypted: the first segment as
    // served does not decode behind its init segment; the stored one does.
    let media = f
        .text(&format!(
            "/media/{}360p/index.m3u8?token={}",
            f.prefix, f.token
        ))
        .await;
    assert!(media.contains(&format!("/aes-{kid}/")), "{media}");
    let first = media
        .lines()
        .find(|l| l.contains("seg_00000.m4s"))
        .unwrap()
        .to_string();
    let (status, _, served) = f.get(&first, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let init = std::fs::read(out.join("init.mp4")).unwrap();
    let stored = std::fs::read(out.join("seg_00000.m4s")).unwrap();
    for (body, decodes) in [(&served[..], false), (&stored[..], true)] {
        let file = out.join(format!("joined-{decodes}.mp4"));
        std::fs::write(&file, [&init[..], body].concat()).unwrap();
        let (count, errors) = frames(file.to_str().unwrap().to_string()).await;
        let frames: u32 = count.parse().unwrap_or(0);
        assert_eq!(frames > 0, decodes, "{count} frames: {errors}");
    }
}

/// Follows `caller`'s preview URL from `GET /api/v1/assets/{id}` to the
/// first encrypted segment and its key: (the key's status, its body, the
/// segment's IV, the segment's bytes).
async fn preview_first_key(f: &Fixture, caller: &str) -> (StatusCode, Bytes, Vec<u8>, Bytes) {
    let (status, asset) =
        f.w.call(
            "GET",
            &format!("/api/v1/assets/{}", f.asset),
            Some(caller),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{asset}");
    let master = f.text(asset["master_url"].as_str().unwrap()).await;
    let variant = master.lines().find(|l| l.starts_with("/media/")).unwrap();
    let media = f.text(variant).await;
    let (key_uri, iv, segment_uri) = keys(&media).remove(0);
    let base = &variant[..variant.rfind('/').unwrap() + 1];
    let (_, _, encrypted) = f.get(&format!("{base}{segment_uri}"), &[]).await;
    let (status, _, key) = f.get(&key_uri, &[]).await;
    (status, key, iv, encrypted)
}

/// The preview URL `GET /api/v1/assets/{id}` gives: a signed-in reviewer's
/// is bound to their session, so an encrypted asset plays for them (the
/// key decrypts the stored bytes); an API key's plays clear media only,
/// and its key request says a person must sign in.
#[sqlx::test(migrations = "../migrations")]
async fn a_signed_in_reviewer_previews_an_encrypted_asset(db: PgPool) {
    let f = fixture(db).await;
    let segment = f.publish().await;
    f.encryption(true).await.unwrap();
    let email = format!("reviewer-{}@enc.example.org", Uuid::new_v4().simple());
    f.w.user(Some(f.org), &email, Role::ContentAdmin).await;
    let reviewer = f.w.login(&email).await;

    let (status, key, iv, encrypted) = preview_first_key(&f, &reviewer).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&key));
    assert_eq!(decrypt(&key, &iv, &encrypted), segment);

    let (status, body, _, _) = preview_first_key(&f, &f.partner).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "session_required");
}

/// Origin memory cannot be amplified: an encrypted segment is encrypted
/// once per key and then answered from memory, so neither a crowd asking
/// for it at once nor a stream of ranged requests re-encrypts it (each
/// encryption holds the segment twice in memory); a new key's path is
/// encrypted once more.
#[sqlx::test(migrations = "../migrations")]
async fn an_encrypted_segment_is_encrypted_once_for_ranges_and_crowds(db: PgPool) {
    let f = fixture(db).await;
    let segment = f.publish().await;
    let kid = f.encryption(true).await.unwrap();
    let t = &f.token;
    let cache = &f.w.state.delivery.playback.media_cache;
    assert!(cache.enabled() && (segment.len() as u64) < cache.max_object());
    let encryptions = || cache.stats().derived;
    let uri = format!(
        "/media/assets/{}/aes-{kid}/out/attempt-1/360p/seg_00000.m4s?token={t}",
        f.asset
    );
    let encrypted_len = (segment.len() / 16 + 1) * 16;

    // 24 ranged requests for the cold segment at once.
    let mut crowd = tokio::task::JoinSet::new();
    for i in 0..24usize {
        let (app, uri) = (f.w.app.clone(), uri.clone());
        crowd.spawn(async move {
            let start = i * 4000;
            let req = Request::get(&uri)
                .header("range", format!("bytes={start}-{}", start + 999))
                .body(Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (start, status, body)
        });
    }
    let parts = crowd.join_all().await;
    assert_eq!(encryptions(), 1, "a crowd of 24 ranged requests");
    let (status, headers, whole) = f.get(&uri, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whole.len(), encrypted_len);
    assert_eq!(h(&headers, "content-length"), encrypted_len.to_string());
    for (start, status, body) in parts {
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(&body[..], &whole[start..start + 1000]);
    }

    // Ranges, a suffix, HEAD and a revalidation, one after the other.
    for i in 0..16usize {
        let range = format!("bytes={}-{}", i * 5000, i * 5000 + 4999);
        let (status, _, body) = f.get(&uri, &[("range", &range)]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&body[..], &whole[i * 5000..i * 5000 + 5000], "{range}");
    }
    let (status, _, tail) = f.get(&uri, &[("range", "bytes=-16")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&tail[..], &whole[encrypted_len - 16..]);
    let etag = h(&headers, "etag").to_string();
    let (status, _, _) = f.get(&uri, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(encryptions(), 1, "ranged requests re-encrypted the segment");

    // A new key: a new path, encrypted once more, and the old one refused.
    let kid2 = f.encryption(true).await.unwrap();
    let uri2 = uri.replace(&format!("aes-{kid}"), &format!("aes-{kid2}"));
    for _ in 0..3 {
        let (status, _, _) = f.get(&uri2, &[("range", "bytes=0-99")]).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    }
    assert_eq!(encryptions(), 2);
    let (status, _, body) = f.get(&uri, &[("range", "bytes=0-99")]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "stale_media_path")
    );
}
