//! Heartbeats flowing into a real `lectern serve`, then `kill -9` and a
//! restart: the resume point the playback session returns is at most one
//! flush interval behind the last acknowledged beat (in-memory absorber),
//! or one push interval (Redis: each node pushes what it absorbed to Redis,
//! which outlives the process).

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use common::deployment::{catalogue, login, playback, stored_position, Deployment};
use common::Server;

const FLUSH: Duration = Duration::from_secs(1);
/// A flush is not instantaneous: what it took at the moment of the kill
/// may still have been on its way to PostgreSQL.
const FLUSH_SLACK: Duration = Duration::from_millis(500);

/// Beats for `run`, one media second each, then `kill -9`. Returns every
/// acknowledged position with when it was acknowledged, and the kill time.
async fn beat_then_kill(
    http: &reqwest::Client,
    d: &Deployment,
    server: Server,
    token: &str,
    lesson: Uuid,
    run: Duration,
) -> (Vec<(f64, Instant)>, Instant) {
    let start = Instant::now();
    let mut acked = Vec::new();
    let mut pos = 0.0;
    while start.elapsed() < run {
        pos += 1.0;
        let r = http
            .post(d.base("/api/v1/progress"))
            .bearer_auth(token)
            .json(
                &json!({ "lesson_id": lesson, "position_s": pos, "speed": 1.5,
                           "played_from_s": pos - 1.0, "played_to_s": pos }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
        acked.push((pos, Instant::now()));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut server = server;
    server.0.kill().unwrap(); // SIGKILL: no graceful flush
    let killed = Instant::now();
    server.0.wait().unwrap();
    (acked, killed)
}

/// The furthest position acknowledged more than `bound` (plus the time
/// a flush or push takes) before the kill: what must have survived it.
fn acknowledged_before(acked: &[(f64, Instant)], killed: Instant, bound: Duration) -> f64 {
    let must_have = acked
        .iter()
        .filter(|(_, at)| killed.duration_since(*at) > bound + FLUSH_SLACK)
        .map(|(p, _)| *p)
        .fold(0.0, f64::max);
    assert!(
        must_have >= 10.0,
        "the test beat for too short a time: {acked:?}"
    );
    must_have
}

async fn resume_after_restart(http: &reqwest::Client, d: &Deployment, lesson: Uuid) -> Value {
    let token = login(http, &d.base("")).await;
    playback(http, &d.base(""), &token, lesson).await
}

#[sqlx::test(migrations = "./migrations")]
async fn memory_mode_loses_at_most_one_flush_interval(db: PgPool) {
    let d = Deployment::new(
        &db,
        FLUSH,
        vec![("LECTERN_PROGRESS_BACKEND", "memory".into())],
    )
    .await;
    let (lesson, _) = catalogue(&db, &d, 1).await[0];
    let http = reqwest::Client::new();
    let server = d.serve(&http).await;
    let token = login(&http, &d.base("")).await;
    let (acked, killed) =
        beat_then_kill(&http, &d, server, &token, lesson, Duration::from_secs(4)).await;
    let last = acked.last().unwrap().0;
    // Everything acknowledged one interval (plus a flush's duration)
    // before the kill must have been written.
    let must_have = acknowledged_before(&acked, killed, FLUSH);
    let _server = d.serve(&http).await;
    let playback = resume_after_restart(&http, &d, lesson).await;
    let resume = playback["resume_position_s"].as_f64().unwrap();
    assert!(
        resume >= must_have && resume <= last,
        "resume {resume}: want between {must_have} (acknowledged > {FLUSH:?} before the kill) and {last}"
    );
    assert_eq!(playback["speed"], json!(1.5), "{playback}");
}

/// Redis mode: a node answers beats from its memory and pushes them to
/// Redis every push interval (1 s), so its crash loses at most that much,
/// even though nothing reached PostgreSQL (the flush interval is set far
/// longer here): the restarted node finds the rest in Redis, and its
/// flusher then writes it.
#[sqlx::test(migrations = "./migrations")]
async fn redis_mode_loses_at_most_one_push_interval(db: PgPool) {
    const PUSH: Duration = Duration::from_secs(1);
    let redis_url = std::env::var("REDIS_URL").expect("REDIS_URL (infra/dev/services up)");
    let prefix = format!("lectern-crash:{}:", Uuid::new_v4());
    let d = Deployment::new(
        &db,
        FLUSH,
        vec![
            ("LECTERN_PROGRESS_BACKEND", "redis".into()),
            ("REDIS_URL", redis_url),
            ("LECTERN_PROGRESS_REDIS_PREFIX", prefix),
            ("LECTERN_PROGRESS_FLUSH_INTERVAL", "8s".into()),
        ],
    )
    .await;
    let (lesson, _) = catalogue(&db, &d, 1).await[0];
    let http = reqwest::Client::new();
    let server = d.serve(&http).await;
    let token = login(&http, &d.base("")).await;
    let (acked, killed) =
        beat_then_kill(&http, &d, server, &token, lesson, Duration::from_secs(4)).await;
    let last = acked.last().unwrap().0;
    let must_have = acknowledged_before(&acked, killed, PUSH);
    let stored = stored_position(&db, lesson).await;
    assert!(
        stored.is_none_or(|p| p < must_have),
        "PostgreSQL already had {stored:?}: the test cannot tell Redis kept it"
    );
    let _server = d.serve(&http).await;
    let playback = resume_after_restart(&http, &d, lesson).await;
    let resume = playback["resume_position_s"].as_f64().unwrap();
    assert!(
        resume >= must_have && resume <= last,
        "resume {resume}: want between {must_have} (acknowledged > {PUSH:?} before the kill) and {last}"
    );
    assert_eq!(playback["speed"], json!(1.5), "{playback}");
    // And the restarted node's flusher writes it to PostgreSQL.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = stored_position(&db, lesson).await;
        if stored == Some(resume) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL has {stored:?}, want {resume}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
