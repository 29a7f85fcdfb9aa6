//! Analytics benchmark: a generated organisation (learners, courses of ten
//! lessons, learner × lesson progress rows of ten watched intervals each,
//! QoE events, ratings, experts) in a fresh database, made with SQL
//! `generate_series`; the rows go in through the real triggers, so the
//! change queue fills as the flusher would fill it.
//!
//! Measured, each against a baseline in the same run:
//! - **rollups**: folding the whole queue (changes/s), against the 10,000
//!   heartbeats/s a fold must keep up with; and the triggers' cost on the
//!   flusher's own statement (an `UPDATE … FROM UNNEST` of 2,000 rows, as
//!   `learning::flush` writes) with the triggers on and off;
//! - **reports**: p50/p99 of every report's function (the handlers' code
//!   minus HTTP) against the same figures by plain SQL over the raw rows;
//! - **exports**: the learner-activity export (one row per learner ×
//!   lesson × day, emails opened) as CSV and as constant-memory XLSX,
//!   time and peak extra resident memory, against PostgreSQL's own
//!   `COPY … TO STDOUT (FORMAT csv)` of the same rows.
//!
//! `benchmarks/analytics/run [--learners N --lessons N --rows N]` builds
//! (release) and runs it; it prints a Markdown section for RESULTS.md.
//! Needs DATABASE_URL (a role that may create databases). The database is
//! dropped at the end unless ANALYTICS_BENCH_KEEP is set; `--reports-only`
//! and `--exports-only` then measure again on it without regenerating.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDate};
use futures::StreamExt;
use lectern_analytics::export::{self, Report};
use lectern_analytics::filter::{self, ReportQuery, Scope};
use lectern_analytics::{reports, rollup};
use lectern_secrets::Keyring;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

const DB: &str = "lectern_bench_analytics";
const INTERVALS_PER_ROW: i64 = 10;

struct Scale {
    learners: i64,
    lessons: i64,
    rows: i64,
}

