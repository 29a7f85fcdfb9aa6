//! Captions end to end through the router, against a real PostgreSQL and
//! the world's object store: a partner uploads WebVTT and SRT for a
//! lesson whose ladder is published (a manifest, an fMP4 init segment and
//! first segment whose first frame is presented 80 ms into the timeline,
//! as x264's B-frame delay puts it), malformed files are refused with
//! their codes and store nothing, other organisations and learners are
//! kept out, and the master playlist the learner's playback URL names
//! lists the tracks as a SUBTITLES group whose playlists and segments play
//! with the same token and carry the right cue times and timestamp map.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use lectern_catalogue::captions::timeline::fixture;
use lectern_packager::{Package, Rendition, RenditionKind, Segment};
use lectern_storage::{PutOptions, Store};
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"audio/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=700000,RESOLUTION=640x360,CODECS=\"avc1.64001e,mp4a.40.2\",AUDIO=\"aac\"\n\
360p/index.m3u8\n\
#EXT-X-STREAM-INF:BANDWIDTH=100000,CODECS=\"mp4a.40.2\"\n\
audio/index.m3u8\n";

/// Five 4-second segments: a 20-second video.
const SEGMENTS: usize = 5;

const VTT: &str = "WEBVTT\n\nNOTE the first cue is what the browser test looks for\n\n\
    00:00:01.000 --> 00:00:03.000\n心脏的四个腔室\n\n\
    intro-2\n00:00:03.500 --> 00:00:04.500 line:0\nspans a segment boundary\n\n\
    00:00:17.000 --> 00:00:19.500\n<i>the end</i>\n";

const SRT: &str = "1\r\n00:00:02,000 --> 00:00:05,250\r\n<font color=\"#ffffff\">Four chambers</font> & valves\r\n\r\n\
    2\r\n00:00:09,000 --> 00:00:10,000\r\n{\\an8}Atrium\r\n";

struct Fixture {
    w: World,
    org: Uuid,
    lesson: Uuid,
    asset: Uuid,
    admin: String,
    partner: String,
    learner: String,
}

fn opts(content_type: &str) -> PutOptions {
    PutOptions {
        content_type: Some(content_type.into()),
        cache_control: Some("public, max-age=300".into()),
    }
}

/// A published ladder as the packager leaves it (only what captions and
/// the master need: playlists, manifest, the first video segment).
async fn publish(store: &dyn Store, asset: Uuid) -> String {
    let prefix = format!("assets/{asset}/out/attempt-1/");
    let segments = |_: &str| {
        (0..SEGMENTS)
            .map(|i| Segment {
                uri: format!("seg_{i:05}.m4s"),
                duration_s: 4.0,
                bytes: 1000,
                init_uri: None,
                iframes: Vec::new(),
            })
            .collect::<Vec<_>>()
    };
    let package = Package {
        renditions: vec![
            Rendition {
                kind: RenditionKind::Video,
                name: "360p".into(),
                dir: "360p".into(),
                codecs: "avc1.64001e".into(),
                width: Some(640),
                height: Some(360),
                frame_rate: Some(25.0),
                channels: None,
                init_uri: "init.mp4".into(),
                segments: segments("360p"),
            },
            Rendition {
                kind: RenditionKind::Audio,
                name: "audio".into(),
                dir: "audio".into(),
                codecs: "mp4a.40.2".into(),
                width: None,
                height: None,
                frame_rate: None,
                channels: Some(2),
                init_uri: "init.mp4".into(),
                segments: segments("audio"),
            },
        ],
        poster: None,
        storyboard: None,
    };
    let manifest = serde_json::to_vec(&lectern_packager::manifest(&package)).unwrap();
    let put = |key: String, bytes: Vec<u8>, o: PutOptions| async move {
        store.put_bytes(&key, bytes.into(), o).await.unwrap();
    };
    put(
        format!("{prefix}manifest.json"),
        manifest,
        opts("application/json"),
    )
    .await;
    put(
        format!("{prefix}master.m3u8"),
        MASTER.as_bytes().to_vec(),
        opts("application/vnd.apple.mpegurl"),
    )
    .await;
    // 25 fps at 12800 Hz; decoded at 0, shown two frames later.
    put(
        format!("{prefix}360p/init.mp4"),
        fixture::init(12_800),
        opts("video/mp4"),
    )
    .await;
    put(
        format!("{prefix}360p/seg_00000.m4s"),
        fixture::segment(0, 1024),
        opts("video/iso.segment"),
    )
    .await;
    prefix
}

