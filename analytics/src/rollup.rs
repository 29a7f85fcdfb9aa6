//! Rollups, kept up to date incrementally.
//!
//! Every write to `lesson_progress` (the progress flusher's batches, every
//! couple of seconds) appends, through statement-level triggers, one row
//! per learner × lesson to `progress_changes`: the watch time and unique
//! seconds it added, whether it completed the lesson, started a new
//! viewing, or rewound. [`fold_once`] takes up to [`BATCH`] of those rows
//! (`FOR UPDATE SKIP LOCKED`, so several nodes share the work), deletes
//! them, and adds them to the rollups in the same transaction: a change is
//! counted exactly once, a change of a transaction still open is not yet
//! visible (it is taken next time), and nothing is ever rescanned. [`run`]
//! folds every [`INTERVAL`], so reports trail the flusher by seconds.
//!
//! Hours and days are the organisation's local ones (`organisations.time_zone`),
//! converted by PostgreSQL when the change is taken; a change of time zone
//! applies to changes folded after it.
//!
//! Rollups: per lesson × hour and lesson × day (views, learners, watch
//! time, unique seconds, completions), per learner × lesson × day, per
//! course × learner (all time, for the course report), and where learners
//! rewound to per 1 % bin of a lesson, and each learner's newest beat
//! (`rollup_online`: who is watching now, within a fold's delay); per
//! organisation × day and course × day (the overview and the course
//! report's date range), the learner-days of an organisation and each
//! learner's newest day (distinct learners without `count(DISTINCT)` over
//! learner rows). Per course, all time, a summary (enrolled, started,
//! completed, median watch time, speed) is recomputed every
//! [`SUMMARY_INTERVAL`] for the courses a fold touched. Expert figures sum
//! their courses' lessons.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::AnalyticsState;

/// Changes folded per transaction.
pub const BATCH: i64 = 20_000;
/// How often the task looks for changes.
pub const INTERVAL: Duration = Duration::from_secs(5);

#[derive(sqlx::FromRow)]
struct Change {
    organisation_id: Uuid,
    user_id: Uuid,
    lesson_id: Uuid,
    at: DateTime<Utc>,
    first_write: bool,
    new_view: bool,
    watch_s: f64,
    unique_s: f64,
    completed: bool,
    rewind_to_s: Option<f64>,
    duration_s: f64,
    speed: f32,
    course_id: Option<Uuid>,
    local_at: Option<NaiveDateTime>,
}

#[derive(Default, Clone, Copy)]
struct Measures {
    views: i32,
    watch_s: f64,
    media_s: f64,
    unique_s: f64,
    completions: i32,
}

impl Measures {
    fn merge(&mut self, o: &Measures) {
        self.views += o.views;
        self.watch_s += o.watch_s;
        self.media_s += o.media_s;
        self.unique_s += o.unique_s;
        self.completions += o.completions;
    }

    fn add(&mut self, c: &Change) {
        self.views += i32::from(c.new_view);
        self.watch_s += c.watch_s;
        self.media_s += c.watch_s * f64::from(c.speed);
        self.unique_s += c.unique_s;
        self.completions += i32::from(c.completed);
    }
}

struct CourseLearner {
    org: Uuid,
    started: i32,
    completed: i32,
    watch_s: f64,
    media_s: f64,
    unique_s: f64,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
}

/// Folds one batch of changes into the rollups; returns how many changes
/// it took.
pub async fn fold_once(db: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    let changes: Vec<Change> = sqlx::query_as(
        "WITH picked AS (
             SELECT id FROM progress_changes ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
         )
         DELETE FROM progress_changes p USING picked WHERE p.id = picked.id
         RETURNING p.organisation_id, p.user_id, p.lesson_id, p.at, p.first_write, p.new_view,
                   p.watch_s, p.unique_s, p.completed, p.rewind_to_s, p.duration_s, p.speed,
                   (SELECT course_id FROM lessons WHERE id = p.lesson_id) AS course_id,
                   (SELECT p.at AT TIME ZONE o.time_zone FROM organisations o
                     WHERE o.id = p.organisation_id) AS local_at",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    let taken = changes.len();
    if taken > 0 {
        fold(&mut tx, &changes).await?;
    }
    tx.commit().await?;
    Ok(taken)
}