fn arg(name: &str, default: i64) -> i64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn uid(kind: u128, i: i64) -> Uuid {
    Uuid::from_u128((kind << 64) | i as u128)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

/// This process's CPU time so far (every thread, user + system), in
/// seconds: the exports' cost on a shared machine, whatever its load.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Peak resident memory above the level at start while `f` runs, in MiB.
async fn with_peak<F: std::future::Future<Output = T>, T>(f: F) -> (T, f64) {
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f.await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let extra = peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / 1024.0;
    (out, extra)
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

async fn time_n<F, Fut>(n: usize, mut f: F) -> (f64, f64)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // One untimed call first: it prepares the statements and reads the
    // tables' pages in, which the steady state a p99 describes never pays.
    f(0).await;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (
        percentile(&mut samples, 0.5),
        percentile(&mut samples, 0.99),
    )
}

async fn generate(db: &PgPool, keys: &Keyring, org: Uuid, s: &Scale) -> Duration {
    let t = Instant::now();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, 'bench')")
        .bind(org)
        .execute(db)
        .await
        .unwrap();
    // Learners: emails sealed as identity seals them, so exports open them.
    for chunk in (1..=s.learners).collect::<Vec<_>>().chunks(20_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|i| uid(4, *i)).collect();
        let emails: Vec<Vec<u8>> = chunk
            .iter()
            .zip(&ids)
            .map(|(i, id)| keys.seal("users.email", *id, &format!("learner{i}@bench.example.org")))
            .collect();
        let bidx: Vec<Vec<u8>> = ids.iter().map(|id| id.as_bytes().to_vec()).collect();
        sqlx::query(
            "INSERT INTO users (id, org_id, role, email_ct, email_bidx, key_id, password_hash)
             SELECT u, $4, 'learner', e, b, $5, 'x'
             FROM UNNEST($1::uuid[], $2::bytea[], $3::bytea[]) AS t(u, e, b)",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(&bidx)
        .bind(org)
        .bind(keys.active_key_id())
        .execute(db)
        .await
        .unwrap();
    }
    let courses = (s.lessons / 10).max(1);
    let sql = format!(
        "INSERT INTO courses (id, organisation_id, title, state, published_at, resource_type)
         SELECT ('00000000-0000-0001-0000-' || lpad(to_hex(i), 12, '0'))::uuid, '{org}',
                '课程 ' || i, 'published', now() - (i % 60) * interval '1 day',
                (ARRAY['video_course','clinical_case','guideline','live_replay'])[1 + i % 4]
         FROM generate_series(1, {courses}) i;
         INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
         SELECT ('00000000-0000-0003-0000-' || lpad(to_hex(i), 12, '0'))::uuid, '{org}', 'ready',
                'sources/' || i, 600, 'assets/' || i || '/out/attempt-1/'
         FROM generate_series(1, {lessons}) i;
         INSERT INTO lessons (id, organisation_id, course_id, title, position, asset_id)
         SELECT ('00000000-0000-0002-0000-' || lpad(to_hex(i), 12, '0'))::uuid, '{org}',
                ('00000000-0000-0001-0000-' || lpad(to_hex((i - 1) / 10 + 1), 12, '0'))::uuid,
                '第 ' || i || ' 课', i % 10,
                ('00000000-0000-0003-0000-' || lpad(to_hex(i), 12, '0'))::uuid
         FROM generate_series(1, {lessons}) i;
         INSERT INTO experts (id, organisation_id, name)
         SELECT ('00000000-0000-0005-0000-' || lpad(to_hex(i), 12, '0'))::uuid, '{org}', '专家 ' || i
         FROM generate_series(1, {courses}) i;
         INSERT INTO course_experts (course_id, expert_id)
         SELECT ('00000000-0000-0001-0000-' || lpad(to_hex(i), 12, '0'))::uuid,
                ('00000000-0000-0005-0000-' || lpad(to_hex(i), 12, '0'))::uuid
         FROM generate_series(1, {courses}) i;",
        lessons = s.lessons,
    );
    db.execute(sql.as_str()).await.unwrap();
    // Progress rows in chunks, through the triggers: learner r % L on
    // lesson (u·13 + k·1009) % N, ten disjoint intervals of 20–59 s at
    // every minute of a 10-minute lesson, beats over the last 30 days.
    let chunk = 100_000i64;
    let mut start = 0i64;
    while start < s.rows {
        let end = (start + chunk).min(s.rows);
        let sql = format!(
            "INSERT INTO lesson_progress (user_id, lesson_id, organisation_id, position_s, speed,
                 watched, watched_s, duration_s, watch_time_s, completed_at, last_beat_at, started_at)
             SELECT ('00000000-0000-0004-0000-' || lpad(to_hex(g.r % {learners} + 1), 12, '0'))::uuid,
                    ('00000000-0000-0002-0000-' || lpad(to_hex(((g.r % {learners}) * 13
                         + (g.r / {learners}) * 1009) % {lessons} + 1), 12, '0'))::uuid,
                    '{org}', iv.ws, sp.s, iv.w, iv.ws, 600, iv.ws / sp.s * 1.2,
                    CASE WHEN iv.ws >= 540 THEN now() - (g.r % 2592000) * interval '1 second' END,
                    now() - (g.r % 2592000) * interval '1 second',
                    now() - (g.r % 2592000) * interval '1 second' - interval '1 hour'
             FROM generate_series({start}, {end} - 1) AS g(r)
             CROSS JOIN LATERAL (SELECT (ARRAY[1.0, 1.25, 1.5, 2.0])[1 + g.r % 4]::real AS s) sp
             CROSS JOIN LATERAL (
                 SELECT jsonb_agg(jsonb_build_array(j * 60, j * 60 + 20 + (g.r * (j + 1)) % 40) ORDER BY j) AS w,
                        sum(20 + (g.r * (j + 1)) % 40)::float8 AS ws
                 FROM generate_series(0, {n} - 1) j) iv",
            learners = s.learners,
            lessons = s.lessons,
            n = INTERVALS_PER_ROW,
        );
        db.execute(sql.as_str()).await.unwrap();
        start = end;
    }
    let sql = format!(
        "INSERT INTO qoe_events (organisation_id, user_id, lesson_id, kind, startup_ms, rebuffer_count,
             rebuffer_ms, from_bitrate, to_bitrate, error_code, at)
         SELECT '{org}', NULL,
                ('00000000-0000-0002-0000-' || lpad(to_hex(i % {lessons} + 1), 12, '0'))::uuid,
                (ARRAY['startup','startup','rebuffer','bitrate_switch','fatal_error'])[1 + i % 5],
                CASE WHEN i % 5 < 2 THEN 300 + (i * 7919) % 6000 END,
                CASE WHEN i % 5 = 2 THEN 1 END, CASE WHEN i % 5 = 2 THEN (i * 31) % 5000 END,
                CASE WHEN i % 5 = 3 THEN (ARRAY[800000, 2500000, 5000000])[1 + i % 3] END,
                CASE WHEN i % 5 = 3 THEN (ARRAY[2500000, 5000000, 800000])[1 + i % 3] END,
                CASE WHEN i % 5 = 4 THEN 'networkError' END,
                now() - (i % 2592000) * interval '1 second'
         FROM generate_series(1, {q}) i;
         INSERT INTO course_ratings (course_id, user_id, rating)
         SELECT ('00000000-0000-0001-0000-' || lpad(to_hex(i % {courses} + 1), 12, '0'))::uuid,
                ('00000000-0000-0004-0000-' || lpad(to_hex(i % {learners} + 1), 12, '0'))::uuid,
                1 + i % 5
         FROM generate_series(1, {learners}) i ON CONFLICT DO NOTHING;
         ANALYZE;",
        lessons = s.lessons,
        learners = s.learners,
        q = s.rows / 5,
    );
    db.execute(sql.as_str()).await.unwrap();
    t.elapsed()
}

