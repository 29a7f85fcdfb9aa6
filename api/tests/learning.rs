//! Playback sessions, progress heartbeats, QoE and the learner's views,
//! in process against a real PostgreSQL — every test twice: with the
//! in-memory absorber and with Redis (at `REDIS_URL`, a key prefix of its
//! own per test). Heartbeats are credited only as far as wall time allows
//! (`lectern_learning::credit`): the fixture's clock stands for it, and a
//! test that plays like a player advances it by what each beat reports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{Duration as ChronoDuration, Utc};
use lectern_learning::{flush, Learning, ProgressBackend, ProgressSettings};
use lectern_learning::{
    Absorber, Beat, Clock, RedisAbsorber, Session, Snapshot, CARRY_MAX_S, MAX_FRAGMENTS, SLACK,
};
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Memory,
    Redis,
}

struct Fixture {
    w: World,
    org: Uuid,
    course: Uuid,
    lesson: Uuid,
    duration: f64,
    redis_prefix: Option<String>,
    clock: Clock,
    /// The playback session each device (token) started per lesson.
    playbacks: Mutex<HashMap<(String, Uuid), Uuid>>,
}

impl Fixture {
    async fn new(db: PgPool, mode: Mode) -> Self {
        let mut w = World::new(db).await;
        let (backend, redis_prefix) = match mode {
            Mode::Memory => (ProgressBackend::Memory, None),
            Mode::Redis => {
                let url = std::env::var("REDIS_URL")
                    .expect("REDIS_URL must name the test Redis (infra/dev/services up)");
                let prefix = format!("lectern-test:{}:", Uuid::new_v4());
                (
                    ProgressBackend::Redis {
                        url,
                        prefix: prefix.clone(),
                    },
                    Some(prefix),
                )
            }
        };
        let learning = Learning::connect(ProgressSettings {
            backend,
            ..ProgressSettings::default()
        })
        .await
        .expect("the progress backend answers");
        let clock = learning.clock.clone();
        let settings = lectern_api::Settings {
            learning,
            ..w.settings()
        };
        w.rebuild(None, settings);
        let org = w.org("Cardiology Society").await;
        w.user(Some(org), "learner@a.example.org", Role::Learner)
            .await;
        let duration = 100.0;
        let course = course(&w, org, "published").await;
        let lesson = lesson(&w, org, course, Some(duration), true).await;
        Self {
            w,
            org,
            course,
            lesson,
            duration,
            redis_prefix,
            clock,
            playbacks: Mutex::default(),
        }
    }

    async fn flush(&self) {
        flush::flush_once(self.w.db(), &self.w.state.learning.learning.absorber)
            .await
            .expect("flush");
    }

    async fn beat(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.w
            .call("POST", "/api/v1/progress", Some(token), Some(body))
            .await
    }

    /// A beat as a player sends it: in the playback session this device
    /// started for the lesson (started on first use), the wall time it
    /// reports after the previous one.
    async fn ok_beat(&self, token: &str, mut body: Value) {
        let lesson: Uuid = serde_json::from_value(body["lesson_id"].clone()).unwrap();
        body["playback_id"] = json!(self.playback_id(token, lesson).await);
        let (from, to) = (
            body["played_from_s"].as_f64().unwrap(),
            body["played_to_s"].as_f64().unwrap(),
        );
        let wall = (to - from).max(0.0) / body["speed"].as_f64().unwrap();
        self.clock.advance(Duration::from_secs_f64(wall));
        let (status, resp) = self.beat(token, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{resp}");
    }

    /// A beat as a player from before playback sessions sends it.
    async fn ok_beat_without_session(&self, token: &str, body: Value) {
        let (status, resp) = self.beat(token, body).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{resp}");
    }

    async fn playback_id(&self, token: &str, lesson: Uuid) -> Uuid {
        let key = (token.to_string(), lesson);
        if let Some(id) = self.playbacks.lock().unwrap().get(&key) {
            return *id;
        }
        let id =
            serde_json::from_value(self.playback_of(token, lesson).await["playback_id"].clone())
                .expect("a playback_id");
        self.playbacks.lock().unwrap().insert(key, id);
        id
    }

    async fn playback(&self, token: &str) -> Value {
        self.playback_of(token, self.lesson).await
    }

    async fn playback_of(&self, token: &str, lesson: Uuid) -> Value {
        let (status, body) = self
            .w
            .call(
                "POST",
                &format!("/api/v1/lessons/{lesson}/playback"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn cleanup(&self) {
        if let Some(prefix) = &self.redis_prefix {
            delete_redis_keys(prefix).await;
        }
    }
}

/// Removes a test's keys from the shared Redis.
async fn delete_redis_keys(prefix: &str) {
    let client = redis::Client::open(std::env::var("REDIS_URL").unwrap()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut con)
            .await
            .unwrap();
    }
}

async fn course(w: &World, org: Uuid, state: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, 'Heart failure in practice', $3, now())",
    )
    .bind(id)
    .bind(org)
    .bind(state)
    .execute(w.db())
    .await
    .unwrap();
    id
}

/// A lesson with an asset of `duration` seconds, transcoded when `ready`.
async fn lesson(w: &World, org: Uuid, course: Uuid, duration: Option<f64>, ready: bool) -> Uuid {
    let asset = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(asset)
    .bind(org)
    .bind(if ready { "ready" } else { "transcoding" })
    .bind(format!("sources/{asset}"))
    .bind(duration)
    .bind(ready.then(|| format!("assets/{asset}/out/attempt-1/")))
    .execute(w.db())
    .await
    .unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, title, position, asset_id)
         VALUES ($1, $2, $3, '心力衰竭的诊断', 1, $4)",
    )
    .bind(id)
    .bind(org)
    .bind(course)
    .bind(asset)
    .execute(w.db())
    .await
    .unwrap();
    id
}

fn beat(lesson: Uuid, pos: f64, speed: f64, from: f64, to: f64) -> Value {
    json!({
        "lesson_id": lesson,
        "position_s": pos,
        "speed": speed,
        "played_from_s": from,
        "played_to_s": to,
    })
}

fn beat_at(lesson: Uuid, pos: f64, speed: f64, from: f64, to: f64, secs_ago: i64) -> Value {
    let mut b = beat(lesson, pos, speed, from, to);
    b["sent_at"] = json!((Utc::now() - ChronoDuration::seconds(secs_ago)).to_rfc3339());
    b
}