type Key = (Uuid, Uuid, Uuid); // lesson, organisation, course

async fn fold(tx: &mut PgConnection, changes: &[Change]) -> Result<(), sqlx::Error> {
    let mut hourly: HashMap<(Uuid, NaiveDateTime), (Key, Measures)> = HashMap::new();
    let mut daily: HashMap<(Uuid, NaiveDate), (Key, Measures)> = HashMap::new();
    let mut learner: HashMap<(Uuid, NaiveDate, Uuid), (Key, Measures)> = HashMap::new();
    let mut course_learner: HashMap<(Uuid, Uuid), CourseLearner> = HashMap::new();
    let mut rewinds: HashMap<(Uuid, i16), i32> = HashMap::new();
    for c in changes {
        // A lesson deleted since (its rollups went with it).
        let (Some(course), Some(local)) = (c.course_id, c.local_at) else {
            continue;
        };
        let key = (c.lesson_id, c.organisation_id, course);
        let hour = local
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(local);
        let day = local.date();
        hourly
            .entry((c.lesson_id, hour))
            .or_insert((key, Measures::default()))
            .1
            .add(c);
        daily
            .entry((c.lesson_id, day))
            .or_insert((key, Measures::default()))
            .1
            .add(c);
        learner
            .entry((c.user_id, day, c.lesson_id))
            .or_insert((key, Measures::default()))
            .1
            .add(c);
        let cl = course_learner
            .entry((course, c.user_id))
            .or_insert(CourseLearner {
                org: c.organisation_id,
                started: 0,
                completed: 0,
                watch_s: 0.0,
                media_s: 0.0,
                unique_s: 0.0,
                first_at: c.at,
                last_at: c.at,
            });
        cl.started += i32::from(c.first_write);
        cl.completed += i32::from(c.completed);
        cl.watch_s += c.watch_s;
        cl.media_s += c.watch_s * f64::from(c.speed);
        cl.unique_s += c.unique_s;
        cl.first_at = cl.first_at.min(c.at);
        cl.last_at = cl.last_at.max(c.at);
        if let Some(to) = c.rewind_to_s {
            if c.duration_s > 0.0 {
                let bin = ((to / c.duration_s) * 100.0).floor().clamp(0.0, 99.0) as i16;
                *rewinds.entry((c.lesson_id, bin)).or_default() += 1;
            }
        }
    }

    // Per learner first: a row inserted is a learner new to that lesson
    // that day, which is what the lesson's daily `learners` counts.
    let mut new_learners: HashMap<(Uuid, NaiveDate), i32> = HashMap::new();
    {
        let mut rows: Vec<_> = learner.iter().collect();
        // One order for every writer: two nodes folding at once never deadlock.
        rows.sort_by_key(|(k, _)| **k);
        let users: Vec<Uuid> = rows.iter().map(|((u, _, _), _)| *u).collect();
        let days: Vec<NaiveDate> = rows.iter().map(|((_, d, _), _)| *d).collect();
        let lessons: Vec<Uuid> = rows.iter().map(|((_, _, l), _)| *l).collect();
        let (orgs, courses, m) = columns(rows.iter().map(|(_, v)| *v));
        let inserted: Vec<FreshRow> = sqlx::query_as(
            "INSERT INTO rollup_learner_daily AS r (user_id, day, lesson_id, organisation_id, course_id,
                 views, watch_s, unique_s, completions)
             SELECT b.* FROM UNNEST($1::uuid[], $2::date[], $3::uuid[], $4::uuid[], $5::uuid[],
                                    $6::int[], $7::float8[], $8::float8[], $9::int[])
                  AS b(u, d, l, o, c, v, w, q, n)
             WHERE EXISTS (SELECT 1 FROM users WHERE id = b.u)
             ON CONFLICT (user_id, day, lesson_id) DO UPDATE SET
                 views = r.views + EXCLUDED.views, watch_s = r.watch_s + EXCLUDED.watch_s,
                 unique_s = r.unique_s + EXCLUDED.unique_s,
                 completions = r.completions + EXCLUDED.completions
             RETURNING r.lesson_id, r.day, (xmax = 0) AS fresh",
        )
        .bind(&users)
        .bind(&days)
        .bind(&lessons)
        .bind(&orgs)
        .bind(&courses)
        .bind(&m.views)
        .bind(&m.watch)
        .bind(&m.unique)
        .bind(&m.completions)
        .fetch_all(&mut *tx)
        .await?;
        for i in inserted.into_iter().filter(|r| r.fresh) {
            *new_learners.entry((i.lesson_id, i.day)).or_default() += 1;
        }
    }

    fold_organisations(tx, &learner, &daily).await?;
    fold_courses(tx, &daily, &course_learner).await?;

    {
        let mut rows: Vec<_> = daily.iter().collect();
        // One order for every writer: two nodes folding at once never deadlock.
        rows.sort_by_key(|(k, _)| **k);
        let lessons: Vec<Uuid> = rows.iter().map(|((l, _), _)| *l).collect();
        let days: Vec<NaiveDate> = rows.iter().map(|((_, d), _)| *d).collect();
        let learners: Vec<i32> = rows
            .iter()
            .map(|(k, _)| new_learners.get(k).copied().unwrap_or(0))
            .collect();
        let (orgs, courses, m) = columns(rows.iter().map(|(_, v)| *v));
        sqlx::query(
            "INSERT INTO rollup_lesson_daily AS r (lesson_id, day, organisation_id, course_id,
                 views, learners, watch_s, media_s, unique_s, completions)
             SELECT b.* FROM UNNEST($1::uuid[], $2::date[], $3::uuid[], $4::uuid[], $5::int[],
                                    $6::int[], $7::float8[], $10::float8[], $8::float8[], $9::int[])
                  AS b(l, d, o, c, v, n, w, m, q, k)
             WHERE EXISTS (SELECT 1 FROM lessons WHERE id = b.l)
             ON CONFLICT (lesson_id, day) DO UPDATE SET
                 views = r.views + EXCLUDED.views, learners = r.learners + EXCLUDED.learners,
                 watch_s = r.watch_s + EXCLUDED.watch_s, media_s = r.media_s + EXCLUDED.media_s,
                 unique_s = r.unique_s + EXCLUDED.unique_s,
                 completions = r.completions + EXCLUDED.completions",
        )
        .bind(&lessons)
        .bind(&days)
        .bind(&orgs)
        .bind(&courses)
        .bind(&m.views)
        .bind(&learners)
        .bind(&m.watch)
        .bind(&m.unique)
        .bind(&m.completions)
        .bind(&m.media)
        .execute(&mut *tx)
        .await?;
    }

    {
        let mut rows: Vec<_> = hourly.iter().collect();
        // One order for every writer: two nodes folding at once never deadlock.
        rows.sort_by_key(|(k, _)| **k);
        let lessons: Vec<Uuid> = rows.iter().map(|((l, _), _)| *l).collect();
        let hours: Vec<NaiveDateTime> = rows.iter().map(|((_, h), _)| *h).collect();
        let (orgs, courses, m) = columns(rows.iter().map(|(_, v)| *v));
        sqlx::query(
            "INSERT INTO rollup_lesson_hourly AS r (lesson_id, hour, organisation_id, course_id,
                 views, watch_s, unique_s, completions)
             SELECT b.* FROM UNNEST($1::uuid[], $2::timestamp[], $3::uuid[], $4::uuid[], $5::int[],
                                    $6::float8[], $7::float8[], $8::int[])
                  AS b(l, h, o, c, v, w, q, k)
             WHERE EXISTS (SELECT 1 FROM lessons WHERE id = b.l)
             ON CONFLICT (lesson_id, hour) DO UPDATE SET
                 views = r.views + EXCLUDED.views, watch_s = r.watch_s + EXCLUDED.watch_s,
                 unique_s = r.unique_s + EXCLUDED.unique_s,
                 completions = r.completions + EXCLUDED.completions",
        )
        .bind(&lessons)
        .bind(&hours)
        .bind(&orgs)
        .bind(&courses)
        .bind(&m.views)
        .bind(&m.watch)
        .bind(&m.unique)
        .bind(&m.completions)
        .execute(&mut *tx)
        .await?;
    }

    {
        let mut rows: Vec<_> = course_learner.iter().collect();
        // One order for every writer: two nodes folding at once never deadlock.
        rows.sort_by_key(|(k, _)| **k);
        let courses: Vec<Uuid> = rows.iter().map(|((c, _), _)| *c).collect();
        let users: Vec<Uuid> = rows.iter().map(|((_, u), _)| *u).collect();
        let orgs: Vec<Uuid> = rows.iter().map(|(_, v)| v.org).collect();
        let started: Vec<i32> = rows.iter().map(|(_, v)| v.started).collect();
        let completed: Vec<i32> = rows.iter().map(|(_, v)| v.completed).collect();
        let watch: Vec<f64> = rows.iter().map(|(_, v)| v.watch_s).collect();
        let media: Vec<f64> = rows.iter().map(|(_, v)| v.media_s).collect();
        let unique: Vec<f64> = rows.iter().map(|(_, v)| v.unique_s).collect();
        let first: Vec<DateTime<Utc>> = rows.iter().map(|(_, v)| v.first_at).collect();
        let last: Vec<DateTime<Utc>> = rows.iter().map(|(_, v)| v.last_at).collect();
        sqlx::query(
            "INSERT INTO rollup_course_learners AS r (course_id, user_id, organisation_id,
                 lessons_started, lessons_completed, watch_s, media_s, unique_s, first_at, last_at)
             SELECT b.* FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::int[],
                                    $6::float8[], $7::float8[], $8::float8[], $9::timestamptz[],
                                    $10::timestamptz[])
                  AS b(c, u, o, s, k, w, m, q, f, l)
             WHERE EXISTS (SELECT 1 FROM users WHERE id = b.u)
               AND EXISTS (SELECT 1 FROM courses WHERE id = b.c)
             ON CONFLICT (course_id, user_id) DO UPDATE SET
                 lessons_started = r.lessons_started + EXCLUDED.lessons_started,
                 lessons_completed = r.lessons_completed + EXCLUDED.lessons_completed,
                 watch_s = r.watch_s + EXCLUDED.watch_s, media_s = r.media_s + EXCLUDED.media_s,
                 unique_s = r.unique_s + EXCLUDED.unique_s,
                 first_at = least(r.first_at, EXCLUDED.first_at),
                 last_at = greatest(r.last_at, EXCLUDED.last_at)",
        )
        .bind(&courses)
        .bind(&users)
        .bind(&orgs)
        .bind(&started)
        .bind(&completed)
        .bind(&watch)
        .bind(&media)
        .bind(&unique)
        .bind(&first)
        .bind(&last)
        .execute(&mut *tx)
        .await?;
    }

    {
        let mut online: HashMap<Uuid, (Uuid, DateTime<Utc>)> = HashMap::new();
        for c in changes {
            let e = online.entry(c.user_id).or_insert((c.organisation_id, c.at));
            e.1 = e.1.max(c.at);
        }
        let mut rows: Vec<_> = online.into_iter().collect();
        rows.sort_by_key(|(u, _)| *u);
        let users: Vec<Uuid> = rows.iter().map(|(u, _)| *u).collect();
        let orgs: Vec<Uuid> = rows.iter().map(|(_, (o, _))| *o).collect();
        let at: Vec<DateTime<Utc>> = rows.iter().map(|(_, (_, a))| *a).collect();
        sqlx::query(
            "INSERT INTO rollup_online AS r (user_id, organisation_id, last_at)
             SELECT b.* FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) AS b(u, o, a)
             WHERE EXISTS (SELECT 1 FROM users WHERE id = b.u)
             ON CONFLICT (user_id) DO UPDATE SET organisation_id = EXCLUDED.organisation_id,
                 last_at = greatest(r.last_at, EXCLUDED.last_at)",
        )
        .bind(&users)
        .bind(&orgs)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
    }

    if !rewinds.is_empty() {
        let mut rows: Vec<_> = rewinds.iter().collect();
        // One order for every writer: two nodes folding at once never deadlock.
        rows.sort_by_key(|(k, _)| **k);
        let lessons: Vec<Uuid> = rows.iter().map(|((l, _), _)| *l).collect();
        let bins: Vec<i16> = rows.iter().map(|((_, b), _)| *b).collect();
        let counts: Vec<i32> = rows.iter().map(|(_, n)| **n).collect();
        sqlx::query(
            "INSERT INTO rollup_rewinds AS r (lesson_id, bin, rewinds)
             SELECT b.* FROM UNNEST($1::uuid[], $2::int2[], $3::int[]) AS b(l, k, n)
             WHERE EXISTS (SELECT 1 FROM lessons WHERE id = b.l)
             ON CONFLICT (lesson_id, bin) DO UPDATE SET rewinds = r.rewinds + EXCLUDED.rewinds",
        )
        .bind(&lessons)
        .bind(&bins)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Organisation figures: the learner-days a fold adds (a row inserted is a
/// learner new to that organisation's day), each learner's newest day, and
/// the day's totals.
async fn fold_organisations(
    tx: &mut PgConnection,
    learner: &HashMap<(Uuid, NaiveDate, Uuid), (Key, Measures)>,
    daily: &HashMap<(Uuid, NaiveDate), (Key, Measures)>,
) -> Result<(), sqlx::Error> {
    let mut days: Vec<(Uuid, NaiveDate, Uuid)> = learner
        .iter()
        .map(|((user, day, _), ((_, org, _), _))| (*org, *day, *user))
        .collect();
    // One order for every writer: two nodes folding at once never deadlock.
    days.sort_unstable();
    days.dedup();
    let fresh: Vec<(Uuid, NaiveDate)> = sqlx::query_as(
        "INSERT INTO rollup_learner_days (organisation_id, day, user_id)
         SELECT b.* FROM UNNEST($1::uuid[], $2::date[], $3::uuid[]) AS b(o, d, u)
         WHERE EXISTS (SELECT 1 FROM users WHERE id = b.u)
         ON CONFLICT DO NOTHING
         RETURNING organisation_id, day",
    )
    .bind(days.iter().map(|d| d.0).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.1).collect::<Vec<_>>())
    .bind(days.iter().map(|d| d.2).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut new_learners: HashMap<(Uuid, NaiveDate), i32> = HashMap::new();
    for key in fresh {
        *new_learners.entry(key).or_default() += 1;
    }

    let mut last: HashMap<Uuid, (Uuid, NaiveDate)> = HashMap::new();
    for (org, day, user) in &days {
        let e = last.entry(*user).or_insert((*org, *day));
        if *day > e.1 {
            *e = (*org, *day);
        }
    }
    let mut last: Vec<_> = last.into_iter().collect();
    last.sort_unstable_by_key(|(u, _)| *u);
    sqlx::query(
        "INSERT INTO rollup_learner_last AS r (user_id, organisation_id, last_day)
         SELECT b.* FROM UNNEST($1::uuid[], $2::uuid[], $3::date[]) AS b(u, o, d)
         WHERE EXISTS (SELECT 1 FROM users WHERE id = b.u)
         ON CONFLICT (user_id) DO UPDATE SET
             organisation_id = EXCLUDED.organisation_id, last_day = EXCLUDED.last_day
         -- Most folds see a learner again on the same day: no new row version.
         WHERE EXCLUDED.last_day > r.last_day",
    )
    .bind(last.iter().map(|(u, _)| *u).collect::<Vec<_>>())
    .bind(last.iter().map(|(_, (o, _))| *o).collect::<Vec<_>>())
    .bind(last.iter().map(|(_, (_, d))| *d).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    let mut totals: HashMap<(Uuid, NaiveDate), Measures> = HashMap::new();
    for ((_, day), ((_, org, _), m)) in daily {
        totals.entry((*org, *day)).or_default().merge(m);
    }
    for key in new_learners.keys() {
        totals.entry(*key).or_default();
    }
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_unstable_by_key(|(k, _)| *k);
    sqlx::query(
        "INSERT INTO rollup_org_daily AS r (organisation_id, day, views, learners, watch_s,
             unique_s, completions)
         SELECT b.* FROM UNNEST($1::uuid[], $2::date[], $3::int8[], $4::int[], $5::float8[],
                                $6::float8[], $7::int8[]) AS b(o, d, v, n, w, q, k)
         WHERE EXISTS (SELECT 1 FROM organisations WHERE id = b.o)
         ON CONFLICT (organisation_id, day) DO UPDATE SET
             views = r.views + EXCLUDED.views, learners = r.learners + EXCLUDED.learners,
             watch_s = r.watch_s + EXCLUDED.watch_s, unique_s = r.unique_s + EXCLUDED.unique_s,
             completions = r.completions + EXCLUDED.completions",
    )
    .bind(rows.iter().map(|((o, _), _)| *o).collect::<Vec<_>>())
    .bind(rows.iter().map(|((_, d), _)| *d).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, m)| i64::from(m.views))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(k, _)| new_learners.get(k).copied().unwrap_or(0))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, m)| m.watch_s).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.unique_s).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, m)| i64::from(m.completions))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Course figures: the day's totals per course, and the courses whose
