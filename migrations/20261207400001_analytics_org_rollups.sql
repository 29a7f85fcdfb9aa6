-- Rollups the organisation overview and the course report read instead of
-- summing or de-duplicating lesson and learner rows at request time
-- (benchmarks/analytics: 2.3–2.4 s p99 at 100k learners before these).
-- Expand-only: new tables, filled from the existing rollups below.

-- Per organisation × day: views, distinct learners, watch time, unique
-- seconds and completions (the overview's totals and daily chart). Rows
-- outlive the lessons they came from: what was watched stays counted.
CREATE TABLE rollup_org_daily (
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    day              date NOT NULL,
    views            bigint NOT NULL DEFAULT 0,
    learners         integer NOT NULL DEFAULT 0,
    watch_s          double precision NOT NULL DEFAULT 0,
    unique_s         double precision NOT NULL DEFAULT 0,
    completions      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (organisation_id, day)
);

-- Per course × day: the course report's figures of a date range.
CREATE TABLE rollup_course_days (
    course_id        uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    day              date NOT NULL,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    views            bigint NOT NULL DEFAULT 0,
    watch_s          double precision NOT NULL DEFAULT 0,
    unique_s         double precision NOT NULL DEFAULT 0,
    completions      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (course_id, day)
);

-- One row per learner and day they watched in an organisation: inserting
-- it tells the fold a learner is new to that organisation's day.
CREATE TABLE rollup_learner_days (
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    day              date NOT NULL,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (organisation_id, day, user_id)
);
CREATE INDEX rollup_learner_days_user ON rollup_learner_days (user_id);

-- Each learner's newest day of watching: learners active today, in 7 and
-- in 30 days are one index range each.
CREATE TABLE rollup_learner_last (
    user_id          uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    last_day         date NOT NULL
);
CREATE INDEX rollup_learner_last_org ON rollup_learner_last (organisation_id, last_day);

-- Per course, all time: learners enrolled, started, completed, the median
-- watch time and average speed, recomputed from rollup_course_learners for
-- the courses a fold touched (listed in rollup_course_dirty) every
-- rollup::SUMMARY_INTERVAL. Valid while the course still has `lessons`
-- playable lessons; otherwise the report computes that course live.
CREATE TABLE rollup_course_summary (
    course_id        uuid PRIMARY KEY REFERENCES courses (id) ON DELETE CASCADE,
    lessons          bigint NOT NULL,
    enrolled         bigint NOT NULL,
    started          bigint NOT NULL,
    completed        bigint NOT NULL,
    median_watch_s   double precision NOT NULL,
    average_speed    double precision,
    computed_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE rollup_course_dirty (
    course_id        uuid PRIMARY KEY REFERENCES courses (id) ON DELETE CASCADE
);

-- Filled from what the existing rollups hold.
INSERT INTO rollup_learner_days (organisation_id, day, user_id)
SELECT DISTINCT organisation_id, day, user_id FROM rollup_learner_daily;

INSERT INTO rollup_learner_last (user_id, organisation_id, last_day)
SELECT DISTINCT ON (user_id) user_id, organisation_id, day
FROM rollup_learner_daily ORDER BY user_id, day DESC;

INSERT INTO rollup_org_daily (organisation_id, day, views, learners, watch_s, unique_s, completions)
SELECT t.organisation_id, t.day, t.views, coalesce(n.learners, 0), t.watch_s, t.unique_s, t.completions
FROM (SELECT organisation_id, day, sum(views) AS views, sum(watch_s) AS watch_s,
             sum(unique_s) AS unique_s, sum(completions) AS completions
      FROM rollup_lesson_daily GROUP BY organisation_id, day) t
LEFT JOIN (SELECT organisation_id, day, count(*) AS learners
           FROM rollup_learner_days GROUP BY organisation_id, day) n USING (organisation_id, day);

INSERT INTO rollup_course_days (course_id, day, organisation_id, views, watch_s, unique_s, completions)
SELECT r.course_id, r.day, r.organisation_id, sum(r.views), sum(r.watch_s), sum(r.unique_s), sum(r.completions)
FROM rollup_lesson_daily r JOIN courses c ON c.id = r.course_id
GROUP BY r.course_id, r.day, r.organisation_id;

INSERT INTO rollup_course_dirty (course_id)
SELECT DISTINCT r.course_id FROM rollup_course_learners r JOIN courses c ON c.id = r.course_id;
