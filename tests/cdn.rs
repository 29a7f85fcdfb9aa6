//! The CDN stand-in (`infra/cdn/nginx.conf.template`) in front of a real
//! `lectern serve` origin holding a real transcoded ladder: a second
//! learner, with a token of their own, is served every segment from the
//! cache, and the origin (counted from its own log) saw each object once.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lectern_delivery::token;
use lectern_delivery::{Playback, DEFAULT_TOKEN_TTL};
use lectern_secrets::PlaybackKey;
use lectern_storage::FsStore;
use uuid::Uuid;

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must take its workers with it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

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
            let full = format!("{dir}{uri}");
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

// A database of its own: the origin reads each asset's encryption state
// from the schema, which a shared database migrated by another checkout
// may not match.
#[sqlx::test(migrations = "./migrations")]
async fn second_learner_is_served_from_the_cdn_cache(db: sqlx::PgPool) {
    let work = common::workdir();
    let dir = work.path();
    let data = dir.join("data");
    let ladder = transcode(dir);

    // Published as the pipeline does, under an attempt prefix.
    let asset = Uuid::new_v4();
    let prefix = format!("assets/{asset}/out/attempt-1");
    let store = FsStore::open(data.join("storage")).await.unwrap();
    let keys = lectern_packager::publish(&ladder, &store, &prefix)
        .await
        .unwrap();
    // What players fetch through playlists: init and media segments.
    let cacheable: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with(".m4s") || k.ends_with(".mp4"))
        .collect();
    assert!(cacheable.len() >= 4, "{keys:?}");

    // The origin, with a key the test can sign with too.
    let key = PlaybackKey::generate("cdn1");
    let playback = Playback::new(vec![key.clone()], DEFAULT_TOKEN_TTL, None);
    let origin_addr = common::free_addr();
    let log = dir.join("origin.log");
    let mut cmd = common::lectern(dir);
    cmd.arg("serve")
        .env("LECTERN_HTTP_ADDR", &origin_addr)
        .env("LECTERN_DATA_DIR", &data)
        .env("LECTERN_SERVE_WORKERS", "0")
        .env("LECTERN_PLAYBACK_KEYS", key.to_setting())
        .env("LECTERN_LOG_FORMAT", "json")
        .env("LECTERN_LOG", "warn,lectern_delivery=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    cmd.env("DATABASE_URL", common::database_url(&db).await);
    let _origin = common::Server(cmd.spawn().unwrap());
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
    let prefix_dir = dir.join("nginx");
    std::fs::create_dir_all(&prefix_dir).unwrap();
    let cdn_addr = common::free_addr();
    let conf = std::fs::read_to_string(root().join("infra/cdn/nginx.conf.template"))
        .unwrap()
        .replace("@@PREFIX@@", prefix_dir.to_str().unwrap())
        .replace("@@LISTEN@@", &cdn_addr)
        .replace("@@ORIGIN@@", &origin_addr);
    let conf_path = prefix_dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let check = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(&prefix_dir)
        .arg("-c")
        .arg(&conf_path)
        .output()
        .expect("nginx (installed by infra/dev/setup)");
    assert!(
        check.status.success(),
        "infra/cdn/nginx.conf.template: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let nginx = Command::new("nginx")
        .arg("-p")
        .arg(&prefix_dir)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (installed by infra/dev/setup)");
    let _nginx = Nginx(nginx);
    let cdn = format!("http://{cdn_addr}");
    // Any answer from nginx itself (a 404 outside /media) means it is up.
    wait_until_up(&format!("{cdn}/up")).await;

    let client = reqwest::Client::new();
    let master = |t: &str| format!("/media/{prefix}/master.m3u8?token={t}");
    let token_a = playback.token(asset, None).unwrap();
    let token_b = playback
        .token_until(asset, token::now_unix() + 3600, None)
        .unwrap();
    assert_ne!(token_a, token_b);

    let first = play(&client, &cdn, &master(&token_a)).await;
    assert_eq!(first.len(), cacheable.len(), "{first:?}");
    assert!(first.values().all(|s| s == "MISS"), "learner A: {first:?}");
    let second = play(&client, &cdn, &master(&token_b)).await;
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
    // and one token check per learner (verdicts are cached by nginx).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, checks) = origin_log(&log);
    for key in &cacheable {
        let times = served
            .iter()
            .filter(|(k, s)| k == *key && *s == 200)
            .count();
        assert_eq!(times, 1, "origin served {key} {times} times: {served:?}");
    }
    assert!(
        (2..=6).contains(&checks),
        "expected about one token check per learner (plus the refused ones), got {checks}"
    );
}