/// summary must be computed again.
async fn fold_courses(
    tx: &mut PgConnection,
    daily: &HashMap<(Uuid, NaiveDate), (Key, Measures)>,
    course_learner: &HashMap<(Uuid, Uuid), CourseLearner>,
) -> Result<(), sqlx::Error> {
    let mut totals: HashMap<(Uuid, NaiveDate), (Uuid, Measures)> = HashMap::new();
    for ((_, day), ((_, org, course), m)) in daily {
        totals
            .entry((*course, *day))
            .or_insert((*org, Measures::default()))
            .1
            .merge(m);
    }
    let mut rows: Vec<_> = totals.into_iter().collect();
    // One order for every writer: two nodes folding at once never deadlock.
    rows.sort_unstable_by_key(|(k, _)| *k);
    sqlx::query(
        "INSERT INTO rollup_course_days AS r (course_id, day, organisation_id, views, watch_s,
             unique_s, completions)
         SELECT b.* FROM UNNEST($1::uuid[], $2::date[], $3::uuid[], $4::int8[], $5::float8[],
                                $6::float8[], $7::int8[]) AS b(c, d, o, v, w, q, k)
         WHERE EXISTS (SELECT 1 FROM courses WHERE id = b.c)
         ON CONFLICT (course_id, day) DO UPDATE SET
             views = r.views + EXCLUDED.views, watch_s = r.watch_s + EXCLUDED.watch_s,
             unique_s = r.unique_s + EXCLUDED.unique_s,
             completions = r.completions + EXCLUDED.completions",
    )
    .bind(rows.iter().map(|((c, _), _)| *c).collect::<Vec<_>>())
    .bind(rows.iter().map(|((_, d), _)| *d).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, (o, _))| *o).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, (_, m))| i64::from(m.views))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, (_, m))| m.watch_s).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, (_, m))| m.unique_s)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, (_, m))| i64::from(m.completions))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *tx)
    .await?;

    let mut dirty: Vec<Uuid> = course_learner.keys().map(|(c, _)| *c).collect();
    dirty.sort_unstable();
    dirty.dedup();
    sqlx::query(
        "INSERT INTO rollup_course_dirty (course_id)
         SELECT c FROM UNNEST($1::uuid[]) AS c WHERE EXISTS (SELECT 1 FROM courses WHERE id = c)
         ON CONFLICT DO NOTHING",
    )
    .bind(&dirty)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Course summaries computed per transaction.