/// The flusher's statement, as `learning::flush` writes existing rows.
async fn flush_statement(db: &PgPool, org_users: &[(Uuid, Uuid)]) -> f64 {
    let users: Vec<Uuid> = org_users.iter().map(|p| p.0).collect();
    let lessons: Vec<Uuid> = org_users.iter().map(|p| p.1).collect();
    let t = Instant::now();
    sqlx::query(
        "UPDATE lesson_progress AS lp SET
             position_s = lp.position_s + 5, last_beat_at = now(),
             watched = lp.watched, watched_s = lp.watched_s + 5,
             watch_time_s = lp.watch_time_s + 5, updated_at = now()
         FROM UNNEST($1::uuid[], $2::uuid[]) AS b(u, l)
         WHERE lp.user_id = b.u AND lp.lesson_id = b.l",
    )
    .bind(&users)
    .bind(&lessons)
    .execute(db)
    .await
    .unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

fn scale() -> Scale {
    Scale {
        learners: arg("--learners", 100_000),
        lessons: arg("--lessons", 10_000),
        rows: arg("--rows", 1_000_000),
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--exports-only") {
        return exports_only().await;
    }
    if std::env::args().any(|a| a == "--reports-only") {
        return reports_only().await;
    }
    let s = scale();
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    admin
        .execute(format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {DB}").as_str())
        .await
        .unwrap();
    let db = bench_database().await;
    let (fk, bk, tk) = Keyring::generate_settings();
    let keys = Keyring::parse(&fk, &bk, &tk).unwrap();
    // Kept with the data, so `--exports-only` can open the emails later.
    sqlx::query(
        "CREATE TABLE bench_keyring AS SELECT $1::text AS fk, $2::text AS bk, $3::text AS tk",
    )
    .bind(&fk)
    .bind(&bk)
    .bind(&tk)
    .execute(&db)
    .await
    .unwrap();
    let org = Uuid::from_u128(0xbe7c);
    let generated = generate(&db, &keys, org, &s).await;
    let intervals = s.rows * INTERVALS_PER_ROW;
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM progress_changes")
        .fetch_one(&db)
        .await
        .unwrap();

    // Rollups: fold the whole queue.
    let t = Instant::now();
    let folded = rollup::fold_all(&db).await.unwrap();
    let fold_s = t.elapsed().as_secs_f64();
    let fold_rate = folded as f64 / fold_s;
    db.execute("ANALYZE").await.unwrap();

    // The triggers' share of the flusher's statement: 2,000 rows, on and off.
    let pairs: Vec<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT user_id, lesson_id FROM lesson_progress ORDER BY user_id, lesson_id LIMIT 2000",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..10 {
        with.push(flush_statement(&db, &pairs).await);
        db.execute("ALTER TABLE lesson_progress DISABLE TRIGGER lesson_progress_updated")
            .await
            .unwrap();
        without.push(flush_statement(&db, &pairs).await);
        db.execute("ALTER TABLE lesson_progress ENABLE TRIGGER lesson_progress_updated")
            .await
            .unwrap();
    }
    let (with_p50, without_p50) = (percentile(&mut with, 0.5), percentile(&mut without, 0.5));
    // What those flushes queued, folded (2,000 × 10).
    let t = Instant::now();
    let refold = rollup::fold_all(&db).await.unwrap();
    let refold_ms = t.elapsed().as_secs_f64() * 1000.0;
    // The course summaries the folds marked (every course), as the rollup
    // task computes them every SUMMARY_INTERVAL.
    let t = Instant::now();
    let summarised = rollup::refresh_course_summaries(&db).await.unwrap();
    let summary_ms = t.elapsed().as_secs_f64() * 1000.0;

    // Reports against plain SQL over the raw rows.
    let (scope, rows) = measure_reports(&db, org, &s).await;
    let courses = (s.lessons / 10).max(1);
    // Exports: learner activity, every row of the range.
    let exports = measure_exports(&db, Arc::new(keys), org, scope.today).await;
    db.close().await;
    // Gigabytes on a shared server: dropped unless asked to keep it for
    // EXPLAIN ANALYZE.
    if std::env::var_os("ANALYTICS_BENCH_KEEP").is_none() {
        admin
            .execute(format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)").as_str())
            .await
            .unwrap();
    }

    let today: NaiveDate = scope.today;
    println!("## Analytics (`benchmarks/analytics`)\n");
    println!(
        "Generated: {} learners, {} lessons ({} courses), {} progress rows × {} watched \
         intervals = {} intervals, {} QoE events; generation took {:.0} s; {} changes queued \
         by the triggers. Today (Asia/Shanghai): {today}.\n",
        s.learners,
        s.lessons,
        courses,
        s.rows,
        INTERVALS_PER_ROW,
        intervals,
        s.rows / 5,
        generated.as_secs_f64(),
        queued
    );
    println!("### Rollups\n");
    println!("| measure | value | against |\n| --- | --- | --- |");
    println!(
        "| fold of the whole queue | {folded} changes in {fold_s:.1} s = **{fold_rate:.0} changes/s** | 10,000 heartbeats/s need ≤ 10,000 changes/s (one per learner × lesson per flush, at most) |"
    );
    println!(
        "| flusher's UPDATE of 2,000 rows, triggers on | p50 {with_p50:.1} ms | triggers off: p50 {without_p50:.1} ms (×{:.2}) |",
        with_p50 / without_p50
    );
    println!("| fold of those 10 flushes ({refold} changes) | {refold_ms:.0} ms | — |");
    println!(
        "| course summaries of every course ({summarised}), as computed every {} s | {summary_ms:.0} ms | — |",
        rollup::SUMMARY_INTERVAL.as_secs()
    );
    print_reports(&rows);
    print_exports(&exports);
}

fn print_reports(rows: &[ReportRow]) {
    println!("\n### Reports (p50 / p99 ms, {REPORT_CALLS} calls each after an untimed one; baseline: plain SQL over raw rows)\n");
    println!("| report | ours p50 | ours p99 | baseline p50 | baseline p99 |\n| --- | --- | --- | --- | --- |");
    for (name, (p50, p99), base) in rows {
        match base {
            Some((b50, b99)) => {
                println!("| {name} | {p50:.1} | {p99:.1} | {b50:.1} | {b99:.1} |")
            }
            None => println!("| {name} | {p50:.1} | {p99:.1} | — | — |"),
        }
    }
}

/// Each report `n` times after one untimed call, and the plain SQL over
/// raw rows it is compared with.
async fn measure_reports(db: &PgPool, org: Uuid, s: &Scale) -> (Scope, Vec<ReportRow>) {
    let scope: Scope = filter::resolve_for(db, org, &ReportQuery::default())
        .await
        .unwrap();
    let mut rows = Vec::new();
    let n = REPORT_CALLS;
    let courses = (s.lessons / 10).max(1);
    let lesson_id = |i: usize| {
        Uuid::parse_str(&format!(
            "00000000-0000-0002-0000-{:012x}",
            (i as i64 * 7919) % s.lessons + 1
        ))
        .unwrap()
    };
    let learner_id = |i: usize| {
        Uuid::parse_str(&format!(
            "00000000-0000-0004-0000-{:012x}",
            (i as i64 * 104_729) % s.learners + 1
        ))
        .unwrap()
    };
    let expert_id = |i: usize| {
        Uuid::parse_str(&format!(
            "00000000-0000-0005-0000-{:012x}",
            (i as i64 * 31) % courses + 1
        ))
        .unwrap()
    };

    let ours = time_n(n, |_| {
        let (db, s) = (db.clone(), scope.clone());
        async move {
            reports::overview_of(&db, s).await.unwrap();
        }
    })
    .await;
    let base = time_n(n, |_| {
        let db = db.clone();
        async move {
            sqlx::query(
                "SELECT count(DISTINCT user_id) FILTER (WHERE last_beat_at > now() - interval '1 day'),
                        count(DISTINCT user_id) FILTER (WHERE last_beat_at > now() - interval '7 days'),
                        count(DISTINCT user_id), sum(watch_time_s) / 3600,
                        count(*) FILTER (WHERE completed_at IS NOT NULL)
                 FROM lesson_progress
                 WHERE organisation_id = $1 AND last_beat_at > now() - interval '30 days'",
            )
            .bind(org)
            .fetch_all(&db)
            .await
            .unwrap();
        }
    })
    .await;
    rows.push(("organisation overview", ours, Some(base)));

    let ours = time_n(n, |_| {
        let (db, s) = (db.clone(), scope.clone());
        async move {
            reports::course_figures(&db, &s, None).await.unwrap();
        }
    })
    .await;
    let base = time_n(n.min(10), |_| {
        let db = db.clone();
        async move {
            sqlx::query(
                "WITH per AS (
                     SELECT l.course_id, lp.user_id, count(*) AS lessons_started,
                            count(lp.completed_at) AS done, sum(lp.watch_time_s) AS watch_s,
                            sum(lp.watch_time_s * lp.speed) AS media_s
                     FROM lesson_progress lp JOIN lessons l ON l.id = lp.lesson_id
                     WHERE lp.organisation_id = $1 GROUP BY l.course_id, lp.user_id)
                 SELECT course_id, count(*), count(*) FILTER (WHERE done >= 10),
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY watch_s),
                        sum(media_s) / sum(watch_s)
                 FROM per GROUP BY course_id",
            )
            .bind(org)
            .fetch_all(&db)
            .await
            .unwrap();
        }
    })
    .await;
    rows.push(("courses (all, one report)", ours, Some(base)));

    let ours = time_n(n, |i| {
        let (db, s) = (db.clone(), scope.clone());
        let id = lesson_id(i);
        async move {
            reports::lesson_of(&db, &s, id).await.unwrap();
        }
    })
    .await;
    let base = time_n(n, |i| {
        let db = db.clone();
        let id = lesson_id(i);
        async move {
            sqlx::query(
                "SELECT k, count(*) FILTER (WHERE EXISTS (
                            SELECT 1 FROM jsonb_array_elements(lp.watched) e
                            WHERE (e ->> 0)::float8 <= k * lp.duration_s / 100
                              AND (e ->> 1)::float8 >= k * lp.duration_s / 100))::float8
                        / count(*)
                 FROM lesson_progress lp CROSS JOIN generate_series(0, 100) k
                 WHERE lp.lesson_id = $1 AND lp.watched_s > 0 GROUP BY k ORDER BY k",
            )
            .bind(id)
            .fetch_all(&db)
            .await
            .unwrap();
        }
    })
    .await;
    rows.push(("lesson (retention, re-watching)", ours, Some(base)));

    let ours = time_n(n, |i| {
        let (db, s) = (db.clone(), scope.clone());
        let id = expert_id(i);
        async move {
            reports::expert_report(&db, &s, id, "专家".into())
                .await
                .unwrap();
        }
    })
    .await;
    let base = time_n(n, |i| {
        let db = db.clone();
        let id = expert_id(i);
        async move {
            sqlx::query(
                "SELECT count(*), sum(lp.watch_time_s), count(lp.completed_at),
                        (SELECT avg(rating) FROM course_ratings r JOIN course_experts ce
                           ON ce.course_id = r.course_id WHERE ce.expert_id = $1)
                 FROM lesson_progress lp JOIN lessons l ON l.id = lp.lesson_id
                 JOIN course_experts ce ON ce.course_id = l.course_id
                 WHERE ce.expert_id = $1",
            )
            .bind(id)
            .fetch_all(&db)
            .await
            .unwrap();
        }
    })
    .await;
    rows.push(("expert", ours, Some(base)));

    let ours = time_n(n, |i| {
        let db = db.clone();
        let id = learner_id(i);
        async move {
            reports::transcript_of(&db, org, id, None).await.unwrap();
        }
    })
    .await;
    rows.push(("learner transcript (raw rows by design)", ours, None));

    let ours = time_n(n, |_| {
        let (db, s) = (db.clone(), scope.clone());
        async move {
            reports::qoe_of(&db, &s).await.unwrap();
        }
    })
    .await;
    rows.push(("QoE (raw events by design)", ours, None));

    (scope, rows)
}