impl Fixture {
    async fn new(db: PgPool) -> Self {
        let w = World::new(db).await;
        let org = w.org("Cardiology Society").await;
        w.user(Some(org), "admin@a.example.org", Role::ContentAdmin)
            .await;
        w.user(Some(org), "learner@a.example.org", Role::Learner)
            .await;
        let (_, partner) = lectern_identity::users::create_partner_key(w.db(), org, "captions")
            .await
            .unwrap();
        let (course, lesson, asset) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let prefix = publish(&*w.state.store, asset).await;
        sqlx::query(
            "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
             VALUES ($1, $2, 'ready', $3, $4, $5)",
        )
        .bind(asset)
        .bind(org)
        .bind(format!("assets/{asset}/source"))
        .bind(SEGMENTS as f64 * 4.0)
        .bind(&prefix)
        .execute(w.db())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO courses (id, organisation_id, title, state, published_at)
             VALUES ($1, $2, '心血管解剖', 'published', now())",
        )
        .bind(course)
        .bind(org)
        .execute(w.db())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO lessons (id, organisation_id, course_id, title, asset_id)
             VALUES ($1, $2, $3, '心脏的结构', $4)",
        )
        .bind(lesson)
        .bind(org)
        .bind(course)
        .bind(asset)
        .execute(w.db())
        .await
        .unwrap();
        let admin = w.login("admin@a.example.org").await;
        let learner = w.login("learner@a.example.org").await;
        Self {
            w,
            org,
            lesson,
            asset,
            admin,
            partner,
            learner,
        }
    }

    /// A raw request (the upload body is the caption file, not JSON).
    async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = self
            .w
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, bytes)
    }

    async fn upload(
        &self,
        token: &str,
        language: &str,
        query: &str,
        file: &[u8],
    ) -> (StatusCode, Value) {
        let (status, _, body) = self
            .send(
                "PUT",
                &format!("/api/v1/lessons/{}/captions/{language}{query}", self.lesson),
                Some(token),
                file.to_vec(),
                &[("content-type", "text/vtt")],
            )
            .await;
        let text = String::from_utf8_lossy(&body).into_owned();
        lectern_testkit::assert_error_vocabulary(status, &text);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn text(&self, uri: &str, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let (status, headers, body) = self.send("GET", uri, token, Vec::new(), &[]).await;
        (status, headers, String::from_utf8(body).unwrap())
    }

    /// The learner's playback URL of the lesson.
    async fn master_url(&self) -> String {
        let (status, body) = self
            .w
            .call(
                "POST",
                &format!("/api/v1/lessons/{}/playback", self.lesson),
                Some(&self.learner),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["master_url"].as_str().unwrap().to_string()
    }

    async fn caption_objects(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .w
            .state
            .store
            .list(&format!("assets/{}/out/captions/", self.asset))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        keys
    }
}

/// `uri` (relative, as a playlist writes it) resolved against `base`.
fn resolve(base: &str, uri: &str) -> String {
    let dir = &base[..base.rfind('/').unwrap() + 1];
    let mut parts: Vec<&str> = dir.split('/').collect();
    parts.pop();
    for segment in uri.split('/') {
        match segment {
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn subtitle_uris(master: &str) -> Vec<String> {
    master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-MEDIA:TYPE=SUBTITLES"))
        .map(|l| {
            let at = l.find("URI=\"").unwrap() + 5;
            l[at..at + l[at..].find('"').unwrap()].to_string()
        })
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn uploaded_captions_play_in_the_master_playlist(db: PgPool) {
    let f = Fixture::new(db).await;

    // WebVTT, default, labelled by the partner.
    let (status, track) = f
        .upload(
            &f.partner,
            "zh-cn",
            "?label=中文&default=true",
            VTT.as_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{track}");
    assert_eq!(track["language"], "zh-CN");
    assert_eq!(track["label"], "中文");
    assert_eq!(track["default"], true);
    assert_eq!(track["format"], "webvtt");
    assert_eq!(track["cues"], 3);
    assert_eq!(track["current"], true);
    assert_eq!(track["asset_id"], json!(f.asset));

    // SRT, converted; its label defaults to the language's own name.
    let (status, track) = f.upload(&f.admin, "en", "", SRT.as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{track}");
    assert_eq!(
        (track["label"].as_str(), track["default"].as_bool()),
        (Some("English"), Some(false))
    );
    assert_eq!(track["format"], "srt");
    let (status, _, english) = f
        .text(track["url"].as_str().unwrap(), Some(&f.learner))
        .await;
    assert_eq!(status, StatusCode::OK, "{english}");
    assert_eq!(
        english,
        "WEBVTT\n\n1\n00:00:02.000 --> 00:00:05.250\nFour chambers &amp; valves\n\n\
         2\n00:00:09.000 --> 00:00:10.000\nAtrium\n"
    );

    // The learner lists both, the default first.
    let (status, list) =
        f.w.call(
            "GET",
            &format!("/api/v1/lessons/{}/captions", f.lesson),
            Some(&f.learner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let languages: Vec<&str> = list["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["language"].as_str().unwrap())
        .collect();
    assert_eq!(languages, ["zh-CN", "en"]);

    // The master playlist of the learner's playback URL lists them.
    let url = f.master_url().await;
    assert!(url.contains("&lesson="), "{url}");
    let (status, headers, master) = f.text(&url, None).await;
    assert_eq!(status, StatusCode::OK, "{master}");
    assert_eq!(headers["cache-control"], "private, no-cache");
    let token = url
        .split("token=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        master.contains(
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"中文\",LANGUAGE=\"zh-CN\",\
             DEFAULT=YES,AUTOSELECT=YES,URI=\"../captions/"
        ),
        "{master}"
    );
    assert!(
        master.contains("NAME=\"English\",LANGUAGE=\"en\",DEFAULT=NO,AUTOSELECT=YES"),
        "{master}"
    );
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(variants.len(), 2);
    assert!(
        variants.iter().all(|v| v.ends_with(",SUBTITLES=\"subs\"")),
        "{master}"
    );

    // Its subtitle playlist and segments are fetched with the same token.
    let uris = subtitle_uris(&master);
    assert!(
        uris.iter().all(|u| u.ends_with(&format!("?token={token}"))),
        "{uris:?}"
    );
    let master_path = url.split('?').next().unwrap();
    let chinese = resolve(master_path, &uris[0]);
    assert!(
        chinese.starts_with(&format!("/media/assets/{}/out/captions/", f.asset)),
        "{chinese}"
    );
    let (status, _, playlist) = f.text(&chinese, None).await;
    assert_eq!(status, StatusCode::OK, "{playlist}");
    assert!(playlist.contains("#EXT-X-TARGETDURATION:4"), "{playlist}");
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let segments: Vec<&str> = playlist.lines().filter(|l| l.starts_with("seg_")).collect();
    assert_eq!(
        segments.len(),
        SEGMENTS,
        "one WebVTT segment per video segment: {playlist}"
    );
    let (missing, _, _) = f
        .text(&chinese.replace(&format!("?token={token}"), ""), None)
        .await;
    assert_eq!(missing, StatusCode::UNAUTHORIZED);

    let fixture = &f;
    let segment = |i: usize| {
        let uri = resolve(chinese.split('?').next().unwrap(), segments[i]);
        async move { fixture.text(&uri, None).await }
    };
    let (status, headers, first) = segment(0).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(headers["content-type"], "text/vtt");
    // 1024 / 12800 s = 80 ms = 7200 ticks of 90 kHz.
    assert!(
        first.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:7200,LOCAL:00:00:00.000\n"),
        "{first}"
    );
    assert!(
        first.contains("00:00:01.000 --> 00:00:03.000\n心脏的四个腔室\n"),
        "{first}"
    );
    assert!(
        first.contains("intro-2\n00:00:03.500 --> 00:00:04.500 line:0\n"),
        "{first}"
    );
    assert!(!first.contains("the end"), "{first}");
    let (_, _, second) = segment(1).await;
    assert!(
        second.contains("spans a segment boundary") && !second.contains("心脏"),
        "{second}"
    );
    let (_, _, last) = segment(4).await;
    assert!(
        last.contains("00:00:17.000 --> 00:00:19.500\n<i>the end</i>"),
        "{last}"
    );
    let (_, _, empty) = segment(2).await;
    assert!(!empty.contains("-->"), "{empty}");

    // Unchanged tracks: the master revalidates to a 304.
    let etag = headers_etag(&f, &url).await;
    let (status, _, _) = f
        .send("GET", &url, None, Vec::new(), &[("if-none-match", &etag)])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // Deleting a track takes it out of the master (the same URL, the old
    // validator no longer current) and out of storage.
    let before = f.caption_objects().await;
    let (status, _) =
        f.w.call(
            "DELETE",
            &format!("/api/v1/lessons/{}/captions/zh-CN", f.lesson),
            Some(&f.partner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, master) = f
        .send("GET", &url, None, Vec::new(), &[("if-none-match", &etag)])
        .await;
    assert_eq!(status, StatusCode::OK);
    let master = String::from_utf8(master).unwrap();
    assert!(!master.contains("zh-CN"), "{master}");
    assert_eq!(subtitle_uris(&master).len(), 1, "{master}");
    let after = f.caption_objects().await;
    assert_eq!(after.len(), before.len() - (SEGMENTS + 2), "{after:?}");
    let (status, _, _) = f.text(&chinese, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Without the lesson (a partner's preview URL) the stored master is served as is.
    let plain = url.split("&lesson=").next().unwrap();
    let (_, headers, master) = f.text(plain, None).await;
    assert!(!master.contains("SUBTITLES"), "{master}");
    assert!(headers["cache-control"]
        .to_str()
        .unwrap()
        .starts_with("private, max-age="));

    // Every change is audited with its lesson and language.
    f.w.audit_flushed().await;
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT target FROM audit_log WHERE action LIKE '% /api/v1/lessons/{lesson_id}/captions/{language}'
         AND outcome = 'ok' ORDER BY id",
    )
    .fetch_all(f.w.db())
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            format!("/api/v1/lessons/{}/captions/zh-cn", f.lesson),
            format!("/api/v1/lessons/{}/captions/en", f.lesson),
            format!("/api/v1/lessons/{}/captions/zh-CN", f.lesson),
        ]
    );
}

async fn headers_etag(f: &Fixture, url: &str) -> String {
    let (_, headers, _) = f.text(url, None).await;
    headers["etag"].to_str().unwrap().to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn replacing_a_track_switches_it_and_keeps_one_default(db: PgPool) {
    let f = Fixture::new(db).await;
    let (status, _) = f
        .upload(&f.admin, "en", "?default=true", SRT.as_bytes())
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = f.caption_objects().await;
    let (status, track) = f.upload(&f.admin, "EN", "", VTT.as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{track}");
    // Replaced in place: same language, still the default, new cues.
    assert_eq!(
        (track["language"].as_str(), track["default"].as_bool()),
        (Some("en"), Some(true))
    );
    assert_eq!(track["cues"], 3);
    let second = f.caption_objects().await;
    assert_eq!(
        second.len(),
        first.len(),
        "the old upload's objects are gone"
    );
    assert!(
        first.iter().all(|k| !second.contains(k)),
        "a replacement is a new prefix"
    );

    // A second default takes the flag from the first.
    let (_, track) = f
        .upload(&f.admin, "zh-Hans", "?default=true", VTT.as_bytes())
        .await;
    assert_eq!(track["label"], "中文（简体）");
    let (status, list) =
        f.w.call(
            "GET",
            &format!("/api/v1/lessons/{}/captions", f.lesson),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let defaults: Vec<(&str, bool)> = list["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["language"].as_str().unwrap(),
                t["default"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(defaults, [("zh-Hans", true), ("en", false)]);

    // Renamed and made default again without a new upload.
    let (status, track) =
        f.w.call(
            "PATCH",
            &format!("/api/v1/lessons/{}/captions/en", f.lesson),
            Some(&f.admin),
            Some(json!({ "label": "English (CC)", "default": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{track}");
    assert_eq!(
        (track["label"].as_str(), track["default"].as_bool()),
        (Some("English (CC)"), Some(true))
    );
    let defaults: i64 = sqlx::query_scalar("SELECT count(*) FROM lesson_captions WHERE is_default")
        .fetch_one(f.w.db())
        .await
        .unwrap();
    assert_eq!(defaults, 1);

    // Given another video, the lesson's tracks stop playing (and learners
    // stop seeing them) until replaced; managers see them as not current.
    let other = Uuid::now_v7();
    publish(&*f.w.state.store, other).await;
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
         VALUES ($1, $2, 'ready', 'x', 20, $3)",
    )
    .bind(other)
    .bind(f.org)
    .bind(format!("assets/{other}/out/attempt-1/"))
    .execute(f.w.db())
    .await
    .unwrap();
    sqlx::query("UPDATE lessons SET asset_id = $2 WHERE id = $1")
        .bind(f.lesson)
        .bind(other)
        .execute(f.w.db())
        .await
        .unwrap();
    let (_, _, master) = f.text(&f.master_url().await, None).await;
    assert!(!master.contains("SUBTITLES"), "{master}");
    let (_, list) =
        f.w.call(
            "GET",
            &format!("/api/v1/lessons/{}/captions", f.lesson),
            Some(&f.learner),
            None,
        )
        .await;
    assert_eq!(list["captions"], json!([]));
    let (_, list) =
        f.w.call(
            "GET",
            &format!("/api/v1/lessons/{}/captions", f.lesson),
            Some(&f.admin),
            None,
        )
        .await;
    assert!(list["captions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["current"] == false));
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_files_are_refused_with_their_code_and_store_nothing(db: PgPool) {
    let f = Fixture::new(db).await;
    let big = format!(
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n{}\n",
        "字".repeat(800_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "gbk",
            b"WEBVTT\n\n00:01.000 --> 00:02.000\n\xd7\xd6\xc4\xbb\n".to_vec(),
            422,
            "caption_encoding",
        ),
        (
            "utf-16",
            vec![0xFF, 0xFE, b'1', 0, b'\n', 0],
            422,
            "caption_encoding",
        ),
        (
            "neither",
            b"<tt xmlns=\"http://www.w3.org/ns/ttml\"/>".to_vec(),
            422,
            "caption_format",
        ),
        (
            "bad timestamp",
            b"WEBVTT\n\n00:01.000 --> 00:02,000\nx\n".to_vec(),
            422,
            "caption_malformed",
        ),
        (
            "no blank line",
            b"1\n00:00:01,000 --> 00:00:02,000\na\n2\n00:00:03,000 --> 00:00:04,000\nb\n".to_vec(),
            422,
            "caption_malformed",
        ),
        (
            "backwards",
            b"WEBVTT\n\n00:05.000 --> 00:04.000\nx\n".to_vec(),
            422,
            "caption_cue_timing",
        ),
        (
            "out of order",
            b"WEBVTT\n\n00:05.000 --> 00:06.000\nb\n\n00:01.000 --> 00:02.000\na\n".to_vec(),
            422,
            "caption_cue_order",
        ),
        (
            "no cues",
            b"WEBVTT\n\nNOTE nothing\n".to_vec(),
            422,
            "caption_empty",
        ),
        (
            "past the end",
            b"WEBVTT\n\n00:01.000 --> 00:02.000\na\n\n00:45.000 --> 00:46.000\nb\n".to_vec(),
            422,
            "caption_beyond_duration",
        ),
        ("too big", big.into_bytes(), 413, "caption_too_large"),
    ];
    for (what, file, status, code) in cases {
        let (got, body) = f.upload(&f.partner, "en", "", &file).await;
        assert_eq!(got.as_u16(), status, "{what}: {body}");
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    for (language, query, code) in [
        ("english", "", "invalid_language"),
        ("zh_CN", "", "invalid_language"),
        ("en", "?label=", "invalid_name"),
        ("en", "?label=%22quoted%22", "invalid_name"),
    ] {
        let (got, body) = f.upload(&f.partner, language, query, VTT.as_bytes()).await;
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str()),
            (422, Some(code)),
            "{language}{query}: {body}"
        );
    }
    assert!(
        f.caption_objects().await.is_empty(),
        "a refused file stores nothing"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM lesson_captions")
        .fetch_one(f.w.db())
        .await
        .unwrap();
    assert_eq!(rows, 0);

    // No video ready: nothing to time the captions against.
    sqlx::query("UPDATE lessons SET asset_id = NULL WHERE id = $1")
        .bind(f.lesson)
        .execute(f.w.db())
        .await
        .unwrap();
    let (status, body) = f.upload(&f.partner, "en", "", VTT.as_bytes()).await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (409, Some("lesson_video_not_ready")),
        "{body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn other_organisations_and_learners_are_kept_out(db: PgPool) {
    let f = Fixture::new(db).await;
    let (status, _) = f.upload(&f.partner, "en", "", VTT.as_bytes()).await;
    assert_eq!(status, StatusCode::OK);
    let elsewhere = f.w.org("Another Hospital").await;
    f.w.user(Some(elsewhere), "admin@b.example.org", Role::ContentAdmin)
        .await;
    f.w.user(Some(elsewhere), "learner@b.example.org", Role::Learner)
        .await;
    let (_, stranger_key) = lectern_identity::users::create_partner_key(f.w.db(), elsewhere, "x")
        .await
        .unwrap();
    let stranger = f.w.login("admin@b.example.org").await;
    let stranger_learner = f.w.login("learner@b.example.org").await;
    for token in [&stranger, &stranger_key] {
        let (status, body) = f.upload(token, "en", "", VTT.as_bytes()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{body}"
        );
        let (status, _) =
            f.w.call(
                "DELETE",
                &format!("/api/v1/lessons/{}/captions/en", f.lesson),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    for token in [&stranger, &stranger_learner] {
        let (status, _) =
            f.w.call(
                "GET",
                &format!("/api/v1/lessons/{}/captions", f.lesson),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = f
            .text(
                &format!("/api/v1/lessons/{}/captions/en", f.lesson),
                Some(token),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // A learner of the organisation plays the lesson but cannot change its captions.
    let (status, body) = f.upload(&f.learner, "fr", "", VTT.as_bytes()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (status, _) =
        f.w.call(
            "DELETE",
            &format!("/api/v1/lessons/{}/captions/en", f.lesson),
            Some(&f.learner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Unpublished, the lesson's captions are its managers' only.
    sqlx::query("UPDATE courses SET state = 'unpublished'")
        .execute(f.w.db())
        .await
        .unwrap();
    let (status, _) =
        f.w.call(
            "GET",
            &format!("/api/v1/lessons/{}/captions", f.lesson),
            Some(&f.learner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        f.w.call(
            "GET",
            &format!("/api/v1/lessons/{}/captions", f.lesson),
            Some(&f.partner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM lesson_captions")
        .fetch_one(f.w.db())
        .await
        .unwrap();
    assert_eq!(rows, 1, "nothing the outsiders did changed the track");
}
