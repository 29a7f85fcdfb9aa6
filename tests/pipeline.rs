//! The durable pipeline end to end with real `lectern worker` processes,
//! a real PostgreSQL (a fresh database per test), local-disk storage shared
//! by the workers, and real media made with the ffmpeg CLI.

mod common;
#[path = "../transcoder/tests/common/verify.rs"]
#[allow(dead_code)]
mod verify;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_assets::{self as intake, keys, NewAsset};
use lectern_storage::{FsStore, PutOptions, Store};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// A database of its own on the test server, dropped at the end.
struct TestDb {
    admin_url: String,
    name: String,
    url: String,
    pool: PgPool,
}

impl TestDb {
    async fn new(tag: &str) -> Self {
        let admin_url = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL must point at the test PostgreSQL: run `infra/dev/services up` \
             and `set -a; . .lectern/env; set +a` (make test does both)",
        );
        let name = format!("lectern_{tag}_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("{}/{name}", &admin_url[..admin_url.rfind('/').unwrap()]);
        let pool = PgPool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations").run(&pool).await.unwrap();
        Self {
            admin_url,
            name,
            url,
            pool,
        }
    }

    async fn drop_database(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await;
    }
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_worker(db_url: &str, data_dir: &Path, log: &Path) -> Child {
    spawn_worker_with(db_url, data_dir, log, &[])
}

fn spawn_worker_with(db_url: &str, data_dir: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = common::lectern(data_dir.parent().unwrap());
    let log = std::fs::File::create(log).unwrap();
    cmd.envs(env.iter().copied());
    cmd.arg("worker")
        .env("DATABASE_URL", db_url)
        .env("LECTERN_DATA_DIR", data_dir)
        .env("LECTERN_FS_ROOT", data_dir.join("storage"))
        .env("LECTERN_JOB_LEASE_SECS", "3")
        .env("LECTERN_WORKER_CONCURRENCY", "1")
        .env("LECTERN_LOG", "info,lectern_pipelines=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A worker that splits sources of 20 s or more into ~10 s chunks.
fn spawn_chunking_worker(db_url: &str, data_dir: &Path, log: &Path) -> Child {
    spawn_worker_with(
        db_url,
        data_dir,
        log,
        &[
            ("LECTERN_CHUNK_THRESHOLD_SECS", "20"),
            ("LECTERN_CHUNK_SECS", "10"),
        ],
    )
}

/// A real H.264/AAC clip made by the ffmpeg CLI.
fn make_clip(dir: &Path, name: &str, seconds: u32) -> PathBuf {
    make_clip_with(dir, name, seconds, &[])
}

/// [`make_clip`] with extra encoder arguments, e.g. a keyframe interval.
fn make_clip_with(dir: &Path, name: &str, seconds: u32, video_args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=640x360:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=48000:duration={seconds}"
        ))
        .args(["-c:v", "libx264", "-preset", "ultrafast"])
        .args(video_args)
        .args(["-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

async fn enqueue(db: &PgPool, store: &dyn Store, org: Uuid, source: &Path) -> Uuid {
    let id = Uuid::now_v7();
    let key = keys::source_key(id);
    store
        .put_file(&key, source, PutOptions::default())
        .await
        .unwrap();
    intake::create(
        db,
        &NewAsset {
            id,
            organisation_id: org,
            source_key: key,
            title: Some("test lecture".into()),
            profile: "default".into(),
            priority: 0,
        },
    )
    .await
    .unwrap();
    id
}

async fn create_org(db: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("org-{id}"))
        .execute(db)
        .await
        .unwrap();
    id
}

async fn status_of(db: &PgPool, asset: Uuid) -> (String, f32, Option<String>) {
    sqlx::query_as("SELECT status, progress, error_code FROM assets WHERE id = $1")
        .bind(asset)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Downloads a published ladder and decodes every media playlist fully with
/// the ffmpeg CLI: every segment must be present and decodable.
async fn assert_ladder_plays(store: &dyn Store, prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let objects = store.list(prefix).await.unwrap();
    assert!(
        objects.iter().any(|o| o.key.ends_with("master.m3u8")),
        "no master playlist under {prefix}"
    );
    for o in &objects {
        let rel = o.key.strip_prefix(prefix).unwrap();
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes = store
            .get(&o.key, None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let master = std::fs::read_to_string(dir.path().join("master.m3u8")).unwrap();
    let playlists: Vec<&str> = master
        .lines()
        .filter(|l| l.ends_with(".m3u8") && !l.starts_with('#'))
        .collect();
    assert!(!playlists.is_empty(), "{master}");
    for playlist in playlists {
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(dir.path().join(playlist))
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{playlist} does not decode cleanly: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

#[tokio::test]
async fn a_killed_worker_loses_no_job_and_mixes_no_attempts() {
    let db = TestDb::new("crash").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    let clip = make_clip(dir.path(), "lecture.mp4", 24);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(enqueue(&db.pool, store.as_ref(), org, &clip).await);
    }
    let mut workers = Workers(vec![
        spawn_worker(&db.url, &data, &dir.path().join("w1.log")),
        spawn_worker(&db.url, &data, &dir.path().join("w2.log")),
    ]);

    // Wait for a job to be mid-transcode, then kill its worker outright.
    let deadline = Instant::now() + Duration::from_secs(120);
    let victim: (Uuid, String) = loop {
        let row: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT a.id, j.lease_owner FROM assets a JOIN jobs j ON j.asset_id = a.id
             WHERE a.status = 'transcoding' AND a.progress > 0 AND j.state = 'running'
             LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(Instant::now() < deadline, "no job was ever mid-transcode");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (victim_asset, owner) = victim;
    let pid: u32 = owner.rsplit(':').next().unwrap().parse().unwrap();
    let killed = workers.0.iter_mut().find(|c| c.id() == pid).unwrap();
    killed.kill().unwrap(); // SIGKILL: no chance to clean up or release.
    killed.wait().unwrap();
    eprintln!("killed worker {owner} while it transcoded asset {victim_asset}");

    for id in &ids {
        wait_until("every asset ready", Duration::from_secs(300), || {
            let pool = db.pool.clone();
            let id = *id;
            async move {
                let (status, _, error) = status_of(&pool, id).await;
                assert_ne!(status, "failed", "asset {id} failed: {error:?}");
                status == "ready"
            }
        })
        .await;
    }

    // The victim's job was taken over: a second attempt, by the survivor.
    let (attempts, state, prefix): (i32, String, String) = sqlx::query_as(
        "SELECT j.attempts, j.state, a.output_prefix FROM jobs j JOIN assets a ON a.id = j.asset_id
         WHERE a.id = $1",
    )
    .bind(victim_asset)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(state, "succeeded");
    assert_eq!(attempts, 2, "the killed attempt plus the one that finished");
    assert!(prefix.ends_with("attempt-2/"), "{prefix}");

    for id in &ids {
        // Exactly one completion per job, and one ready event per asset.
        let (jobs, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded') FROM jobs WHERE asset_id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!((jobs, done), (1, 1));
        let ready_events: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM asset_events WHERE asset_id = $1 AND to_status = 'ready'",
        )
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(ready_events, 1);

        // Only the published attempt's outputs remain, and they all play.
        let prefix: String = sqlx::query_scalar("SELECT output_prefix FROM assets WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let stray: Vec<String> = store
            .list(&keys::output_root(*id))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.starts_with(&prefix))
            .collect();
        assert!(
            stray.is_empty(),
            "outputs of other attempts remain: {stray:?}"
        );
        assert_ladder_plays(store.as_ref(), &prefix).await;
    }
    let workers_seen: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT worker) FROM asset_events WHERE asset_id = $1 AND to_status = 'probing'",
    )
    .bind(victim_asset)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(workers_seen, 2, "both workers worked on the victim");
    drop(workers);
    db.drop_database().await;
}

#[tokio::test]
async fn corrupt_media_fails_fast_with_its_code_and_is_not_retried() {
    let db = TestDb::new("corrupt").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    // The first half of a real MP4 whose index is at the end: damaged media.
    let clip = make_clip(dir.path(), "whole.mp4", 4);
    let bytes = std::fs::read(&clip).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("slides.pdf.mp4");
    std::fs::write(&garbage, b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n").unwrap();
    let broken = enqueue(&db.pool, store.as_ref(), org, &truncated).await;
    let not_media = enqueue(&db.pool, store.as_ref(), org, &garbage).await;
    // Good media, but a profile this deployment does not have.
    let unknown_profile = Uuid::now_v7();
    store
        .put_file(
            &keys::source_key(unknown_profile),
            &clip,
            PutOptions::default(),
        )
        .await
        .unwrap();
    intake::create(
        &db.pool,
        &NewAsset {
            id: unknown_profile,
            organisation_id: org,
            source_key: keys::source_key(unknown_profile),
            title: None,
            profile: "podcast".into(),
            priority: 0,
        },
    )
    .await
    .unwrap();

    let started = Instant::now();
    let _workers = Workers(vec![spawn_worker(
        &db.url,
        &data,
        &dir.path().join("w.log"),
    )]);
    for (id, want) in [
        (broken, "corrupt_media"),
        (not_media, "not_media"),
        (unknown_profile, "invalid_profile"),
    ] {
        wait_until("the asset to fail", Duration::from_secs(60), || {
            let pool = db.pool.clone();
            async move { status_of(&pool, id).await.0 == "failed" }
        })
        .await;
        let (_, _, code) = status_of(&db.pool, id).await;
        assert_eq!(code.as_deref(), Some(want));
        let (attempts, state): (i32, String) =
            sqlx::query_as("SELECT attempts, state FROM jobs WHERE asset_id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(
            (attempts, state.as_str()),
            (1, "failed"),
            "bad media and bad profiles are never retried"
        );
    }
    eprintln!(
        "both bad assets failed {:.1} s after the worker started",
        started.elapsed().as_secs_f64()
    );
    db.drop_database().await;
}

/// PostgreSQL's binaries, as embedded mode finds them.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("LECTERN_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL binaries (run infra/dev/setup)")
}

#[tokio::test]
async fn workers_survive_a_database_restart() {
    // A complete single-node Lectern (embedded PostgreSQL + in-process
    // worker) whose database we restart while it transcodes.
    let dir = common::workdir();
    let data = dir.path().join("data");
    let addr = common::free_addr();
    let mut cmd = common::lectern(dir.path());
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut serve = Workers(vec![cmd
        .arg("serve")
        .env("LECTERN_DATA_DIR", &data)
        .env("LECTERN_HTTP_ADDR", &addr)
        .env("LECTERN_JOB_LEASE_SECS", "3")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()]);
    let client = reqwest::Client::new();
    wait_until("serve ready", Duration::from_secs(120), || {
        let req = client.get(format!("http://{addr}/readyz")).send();
        async move { matches!(req.await, Ok(r) if r.status() == 200) }
    })
    .await;

    let password = std::fs::read_to_string(data.join("pg_password")).unwrap();
    let connect = sqlx::postgres::PgConnectOptions::new()
        .socket(data.join("pg/run"))
        .port(5432)
        .username("postgres")
        .password(password.trim())
        .database("lectern");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(connect);
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&pool).await;
    let clip = make_clip(dir.path(), "lecture.mp4", 20);
    let ids = [
        enqueue(&pool, store.as_ref(), org, &clip).await,
        enqueue(&pool, store.as_ref(), org, &clip).await,
    ];
    wait_until("a transcode under way", Duration::from_secs(120), || {
        let pool = pool.clone();
        async move { status_of(&pool, ids[0]).await.0 == "transcoding" }
    })
    .await;

    // The restarted server logs to a file: if it inherited our pipes, they
    // would never close.
    let restart = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin().join("pg_ctl"))
        .args(["restart", "-m", "fast", "-w", "-l"])
        .arg(data.join("pg/log"))
        .arg("-D")
        .arg(data.join("pg/data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        restart.success(),
        "pg_ctl restart failed (see {}/pg/log)",
        data.display()
    );
    eprintln!(
        "restarted PostgreSQL while asset {} was transcoding",
        ids[0]
    );

    for id in ids {
        wait_until("ready after the restart", Duration::from_secs(240), || {
            let pool = pool.clone();
            async move {
                match sqlx::query_as::<_, (String, Option<String>)>(
                    "SELECT status, error_code FROM assets WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&pool)
                .await
                {
                    Ok((status, code)) => {
                        assert_ne!(status, "failed", "{id} failed: {code:?}");
                        status == "ready"
                    }
                    Err(_) => false, // our own pool reconnecting
                }
            }
        })
        .await;
    }
    let stuck: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state <> 'succeeded'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stuck, 0, "no job is left running or queued");
    pool.close().await;
    // SIGTERM, so serve stops the cluster it started instead of orphaning it.
    let server = serve.0.pop().unwrap();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let status = server.wait_with_output().unwrap().status;
    assert!(
        status.success(),
        "serve exits cleanly after SIGTERM: {status}"
    );
}

#[tokio::test]
async fn a_long_source_is_playable_while_its_ladder_still_encodes() {
    let db = TestDb::new("first_play").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    let clip = make_clip(dir.path(), "ten-minutes.mp4", 600);
    let asset = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    let _workers = Workers(vec![spawn_worker(
        &db.url,
        &data,
        &dir.path().join("w.log"),
    )]);

    let mut playable: Option<(String, f32)> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while playable.is_none() {
        let (status, progress, prefix): (String, f32, Option<String>) =
            sqlx::query_as("SELECT status, progress, playable_prefix FROM assets WHERE id = $1")
                .bind(asset)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_ne!(status, "failed");
        if let Some(prefix) = prefix {
            assert_eq!(
                status, "transcoding",
                "playable before the ladder is finished, not after"
            );
            playable = Some((prefix, progress));
        }
        assert!(Instant::now() < deadline, "never became playable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (prefix, progress) = playable.unwrap();

    // Precisely, by the database's clock: job start → first playable.
    let first_playable_s: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM a.first_playable_at - e.at)::float8
         FROM assets a JOIN asset_events e ON e.asset_id = a.id AND e.to_status = 'probing'
         WHERE a.id = $1",
    )
    .bind(asset)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    eprintln!(
        "time to first playable for a 600 s source: {first_playable_s:.2} s after the job started \
         (ladder {progress:.1} % encoded)"
    );

    // A player can open it: a master, a growing EVENT playlist with at
    // least one segment, and that segment decodes.
    let text = |key: String| {
        let store = store.clone();
        async move {
            String::from_utf8(
                store
                    .get(&key, None)
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .to_vec(),
            )
            .unwrap()
        }
    };
    let master = text(format!("{prefix}master.m3u8")).await;
    let rung = master
        .lines()
        .find(|l| l.starts_with("v/") && l.ends_with(".m3u8"))
        .unwrap_or_else(|| panic!("no video rung in the preview master: {master}"));
    let rung_dir = rung.trim_end_matches("index.m3u8");
    let playlist = text(format!("{prefix}{rung}")).await;
    let media = match m3u8_rs::parse_playlist_res(playlist.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
        other => panic!("not a media playlist: {other:?}\n{playlist}"),
    };
    assert_eq!(media.playlist_type, Some(m3u8_rs::MediaPlaylistType::Event));
    assert!(!media.end_list, "still growing");
    assert!(!media.segments.is_empty());
    let local = dir.path().join("first.mp4");
    let mut bytes = store
        .get(&format!("{prefix}{rung_dir}init.mp4"), None)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let first = &media.segments[0].uri;
    bytes.extend_from_slice(
        &store
            .get(&format!("{prefix}{rung_dir}{first}"), None)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    std::fs::write(&local, bytes).unwrap();
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&local)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "first segment does not decode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.drop_database().await;
}

#[tokio::test]
async fn a_long_source_is_split_encoded_by_both_workers_and_stitched_seamlessly() {
    let db = TestDb::new("chunks").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    // A keyframe every 2 s; 10 s chunks round up to whole 4 s segments:
    // chunks start at 0, 12, 24 and 36.
    let clip = make_clip_with(dir.path(), "lecture.mp4", 46, &["-g", "50"]);
    let id = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    let chunked = |log: &str| spawn_chunking_worker(&db.url, &data, &dir.path().join(log));
    let mut workers = Workers(vec![chunked("w1.log"), chunked("w2.log")]);

    // Kill the worker of a part that is running (fetching or encoding its
    // chunk): its part must be taken over after the lease expires and the
    // ladder must still be one piece. Not "progress > 0": on a fast machine
    // a part finishes within about a second, before its first progress
    // report, so the test polls often and takes any running part.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (victim_part, owner): (Uuid, String) = loop {
        let row: Option<(Uuid, String)> = sqlx::query_as(
            "SELECT id, lease_owner FROM jobs
             WHERE asset_id = $1 AND kind = 'encode_part' AND state = 'running'
               AND (spec->>'index')::int > 0
             LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(Instant::now() < deadline, "no part was ever running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pid: u32 = owner.rsplit(':').next().unwrap().parse().unwrap();
    let killed = workers.0.iter_mut().find(|c| c.id() == pid).unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    eprintln!("killed worker {owner} while it encoded part {victim_part}");
    // A fresh worker replaces it, so two still share the remaining parts.
    workers.0.push(chunked("w3.log"));

    wait_until("the chunked asset ready", Duration::from_secs(300), || {
        let pool = db.pool.clone();
        async move {
            let (status, _, error) = status_of(&pool, id).await;
            assert_ne!(status, "failed", "asset failed: {error:?}");
            status == "ready"
        }
    })
    .await;

    // One parent, four video chunks plus the audio part, each succeeded
    // exactly once; the killed part needed a second attempt.
    let parts: Vec<(i32, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT (spec->>'index')::int, state, attempts, lease_owner FROM jobs
         WHERE asset_id = $1 AND kind = 'encode_part' ORDER BY 1",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(parts.len(), 5, "{parts:?}");
    assert!(parts.iter().all(|p| p.1 == "succeeded"), "{parts:?}");
    let victim_attempts: i32 = sqlx::query_scalar("SELECT attempts FROM jobs WHERE id = $1")
        .bind(victim_part)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        victim_attempts, 2,
        "the killed attempt plus the one that finished"
    );
    let owners: std::collections::HashSet<_> = parts.iter().filter_map(|p| p.3.clone()).collect();
    assert!(
        owners.len() >= 2,
        "parts were spread over workers: {parts:?}"
    );
    let (parent_state, chunk_events): (String, i64) = sqlx::query_as(
        "SELECT j.state, (SELECT count(*) FROM asset_events e
                          WHERE e.asset_id = j.asset_id AND e.detail ? 'chunks')
         FROM jobs j WHERE j.asset_id = $1 AND j.kind = 'transcode'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((parent_state.as_str(), chunk_events), ("succeeded", 1));

    // Nothing but the stitched ladder remains: no chunk sources, no files
    // of the killed attempt, no other attempt.
    let prefix: String = sqlx::query_scalar("SELECT output_prefix FROM assets WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let objects: Vec<String> = store
        .list(&keys::output_root(id))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        objects.iter().all(|k| k.starts_with(&prefix)),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|k| k.contains("/parts/")),
        "{objects:?}"
    );
    let killed_tag = format!("p{}a1_", {
        parts.iter().find(|p| p.2 == 2).map(|p| p.0).unwrap()
    });
    assert!(
        !objects.iter().any(|k| k.contains(&killed_tag)),
        "files of the killed attempt remain: {objects:?}"
    );

    // Every playlist decodes cleanly, and the ladder passes the same checks
    // as a whole encode: keyframe-aligned segments at the same times in
    // every rung, durations equal to the source's, audio and video starting
    // together.
    let local = assert_ladder_plays(store.as_ref(), &prefix).await;
    let facts = verify::verify_ladder(&clip, local.path());
    for rung in &facts.video {
        // Continuous timestamps across chunk boundaries: each segment starts
        // where the one before ended, within one frame.
        for k in 1..rung.segment_starts.len() {
            let expected = rung.segment_starts[k - 1] + rung.segment_durations[k - 1];
            assert!(
                (rung.segment_starts[k] - expected).abs() <= 0.041,
                "{}: segment {k} starts at {:.3}, the one before ends at {expected:.3}",
                rung.playlist,
                rung.segment_starts[k]
            );
        }
    }
    let master = std::fs::read_to_string(local.path().join("master.m3u8")).unwrap();
    assert!(master.contains("EXT-X-STREAM-INF"), "{master}");
    drop(workers);
    db.drop_database().await;
}

/// A part that can never be encoded fails its asset for good; the other
/// parts are cancelled, and nothing of the attempt stays in storage: no
/// finished part's files, no chunk sources.
#[tokio::test]
async fn a_chunked_asset_that_fails_for_good_leaves_nothing_in_storage() {
    let db = TestDb::new("chunkfail").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    let clip = make_clip_with(dir.path(), "lecture.mp4", 46, &["-g", "50"]);
    let id = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    let _workers = Workers(vec![spawn_chunking_worker(
        &db.url,
        &data,
        &dir.path().join("w1.log"),
    )]);

    // As soon as the source is split, damage the chunk of the last video
    // part still waiting its turn (one worker takes parts one by one).
    let deadline = Instant::now() + Duration::from_secs(120);
    let chunk: String = loop {
        let row: Option<String> = sqlx::query_scalar(
            "SELECT spec->>'source_key' FROM jobs
             WHERE asset_id = $1 AND kind = 'encode_part' AND state = 'queued'
               AND (spec->>'index')::int > 0
             ORDER BY (spec->>'index')::int DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(Instant::now() < deadline, "the source was never split");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(chunk.contains("/parts/"), "{chunk}");
    store
        .put_bytes(
            &chunk,
            b"%PDF-1.4 not a video chunk".to_vec().into(),
            PutOptions::default(),
        )
        .await
        .unwrap();

    wait_until("the asset failed", Duration::from_secs(300), || {
        let pool = db.pool.clone();
        async move { status_of(&pool, id).await.0 == "failed" }
    })
    .await;
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM jobs WHERE asset_id = $1 ORDER BY kind, state")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        states.contains(&("transcode".into(), "failed".into())),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .any(|(k, s)| k == "encode_part" && s == "failed"),
        "{states:?}"
    );
    // Parts that were running notice the cancellation at their next lease
    // renewal (1 s here) and remove their own files.
    let root = keys::output_root(id);
    wait_until(
        "the attempt's files removed",
        Duration::from_secs(30),
        || {
            let store = store.clone();
            let root = root.clone();
            async move { store.list(&root).await.unwrap().is_empty() }
        },
    )
    .await;
    let queued_or_running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE asset_id = $1 AND state IN ('queued', 'running', 'waiting')",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(queued_or_running, 0, "{states:?}");
    db.drop_database().await;
}

/// Whether `owner` (a lease owner, `host:pid`) is the process `child`.
fn is_owned_by(owner: Option<&str>, child: &Child) -> bool {
    owner.and_then(|o| o.rsplit(':').next()) == Some(child.id().to_string().as_str())
}

/// Starts a worker and SIGKILLs it the moment it has claimed the job that
/// `which` picks (SQL on `jobs`, `$1` being the asset), then starts the
/// next, as a source that takes down every worker would, until the asset
/// fails. Fails the test if the job is claimed past `max_attempts`.
/// Returns how many workers were killed, and the last one, still running.
async fn kill_each_claim(
    db: &TestDb,
    data: &Path,
    logs: &Path,
    asset: Uuid,
    which: &str,
    env: &[(&str, &str)],
    max_attempts: i32,
) -> (i32, Workers) {
    let mut kills = 0;
    let mut workers = Workers(Vec::new());
    loop {
        let log = logs.join(format!("w{kills}.log"));
        workers.0.push(spawn_worker_with(&db.url, data, &log, env));
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if status_of(&db.pool, asset).await.0 == "failed" {
                return (kills, workers);
            }
            let job: Option<(String, i32, Option<String>)> = sqlx::query_as(&format!(
                "SELECT state, attempts, lease_owner FROM jobs WHERE asset_id = $1 AND {which}"
            ))
            .bind(asset)
            .fetch_optional(&db.pool)
            .await
            .unwrap();
            let worker = workers.0.last().unwrap();
            if let Some((state, attempts, owner)) = job {
                if state == "running" && is_owned_by(owner.as_deref(), worker) {
                    assert!(
                        attempts <= max_attempts,
                        "claimed again after its {max_attempts} attempts were spent \
                         (attempt {attempts})"
                    );
                    let mut worker = workers.0.pop().unwrap();
                    worker.kill().unwrap(); // SIGKILL, as the OOM killer would.
                    worker.wait().unwrap();
                    kills += 1;
                    eprintln!("killed worker {owner:?} at its claim (attempt {attempts})");
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the worker never claimed the job, and the asset did not fail"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a failed job and its asset say, for the crash tests.
async fn assert_failed_with_worker_crashed(db: &PgPool, asset: Uuid, job: Uuid, attempts: i32) {
    let (status, _, code) = status_of(db, asset).await;
    assert_eq!(
        (status.as_str(), code.as_deref()),
        ("failed", Some("worker_crashed"))
    );
    let (state, claimed, job_code, message): (String, i32, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT state, attempts, last_error_code, last_error_message FROM jobs WHERE id = $1",
        )
        .bind(job)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(
        (state.as_str(), claimed, job_code.as_deref()),
        ("failed", attempts, Some("worker_crashed"))
    );
    eprintln!("{}", message.unwrap());
    // The failure is in the asset's history, with the worker that died.
    let failures: Vec<(Option<String>, serde_json::Value)> = sqlx::query_as(
        "SELECT worker, detail FROM asset_events WHERE asset_id = $1 AND to_status = 'failed'",
    )
    .bind(asset)
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (worker, detail) = &failures[0];
    assert!(worker.is_some(), "{failures:?}");
    assert_eq!(detail["code"], "worker_crashed", "{detail}");
    assert!(detail["crashed_worker"].is_string(), "{detail}");
    assert!(
        !detail["message"].as_str().unwrap_or_default().is_empty(),
        "{detail}"
    );
}

/// After a job failed for good, a worker keeps polling for two lease
/// periods and never takes it again.
async fn assert_never_claimed_again(db: &PgPool, job: Uuid, attempts: i32) {
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (state, claimed): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!((state.as_str(), claimed), ("failed", attempts));
}

/// A source that takes down every worker that claims it (a decoder bug, a
/// picture that exhausts memory) must not loop for ever: each claim counts
/// as an attempt, and once they are spent the asset fails with
/// `worker_crashed` and nobody claims the job again.
#[tokio::test]
async fn a_source_that_kills_every_worker_fails_with_worker_crashed() {
    let db = TestDb::new("killer").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    let clip = make_clip(dir.path(), "lecture.mp4", 30);
    let id = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    let (job, max_attempts): (Uuid, i32) =
        sqlx::query_as("SELECT id, max_attempts FROM jobs WHERE asset_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();

    let (kills, workers) = kill_each_claim(
        &db,
        &data,
        dir.path(),
        id,
        "kind = 'transcode'",
        &[],
        max_attempts,
    )
    .await;
    assert_eq!(kills, max_attempts, "one death per allowed attempt");
    assert_failed_with_worker_crashed(&db.pool, id, job, max_attempts).await;
    // The dead attempts' previews and partial outputs are gone with it.
    let root = keys::output_root(id);
    wait_until(
        "every attempt's outputs removed",
        Duration::from_secs(30),
        || {
            let (store, root) = (store.clone(), root.clone());
            async move { store.list(&root).await.unwrap().is_empty() }
        },
    )
    .await;
    let playable: Option<String> =
        sqlx::query_scalar("SELECT playable_prefix FROM assets WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(playable, None);
    assert_never_claimed_again(&db.pool, job, max_attempts).await;
    drop(workers);
    db.drop_database().await;
}

/// Chunk parts are jobs too: a part that takes down every worker fails its
/// asset like any part that fails for good, the parent failed and the other
/// parts cancelled, and nothing of the asset stays in storage.
#[tokio::test]
async fn a_part_that_kills_every_worker_fails_its_asset() {
    let db = TestDb::new("killer_part").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    let clip = make_clip_with(dir.path(), "lecture.mp4", 46, &["-g", "50"]);
    let id = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    let max_attempts: i32 = sqlx::query_scalar("SELECT max_attempts FROM jobs WHERE asset_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let victim = "kind = 'encode_part' AND (spec->>'index')::int = 2";

    let (kills, workers) = kill_each_claim(
        &db,
        &data,
        dir.path(),
        id,
        victim,
        &[
            ("LECTERN_CHUNK_THRESHOLD_SECS", "20"),
            ("LECTERN_CHUNK_SECS", "10"),
        ],
        max_attempts,
    )
    .await;
    assert_eq!(kills, max_attempts, "one death per allowed attempt");
    let part: Uuid = sqlx::query_scalar(&format!(
        "SELECT id FROM jobs WHERE asset_id = $1 AND {victim}"
    ))
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_failed_with_worker_crashed(&db.pool, id, part, max_attempts).await;
    let states: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM jobs WHERE asset_id = $1 ORDER BY kind, state")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        states.contains(&("transcode".into(), "failed".into())),
        "{states:?}"
    );
    assert!(
        states
            .iter()
            .all(|(_, s)| ["failed", "cancelled", "succeeded"].contains(&s.as_str())),
        "no job is left to run: {states:?}"
    );
    let root = keys::output_root(id);
    wait_until(
        "the attempt's files removed",
        Duration::from_secs(30),
        || {
            let (store, root) = (store.clone(), root.clone());
            async move { store.list(&root).await.unwrap().is_empty() }
        },
    )
    .await;
    assert_never_claimed_again(&db.pool, part, max_attempts).await;
    drop(workers);
    db.drop_database().await;
}

/// Every file a preview at `prefix` names exists: the master, its media
/// playlists, their init segments and segments.
async fn assert_preview_complete(store: &dyn Store, prefix: &str) {
    let text = |key: String| async move {
        let object = store
            .get(&key, None)
            .await
            .unwrap_or_else(|e| panic!("{key} is missing: {e}"));
        String::from_utf8(object.bytes().await.unwrap().to_vec()).unwrap()
    };
    let master = text(format!("{prefix}master.m3u8")).await;
    let playlists: Vec<&str> = master
        .lines()
        .filter(|l| !l.starts_with('#') && l.ends_with(".m3u8"))
        .chain(master.lines().filter_map(|l| {
            let uri = l.split("URI=\"").nth(1)?;
            uri.split('"').next()
        }))
        .collect();
    assert!(!playlists.is_empty(), "{master}");
    for playlist in playlists {
        let dir = format!(
            "{prefix}{}",
            &playlist[..playlist.rfind('/').map_or(0, |i| i + 1)]
        );
        let body = text(format!("{prefix}{playlist}")).await;
        let media = match m3u8_rs::parse_playlist_res(body.as_bytes()) {
            Ok(m3u8_rs::Playlist::MediaPlaylist(m)) => m,
            other => panic!("{playlist} is not a media playlist: {other:?}"),
        };
        assert!(!media.segments.is_empty(), "{playlist}: {body}");
        for segment in &media.segments {
            let uris = std::iter::once(&segment.uri).chain(segment.map.as_ref().map(|m| &m.uri));
            for uri in uris {
                let key = format!("{dir}{uri}");
                store
                    .get(&key, None)
                    .await
                    .unwrap_or_else(|e| panic!("{playlist} names {key}, which is missing: {e}"));
            }
        }
    }
}

/// A worker told to stop (SIGTERM) during fast first playback hands its job
/// back without breaking the preview the asset points at: learners keep
/// the part encoded so far, and the next attempt publishes under a prefix of
/// its own, then collects the drained attempt's files.
#[tokio::test]
async fn a_drained_job_leaves_a_working_preview_and_the_next_attempt_publishes() {
    let db = TestDb::new("drain").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    let clip = make_clip(dir.path(), "lecture.mp4", 120);
    let id = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    // No drain period: the running encode is cancelled and handed back at once.
    let mut first = Workers(vec![spawn_worker_with(
        &db.url,
        &data,
        &dir.path().join("w1.log"),
        &[("LECTERN_WORKER_DRAIN_SECS", "0")],
    )]);
    wait_until("a playable preview", Duration::from_secs(180), || {
        let pool = db.pool.clone();
        async move {
            let (status, prefix): (String, Option<String>) =
                sqlx::query_as("SELECT status, playable_prefix FROM assets WHERE id = $1")
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_ne!(status, "ready", "the encode finished before the drain");
            prefix.is_some()
        }
    })
    .await;
    let status = common::Server(first.0.pop().unwrap()).terminate();
    assert!(status.success(), "the worker drains and exits: {status}");

    // Handed back, the attempt not counted against the limit.
    let (state, attempts, handbacks): (String, i32, i32) =
        sqlx::query_as("SELECT state, attempts, handbacks FROM jobs WHERE asset_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, "queued", "drained during the encode");
    assert_eq!(attempts - handbacks, 0, "a drain is not a failed attempt");
    // The asset still points at a preview, and everything it names exists.
    let (status, playable): (String, Option<String>) =
        sqlx::query_as("SELECT status, playable_prefix FROM assets WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "transcoding");
    let playable = playable.expect("the drained attempt's preview stays playable");
    assert_preview_complete(store.as_ref(), &playable).await;
    eprintln!("after the drain the asset still plays its preview at {playable}");

    // The next attempt publishes normally, under a prefix of its own.
    let _second = Workers(vec![spawn_worker(
        &db.url,
        &data,
        &dir.path().join("w2.log"),
    )]);
    wait_until("the asset ready", Duration::from_secs(300), || {
        let pool = db.pool.clone();
        async move {
            let (status, _, error) = status_of(&pool, id).await;
            assert_ne!(status, "failed", "asset failed: {error:?}");
            status == "ready"
        }
    })
    .await;
    let (output, playable): (String, String) =
        sqlx::query_as("SELECT output_prefix, playable_prefix FROM assets WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(output, playable);
    assert!(output.ends_with("attempt-2/"), "{output}");
    let (attempts, handbacks): (i32, i32) =
        sqlx::query_as("SELECT attempts, handbacks FROM jobs WHERE asset_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempts, handbacks), (2, 1));
    assert_ladder_plays(store.as_ref(), &output).await;
    let stray: Vec<String> = store
        .list(&keys::output_root(id))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.starts_with(&output))
        .collect();
    assert!(
        stray.is_empty(),
        "the drained attempt's files remain: {stray:?}"
    );
    db.drop_database().await;
}

/// A picture far larger than anything lectures need is refused at probe,
/// with its own code, before the asset reaches transcoding (so before any
/// decoder sees a frame), and is not retried.
#[tokio::test]
async fn an_oversized_picture_is_refused_at_probe() {
    let db = TestDb::new("oversized").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = create_org(&db.pool).await;
    // 640x360 stored with 16:1 pixels: shown 10240 pixels wide.
    let clip = make_clip_with(dir.path(), "wide.mp4", 2, &["-vf", "setsar=16/1"]);
    let id = enqueue(&db.pool, store.as_ref(), org, &clip).await;
    let _workers = Workers(vec![spawn_worker(
        &db.url,
        &data,
        &dir.path().join("w.log"),
    )]);
    wait_until("the asset to fail", Duration::from_secs(60), || {
        let pool = db.pool.clone();
        async move { status_of(&pool, id).await.0 == "failed" }
    })
    .await;
    let (_, _, code) = status_of(&db.pool, id).await;
    assert_eq!(code.as_deref(), Some("frame_too_large"));
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT to_status FROM asset_events WHERE asset_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["uploaded", "probing", "failed"]);
    let (attempts, state): (i32, String) =
        sqlx::query_as("SELECT attempts, state FROM jobs WHERE asset_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((attempts, state.as_str()), (1, "failed"));
    db.drop_database().await;
}
