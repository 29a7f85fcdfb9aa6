//! High availability, as `infra/ha/` deploys it: two `lectern serve` nodes
//! (Redis absorber, one database, one store) behind nginx from
//! `infra/ha/nginx.conf.template`, under a steady load of heartbeats and
//! segment requests from concurrent players. One node is killed with
//! SIGKILL mid-load:
//!
//! - every request keeps being answered (nginx passes requests the dead
//!   node refused or dropped to the other one);
//! - no acknowledged heartbeat is lost beyond one push interval: the
//!   resume point a player gets afterwards is at least what was
//!   acknowledged a push interval before the kill;
//! - every player's last acknowledged position reaches PostgreSQL through
//!   the surviving node's flusher.
//!
//! It prints the failed-request share and the time back to full
//! throughput (the figures `benchmarks/RESULTS.md` records) and asserts
//! no time. The worker half of HA — a worker killed mid-transcode, the job
//! finishing on the other — is `tests/pipeline.rs`'
//! `a_killed_worker_loses_no_job_and_mixes_no_attempts`.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lectern_storage::{FsStore, PutOptions, Store};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use common::deployment::{catalogue, login, playback, stored_position, Deployment};
use common::nginx::Nginx;

const FLUSH: Duration = Duration::from_secs(1);
/// A node pushes what it absorbed to Redis every second (learning's
/// `PUSH_INTERVAL`); a push in flight at the kill may not have landed.
const PUSH: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(500);
/// Concurrent players, each on a lesson of its own.
const PLAYERS: usize = 8;
const BEFORE_KILL: Duration = Duration::from_secs(4);
const AFTER_KILL: Duration = Duration::from_secs(8);
const BUCKET: Duration = Duration::from_millis(250);

/// nginx from the HA template in front of `nodes`; returns it and its URL.
async fn front(dir: &Path, nodes: [&str; 2]) -> (Nginx, String) {
    let listen = common::free_addr();
    let nginx = common::nginx::start(
        "infra/ha/nginx.conf.template",
        dir,
        &[
            ("@@LISTEN@@", &listen),
            ("@@NODE_A@@", nodes[0]),
            ("@@NODE_B@@", nodes[1]),
        ],
    );
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (nginx, base)
}

/// One request's outcome: when it completed and whether it was answered
/// as it should have been.
type Outcomes = Arc<Mutex<Vec<(Instant, bool)>>>;