pub const SUMMARY_BATCH: i64 = 500;
/// How often course summaries are brought up to date: reports trail the
/// events by at most this plus the fold interval (under a minute).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(20);

/// Computes the summary of up to [`SUMMARY_BATCH`] courses a fold touched
/// since their last summary (`SKIP LOCKED`: nodes share the work); returns
/// how many. The figures are the course report's, over
/// `rollup_course_learners` of one course (one index range each).
pub async fn refresh_course_summaries_once(db: &PgPool) -> Result<usize, sqlx::Error> {
    let done: Vec<Uuid> = sqlx::query_scalar(
        "WITH picked AS (
             SELECT course_id FROM rollup_course_dirty ORDER BY course_id
             LIMIT $1 FOR UPDATE SKIP LOCKED
         ), gone AS (
             DELETE FROM rollup_course_dirty d USING picked WHERE d.course_id = picked.course_id
             RETURNING d.course_id
         ), c AS (
             SELECT c.id,
                    (SELECT count(*) FROM lessons l
                      WHERE l.course_id = c.id AND l.asset_id IS NOT NULL) AS lessons
             FROM courses c JOIN gone ON gone.course_id = c.id
         )
         INSERT INTO rollup_course_summary AS s (course_id, lessons, enrolled, started, completed,
             median_watch_s, average_speed, computed_at)
         SELECT c.id, c.lessons, a.enrolled, a.started, a.completed, a.median_watch_s,
                a.average_speed, now()
         FROM c CROSS JOIN LATERAL (
             -- One course's learners: one range of the primary key each,
             -- never a scan of every course's rows.
             SELECT count(*) AS enrolled,
                    count(*) FILTER (WHERE r.unique_s > 0) AS started,
                    count(*) FILTER (WHERE r.lessons_completed >= c.lessons AND c.lessons > 0)
                        AS completed,
                    coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY r.watch_s)
                             FILTER (WHERE r.unique_s > 0), 0) AS median_watch_s,
                    sum(r.media_s) / nullif(sum(r.watch_s), 0) AS average_speed
             FROM rollup_course_learners r WHERE r.course_id = c.id
         ) a
         ON CONFLICT (course_id) DO UPDATE SET
             lessons = EXCLUDED.lessons, enrolled = EXCLUDED.enrolled,
             started = EXCLUDED.started, completed = EXCLUDED.completed,
             median_watch_s = EXCLUDED.median_watch_s, average_speed = EXCLUDED.average_speed,
             computed_at = EXCLUDED.computed_at
         RETURNING s.course_id",
    )
    .bind(SUMMARY_BATCH)
    .fetch_all(db)
    .await?;
    Ok(done.len())
}