/// A report's (p50, p99) and its baseline's, in ms.
type ReportRow = (&'static str, (f64, f64), Option<(f64, f64)>);

const REPORT_CALLS: usize = 30;

struct ExportFigures {
    /// (writer, rows, seconds, process CPU seconds, peak extra MiB, bytes)
    writers: Vec<(&'static str, u64, f64, f64, f64, u64)>,
    copied: usize,
    copy_s: f64,
    copy_extra: f64,
}

/// The learner-activity export of the last 31 days, every way a user gets
/// it: the HTTP handler's streamed CSV body (consumed as a client would,
/// counting bytes) and the export job's file writer for CSV and XLSX; then
/// PostgreSQL's own `COPY` of the same rows as the baseline.
async fn measure_exports(
    db: &PgPool,
    keys: Arc<Keyring>,
    org: Uuid,
    today: NaiveDate,
) -> ExportFigures {
    let export_scope = filter::resolve_for(
        db,
        org,
        &ReportQuery {
            from: Some(today - Days::days(31)),
            to: Some(today),
            ..ReportQuery::default()
        },
    )
    .await
    .unwrap();
    let only = std::env::args()
        .position(|a| a == "--export")
        .and_then(|i| std::env::args().nth(i + 1));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut writers = Vec::new();
    if wanted("http") {
        let (t, cpu) = (Instant::now(), cpu_s());
        let ((rows, bytes), extra) = with_peak(async {
            let body = export::csv_stream(
                db.clone(),
                Some(keys.clone()),
                Report::LearnerActivity,
                export_scope.clone(),
            );
            let mut stream = body.into_data_stream();
            let (mut lines, mut bytes) = (0u64, 0u64);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                bytes += chunk.len() as u64;
                lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            }
            // The header is not a data row.
            (lines - 1, bytes)
        })
        .await;
        let secs = t.elapsed().as_secs_f64();
        writers.push((
            "CSV, streamed HTTP body (`learner-activity.csv`)",
            rows,
            secs,
            cpu_s() - cpu,
            extra,
            bytes,
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in [("csv", export::Format::Csv), ("xlsx", export::Format::Xlsx)] {
        if !wanted(name) {
            continue;
        }
        let path = dir.path().join(format!("export.{name}"));
        let (t, cpu) = (Instant::now(), cpu_s());
        let (written, extra) = with_peak(async {
            let (tx, rx) = export::channel();
            let producer = tokio::spawn(export::produce(
                db.clone(),
                Some(keys.clone()),
                Report::LearnerActivity,
                export_scope.clone(),
                tx,
            ));
            let p = path.clone();
            let written =
                tokio::task::spawn_blocking(move || export::write_file(format, &p, rx, |_| {}))
                    .await
                    .unwrap()
                    .unwrap();
            producer.await.unwrap().unwrap();
            written
        })
        .await;
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_s() - cpu;
        let bytes = std::fs::metadata(&path).unwrap().len();
        let label = if name == "csv" {
            "CSV, export job's file"
        } else {
            "XLSX, export job's file"
        };
        writers.push((label, written, secs, cpu, extra, bytes));
    }
    // Baseline: PostgreSQL writing the same rows as CSV itself.
    let t = Instant::now();
    let (copied, copy_extra) = with_peak(async {
        if !wanted("copy") {
            return 0;
        }
        let mut conn = db.acquire().await.unwrap();
        let sql = format!(
            "COPY (SELECT r.day, r.user_id, encode(u.email_ct, 'hex'), r.course_id, c.title,
                          r.lesson_id, l.title, r.views, r.watch_s, r.unique_s, r.completions
                   FROM rollup_learner_daily r JOIN users u ON u.id = r.user_id
                   JOIN lessons l ON l.id = r.lesson_id JOIN courses c ON c.id = r.course_id
                   WHERE r.organisation_id = '{org}' AND r.day BETWEEN '{}' AND '{}'
                   ORDER BY r.day, r.user_id, r.lesson_id) TO STDOUT (FORMAT csv)",
            export_scope.from, export_scope.to
        );
        let mut stream = conn.copy_out_raw(sql.as_str()).await.unwrap();
        let mut n = 0usize;
        while let Some(chunk) = stream.next().await {
            n += chunk.unwrap().iter().filter(|b| **b == b'\n').count();
        }
        n
    })
    .await;
    ExportFigures {
        writers,
        copied,
        copy_s: t.elapsed().as_secs_f64(),
        copy_extra,
    }
}

fn print_exports(e: &ExportFigures) {
    println!(
        "\n### Exports (learner activity, one row per learner × lesson × day, emails opened)\n"
    );
    println!("| writer | rows | seconds | rows/s | our CPU s | peak extra RSS | bytes |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, written, secs, cpu, extra, bytes) in &e.writers {
        println!(
            "| {name} | {written} | **{secs:.2}** | {:.0} | {cpu:.1} | {extra:.0} MiB | {:.0} MiB |",
            *written as f64 / secs,
            *bytes as f64 / 1_048_576.0
        );
    }
    println!(
        "| baseline: `COPY … TO STDOUT (FORMAT csv)`, emails left sealed | {} | {:.2} | {:.0} | — | {:.0} MiB | — |",
        e.copied,
        e.copy_s,
        e.copied as f64 / e.copy_s,
        e.copy_extra
    );
}

/// The benchmark's database on DATABASE_URL's server (made by a full run,
/// or kept by an earlier one with ANALYTICS_BENCH_KEEP=1), migrated to
/// this build's schema.
async fn bench_database() -> PgPool {
    let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{DB}"),
        None => panic!("DATABASE_URL has no database"),
    };
    let db = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{DB}: {e} (--reports-only/--exports-only need a run with ANALYTICS_BENCH_KEEP=1)"
            )
        });
    sqlx::migrate!("../migrations").run(&db).await.unwrap();
    db
}

/// `--reports-only [--learners N --lessons N]` (the scale the kept
/// database was generated with): the reports again on a kept database.
async fn reports_only() {
    let db = bench_database().await;
    let s = scale();
    let (_, rows) = measure_reports(&db, Uuid::from_u128(0xbe7c), &s).await;
    print_reports(&rows);
}

/// `--exports-only [--export http|csv|xlsx|copy]`: the exports again on the
/// database an earlier run kept (ANALYTICS_BENCH_KEEP=1), without the
/// minutes of generating and folding it.
async fn exports_only() {
    let db = bench_database().await;
    let (fk, bk, tk): (String, String, String) =
        sqlx::query_as("SELECT fk, bk, tk FROM bench_keyring")
            .fetch_one(&db)
            .await
            .unwrap();
    let keys = Keyring::parse(&fk, &bk, &tk).unwrap();
    let org = Uuid::from_u128(0xbe7c);
    let scope: Scope = filter::resolve_for(&db, org, &ReportQuery::default())
        .await
        .unwrap();
    let e = measure_exports(&db, Arc::new(keys), org, scope.today).await;
    print_exports(&e);
}