/// Heartbeats refused by nginx or a node (each one a learner's progress
/// the player has to send again).
static BEATS_FAILED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Media seconds a beat reports (a player beating every 10 ms covers 300 s
/// of a 600 s lesson in the test's 12 s).
const STEP: f64 = 0.25;

/// A player: beats its lesson `STEP` media seconds at a time and fetches
/// a segment after every beat, pausing 10 ms between rounds, until `stop`. Returns its acknowledged
/// positions with when they were acknowledged.
#[allow(clippy::too_many_arguments)]
async fn player(
    http: reqwest::Client,
    base: String,
    token: String,
    lesson: Uuid,
    segment: String,
    stop: Instant,
    outcomes: Outcomes,
) -> Vec<(f64, Instant)> {
    let mut acked = Vec::new();
    let mut pos = 0.0;
    while Instant::now() < stop {
        pos += STEP;
        let beat = http
            .post(format!("{base}/api/v1/progress"))
            .bearer_auth(&token)
            .json(
                &json!({ "lesson_id": lesson, "position_s": pos, "speed": 1.0,
                           "played_from_s": pos - STEP, "played_to_s": pos }),
            )
            .send()
            .await;
        let ok = matches!(&beat, Ok(r) if r.status() == 204);
        if ok {
            acked.push((pos, Instant::now()));
        } else {
            BEATS_FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            note_failure(&format!("heartbeat at {pos}: {beat:?}"));
        }
        outcomes.lock().unwrap().push((Instant::now(), ok));
        let got = http.get(&segment).send().await;
        let ok = match got {
            Ok(r) if r.status() == 200 => r.bytes().await.is_ok_and(|b| b.len() == SEGMENT.len()),
            other => {
                note_failure(&format!("segment: {other:?}"));
                false
            }
        };
        outcomes.lock().unwrap().push((Instant::now(), ok));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acked
}

/// The first few failures, for the log.
fn note_failure(what: &str) {
    static SHOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10 {
        eprintln!("failed: {what}");
    }
}

const SEGMENT: &[u8] = &[0x5a; 64 * 1024];

#[sqlx::test(migrations = "./migrations")]
async fn one_serve_node_killed_under_load_loses_no_request_and_no_acknowledged_beat(db: PgPool) {
    let redis_url = std::env::var("REDIS_URL").expect("REDIS_URL (infra/dev/services up)");
    let d = Deployment::new(
        &db,
        FLUSH,
        vec![
            ("LECTERN_PROGRESS_BACKEND", "redis".into()),
            ("REDIS_URL", redis_url),
            (
                "LECTERN_PROGRESS_REDIS_PREFIX",
                format!("lectern-ha:{}:", Uuid::new_v4()),
            ),
            ("LECTERN_TRUSTED_PROXIES", "127.0.0.1/32".into()),
        ],
    )
    .await;
    let lessons = catalogue(&db, &d, PLAYERS).await;
    // Both nodes read one local-disk store (the working directory's):
    // put a segment under every asset's output.
    let store = FsStore::open(d.dir.path().join(".lectern/storage"))
        .await
        .unwrap();
    for (_, asset) in &lessons {
        store
            .put_bytes(
                &format!("assets/{asset}/out/attempt-1/v0/seg_00001.m4s"),
                Bytes::from_static(SEGMENT),
                PutOptions {
                    content_type: Some("video/iso.segment".into()),
                    cache_control: Some("public, max-age=31536000, immutable".into()),
                },
            )
            .await
            .unwrap();
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let node_b = common::free_addr();
    let mut a = d.serve(&http).await;
    let _b = d.serve_at(&http, &node_b).await;
    let (_nginx, base) = front(d.dir.path(), [&d.addr, &node_b]).await;
    let token = login(&http, &base).await;

    let outcomes: Outcomes = Arc::default();
    let start = Instant::now();
    let kill_at = start + BEFORE_KILL;
    let stop = kill_at + AFTER_KILL;
    let mut players = Vec::new();
    for (lesson, _) in &lessons {
        let session = playback(&http, &base, &token, *lesson).await;
        let master = session["master_url"].as_str().unwrap();
        let query = &master[master.find("?token=").expect(master)..];
        let prefix = &master[..master.rfind('/').unwrap()];
        let segment = format!("{base}{prefix}/v0/seg_00001.m4s{query}");
        players.push(tokio::spawn(player(
            http.clone(),
            base.clone(),
            token.clone(),
            *lesson,
            segment,
            stop,
            outcomes.clone(),
        )));
    }
    tokio::time::sleep_until(kill_at.into()).await;
    a.0.kill().unwrap(); // SIGKILL: no drain, no last push
    let killed = Instant::now();
    a.0.wait().unwrap();

    let mut acked = Vec::new();
    for p in players {
        acked.push(p.await.unwrap());
    }

    // Figures: failed share, and the time until throughput is back.
    let outcomes = outcomes.lock().unwrap().clone();
    let total = outcomes.len();
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    let bucket_of =
        |t: Instant| (t.duration_since(start).as_millis() / BUCKET.as_millis()) as usize;
    let buckets = bucket_of(stop) + 1;
    let mut served = vec![0usize; buckets];
    for (at, ok) in &outcomes {
        if *ok {
            served[bucket_of(*at).min(buckets - 1)] += 1;
        }
    }
    let kill_bucket = bucket_of(killed);
    // The steady rate: the buckets before the kill, past the first second.
    let warm = (Duration::from_secs(1).as_millis() / BUCKET.as_millis()) as usize;
    let before = &served[warm..kill_bucket];
    let steady = before.iter().sum::<usize>() as f64 / before.len() as f64;
    let back = (kill_bucket..buckets - 1)
        .find(|&i| {
            served[i..buckets - 1]
                .iter()
                .all(|&n| n as f64 >= 0.8 * steady)
        })
        .map(|i| (i.saturating_sub(kill_bucket)) as f64 * BUCKET.as_secs_f64());
    println!(
        "ha: requests={total} failed={failed} failed_share={:.4}% steady={:.0}/s back_to_full_s={}",
        100.0 * failed as f64 / total as f64,
        steady / BUCKET.as_secs_f64(),
        back.map_or("never".into(), |s| format!("{s:.2}")),
    );
    assert!(total > 200, "too little load to say anything: {total}");
    // The surviving node answered after the kill.
    let after = outcomes
        .iter()
        .filter(|(at, ok)| *ok && *at > killed + Duration::from_secs(1))
        .count();
    assert!(after > 50, "only {after} requests answered after the kill");
    // nginx passes what the dead node refused or cut off to the other:
    // heartbeats are sent again even when cut off mid-flight (they are
    // idempotent), so not one may fail; a GET cut mid-body is the one case
    // nginx cannot retry, hence the 0.1 % for the rest.
    let beats_failed = BEATS_FAILED.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(beats_failed, 0, "{beats_failed} heartbeats failed");
    assert!(
        failed * 1000 <= total,
        "{failed} of {total} requests failed (> 0.1 %)"
    );

    // No acknowledged beat lost beyond one push interval, and every
    // player's last one flushed to PostgreSQL by the surviving node.
    for ((lesson, _), acked) in lessons.iter().zip(&acked) {
        let must_have = acked
            .iter()
            .filter(|(_, at)| *at < killed && killed.duration_since(*at) > PUSH + SLACK)
            .map(|(p, _)| *p)
            .fold(0.0, f64::max);
        assert!(
            must_have >= 5.0,
            "player of {lesson} beat too little: {acked:?}"
        );
        let last = acked.last().unwrap().0;
        let session = playback(&http, &base, &token, *lesson).await;
        let resume = session["resume_position_s"].as_f64().unwrap();
        assert!(
            resume >= must_have && resume <= last,
            "lesson {lesson}: resume {resume}, want between {must_have} and {last}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = stored_position(&db, *lesson).await;
            if stored == Some(last) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "lesson {lesson}: PostgreSQL has {stored:?}, the last acknowledged beat was {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
