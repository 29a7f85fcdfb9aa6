//! Live ingest with a real, independent publisher (the `ffmpeg` CLI) over
//! RTMP and SRT, against real PostgreSQL and object storage: a wrong key
//! is refused before any media; the live playlist grows while publishing;
//! a publisher killed and restarted within the reconnect window continues
//! the same event and playlist after an `EXT-X-DISCONTINUITY`; ending the
//! event publishes the replay (ENDLIST, the live segments themselves) whose
//! duration is the media published, and every rung decodes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use lectern_testkit::{sample_clip, wait_until, World};
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Live {
    w: World,
    admin: String,
    course: Uuid,
    org: Uuid,
}

async fn setup(db: PgPool) -> Live {
    let w = World::new(db).await;
    let org = w.org("Live Org").await;
    w.user(Some(org), "admin@live.example.org", Role::ContentAdmin)
        .await;
    w.user(Some(org), "learner@live.example.org", Role::Learner)
        .await;
    let admin = w.login("admin@live.example.org").await;
    let course = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, '病例讨论', 'published', now())",
    )
    .bind(course)
    .bind(org)
    .execute(w.db())
    .await
    .unwrap();
    Live {
        w,
        admin,
        course,
        org,
    }
}

async fn schedule(live: &Live, reconnect_window_s: i32) -> (Uuid, Uuid, String) {
    let (status, body) = live
        .w
        .call(
            "POST",
            "/api/v1/live-events",
            Some(&live.admin),
            Some(json!({
                "course_id": live.course,
                "title": "心内科病例讨论 · Grand rounds",
                "scheduled_start": "2026-12-07T10:00:00Z",
                "reconnect_window_s": reconnect_window_s,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let event = body["event"]["id"].as_str().unwrap().parse().unwrap();
    let asset = body["event"]["asset_id"].as_str().unwrap().parse().unwrap();
    (
        event,
        asset,
        body["publish"]["stream_key"].as_str().unwrap().to_string(),
    )
}

/// The organiser's `POST …/end`.
async fn end(live: &Live, id: Uuid) -> (StatusCode, Value) {
    live.w
        .call(
            "POST",
            &format!("/api/v1/live-events/{id}/end"),
            Some(&live.admin),
            None,
        )
        .await
}

/// Waits up to `seconds` for the event's replay to be published.
async fn replay_ready(live: &Live, id: Uuid, seconds: u64) {
    wait_until("the replay", Duration::from_secs(seconds), || async {
        event(live, id).await["event"]["state"] == "replay_ready"
    })
    .await;
}

async fn event(live: &Live, id: Uuid) -> Value {
    let (status, body) = live
        .w
        .call(
            "GET",
            &format!("/api/v1/live-events/{id}"),
            Some(&live.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn ffmpeg(args: &[&str], progress: Option<&Path>) -> Child {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    if let Some(progress) = progress {
        command
            .args(["-stats_period", "0.1", "-progress"])
            .arg(progress);
    }
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed")
}

/// The last `out_time_us` ffmpeg reported: media seconds sent so far.
/// An OBS-like publisher: `clip` in real time (`-re`, after `input`
/// options such as `-t` or `-stream_loop`), its H.264/AAC copied into FLV
/// to `url`.
fn publish_copy(clip: &Path, input: &[&str], url: &str, progress: Option<&Path>) -> Child {
    let mut args = vec!["-re"];
    args.extend_from_slice(input);
    args.extend_from_slice(&["-i", clip.to_str().unwrap(), "-c", "copy", "-f", "flv", url]);
    ffmpeg(&args, progress)
}

fn progress_s(file: &Path) -> f64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("out_time_us="))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e6
}

async fn object(live: &Live, key: &str) -> Option<String> {
    let got = live.w.state.live.store.get(key, None).await.ok()?;
    Some(String::from_utf8(got.bytes().await.ok()?.to_vec()).unwrap())
}

fn segments_in(playlist: &str) -> usize {
    playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count()
}

fn duration_of(playlist: &str) -> f64 {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.split(',').next()?.parse::<f64>().ok())
        .sum()
}

fn prefix(asset: Uuid) -> String {
    format!("assets/{asset}/out/attempt-1/")
}

async fn start_rtmp(live: &Live) -> (u16, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cancel = CancellationToken::new();
    tokio::spawn(lectern_live::rtmp::serve(
        live.w.state.live.clone(),
        listener,
        cancel.clone(),
    ));
    tokio::spawn(lectern_live::lifecycle::run_sweeper(
        live.w.state.live.clone(),
        cancel.clone(),
    ));
    (port, cancel)
}

/// Copies a published rendition out of storage and decodes every frame.
async fn decodes(live: &Live, prefix: &str, dir: &str, scratch: &Path) {
    let playlist = object(live, &format!("{prefix}{dir}/index.m3u8"))
        .await
        .expect("rendition playlist");
    let local = scratch.join(dir);
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("index.m3u8"), &playlist).unwrap();
    for line in playlist.lines() {
        let name = if let Some(rest) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
            rest.trim_end_matches('"').to_string()
        } else if !line.starts_with('#') && !line.is_empty() {
            line.to_string()
        } else {
            continue;
        };
        let got = live
            .w
            .state
            .live
            .store
            .get(&format!("{prefix}{dir}/{name}"), None)
            .await
            .unwrap();
        std::fs::write(local.join(&name), got.bytes().await.unwrap()).unwrap();
    }
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-allowed_extensions", "ALL", "-i"])
        .arg(local.join("index.m3u8"))
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{dir} does not decode cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn rtmp_wrong_key_is_refused_before_any_media(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, _key) = schedule(&live, 60).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&[]);
    let url = format!("rtmp://127.0.0.1:{port}/live/lsk_not-the-key-of-anything-at-all");
    let mut child = publish_copy(&clip, &[], &url, None);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        !status.success(),
        "ffmpeg must fail to publish with a wrong key"
    );
    let body = event(&live, event_id).await;
    assert_eq!(body["event"]["state"], "scheduled");
    assert_eq!(body["event"]["connections"], 0);
    let objects = live.w.state.live.store.list(&prefix(asset)).await.unwrap();
    assert!(
        objects.is_empty(),
        "nothing may be written for a refused key"
    );
    cancel.cancel();
}