fn iv(v: &Value) -> Vec<[f64; 2]> {
    serde_json::from_value(v.clone()).unwrap()
}

fn approx(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

async fn resume_across_two_devices(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let phone = f.w.login("learner@a.example.org").await;
    let laptop = f.w.login("learner@a.example.org").await;
    assert_ne!(phone, laptop);

    let first = f.playback(&phone).await;
    assert!(approx(&first["resume_position_s"], 0.0), "{first}");
    assert!(approx(&first["speed"], 1.0), "{first}");
    assert!(approx(&first["duration_s"], f.duration), "{first}");
    assert!(
        first["master_url"].as_str().unwrap().contains("master"),
        "{first}"
    );

    // The two devices alternate; each beat is newer than the last.
    f.ok_beat(&phone, beat_at(f.lesson, 10.0, 1.5, 5.0, 10.0, 30))
        .await;
    f.ok_beat(&laptop, beat_at(f.lesson, 20.0, 1.25, 15.0, 20.0, 20))
        .await;
    f.ok_beat(&phone, beat_at(f.lesson, 30.0, 2.0, 25.0, 30.0, 10))
        .await;
    for token in [&phone, &laptop] {
        let p = f.playback(token).await;
        assert!(
            approx(&p["resume_position_s"], 30.0),
            "unflushed, {mode:?}: {p}"
        );
        assert!(approx(&p["speed"], 2.0), "unflushed, {mode:?}: {p}");
    }
    f.flush().await;
    for token in [&phone, &laptop] {
        let p = f.playback(token).await;
        assert!(
            approx(&p["resume_position_s"], 30.0),
            "flushed, {mode:?}: {p}"
        );
        assert!(approx(&p["speed"], 2.0), "flushed, {mode:?}: {p}");
    }
    // Without sent_at, arrival order decides: the laptop now is the latest.
    f.ok_beat(&laptop, beat(f.lesson, 42.0, 1.0, 37.0, 42.0))
        .await;
    for token in [&phone, &laptop] {
        let p = f.playback(token).await;
        assert!(approx(&p["resume_position_s"], 42.0), "{mode:?}: {p}");
        assert!(approx(&p["speed"], 1.0), "{mode:?}: {p}");
    }
    // The speed is the learner's, not the lesson's: another lesson starts
    // at the last speed used anywhere.
    f.flush().await;
    let other = lesson(&f.w, f.org, f.course, Some(60.0), true).await;
    f.ok_beat(&phone, beat(other, 3.0, 1.75, 0.0, 3.0)).await;
    let (_, p) =
        f.w.call(
            "POST",
            &format!("/api/v1/lessons/{}/playback", f.lesson),
            Some(&laptop),
            None,
        )
        .await;
    assert!(approx(&p["speed"], 1.75), "{mode:?}: {p}");
    assert!(approx(&p["resume_position_s"], 42.0), "{mode:?}: {p}");
    f.flush().await;
    let stored: (f64, f32) = sqlx::query_as(
        "SELECT lp.position_s, p.speed FROM lesson_progress lp
         JOIN learner_preferences p ON p.user_id = lp.user_id WHERE lp.lesson_id = $1",
    )
    .bind(f.lesson)
    .fetch_one(f.w.db())
    .await
    .unwrap();
    assert_eq!(stored, (42.0, 1.75));
    f.cleanup().await;
}

async fn intervals_merge_into_completion(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let token = f.w.login("learner@a.example.org").await;
    for (from, to) in [(0.0, 10.0), (10.0, 20.0), (5.0, 15.0), (50.0, 60.0)] {
        f.ok_beat(&token, beat(f.lesson, to, 1.0, from, to)).await;
    }
    let p = f.playback(&token).await;
    assert!(approx(&p["completion"], 0.3), "{mode:?}: {p}");
    assert_eq!(p["completed"], json!(false));
    f.flush().await;
    let watched: Value =
        sqlx::query_scalar("SELECT watched FROM lesson_progress WHERE lesson_id = $1")
            .bind(f.lesson)
            .fetch_one(f.w.db())
            .await
            .unwrap();
    assert_eq!(iv(&watched), vec![[0.0, 20.0], [50.0, 60.0]]);

    // Continue watching lists it while unfinished.
    let (status, cw) =
        f.w.call("GET", "/api/v1/me/continue-watching", Some(&token), None)
            .await;
    assert_eq!(status, StatusCode::OK, "{cw}");
    assert_eq!(cw["items"][0]["lesson_id"], json!(f.lesson), "{cw}");

    // The rest of the lesson, up to 95 % of it, in beats across a flush.
    let mut at = 20.0;
    while at < 50.0 {
        f.ok_beat(&token, beat(f.lesson, at + 5.0, 1.0, at, at + 5.0))
            .await;
        at += 5.0;
    }
    f.flush().await;
    let mut at = 60.0;
    while at < 95.0 {
        f.ok_beat(&token, beat(f.lesson, at + 5.0, 1.0, at, at + 5.0))
            .await;
        at += 5.0;
    }
    let p = f.playback(&token).await;
    assert!(approx(&p["completion"], 0.95), "{mode:?}: {p}");
    assert_eq!(p["completed"], json!(true), "{p}");
    f.flush().await;
    let (watched, watched_s, done): (Value, f64, bool) = sqlx::query_as(
        "SELECT watched, watched_s, completed_at IS NOT NULL FROM lesson_progress WHERE lesson_id = $1",
    )
    .bind(f.lesson)
    .fetch_one(f.w.db())
    .await
    .unwrap();
    assert_eq!(iv(&watched), vec![[0.0, 95.0]]);
    assert!((watched_s - 95.0).abs() < 1e-9);
    assert!(done, "complete at ≥ 90 %");

    let (_, course) =
        f.w.call(
            "GET",
            &format!("/api/v1/courses/{}/progress", f.course),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(course["lessons_total"], json!(1), "{course}");
    assert_eq!(course["lessons_completed"], json!(1), "{course}");
    let (_, cw) =
        f.w.call("GET", "/api/v1/me/continue-watching", Some(&token), None)
            .await;
    assert_eq!(
        cw["items"],
        json!([]),
        "finished lessons leave continue watching: {cw}"
    );
    let (_, history) =
        f.w.call("GET", "/api/v1/me/history", Some(&token), None)
            .await;
    assert_eq!(history["items"][0]["completed"], json!(true), "{history}");
    f.cleanup().await;
}

async fn duplicates_and_late_beats_are_harmless(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let token = f.w.login("learner@a.example.org").await;
    let newer = beat_at(f.lesson, 50.0, 1.0, 40.0, 50.0, 5);
    let older = beat_at(f.lesson, 20.0, 2.0, 10.0, 20.0, 60);
    f.ok_beat(&token, newer.clone()).await;
    // A retry of an old beat arrives late; then the newer one, three times.
    f.ok_beat(&token, older.clone()).await;
    for _ in 0..3 {
        f.ok_beat(&token, newer.clone()).await;
    }
    let check = |p: Value| {
        assert!(approx(&p["resume_position_s"], 50.0), "{mode:?}: {p}");
        assert!(approx(&p["speed"], 1.0), "{mode:?}: {p}");
        // The late beat's interval counts, its playing time does not; the
        // duplicates count once.
        assert!(approx(&p["completion"], 0.2), "{mode:?}: {p}");
        assert!(approx(&p["watch_time_s"], 10.0), "{mode:?}: {p}");
    };
    check(f.playback(&token).await);
    f.flush().await;
    check(f.playback(&token).await);
    // Flushing again, and the same beats again after a flush, change nothing.
    f.flush().await;
    f.ok_beat(&token, newer.clone()).await;
    f.ok_beat(&token, older.clone()).await;
    f.flush().await;
    let (pos, speed, watch, watched): (f64, f32, f64, Value) = sqlx::query_as(
        "SELECT position_s, speed, watch_time_s, watched FROM lesson_progress WHERE lesson_id = $1",
    )
    .bind(f.lesson)
    .fetch_one(f.w.db())
    .await
    .unwrap();
    assert_eq!((pos, speed), (50.0, 1.0));
    assert!((watch - 10.0).abs() < 1e-9, "watch time {watch}");
    assert_eq!(iv(&watched), vec![[10.0, 20.0], [40.0, 50.0]]);
    // A beat newer than everything moves it on.
    f.ok_beat(&token, beat(f.lesson, 55.0, 1.0, 50.0, 55.0))
        .await;
    f.flush().await;
    let (pos, watch): (f64, f64) =
        sqlx::query_as("SELECT position_s, watch_time_s FROM lesson_progress WHERE lesson_id = $1")
            .bind(f.lesson)
            .fetch_one(f.w.db())
            .await
            .unwrap();
    assert_eq!(pos, 55.0);
    assert!((watch - 15.0).abs() < 1e-9, "watch time {watch}");
    f.cleanup().await;
}

async fn impossible_beats_are_refused(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let token = f.w.login("learner@a.example.org").await;
    let l = f.lesson;
    let cases = [
        (beat(l, -1.0, 1.0, 0.0, 1.0), "negative_value"),
        (beat(l, 5.0, 1.0, -3.0, 1.0), "negative_value"),
        (beat(l, 150.0, 1.0, 140.0, 150.0), "past_duration"),
        (beat(l, 50.0, 1.0, 95.0, 104.0), "past_duration"),
        (beat(l, 10.0, 1.0, 10.0, 5.0), "invalid_interval"),
        (beat(l, 10.0, 0.1, 5.0, 10.0), "invalid_speed"),
        (beat(l, 10.0, 0.25, 5.0, 10.0), "invalid_speed"),
        (beat(l, 10.0, 2.5, 5.0, 10.0), "invalid_speed"),
        (beat(l, 10.0, 4.0, 5.0, 10.0), "invalid_speed"),
        (beat(l, 90.0, 0.5, 0.0, 90.0), "interval_too_long"),
    ];
    for (body, code) in cases {
        let (status, resp) = f.beat(&token, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {resp}");
        assert_eq!(resp["error"]["code"], json!(code), "{body} → {resp}");
        assert!(resp["error"]["message"].as_str().unwrap().len() > 10);
    }
    // Within the tolerance at the end, and the bounds of speed, are fine.
    f.ok_beat(&token, beat(l, 101.0, 2.0, 96.0, 101.0)).await;
    f.ok_beat(&token, beat(l, 100.0, 0.5, 99.0, 100.0)).await;
    let (status, resp) = f
        .beat(&token, json!({ "lesson_id": l, "position_s": 3 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resp}");
    assert_eq!(resp["error"]["code"], json!("invalid_body"));
    let (status, _) = f
        .beat(&token, beat(Uuid::new_v4(), 1.0, 1.0, 0.0, 1.0))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        f.w.call(
            "POST",
            "/api/v1/progress",
            None,
            Some(beat(l, 1.0, 1.0, 0.0, 1.0)),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Nothing refused reached PostgreSQL.
    f.flush().await;
    let watched: Value =
        sqlx::query_scalar("SELECT watched FROM lesson_progress WHERE lesson_id = $1")
            .bind(l)
            .fetch_one(f.w.db())
            .await
            .unwrap();
    assert_eq!(iv(&watched), vec![[96.0, 101.0]]);
    f.cleanup().await;
}

/// Issue #16 item 10: a script claiming a 60-minute lesson in a few
/// beats does not reach `completed`, however it goes about it — at a
/// speed the player does not offer, at 2× as fast as it can send, without
/// a playback session, or over many sessions at once. A player at 2× that
/// beats as the media plays completes it.
async fn a_script_cannot_forge_completion(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let token = f.w.login("learner@a.example.org").await;
    let hour = lesson(&f.w, f.org, f.course, Some(3600.0), true).await;
    let playback = f.playback_of(&token, hour).await;
    let pb = playback["playback_id"].clone();
    let claim = |from: f64, to: f64, speed: f64, pb: &Value| {
        let mut b = beat(hour, to, speed, from, to);
        b["playback_id"] = pb.clone();
        b
    };
    // The script: 8 beats of 450 s, each "played" at 4×.
    for i in 0..8 {
        let from = f64::from(i) * 450.0;
        let (status, body) = f.beat(&token, claim(from, from + 450.0, 4.0, &pb)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{mode:?}: {body}");
        assert_eq!(body["error"]["code"], json!("invalid_speed"));
    }
    // At 2×, with the longest interval a beat may carry, back to back.
    for i in 0..15 {
        let from = f64::from(i) * 240.0;
        let (status, body) = f.beat(&token, claim(from, from + 240.0, 2.0, &pb)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{mode:?}: {body}");
    }
    // Without a session: the resume point moves, nothing is credited.
    for i in 0..15 {
        let from = f64::from(i) * 240.0;
        f.beat(&token, claim(from, from + 240.0, 2.0, &Value::Null))
            .await;
    }
    // Eight sessions at once, a beat each: one allowance for the lesson.
    for i in 0..8 {
        let other = f.playback_of(&token, hour).await["playback_id"].clone();
        let from = f64::from(i) * 450.0;
        let (status, body) = f.beat(&token, claim(from, from + 240.0, 2.0, &other)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{mode:?}: {body}");
    }
    // What could have been credited: the wall time this took × 2 × 1.1,
    // plus the carry (the clock did not move, so well under a minute).
    let p = f.playback_of(&token, hour).await;
    assert_eq!(p["completed"], json!(false), "{mode:?}: {p}");
    assert!(
        p["completion"].as_f64().unwrap() * 3600.0 < CARRY_MAX_S + 60.0,
        "{mode:?}: {p}"
    );
    f.flush().await;
    let (watched_s, completed): (f64, bool) = sqlx::query_as(
        "SELECT watched_s, completed_at IS NOT NULL FROM lesson_progress WHERE lesson_id = $1",
    )
    .bind(hour)
    .fetch_one(f.w.db())
    .await
    .unwrap();
    assert!(!completed, "{mode:?}: forged completion");
    assert!(watched_s < CARRY_MAX_S + 60.0, "{mode:?}: {watched_s}");

    // A learner at 2× whose player beats every minute as the media plays
    // (the clock moves as it would) completes the lesson.
    let learner = f.w.login("learner@a.example.org").await;
    let mut at = 0.0;
    while at < 3600.0 {
        f.ok_beat(&learner, beat(hour, at + 120.0, 2.0, at, at + 120.0))
            .await;
        at += 120.0;
    }
    let p = f.playback_of(&learner, hour).await;
    assert_eq!(p["completed"], json!(true), "{mode:?}: {p}");
    assert!(approx(&p["completion"], 1.0), "{mode:?}: {p}");
    f.cleanup().await;
}

/// A beat's playback session must be one issued to this learner for this
/// lesson and not expired; otherwise the beat is refused with 409
/// `playback_session_expired` (the player then starts a new one). A beat
/// without one moves the resume point only.
async fn beats_are_checked_against_their_playback_session(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let token = f.w.login("learner@a.example.org").await;
    f.w.user(Some(f.org), "colleague@a.example.org", Role::Learner)
        .await;
    let colleague = f.w.login("colleague@a.example.org").await;
    let other = lesson(&f.w, f.org, f.course, Some(60.0), true).await;
    let mine = f.playback(&token).await["playback_id"].clone();
    let theirs = f.playback(&colleague).await["playback_id"].clone();
    let for_other = f.playback_of(&token, other).await["playback_id"].clone();
    f.clock.advance(Duration::from_secs(30));
    let with = |pb: &Value| {
        let mut b = beat(f.lesson, 10.0, 1.0, 0.0, 10.0);
        b["playback_id"] = pb.clone();
        b
    };
    for (pb, why) in [
        (&theirs, "another learner's"),
        (&for_other, "another lesson's"),
        (&json!(Uuid::new_v4()), "never issued"),
    ] {
        let (status, body) = f.beat(&token, with(pb)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{why}, {mode:?}: {body}");
        assert_eq!(body["error"]["code"], json!("playback_session_expired"));
    }
    // No session: the resume point moves, completion does not.
    f.ok_beat_without_session(&token, beat(f.lesson, 42.0, 1.0, 0.0, 42.0))
        .await;
    let p = f.playback(&token).await;
    assert!(approx(&p["resume_position_s"], 42.0), "{mode:?}: {p}");
    assert!(approx(&p["completion"], 0.0), "{mode:?}: {p}");
    assert!(approx(&p["watch_time_s"], 0.0), "{mode:?}: {p}");
    // The session of this learner and lesson is credited.
    let (status, body) = f.beat(&token, with(&mine)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{mode:?}: {body}");
    let p = f.playback(&token).await;
    assert!(approx(&p["completion"], 0.1), "{mode:?}: {p}");
    // Twelve hours on, it has expired.
    f.clock.advance(Duration::from_secs(12 * 3600));
    let (status, body) = f.beat(&token, with(&mine)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{mode:?}: {body}");
    assert_eq!(body["error"]["code"], json!("playback_session_expired"));
    f.cleanup().await;
}

async fn other_organisations_and_unwatchable_lessons_are_not_found(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let other = f.w.org("SME Service Centre").await;
    f.w.user(Some(other), "learner@b.example.org", Role::Learner)
        .await;
    let outsider = f.w.login("learner@b.example.org").await;
    let token = f.w.login("learner@a.example.org").await;
    let draft_course = course(&f.w, f.org, "draft").await;
    let draft = lesson(&f.w, f.org, draft_course, Some(100.0), true).await;
    let gone_course = course(&f.w, f.org, "unpublished").await;
    let unpublished = lesson(&f.w, f.org, gone_course, Some(100.0), true).await;
    let encoding = lesson(&f.w, f.org, f.course, None, false).await;
    let cases = [
        (&outsider, f.lesson),
        (&token, draft),
        (&token, unpublished),
        (&token, encoding),
        (&token, Uuid::new_v4()),
    ];
    for (who, lesson) in cases {
        let (status, body) =
            f.w.call(
                "POST",
                &format!("/api/v1/lessons/{lesson}/playback"),
                Some(who),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], json!("not_found"));
        let (status, body) = f.beat(who, beat(lesson, 1.0, 1.0, 0.0, 1.0)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, _) =
        f.w.call(
            "GET",
            &format!("/api/v1/courses/{}/progress", f.course),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Unpublishing stops playback sessions at once.
    sqlx::query("UPDATE courses SET state = 'unpublished' WHERE id = $1")
        .bind(f.course)
        .execute(f.w.db())
        .await
        .unwrap();
    let (status, _) =
        f.w.call(
            "POST",
            &format!("/api/v1/lessons/{}/playback", f.lesson),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.cleanup().await;
}

async fn qoe_events_are_validated_stored_and_summarised(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let token = f.w.login("learner@a.example.org").await;
    let (status, body) =
        f.w.call(
            "POST",
            "/api/v1/qoe",
            Some(&token),
            Some(json!({ "lesson_id": f.lesson, "kind": "startup", "startup_ms": 850 })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) =
        f.w.call(
            "POST",
            "/api/v1/qoe",
            Some(&token),
            Some(
                json!({ "lesson_id": f.lesson, "session_id": Uuid::new_v4(), "events": [
                    { "kind": "startup", "startup_ms": 1250 },
                    { "kind": "rebuffer", "rebuffer_count": 2, "rebuffer_ms": 3100 },
                    { "kind": "bitrate_switch", "from_bitrate": 2_500_000, "to_bitrate": 800_000 },
                    { "kind": "fatal_error", "error_code": "networkError.manifestLoadError" },
                ]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for bad in [
        json!({ "kind": "startup" }),
        json!({ "kind": "startup", "startup_ms": -5 }),
        json!({ "kind": "fatal_error", "error_code": "<script>" }),
        json!({ "events": [] }),
    ] {
        let (status, body) =
            f.w.call("POST", "/api/v1/qoe", Some(&token), Some(bad.clone()))
                .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad} → {body}");
        assert_eq!(
            body["error"]["code"],
            json!("invalid_qoe"),
            "{bad} → {body}"
        );
    }
    let (status, body) =
        f.w.call(
            "POST",
            "/api/v1/qoe",
            Some(&token),
            Some(json!({ "kind": "buffering" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    f.w.user(Some(f.org), "admin@a.example.org", Role::ContentAdmin)
        .await;
    let admin = f.w.login("admin@a.example.org").await;
    let (status, s) =
        f.w.call("GET", "/api/v1/qoe/summary", Some(&admin), None)
            .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["startups"], json!(2), "{s}");
    assert!(approx(&s["startup_ms"]["p50"], 1050.0), "{s}");
    assert_eq!(s["rebuffers"], json!(2), "{s}");
    assert_eq!(s["rebuffer_ms"], json!(3100), "{s}");
    assert_eq!(s["bitrate_switches"], json!(1), "{s}");
    assert_eq!(
        s["fatal_errors"],
        json!([{ "code": "networkError.manifestLoadError", "count": 1 }])
    );
    let (status, _) =
        f.w.call("GET", "/api/v1/qoe/summary", Some(&token), None)
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    f.cleanup().await;
}

/// Two API nodes in memory mode hold the same learner × lesson rows and
/// flush them at the same moment, again and again: the first round races
/// two inserts of each new row (one merges in SQL), later rounds lock and
/// merge existing rows. Every interval, all the watch time and the newest
/// position survive, and neither flush deadlocks or fails.
#[sqlx::test(migrations = "../migrations")]
async fn two_nodes_flushing_the_same_rows_lose_nothing(db: PgPool) {
    let w = World::new(db).await;
    let Learner { org, user, course } = learner_with_course(&w).await;
    let mut lessons = Vec::new();
    for _ in 0..40 {
        lessons.push(lesson(&w, org, course, Some(100.0), true).await);
    }
    let nodes = [Absorber::default(), Absorber::default()];
    let t0 = Utc::now().timestamp_millis() - 60_000;
    let rounds = 5;
    for r in 0..rounds {
        for (n, node) in nodes.iter().enumerate() {
            for (i, lesson_id) in lessons.iter().enumerate() {
                // Node 1's beat of a round is the newer one.
                let from = f64::from(r * 10 + n as i32 * 5);
                let at_ms = t0 + i64::from(r * 10 + n as i32) * 1000 + i as i64;
                node.absorb(&played(user, org, *lesson_id, from, from + 3.0, 1.0, at_ms))
                    .await
                    .unwrap();
            }
        }
        let (a, b) = tokio::join!(
            flush::flush_once(w.db(), &nodes[0]),
            flush::flush_once(w.db(), &nodes[1])
        );
        assert_eq!(a.expect("node 0 flushes"), lessons.len());
        assert_eq!(b.expect("node 1 flushes"), lessons.len());
    }
    let rows: Vec<(Uuid, f64, Value, f64, f64)> = sqlx::query_as(
        "SELECT lesson_id, position_s, watched, watched_s, watch_time_s
         FROM lesson_progress WHERE user_id = $1",
    )
    .bind(user)
    .fetch_all(w.db())
    .await
    .unwrap();
    assert_eq!(rows.len(), lessons.len());
    let want: Vec<[f64; 2]> = (0..rounds)
        .flat_map(|r| {
            let r = f64::from(r * 10);
            [[r, r + 3.0], [r + 5.0, r + 8.0]]
        })
        .collect();
    for (lesson_id, position, watched, watched_s, watch_time) in rows {
        assert_eq!(iv(&watched), want, "lesson {lesson_id}");
        assert!((watched_s - 30.0).abs() < 1e-9, "{watched_s}");
        assert!((watch_time - 30.0).abs() < 1e-9, "{watch_time}");
        assert_eq!(position, f64::from((rounds - 1) * 10 + 5) + 3.0);
    }
}

/// A Redis flush of more entries than one Redis call reads or
/// acknowledges (they go in chunks) writes every one of them once, leaves
/// nothing dirty, and picks up what changed afterwards.
#[sqlx::test(migrations = "../migrations")]
async fn a_large_redis_flush_goes_in_chunks_and_leaves_nothing_behind(db: PgPool) {
    let w = World::new(db).await;
    let Learner { org, user, course } = learner_with_course(&w).await;
    let lessons: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO lessons (id, organisation_id, course_id, title, position)
         SELECT gen_random_uuid(), $1, $2, 'Lesson ' || n, n FROM generate_series(1, 1201) AS n
         RETURNING id",
    )
    .bind(org)
    .bind(course)
    .fetch_all(w.db())
    .await
    .unwrap();
    let prefix = format!("lectern-test:{}:", Uuid::new_v4());
    let redis_url = std::env::var("REDIS_URL").expect("REDIS_URL (infra/dev/services up)");
    let absorber = Arc::new(Absorber::Redis(
        RedisAbsorber::connect(&redis_url, &prefix).await.unwrap(),
    ));
    let beats = |lessons: Vec<Uuid>, to: f64| {
        let mut set = tokio::task::JoinSet::new();
        for lesson_id in lessons {
            let absorber = absorber.clone();
            set.spawn(async move {
                let now = Utc::now().timestamp_millis();
                absorber
                    .absorb(&played(user, org, lesson_id, 0.0, to, 1.0, now))
                    .await
            });
        }
        set
    };
    let mut set = beats(lessons.clone(), 10.0);
    while let Some(r) = set.join_next().await {
        r.unwrap().expect("Redis applies the beat");
    }
    let written = flush::flush_once(w.db(), &absorber).await.unwrap();
    assert_eq!(written, lessons.len());
    assert_eq!(flush::flush_once(w.db(), &absorber).await.unwrap(), 0);
    let (rows, watch): (i64, f64) = sqlx::query_as(
        "SELECT count(*), sum(watch_time_s) FROM lesson_progress WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(rows, lessons.len() as i64);
    assert!(
        (watch - 10.0 * lessons.len() as f64).abs() < 1e-6,
        "{watch}"
    );

    let mut set = beats(lessons[..3].to_vec(), 20.0);
    while let Some(r) = set.join_next().await {
        r.unwrap().expect("Redis applies the beat");
    }
    assert_eq!(flush::flush_once(w.db(), &absorber).await.unwrap(), 3);
    let watch: f64 =
        sqlx::query_scalar("SELECT sum(watch_time_s) FROM lesson_progress WHERE user_id = $1")
            .bind(user)
            .fetch_one(w.db())
            .await
            .unwrap();
    // Each of the three beats added its own 20 s; nothing was counted twice.
    assert!(
        (watch - 10.0 * lessons.len() as f64 - 60.0).abs() < 1e-6,
        "{watch}"
    );
    delete_redis_keys(&prefix).await;
}

/// A learner of one organisation and a published course of it.
struct Learner {
    org: Uuid,
    user: Uuid,
    course: Uuid,
}

async fn learner_with_course(w: &World) -> Learner {
    let org = w.org("Cardiology Society").await;
    let user = w
        .user(Some(org), "learner@a.example.org", Role::Learner)
        .await;
    let course = course(w, org, "published").await;
    Learner { org, user, course }
}

/// A beat of `user` on a 100 s lesson: `from..to` played at `speed`,
/// now at `to`, arriving at `at_ms` in a playback session issued an hour
/// before.
fn played(
    user: Uuid,
    org: Uuid,
    lesson_id: Uuid,
    from: f64,
    to: f64,
    speed: f32,
    at_ms: i64,
) -> Beat {
    Beat {
        user_id: user,
        lesson_id,
        org_id: org,
        duration_s: 100.0,
        position_s: to,
        speed,
        from_s: from,
        to_s: to,
        at_ms,
        issued_ms: Some(at_ms - 3_600_000),
        arrival_ms: at_ms,
    }
}

/// Moves what a Redis node absorbed to Redis now.
async fn push_node(node: &Absorber) -> Result<usize, lectern_learning::AbsorbError> {
    let Absorber::Redis(r) = node else {
        panic!("not a Redis node")
    };
    r.push().await
}

/// What `node` tells of one learner × lesson.
async fn entry(node: &Absorber, user: Uuid, lesson: Uuid) -> Snapshot {
    node.peek(user, &[lesson]).await.unwrap()[0]
        .clone()
        .expect("an entry")
}

/// Two API nodes on one Redis: each answers beats from its own memory
/// and pushes them to Redis; each sees its own beats at once and the
/// other's after a push; the newest position and speed win across nodes,
/// intervals unite, every beat's watch time counts once, and one node's
/// flush writes what both absorbed.
#[sqlx::test(migrations = "../migrations")]
async fn two_redis_nodes_share_progress_after_a_push(db: PgPool) {
    let w = World::new(db).await;
    let Learner { org, user, course } = learner_with_course(&w).await;
    let lesson_id = lesson(&w, org, course, Some(100.0), true).await;
    let prefix = format!("lectern-test:{}:", Uuid::new_v4());
    let redis_url = std::env::var("REDIS_URL").expect("REDIS_URL (infra/dev/services up)");
    // Nodes that push only when told, so the test decides whose claims
    // reach Redis first (a background push would race the checks).
    let node = || async {
        RedisAbsorber::connect_pushing(&redis_url, &prefix, None)
            .await
            .map(Absorber::Redis)
            .unwrap()
    };
    let (a, b) = (node().await, node().await);
    let t0 = Utc::now().timestamp_millis() - 60_000;
    let beat = |from, to, speed, at_ms| played(user, org, lesson_id, from, to, speed, at_ms);
    let peek = |n| entry(n, user, lesson_id);

    a.absorb(&beat(0.0, 10.0, 1.5, t0)).await.unwrap();
    let seen = peek(&a).await;
    assert_eq!(
        (seen.position_s, seen.watched.clone()),
        (10.0, vec![[0.0, 10.0]])
    );
    push_node(&a).await.unwrap();
    let seen = peek(&b).await;
    assert_eq!(
        (seen.position_s, seen.watched.clone()),
        (10.0, vec![[0.0, 10.0]])
    );

    // The second device's beat on node B, then a beat of the first device
    // that B's overtook, on node A.
    b.absorb(&beat(10.0, 20.0, 2.0, t0 + 5_000)).await.unwrap();
    let seen = peek(&b).await;
    assert_eq!((seen.position_s, seen.speed), (20.0, 2.0));
    assert_eq!(seen.watched, vec![[0.0, 20.0]]);
    a.absorb(&beat(30.0, 35.0, 1.0, t0 + 2_000)).await.unwrap();
    push_node(&a).await.unwrap();
    push_node(&b).await.unwrap();
    for n in [&a, &b] {
        let seen = peek(n).await;
        assert_eq!((seen.position_s, seen.speed), (20.0, 2.0));
        assert_eq!(seen.watched, vec![[0.0, 20.0], [30.0, 35.0]]);
        assert_eq!(n.speed(user).await.unwrap().unwrap().speed, 2.0);
    }
    // Nothing new: a push adds nothing, however often it runs.
    assert_eq!(push_node(&a).await.unwrap(), 0);
    assert_eq!(push_node(&b).await.unwrap(), 0);

    assert_eq!(flush::flush_once(w.db(), &b).await.unwrap(), 1);
    assert_eq!(flush::flush_once(w.db(), &a).await.unwrap(), 0);
    let (position, watched, watch_time): (f64, Value, f64) = sqlx::query_as(
        "SELECT position_s, watched, watch_time_s FROM lesson_progress WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(position, 20.0);
    assert_eq!(iv(&watched), vec![[0.0, 20.0], [30.0, 35.0]]);
    // 10 s at 1.5×, 10 s at 2×, 5 s at 1×: each beat once.
    let want = 10.0 / 1.5 + 5.0 + 5.0;
    assert!((watch_time - want).abs() < 1e-6, "{watch_time} != {want}");
    let speed: f32 = sqlx::query_scalar("SELECT speed FROM learner_preferences WHERE user_id = $1")
        .bind(user)
        .fetch_one(w.db())
        .await
        .unwrap();
    assert_eq!(speed, 2.0);
    delete_redis_keys(&prefix).await;
}

/// A script spraying one session's beats over two Redis nodes at once:
/// each node alone would credit what it saw, but Redis credits the
/// pushed claims against one allowance, so what reaches PostgreSQL (and
/// what either node shows once pushed) stays within the wall time × speed
/// × (1 + slack) plus the carry.
#[sqlx::test(migrations = "../migrations")]
async fn beats_sprayed_over_two_redis_nodes_share_one_allowance(db: PgPool) {
    let w = World::new(db).await;
    let Learner { org, user, course } = learner_with_course(&w).await;
    let lesson_id = lesson(&w, org, course, Some(400.0), true).await;
    let prefix = format!("lectern-test:{}:", Uuid::new_v4());
    let redis_url = std::env::var("REDIS_URL").expect("REDIS_URL (infra/dev/services up)");
    // Nodes that push only when told, so the test decides whose claims
    // reach Redis first (a background push would race the checks).
    let node = || async {
        RedisAbsorber::connect_pushing(&redis_url, &prefix, None)
            .await
            .map(Absorber::Redis)
            .unwrap()
    };
    let (a, b) = (node().await, node().await);
    let playback = Uuid::new_v4();
    let issued = Utc::now().timestamp_millis() - 600_000;
    a.open_session(
        playback,
        Session {
            user_id: user,
            lesson_id,
            issued_ms: issued,
        },
    )
    .await;
    assert!(b.session(user, playback).await.unwrap().is_some());
    // Every 10 s, each node gets 15 s of media played at 2×: 300 s of the
    // lesson claimed in 100.1 s.
    let spray = |n: i64, from: f64, delay_ms: i64| Beat {
        issued_ms: Some(issued),
        duration_s: 400.0,
        ..played(
            user,
            org,
            lesson_id,
            from,
            from + 15.0,
            2.0,
            issued + n * 10_000 + delay_ms,
        )
    };
    for n in 1..=10 {
        let from = (n - 1) as f64 * 30.0;
        a.absorb(&spray(n, from, 0)).await.unwrap();
        b.absorb(&spray(n, from + 15.0, 100)).await.unwrap();
    }
    // Each node on its own credits all it saw.
    for n in [&a, &b] {
        assert_eq!(
            intervals_total(&entry(n, user, lesson_id).await.watched),
            150.0
        );
    }
    push_node(&a).await.unwrap();
    push_node(&b).await.unwrap();
    let bound = 100.1 * 2.0 * (1.0 + SLACK) + CARRY_MAX_S;
    for n in [&a, &b] {
        let total = intervals_total(&entry(n, user, lesson_id).await.watched);
        assert!(
            total <= bound,
            "a node shows {total} s credited, more than {bound}"
        );
    }
    assert_eq!(flush::flush_once(w.db(), &a).await.unwrap(), 1);
    let (watched_s, watch_time): (f64, f64) =
        sqlx::query_as("SELECT watched_s, watch_time_s FROM lesson_progress WHERE user_id = $1")
            .bind(user)
            .fetch_one(w.db())
            .await
            .unwrap();
    assert!(
        watched_s <= bound,
        "{watched_s} s credited, more than {bound}"
    );
    assert!(watch_time <= bound / 2.0, "{watch_time}");
    // Node A's claims fit the allowance (leaving the carry full); B's,
    // each older than A's latest, shared the carry and then got nothing
    // but the last 0.1 s × 2.2.
    assert!(
        (watched_s - (150.0 + 30.0 + 0.22)).abs() < 0.01,
        "{watched_s}"
    );
    delete_redis_keys(&prefix).await;
}

/// A client claiming 10 s of media every second, each claim elsewhere in
/// the lesson: the credit bound cuts each to ~1.1 s, a fragment of its
/// own. Past `MAX_FRAGMENTS` a claim that would start a new fragment is
/// not credited (one extending a fragment still is), on a memory node, in
/// Redis and therefore in PostgreSQL: the row stops growing.
#[sqlx::test(migrations = "../migrations")]
async fn an_overclaiming_client_cannot_grow_its_row_past_the_fragment_cap(db: PgPool) {
    let w = World::new(db).await;
    let Learner { org, user, course } = learner_with_course(&w).await;
    let claims = MAX_FRAGMENTS + 44;
    let duration = 20.0 * claims as f64;
    let lesson_id = lesson(&w, org, course, Some(duration), true).await;
    let prefix = format!("lectern-test:{}:", Uuid::new_v4());
    let redis_url = std::env::var("REDIS_URL").expect("REDIS_URL (infra/dev/services up)");
    let redis = RedisAbsorber::connect_pushing(&redis_url, &prefix, None)
        .await
        .map(Absorber::Redis)
        .unwrap();
    for node in [Absorber::default(), redis] {
        let playback = Uuid::new_v4();
        let issued = Utc::now().timestamp_millis() - 3_600_000;
        node.open_session(
            playback,
            Session {
                user_id: user,
                lesson_id,
                issued_ms: issued,
            },
        )
        .await;
        let claim = |n: usize, from: f64, to: f64| Beat {
            issued_ms: Some(issued),
            duration_s: duration,
            ..played(
                user,
                org,
                lesson_id,
                from,
                to,
                1.0,
                issued + n as i64 * 1_000,
            )
        };
        for n in 1..=claims {
            let from = n as f64 * 20.0;
            node.absorb(&claim(n, from, from + 10.0)).await.unwrap();
        }
        if matches!(node, Absorber::Redis(_)) {
            push_node(&node).await.unwrap();
        }
        let watched = entry(&node, user, lesson_id).await.watched;
        assert_eq!(watched.len(), MAX_FRAGMENTS, "fragments kept");
        // Extending a kept fragment is still credited.
        let last = watched[MAX_FRAGMENTS - 1];
        node.absorb(&claim(claims + 1, last[1], last[1] + 10.0))
            .await
            .unwrap();
        if matches!(node, Absorber::Redis(_)) {
            push_node(&node).await.unwrap();
        }
        let after = entry(&node, user, lesson_id).await.watched;
        assert_eq!(after.len(), MAX_FRAGMENTS);
        assert!(
            intervals_total(&after) > intervals_total(&watched),
            "the extension was credited"
        );
        assert_eq!(flush::flush_once(w.db(), &node).await.unwrap(), 1);
        let stored: i32 = sqlx::query_scalar(
            "SELECT jsonb_array_length(watched) FROM lesson_progress WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(w.db())
        .await
        .unwrap();
        assert!(
            stored as usize <= MAX_FRAGMENTS,
            "{stored} fragments stored"
        );
        sqlx::query("DELETE FROM lesson_progress WHERE user_id = $1")
            .bind(user)
            .execute(w.db())
            .await
            .unwrap();
    }
    delete_redis_keys(&prefix).await;
}

fn intervals_total(list: &[[f64; 2]]) -> f64 {
    list.iter().map(|[f, t]| t - f).sum()
}

/// A Redis of its own on a free port, stopped when dropped.
struct OwnRedis {
    child: std::process::Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (infra/dev/setup installs it)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis restarting (empty: no persistence) under a node: beats are still
/// answered and kept by the node, its reads fall back to what it holds,
/// and once Redis is back the node pushes them and a flush writes them.
#[sqlx::test(migrations = "../migrations")]
async fn a_node_keeps_beats_while_redis_restarts(db: PgPool) {
    let w = World::new(db).await;
    let Learner { org, user, course } = learner_with_course(&w).await;
    let lesson_id = lesson(&w, org, course, Some(100.0), true).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = OwnRedis::start(port);
    let node = Absorber::Redis(
        RedisAbsorber::connect(&redis.url(), "lectern-test:")
            .await
            .unwrap(),
    );
    let t0 = Utc::now().timestamp_millis() - 60_000;
    let beat = |from, to, at_ms| played(user, org, lesson_id, from, to, 1.25, at_ms);
    node.absorb(&beat(0.0, 10.0, t0)).await.unwrap();
    push_node(&node).await.unwrap();

    drop(redis);
    node.absorb(&beat(10.0, 20.0, t0 + 5_000)).await.unwrap();
    let seen = entry(&node, user, lesson_id).await;
    assert_eq!(
        (seen.position_s, seen.watched.clone()),
        (20.0, vec![[0.0, 20.0]])
    );
    assert_eq!(node.speed(user).await.unwrap().unwrap().speed, 1.25);
    assert!(push_node(&node).await.is_err(), "Redis is down");
    assert!(flush::flush_once(w.db(), &node).await.is_err());

    let _redis = OwnRedis::start(port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while push_node(&node).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The flusher's own connection notices the restart on its next call.
    let written = loop {
        match flush::flush_once(w.db(), &node).await {
            Ok(n) => break n,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "flush never recovered: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(written, 1);
    let (position, watched): (f64, Value) =
        sqlx::query_as("SELECT position_s, watched FROM lesson_progress WHERE user_id = $1")
            .bind(user)
            .fetch_one(w.db())
            .await
            .unwrap();
    // The restart lost what Redis held (the first beat's watch time), but
    // the node's entry carries the whole union and the newest position.
    assert_eq!(position, 20.0);
    assert_eq!(iv(&watched), vec![[0.0, 20.0]]);
}

/// Viewers of a live lesson are the playback sessions that beat within
/// the window, each once; only while its event is live.
async fn live_viewers_are_the_sessions_beating_lately(db: PgPool, mode: Mode) {
    let f = Fixture::new(db, mode).await;
    let learning = f.w.state.learning.learning.clone();
    let asset: Uuid = sqlx::query_scalar("SELECT asset_id FROM lessons WHERE id = $1")
        .bind(f.lesson)
        .fetch_one(f.w.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO live_events (id, organisation_id, lesson_id, asset_id, scheduled_start,
                                  state, stream_key_sha256)
         VALUES ($1, $2, $3, $4, now(), 'live', $5)",
    )
    .bind(Uuid::now_v7())
    .bind(f.org)
    .bind(f.lesson)
    .bind(asset)
    .bind(vec![7u8; 32])
    .execute(f.w.db())
    .await
    .unwrap();
    f.w.user(Some(f.org), "second@a.example.org", Role::Learner)
        .await;
    let first = f.w.login("learner@a.example.org").await;
    let second = f.w.login("second@a.example.org").await;
    assert_eq!(learning.live_viewers(f.lesson).await.unwrap(), 0);
    f.ok_beat(&first, beat(f.lesson, 2.0, 1.0, 0.0, 2.0)).await;
    f.ok_beat(&first, beat(f.lesson, 4.0, 1.0, 2.0, 4.0)).await;
    f.ok_beat(&second, beat(f.lesson, 2.0, 1.0, 0.0, 2.0)).await;
    f.ok_beat_without_session(&second, beat(f.lesson, 3.0, 1.0, 2.0, 3.0))
        .await;
    assert_eq!(learning.live_viewers(f.lesson).await.unwrap(), 2);
    f.clock
        .advance(lectern_learning::viewers::WINDOW + Duration::from_secs(1));
    assert_eq!(learning.live_viewers(f.lesson).await.unwrap(), 0);
    f.cleanup().await;
}

macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[sqlx::test(migrations = "../migrations")]
                async fn $name(db: sqlx::PgPool) {
                    super::$name(db, super::Mode::Memory).await
                }
            )*
        }
        mod redis_mode {
            $(
                #[sqlx::test(migrations = "../migrations")]
                async fn $name(db: sqlx::PgPool) {
                    super::$name(db, super::Mode::Redis).await
                }
            )*
        }
    };
}

in_both_modes!(
    resume_across_two_devices,
    intervals_merge_into_completion,
    duplicates_and_late_beats_are_harmless,
    impossible_beats_are_refused,
    a_script_cannot_forge_completion,
    beats_are_checked_against_their_playback_session,
    other_organisations_and_unwatchable_lessons_are_not_found,
    qoe_events_are_validated_stored_and_summarised,
    live_viewers_are_the_sessions_beating_lately,
);