/// Brings every course summary up to date.
pub async fn refresh_course_summaries(db: &PgPool) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = refresh_course_summaries_once(db).await?;
        total += n;
        if (n as i64) < SUMMARY_BATCH {
            return Ok(total);
        }
    }
}

#[derive(sqlx::FromRow)]
struct FreshRow {
    lesson_id: Uuid,
    day: NaiveDate,
    fresh: bool,
}

struct MeasureColumns {
    views: Vec<i32>,
    watch: Vec<f64>,
    media: Vec<f64>,
    unique: Vec<f64>,
    completions: Vec<i32>,
}

fn columns<'a>(
    rows: impl Iterator<Item = &'a (Key, Measures)>,
) -> (Vec<Uuid>, Vec<Uuid>, MeasureColumns) {
    let mut orgs = Vec::new();
    let mut courses = Vec::new();
    let mut m = MeasureColumns {
        views: Vec::new(),
        watch: Vec::new(),
        media: Vec::new(),
        unique: Vec::new(),
        completions: Vec::new(),
    };
    for ((_, org, course), v) in rows {
        orgs.push(*org);
        courses.push(*course);
        m.views.push(v.views);
        m.watch.push(v.watch_s);
        m.media.push(v.media_s);
        m.unique.push(v.unique_s);
        m.completions.push(v.completions);
    }
    (orgs, courses, m)
}

/// Folds until the queue is empty.
pub async fn fold_all(db: &PgPool) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = fold_once(db).await?;
        total += n;
        if (n as i64) < BATCH {
            return Ok(total);
        }
    }
}

/// Folds every [`INTERVAL`] (once the schema exists) until `cancel`.
pub async fn run(state: AnalyticsState, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_summaries = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.schema_ready.load(Ordering::Acquire) {
            continue;
        }
        // A fold is one transaction: cancelling between folds loses nothing.
        match fold_all(&state.db).await {
            Ok(n) if n > 0 => tracing::debug!(changes = n, "rollups folded"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "rollup fold failed; retrying next interval"),
        }
        if last_summaries.elapsed() >= SUMMARY_INTERVAL {
            last_summaries = tokio::time::Instant::now();
            match refresh_course_summaries(&state.db).await {
                Ok(n) if n > 0 => tracing::debug!(courses = n, "course summaries computed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "course summaries failed; retrying later"),
            }
        }
    }
}