#[sqlx::test(migrations = "../migrations")]
async fn rtmp_publish_reconnect_end_and_replay(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, key) = schedule(&live, 60).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&["--seconds", "30"]);
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    let scratch = tempfile::tempdir().unwrap();
    let top = format!("{}v/720p/index.m3u8", prefix(asset));

    // First connection: published until the playlist has grown, then killed.
    let progress = scratch.path().join("first.progress");
    let mut first = publish_copy(&clip, &[], &url, Some(&progress));
    wait_until(
        "the live playlist's first segment",
        Duration::from_secs(60),
        || async {
            object(&live, &top)
                .await
                .is_some_and(|p| segments_in(&p) >= 1)
        },
    )
    .await;
    let early = segments_in(&object(&live, &top).await.unwrap());
    wait_until(
        "the live playlist to grow",
        Duration::from_secs(60),
        || async {
            object(&live, &top)
                .await
                .is_some_and(|p| segments_in(&p) >= early + 2)
        },
    )
    .await;
    let body = event(&live, event_id).await;
    assert_eq!(body["event"]["state"], "live");
    let master = object(&live, &format!("{}master.m3u8", prefix(asset)))
        .await
        .expect("the master is published while live");
    assert!(
        master.contains("v/720p/index.m3u8") && master.contains("a/audio/index.m3u8"),
        "{master}"
    );
    let live_playlist = object(&live, &top).await.unwrap();
    assert!(!live_playlist.contains("#EXT-X-ENDLIST"), "{live_playlist}");
    assert!(
        live_playlist.contains("#EXT-X-PLAYLIST-TYPE:EVENT"),
        "{live_playlist}"
    );

    // A learner's playback session points at the live ladder, and the
    // origin serves it signed, like VOD.
    let learner = live.w.login("learner@live.example.org").await;
    let lesson = body["event"]["lesson_id"].as_str().unwrap().to_string();
    let (status, session) = live
        .w
        .call(
            "POST",
            &format!("/api/v1/lessons/{lesson}/playback"),
            Some(&learner),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let master_url = session["master_url"].as_str().unwrap();
    assert!(
        master_url.contains(&prefix(asset)) && master_url.contains("token="),
        "{master_url}"
    );
    let (status, _, master_text) = live
        .w
        .call_with_headers("GET", master_url, None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{master_text}");
    assert!(
        master_text.contains("v/720p/index.m3u8?token="),
        "{master_text}"
    );
    let token = live.w.state.delivery.playback.token(asset, None).unwrap();
    let (status, headers, text) = live
        .w
        .call_with_headers("GET", &format!("/media/{top}?token={token}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Asked for plainly, a live playlist carries this viewer's token, so
    // a client that cannot substitute variables plays it too.
    assert_eq!(headers["cache-control"], "private, max-age=1");
    assert!(text.contains(&token), "{text}");

    first.kill().unwrap();
    first.wait().unwrap();
    let first_s = progress_s(&progress);
    assert!(first_s > 3.0, "the first publish sent {first_s} s");
    wait_until(
        "the publisher to be seen gone",
        Duration::from_secs(60),
        || async { !event(&live, event_id).await["event"]["disconnected_at"].is_null() },
    )
    .await;

    // Within the window: the same event continues.
    let second_progress = scratch.path().join("second.progress");
    let mut second = publish_copy(&clip, &["-t", "6"], &url, Some(&second_progress));
    let status = tokio::task::spawn_blocking(move || second.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the second publish succeeds");
    let second_s = progress_s(&second_progress);
    wait_until(
        "the second connection to close",
        Duration::from_secs(90),
        || async {
            let e = event(&live, event_id).await;
            e["event"]["connections"] == 2 && !e["event"]["disconnected_at"].is_null()
        },
    )
    .await;
    assert_eq!(event(&live, event_id).await["event"]["state"], "live");

    let (status, body) = end(&live, event_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    replay_ready(&live, event_id, 30).await;

    let replay = object(&live, &top).await.unwrap();
    assert!(replay.contains("#EXT-X-ENDLIST"), "{replay}");
    assert!(replay.contains("#EXT-X-PLAYLIST-TYPE:VOD"), "{replay}");
    assert_eq!(
        replay.matches("#EXT-X-DISCONTINUITY").count(),
        1,
        "{replay}"
    );
    assert!(replay.contains("c1-seg_00000.m4s") && replay.contains("c2-seg_00000.m4s"));
    let published = first_s + second_s;
    let replay_s = duration_of(&replay);
    assert!(
        (replay_s - published).abs() <= 1.0,
        "replay {replay_s:.2} s vs published {published:.2} s ({first_s:.2} + {second_s:.2}):\n{replay}"
    );
    let (status, ready_prefix): (String, Option<String>) =
        sqlx::query_as("SELECT status, output_prefix FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_one(live.w.db())
            .await
            .unwrap();
    assert_eq!(status, "ready");
    assert_eq!(ready_prefix.as_deref(), Some(prefix(asset).as_str()));

    // Every rung decodes, and the rungs' keyframes are where segments start.
    let master = object(&live, &format!("{}master.m3u8", prefix(asset)))
        .await
        .unwrap();
    let dirs: Vec<String> = master
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with("index.m3u8"))
        .map(|l| l.trim_end_matches("/index.m3u8").to_string())
        .chain(std::iter::once("a/audio".to_string()))
        .collect();
    assert!(
        dirs.len() >= 3,
        "720p source: 720p, 480p, 360p and audio: {dirs:?}"
    );
    let mut counts = Vec::new();
    for dir in &dirs {
        decodes(&live, &prefix(asset), dir, scratch.path()).await;
        if dir.starts_with("v/") {
            let p = object(&live, &format!("{}{dir}/index.m3u8", prefix(asset)))
                .await
                .unwrap();
            let durations: Vec<f64> = p
                .lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:"))
                .filter_map(|l| l.split(',').next()?.parse().ok())
                .collect();
            counts.push(durations);
        }
    }
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "aligned rungs: {counts:?}"
    );
    let log: Vec<String> = event(&live, event_id).await["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "scheduled",
        "connected",
        "playable",
        "disconnected",
        "ended",
        "replay_ready",
    ] {
        assert!(log.iter().any(|k| k == kind), "{kind} missing from {log:?}");
    }
    cancel.cancel();
}

#[sqlx::test(migrations = "../migrations")]
async fn rtmp_other_codecs_are_refused_with_a_reason(db: PgPool) {
    let live = setup(db).await;
    let (event_id, _asset, key) = schedule(&live, 0).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&[]);
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    // FLV's Sorenson H.263 and MP3: both outside H.264/AAC.
    let mut child = ffmpeg(
        &[
            "-re",
            "-i",
            clip.to_str().unwrap(),
            "-t",
            "3",
            "-c:v",
            "flv1",
            "-c:a",
            "libmp3lame",
            "-ar",
            "44100",
            "-f",
            "flv",
            &url,
        ],
        None,
    );
    let _ = tokio::task::spawn_blocking(move || child.wait().unwrap()).await;
    wait_until(
        "the refusal in the event's log",
        Duration::from_secs(30),
        || async {
            event(&live, event_id).await["log"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| {
                    l["kind"] == "stream_refused" && l["detail"]["code"] == "unsupported_codec"
                })
        },
    )
    .await;
    cancel.cancel();
}

fn srt_port() -> u16 {
    // A free UDP port: bind, read, release.
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[sqlx::test(migrations = "../migrations")]
async fn srt_publish_wrong_key_refused_then_replay(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, key) = schedule(&live, 0).await;
    let port = srt_port();
    let cancel = CancellationToken::new();
    tokio::spawn(lectern_live::srt::serve(
        live.w.state.live.clone(),
        port,
        cancel.clone(),
    ));
    tokio::spawn(lectern_live::lifecycle::run_sweeper(
        live.w.state.live.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clip = sample_clip(&["--seconds", "12"]);
    let srt = |stream_id: &str| format!("srt://127.0.0.1:{port}?streamid={stream_id}");

    let wrong = srt("lsk_not-the-key-of-anything-at-all");
    let mut child = ffmpeg(
        &[
            "-re",
            "-i",
            clip.to_str().unwrap(),
            "-t",
            "2",
            "-c",
            "copy",
            "-f",
            "mpegts",
            &wrong,
        ],
        None,
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "SRT refuses the caller before media");
    assert_eq!(event(&live, event_id).await["event"]["connections"], 0);

    let progress = PathBuf::from(format!("{}/srt.progress", std::env::temp_dir().display()));
    let good = srt(&key);
    let mut child = ffmpeg(
        &[
            "-re",
            "-i",
            clip.to_str().unwrap(),
            "-c",
            "copy",
            "-f",
            "mpegts",
            &good,
        ],
        Some(&progress),
    );
    let top = format!("{}v/720p/index.m3u8", prefix(asset));
    wait_until(
        "the SRT live playlist to grow",
        Duration::from_secs(60),
        || async {
            object(&live, &top)
                .await
                .is_some_and(|p| segments_in(&p) >= 2)
        },
    )
    .await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    let published = progress_s(&progress);
    // Reconnect window 0: the event ends when the publisher leaves.
    wait_until("the SRT replay", Duration::from_secs(90), || async {
        event(&live, event_id).await["event"]["state"] == "replay_ready"
    })
    .await;
    let replay = object(&live, &top).await.unwrap();
    assert!(replay.contains("#EXT-X-ENDLIST"));
    let replay_s = duration_of(&replay);
    assert!(
        (replay_s - published).abs() <= 1.0,
        "replay {replay_s:.2} s vs published {published:.2} s"
    );
    cancel.cancel();
}

/// player-sdk's node_modules (hls.js, playwright-core), installed once.
fn sdk_dir() -> PathBuf {
    let sdk = lectern_testkit::repo_root().join("player-sdk");
    if !sdk.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&sdk)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm ci in player-sdk failed");
    }
    sdk
}

/// Plays the event's live master in headless Chromium with hls.js through
/// the whole app on a real socket (Chromium fetches `/media` like a
/// learner) and asserts that currentTime advances while live.
async fn plays_live_in_chromium(live: &Live, asset: Uuid) {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let app = live.w.app.clone();
    tokio::spawn(async move {
        axum::serve(
            http,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let master = format!("{}master.m3u8", prefix(asset));
    wait_until("the live master", Duration::from_secs(60), || async {
        object(live, &master).await.is_some()
    })
    .await;
    let token = live.w.state.delivery.playback.token(asset, None).unwrap();
    let sdk = sdk_dir();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/hlsjs-live.mjs");
    let master_url = format!("{base}/media/{master}?token={token}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(master_url)
            .env("SDK_DIR", sdk)
            .output()
            .expect("node is installed")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "hls.js did not play the live stream: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !object(live, &format!("{}v/720p/index.m3u8", prefix(asset)))
            .await
            .unwrap()
            .contains("#EXT-X-ENDLIST"),
        "the stream was still live while it played"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn rtmp_live_plays_in_chromium_with_hlsjs(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, key) = schedule(&live, 60).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&["--seconds", "30"]);
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    // The clip four times over (2 min): the publisher must still be
    // streaming when the organiser ends the event, however long the
    // browser took (a first run installs the SDK's packages first).
    let mut publisher = publish_copy(&clip, &["-stream_loop", "3"], &url, None);
    plays_live_in_chromium(&live, asset).await;
    // Ended by the organiser while the publisher still streams: the
    // publisher is cut off and the replay follows.
    let (status, body) = end(&live, event_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(
        "the replay after an end while live",
        Duration::from_secs(60),
        || async { event(&live, event_id).await["event"]["state"] == "replay_ready" },
    )
    .await;
    let status = tokio::task::spawn_blocking(move || publisher.wait().unwrap())
        .await
        .unwrap();
    assert!(!status.success(), "the publisher was disconnected");
    let replay = object(&live, &format!("{}v/720p/index.m3u8", prefix(asset)))
        .await
        .unwrap();
    assert!(replay.contains("#EXT-X-ENDLIST"), "{replay}");
    let (status, body) = end(&live, event_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "live_event_ended");
    cancel.cancel();
}

/// Waits for a publisher to exit on its own; its exit status.
async fn exited(what: &str, child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(what, Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        std::future::ready(status.is_some())
    })
    .await;
    status.unwrap()
}

async fn log_kinds(live: &Live, id: Uuid) -> Vec<Value> {
    event(live, id).await["log"].as_array().unwrap().clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn rtmp_a_rotated_key_cuts_its_publisher_off(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, old_key) = schedule(&live, 60).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&["--seconds", "30"]);
    let url = |key: &str| format!("rtmp://127.0.0.1:{port}/live/{key}");
    let publish =
        |key: &str, loops: &str| publish_copy(&clip, &["-stream_loop", loops], &url(key), None);
    let mut first = publish(&old_key, "3");
    let top = format!("{}v/720p/index.m3u8", prefix(asset));
    wait_until(
        "the live playlist's first segment",
        Duration::from_secs(60),
        || async {
            object(&live, &top)
                .await
                .is_some_and(|p| segments_in(&p) >= 1)
        },
    )
    .await;

    // Rotated through the route on the node the publisher streams to:
    // the publisher is cut off at once, the event waits for it.
    let (status, body) = live
        .w
        .call(
            "POST",
            &format!("/api/v1/live-events/{event_id}/stream-key"),
            Some(&live.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_key = body["stream_key"].as_str().unwrap().to_string();
    assert_ne!(new_key, old_key);
    let status = exited("the old key's publisher to be cut off", &mut first).await;
    assert!(!status.success(), "the publisher was disconnected");
    let rotated = log_kinds(&live, event_id)
        .await
        .into_iter()
        .find(|l| l["kind"] == "key_rotated")
        .expect("the rotation is in the event's log");
    assert_eq!(rotated["detail"]["publisher_cut"], true, "{rotated}");
    wait_until(
        "the event to wait for its publisher",
        Duration::from_secs(60),
        || async { !event(&live, event_id).await["event"]["disconnected_at"].is_null() },
    )
    .await;
    assert_eq!(event(&live, event_id).await["event"]["state"], "live");

    // The old key no longer gets in.
    let mut again = publish_copy(&clip, &["-t", "3"], &url(&old_key), None);
    let status = exited("the old key to be refused", &mut again).await;
    assert!(!status.success(), "the old key is refused");
    assert_eq!(event(&live, event_id).await["event"]["connections"], 1);

    // The new key continues the same event.
    let mut second = publish(&new_key, "3");
    wait_until(
        "the new key's publisher to be live",
        Duration::from_secs(60),
        || async {
            let e = event(&live, event_id).await;
            e["event"]["connections"] == 2 && e["event"]["disconnected_at"].is_null()
        },
    )
    .await;

    // Rotated by another node (its route changes the row, not this node's
    // memory): this node's sweep notices and cuts the publisher off.
    let third_key = lectern_live::key::generate();
    sqlx::query("UPDATE live_events SET stream_key_sha256 = $2 WHERE id = $1")
        .bind(event_id)
        .bind(lectern_live::key::digest(&third_key))
        .execute(live.w.db())
        .await
        .unwrap();
    let status = exited("the publisher of a key rotated elsewhere", &mut second).await;
    assert!(!status.success(), "the publisher was disconnected");
    wait_until(
        "the event to wait for its publisher again",
        Duration::from_secs(60),
        || async { !event(&live, event_id).await["event"]["disconnected_at"].is_null() },
    )
    .await;
    let e = event(&live, event_id).await;
    assert_eq!(e["event"]["state"], "live");
    assert_eq!(e["event"]["connections"], 2);
    cancel.cancel();
}

#[sqlx::test(migrations = "../migrations")]
async fn srt_live_plays_in_chromium_and_a_rotated_key_cuts_the_caller_off(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, key) = schedule(&live, 0).await;
    let port = srt_port();
    let cancel = CancellationToken::new();
    tokio::spawn(lectern_live::srt::serve(
        live.w.state.live.clone(),
        port,
        cancel.clone(),
    ));
    tokio::spawn(lectern_live::lifecycle::run_sweeper(
        live.w.state.live.clone(),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let clip = sample_clip(&["--seconds", "30"]);
    let url = format!("srt://127.0.0.1:{port}?streamid={key}");
    // Two minutes of stream: still live whatever the browser's start took.
    let mut publisher = ffmpeg(
        &[
            "-re",
            "-stream_loop",
            "3",
            "-i",
            clip.to_str().unwrap(),
            "-c",
            "copy",
            "-f",
            "mpegts",
            &url,
        ],
        None,
    );
    plays_live_in_chromium(&live, asset).await;
    assert_eq!(event(&live, event_id).await["event"]["state"], "live");
    // The key is rotated while the caller streams: the caller is cut off
    // (the server ends the SRT stream rather than wait for the caller to
    // leave), and with no reconnect window the replay follows; well within
    // the 60 s the drain would otherwise wait.
    let (status, body) = live
        .w
        .call(
            "POST",
            &format!("/api/v1/live-events/{event_id}/stream-key"),
            Some(&live.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until(
        "the SRT replay after the key was rotated while live",
        Duration::from_secs(30),
        || async { event(&live, event_id).await["event"]["state"] == "replay_ready" },
    )
    .await;
    let status = exited("the SRT publisher to be cut off", &mut publisher).await;
    assert!(!status.success(), "the SRT publisher was disconnected");
    cancel.cancel();
}

async fn live_now(live: &Live, token: &str) -> Vec<Value> {
    let (status, body) = live
        .w
        .call("GET", "/api/v1/live-now", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// Opens a playback session of `lesson` and sends one heartbeat in it.
async fn watch(live: &Live, token: &str, lesson: &str) -> String {
    let (status, session) = live
        .w
        .call(
            "POST",
            &format!("/api/v1/lessons/{lesson}/playback"),
            Some(token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let playback = session["playback_id"].as_str().unwrap().to_string();
    beat(live, token, lesson, Some(&playback)).await;
    playback
}

async fn beat(live: &Live, token: &str, lesson: &str, playback: Option<&str>) {
    let (status, body) = live
        .w
        .call(
            "POST",
            "/api/v1/progress",
            Some(token),
            Some(json!({
                "lesson_id": lesson,
                "playback_id": playback,
                "position_s": 4.0,
                "played_from_s": 0.0,
                "played_to_s": 4.0,
                "speed": 1.0,
            })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn live_now_and_viewers_counted_from_playback_heartbeats(db: PgPool) {
    let live = setup(db).await;
    live.w
        .user(Some(live.org), "second@live.example.org", Role::Learner)
        .await;
    let elsewhere = live.w.org("Other Org").await;
    live.w
        .user(Some(elsewhere), "outsider@other.example.org", Role::Learner)
        .await;
    let (event_id, _asset, key) = schedule(&live, 60).await;
    let (port, cancel) = start_rtmp(&live).await;
    let learner = live.w.login("learner@live.example.org").await;
    let second = live.w.login("second@live.example.org").await;
    let outsider = live.w.login("outsider@other.example.org").await;
    assert!(
        live_now(&live, &learner).await.is_empty(),
        "scheduled is not live"
    );

    let clip = sample_clip(&["--seconds", "30"]);
    let mut publisher = publish_copy(
        &clip,
        &["-stream_loop", "3"],
        &format!("rtmp://127.0.0.1:{port}/live/{key}"),
        None,
    );
    wait_until(
        "the event to be live now",
        Duration::from_secs(60),
        || async { !live_now(&live, &learner).await.is_empty() },
    )
    .await;
    let listed = live_now(&live, &learner).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["event_id"], event_id.to_string());
    assert_eq!(listed[0]["course_title"], "病例讨论");
    assert_eq!(listed[0]["viewers"], 0, "nobody watches yet");
    assert!(
        live_now(&live, &outsider).await.is_empty(),
        "another organisation's"
    );
    let lesson = listed[0]["lesson_id"].as_str().unwrap().to_string();

    // Two learners watch; each beat again counts each session once; a
    // beat outside a playback session counts nothing.
    let first_playback = watch(&live, &learner, &lesson).await;
    watch(&live, &second, &lesson).await;
    beat(&live, &learner, &lesson, Some(&first_playback)).await;
    beat(&live, &learner, &lesson, None).await;
    assert_eq!(live_now(&live, &learner).await[0]["viewers"], 2);
    let organiser_view = event(&live, event_id).await;
    assert_eq!(organiser_view["event"]["state"], "live");
    assert_eq!(organiser_view["event"]["viewers"], 2, "{organiser_view}");
    let (status, list) = live
        .w
        .call(
            "GET",
            "/api/v1/live-events?state=live",
            Some(&live.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["events"][0]["viewers"], 2, "{list}");

    // Past the window without a beat, a player no longer counts.
    let clock = live.w.state.learning.learning.clock.clone();
    clock.advance(lectern_learning::viewers::WINDOW / 2);
    beat(&live, &learner, &lesson, Some(&first_playback)).await;
    clock.advance(lectern_learning::viewers::WINDOW / 2 + Duration::from_secs(1));
    assert_eq!(live_now(&live, &learner).await[0]["viewers"], 1);
    clock.advance(lectern_learning::viewers::WINDOW);
    assert_eq!(live_now(&live, &learner).await[0]["viewers"], 0);

    let (status, body) = end(&live, event_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        live_now(&live, &learner).await.is_empty(),
        "ended is not live"
    );
    assert!(event(&live, event_id).await["event"]["viewers"].is_null());
    let _ = exited("the publisher to be cut off", &mut publisher).await;
    cancel.cancel();
}

#[sqlx::test(migrations = "../migrations")]
async fn an_event_ended_on_another_node_gets_its_replay_from_the_node_holding_the_stream(
    db: PgPool,
) {
    let live = setup(db).await;
    let (event_id, asset, key) = schedule(&live, 600).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&[]);
    let mut publisher = publish_copy(
        &clip,
        &[],
        &format!("rtmp://127.0.0.1:{port}/live/{key}"),
        None,
    );
    let status = exited("the publisher to finish", &mut publisher).await;
    assert!(status.success());
    wait_until(
        "the event to wait for its publisher",
        Duration::from_secs(60),
        || async { !event(&live, event_id).await["event"]["disconnected_at"].is_null() },
    )
    .await;
    // Another node's organiser route ends it: a row changes, this node's
    // memory does not; the replay still follows from here.
    sqlx::query("UPDATE live_events SET state = 'ended', ended_at = now() WHERE id = $1")
        .bind(event_id)
        .execute(live.w.db())
        .await
        .unwrap();
    replay_ready(&live, event_id, 30).await;
    let replay = object(&live, &format!("{}v/720p/index.m3u8", prefix(asset)))
        .await
        .unwrap();
    assert!(replay.contains("#EXT-X-ENDLIST"), "{replay}");
    let kinds: Vec<Value> = log_kinds(&live, event_id).await;
    assert!(
        kinds.iter().all(|l| l["kind"] != "replay_unavailable"),
        "{kinds:?}"
    );
    cancel.cancel();
}

/// The parts (`EXT-X-PART` URIs) listed right before segment `segment`'s
/// URI line in `playlist`, or after the last segment when `None`.
fn parts_before(playlist: &str, segment: Option<&str>) -> Vec<String> {
    let mut parts = Vec::new();
    for line in playlist.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            let uri = rest
                .split("URI=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            parts.push(uri.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            if Some(line) == segment {
                return parts;
            }
            parts.clear();
        }
    }
    if segment.is_some() {
        Vec::new()
    } else {
        parts
    }
}

async fn bytes_of(live: &Live, key: &str) -> Vec<u8> {
    let got = live.w.state.live.store.get(key, None).await.unwrap();
    got.bytes().await.unwrap().to_vec()
}

/// `MEDIA-SEQUENCE` + the segments listed: the next segment's number.
fn next_msn(playlist: &str) -> u64 {
    let sequence = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .map_or(0, |v| v.parse().unwrap());
    sequence + segments_in(playlist) as u64
}

#[sqlx::test(migrations = "../migrations")]
async fn rtmp_low_latency_parts_blocking_reload_and_a_replay_without_parts(db: PgPool) {
    let live = setup(db).await;
    let (event_id, asset, key) = schedule(&live, 60).await;
    let (port, cancel) = start_rtmp(&live).await;
    let clip = sample_clip(&["--seconds", "30"]);
    let url = format!("rtmp://127.0.0.1:{port}/live/{key}");
    let scratch = tempfile::tempdir().unwrap();
    let dir = format!("{}v/720p/", prefix(asset));
    let top = format!("{dir}index.m3u8");
    let mut publisher = publish_copy(&clip, &["-stream_loop", "1"], &url, None);
    // Three complete segments with their parts listed, and open parts.
    wait_until(
        "a live playlist with parts",
        Duration::from_secs(60),
        || async {
            object(&live, &top).await.is_some_and(|p| {
                segments_in(&p) >= 3 && p.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"c1-part_")
            })
        },
    )
    .await;
    let stored = object(&live, &top).await.unwrap();
    for tag in [
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500",
        "#EXT-X-PART-INF:PART-TARGET=0.500",
        "#EXT-X-PLAYLIST-TYPE:EVENT",
        "#EXT-X-RENDITION-REPORT:URI=\"../../a/audio/index.m3u8\",LAST-MSN=",
    ] {
        assert!(stored.contains(tag), "{tag} in\n{stored}");
    }
    assert!(!stored.contains("#EXT-X-ENDLIST"));

    // A complete segment listed with its parts is their concatenation,
    // and its first part decodes after the init segment alone.
    let segment = stored
        .lines()
        .filter(|l| l.starts_with("c1-seg_"))
        .find(|s| !parts_before(&stored, Some(s)).is_empty())
        .unwrap_or_else(|| panic!("a segment listed with its parts in\n{stored}"))
        .to_string();
    let parts = parts_before(&stored, Some(&segment));
    assert!(parts.len() >= 2, "1 s in parts of at most 0.5 s: {parts:?}");
    let mut joined = Vec::new();
    for part in &parts {
        joined.extend(bytes_of(&live, &format!("{dir}{part}")).await);
    }
    assert!(
        joined == bytes_of(&live, &format!("{dir}{segment}")).await,
        "{segment} is not its parts {parts:?}"
    );
    let first_part = stored
        .lines()
        .find(|l| l.starts_with("#EXT-X-PART:") && l.contains(&format!("URI=\"{}\"", parts[0])))
        .unwrap();
    assert!(first_part.ends_with(",INDEPENDENT=YES"), "{first_part}");
    let mut probe = bytes_of(&live, &format!("{dir}c1-init.mp4")).await;
    probe.extend(bytes_of(&live, &format!("{dir}{}", parts[0])).await);
    let file = scratch.path().join("part.mp4");
    std::fs::write(&file, &probe).unwrap();
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .unwrap();
    let frames: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        out.status.success() && frames >= 10,
        "a 0.5 s part decodes to its frames, got {frames}: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Through the origin, asked for plainly, every part, hint and report
    // URI carries this viewer's token (any client plays it).
    let token = live.w.state.delivery.playback.token(asset, None).unwrap();
    let media = |query: String| format!("/media/{top}?token={token}{query}");
    let (status, headers, served) = live
        .w
        .call_with_headers("GET", &media(String::new()), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{served}");
    assert_eq!(headers["cache-control"], "private, max-age=1");
    assert!(!served.contains("#EXT-X-DEFINE"), "{served}");
    let part_lines: Vec<&str> = served
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:") || l.starts_with("#EXT-X-PRELOAD-HINT:"))
        .collect();
    assert!(!part_lines.is_empty());
    for line in &part_lines {
        assert!(line.contains(&format!(".m4s?token={token}\"")), "{line}");
    }
    // The hinted part, asked for before it exists, is held until it does
    // (a hint read just as its part was uploaded is passed over).
    let mut hint = String::new();
    for _ in 0..20 {
        let (_, _, served) = live
            .w
            .call_with_headers("GET", &media(String::new()), None, None)
            .await;
        hint = served
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
            .unwrap()
            .trim_end_matches('"')
            .replace("{$token}", &token);
        let hinted = format!("{dir}{}", hint.split('?').next().unwrap());
        if live.w.state.live.store.head(&hinted).await.is_err() {
            break;
        }
    }
    let (status, headers, _) = live
        .w
        .call_with_headers("GET", &format!("/media/{dir}{hint}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "the hinted part {hint}");
    assert_eq!(headers["content-type"], "video/iso.segment");

    // A blocking reload for the next segment answers only once it is
    // listed, and lists it.
    let current = object(&live, &top).await.unwrap();
    let next = next_msn(&current);
    let (status, headers, answered) = live
        .w
        .call_with_headers("GET", &media(format!("&_HLS_msn={next}")), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    // An answer to a blocking reload is the same for every viewer, so a
    // CDN may keep it for some parts: every part, hint and report URI
    // carries the token as the variable the player fills in from the URL
    // it asked by (EXT-X-DEFINE QUERYPARAM), never a token itself.
    let policy = headers["cache-control"].to_str().unwrap();
    assert!(policy.starts_with("public, max-age="), "{policy}");
    assert!(!answered.contains(&token), "{answered}");
    assert!(
        answered.contains("#EXT-X-DEFINE:QUERYPARAM=\"token\"\n"),
        "{answered}"
    );
    for line in answered.lines().filter(|l| {
        l.starts_with("#EXT-X-PART:")
            || l.starts_with("#EXT-X-PRELOAD-HINT:")
            || l.starts_with("#EXT-X-RENDITION-REPORT:")
    }) {
        assert!(line.contains("?token={$token}\""), "{line}");
    }
    assert!(
        next_msn(&answered) > next,
        "asked for segment {next}, got a playlist up to {}:\n{answered}",
        next_msn(&answered) - 1
    );
    // And for the next part of the open segment.
    let current = object(&live, &top).await.unwrap();
    let (next, open) = (next_msn(&current), parts_before(&current, None).len());
    let (status, _, answered) = live
        .w
        .call_with_headers(
            "GET",
            &media(format!("&_HLS_msn={next}&_HLS_part={open}")),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    assert!(
        next_msn(&answered) > next || parts_before(&answered, None).len() > open,
        "asked for part {open} of segment {next}:\n{answered}"
    );
    // Bad directives are refused at once.
    for bad in [
        "&_HLS_msn=soon".to_string(),
        "&_HLS_part=1".to_string(),
        format!("&_HLS_msn={}", next + 10),
    ] {
        let (status, body) = live.w.call("GET", &media(bad.clone()), None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_delivery_directive", "{bad}");
    }

    // The replay lists whole segments only.
    let (status, body) = end(&live, event_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    replay_ready(&live, event_id, 60).await;
    let _ = tokio::task::spawn_blocking(move || publisher.wait()).await;
    let replay = object(&live, &top).await.unwrap();
    assert!(replay.contains("#EXT-X-ENDLIST"), "{replay}");
    for tag in [
        "#EXT-X-PART",
        "#EXT-X-PRELOAD-HINT",
        "#EXT-X-SERVER-CONTROL",
        "#EXT-X-RENDITION-REPORT",
    ] {
        assert!(!replay.contains(tag), "{tag} in the replay:\n{replay}");
    }
    // A blocking request on an ended playlist answers at once.
    let (status, _, _) = live
        .w
        .call_with_headers("GET", &media("&_HLS_msn=100000".into()), None, None)
        .await;
    assert_ne!(status, StatusCode::SERVICE_UNAVAILABLE);
    decodes(&live, &prefix(asset), "v/720p", scratch.path()).await;
    cancel.cancel();
}
