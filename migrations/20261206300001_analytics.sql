-- Learning analytics: a queue of what changed in lesson_progress, the
-- rollups built from it, credit rules and certificates.

-- Days and hours of reports are the organisation's own.
ALTER TABLE organisations ADD COLUMN time_zone text NOT NULL DEFAULT 'Asia/Shanghai';

-- What each write to lesson_progress changed, one row per learner × lesson
-- per flush, appended by statement-level triggers (one INSERT … SELECT per
-- flusher statement, no per-row trigger, no change to the flusher) and
-- consumed by the rollup task, which deletes the rows it folded in in the
-- same transaction — so every change is counted exactly once, nothing is
-- rescanned, and a row of a transaction still open is simply not visible
-- yet (a cursor over a sequence could skip it). The table stays as small
-- as the last minute of changes.
CREATE TABLE progress_changes (
    id               bigserial PRIMARY KEY,
    organisation_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    lesson_id        uuid NOT NULL,
    -- The newest beat's time after the change.
    at               timestamptz NOT NULL,
    -- The first write of this learner × lesson (they started it).
    first_write      boolean NOT NULL DEFAULT false,
    -- A new viewing: the first write of this learner × lesson, or one more
    -- than 30 minutes after the previous beat that played something.
    new_view         boolean NOT NULL,
    -- Wall seconds played (added to watch_time_s) and unique media
    -- seconds gained (watched_s growth) by this change.
    watch_s          double precision NOT NULL,
    unique_s         double precision NOT NULL,
    -- This change completed the lesson.
    completed        boolean NOT NULL,
    -- The resume point moved back (a rewind) to here.
    rewind_to_s      double precision,
    duration_s       double precision NOT NULL,
    speed            real NOT NULL
);

CREATE FUNCTION lectern_progress_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO progress_changes (organisation_id, user_id, lesson_id, at, first_write, new_view,
                                  watch_s, unique_s, completed, rewind_to_s, duration_s, speed)
    SELECT n.organisation_id, n.user_id, n.lesson_id, n.last_beat_at, true,
           n.watched_s > 0 OR n.watch_time_s > 0, n.watch_time_s, n.watched_s,
           n.completed_at IS NOT NULL, NULL, n.duration_s, n.speed
    FROM new_rows n;
    RETURN NULL;
END $$;

CREATE FUNCTION lectern_progress_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO progress_changes (organisation_id, user_id, lesson_id, at, new_view, watch_s,
                                  unique_s, completed, rewind_to_s, duration_s, speed)
    SELECT n.organisation_id, n.user_id, n.lesson_id, n.last_beat_at,
           (n.watch_time_s > o.watch_time_s OR n.watched_s > o.watched_s)
               AND (n.last_beat_at - o.last_beat_at > interval '30 minutes'
                    OR (o.watched_s = 0 AND o.watch_time_s = 0)),
           greatest(n.watch_time_s - o.watch_time_s, 0),
           greatest(n.watched_s - o.watched_s, 0),
           n.completed_at IS NOT NULL AND o.completed_at IS NULL,
           CASE WHEN n.position_s < o.position_s - 5 AND n.last_beat_at > o.last_beat_at
                THEN n.position_s END,
           n.duration_s, n.speed
    FROM new_rows n JOIN old_rows o USING (user_id, lesson_id)
    WHERE n.watch_time_s <> o.watch_time_s
       OR n.watched_s <> o.watched_s
       OR (n.completed_at IS NOT NULL AND o.completed_at IS NULL)
       OR (n.position_s < o.position_s - 5 AND n.last_beat_at > o.last_beat_at);
    RETURN NULL;
END $$;

CREATE TRIGGER lesson_progress_inserted AFTER INSERT ON lesson_progress
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lectern_progress_inserted();
CREATE TRIGGER lesson_progress_updated AFTER UPDATE ON lesson_progress
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lectern_progress_updated();

-- Rollups. Hours and days are local to the organisation (`time_zone`),
-- stored as local timestamps/dates. Course, organisation and expert
-- figures are sums over their lessons' rows (views below); distinct
-- learners come from the per-learner table.
CREATE TABLE rollup_lesson_hourly (
    lesson_id        uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    hour             timestamp NOT NULL,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    course_id        uuid NOT NULL,
    views            integer NOT NULL,
    watch_s          double precision NOT NULL,
    unique_s         double precision NOT NULL,
    completions      integer NOT NULL,
    PRIMARY KEY (lesson_id, hour)
);
CREATE INDEX rollup_lesson_hourly_org ON rollup_lesson_hourly (organisation_id, hour);

CREATE TABLE rollup_lesson_daily (
    lesson_id        uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    day              date NOT NULL,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    course_id        uuid NOT NULL,
    views            integer NOT NULL,
    -- Learners who played this lesson this day.
    learners         integer NOT NULL,
    watch_s          double precision NOT NULL,
    -- Media seconds played (wall × speed): media − unique is re-watching.
    media_s          double precision NOT NULL,
    unique_s         double precision NOT NULL,
    completions      integer NOT NULL,
    PRIMARY KEY (lesson_id, day)
);
CREATE INDEX rollup_lesson_daily_org ON rollup_lesson_daily (organisation_id, day);
CREATE INDEX rollup_lesson_daily_course ON rollup_lesson_daily (course_id, day);

-- Per learner × lesson × day: transcripts, active learners, and the
-- distinct-learner counts (a learner is counted once per lesson and day
-- by the row's insertion).
CREATE TABLE rollup_learner_daily (
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day              date NOT NULL,
    lesson_id        uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    course_id        uuid NOT NULL,
    views            integer NOT NULL,
    watch_s          double precision NOT NULL,
    unique_s         double precision NOT NULL,
    completions      integer NOT NULL,
    PRIMARY KEY (user_id, day, lesson_id)
);
CREATE INDEX rollup_learner_daily_org ON rollup_learner_daily (organisation_id, day);
CREATE INDEX rollup_learner_daily_lesson ON rollup_learner_daily (lesson_id);

-- Per course × learner, all time: the course report (started, completed,
-- median watch time, average speed) without reading lesson_progress.
CREATE TABLE rollup_course_learners (
    course_id          uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organisation_id    uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    lessons_started    integer NOT NULL,
    lessons_completed  integer NOT NULL,
    -- Wall seconds played, media seconds played (wall × speed) and unique
    -- media seconds: average speed is media ÷ wall.
    watch_s            double precision NOT NULL,
    media_s            double precision NOT NULL,
    unique_s           double precision NOT NULL,
    first_at           timestamptz NOT NULL,
    last_at            timestamptz NOT NULL,
    PRIMARY KEY (course_id, user_id)
);
CREATE INDEX rollup_course_learners_user ON rollup_course_learners (user_id);
CREATE INDEX rollup_course_learners_org ON rollup_course_learners (organisation_id);

-- Each learner's newest beat: who is watching now (a beat in the last
-- minute), without reading lesson_progress.
CREATE TABLE rollup_online (
    user_id          uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    last_at          timestamptz NOT NULL
);
CREATE INDEX rollup_online_org ON rollup_online (organisation_id, last_at);

-- Where learners rewound to, per 1 % bin of a lesson: its most re-watched
-- moments.
CREATE TABLE rollup_rewinds (
    lesson_id  uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    bin        smallint NOT NULL CHECK (bin BETWEEN 0 AND 99),
    rewinds    integer NOT NULL,
    PRIMARY KEY (lesson_id, bin)
);

CREATE VIEW rollup_course_daily AS
    SELECT course_id, day, organisation_id, sum(views)::bigint AS views,
           sum(watch_s) AS watch_s, sum(unique_s) AS unique_s, sum(completions)::bigint AS completions
    FROM rollup_lesson_daily GROUP BY course_id, day, organisation_id;
CREATE VIEW rollup_course_hourly AS
    SELECT course_id, hour, organisation_id, sum(views)::bigint AS views,
           sum(watch_s) AS watch_s, sum(unique_s) AS unique_s, sum(completions)::bigint AS completions
    FROM rollup_lesson_hourly GROUP BY course_id, hour, organisation_id;
CREATE VIEW rollup_organisation_daily AS
    SELECT organisation_id, day, sum(views)::bigint AS views, sum(watch_s) AS watch_s,
           sum(unique_s) AS unique_s, sum(completions)::bigint AS completions
    FROM rollup_lesson_daily GROUP BY organisation_id, day;
CREATE VIEW rollup_organisation_hourly AS
    SELECT organisation_id, hour, sum(views)::bigint AS views, sum(watch_s) AS watch_s,
           sum(unique_s) AS unique_s, sum(completions)::bigint AS completions
    FROM rollup_lesson_hourly GROUP BY organisation_id, hour;
CREATE VIEW rollup_expert_daily AS
    SELECT ce.expert_id, r.day, r.organisation_id, sum(r.views)::bigint AS views,
           sum(r.watch_s) AS watch_s, sum(r.unique_s) AS unique_s,
           sum(r.completions)::bigint AS completions
    FROM rollup_lesson_daily r JOIN course_experts ce ON ce.course_id = r.course_id
    GROUP BY ce.expert_id, r.day, r.organisation_id;
CREATE VIEW rollup_expert_hourly AS
    SELECT ce.expert_id, r.hour, r.organisation_id, sum(r.views)::bigint AS views,
           sum(r.watch_s) AS watch_s, sum(r.unique_s) AS unique_s,
           sum(r.completions)::bigint AS completions
    FROM rollup_lesson_hourly r JOIN course_experts ce ON ce.course_id = r.course_id
    GROUP BY ce.expert_id, r.hour, r.organisation_id;

-- CME: the organisation's credit rule, and each course's designation.
CREATE TABLE credit_rules (
    organisation_id   uuid PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    credits_per_hour  double precision NOT NULL CHECK (credits_per_hour > 0 AND credits_per_hour <= 100),
    rounding_step     double precision NOT NULL CHECK (rounding_step >= 0.01 AND rounding_step <= 10),
    class_i_label     text NOT NULL CHECK (length(class_i_label) BETWEEN 1 AND 100),
    class_ii_label    text NOT NULL CHECK (length(class_ii_label) BETWEEN 1 AND 100),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE course_credit_designations (
    course_id        uuid PRIMARY KEY REFERENCES courses (id) ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    credit_class     smallint NOT NULL CHECK (credit_class IN (1, 2)),
    -- The project's cap: no learner earns more from this course.
    max_credits      double precision NOT NULL CHECK (max_credits > 0 AND max_credits <= 1000),
    project_code     text NOT NULL DEFAULT '' CHECK (length(project_code) <= 100),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Certificates as issued: what they state is frozen here (the course may
-- be renamed later; the certificate does not change). The learner's name
-- is personal data: sealed with the field keys, bound to the row.
CREATE TABLE certificates (
    id                uuid PRIMARY KEY,
    serial            text NOT NULL UNIQUE,
    organisation_id   uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    user_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    course_id         uuid REFERENCES courses (id) ON DELETE SET NULL,
    learner_name_ct   bytea NOT NULL,
    key_id            text NOT NULL,
    course_title      text NOT NULL,
    organisation_name text NOT NULL,
    credit_class      smallint NOT NULL,
    credit_label      text NOT NULL,
    credits           double precision NOT NULL,
    project_code      text NOT NULL,
    watched_s         double precision NOT NULL,
    issued_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, course_id)
);
CREATE INDEX certificates_by_org ON certificates (organisation_id, issued_at);

-- Exports run as background jobs: progress, then an object to download.
CREATE TABLE report_exports (
    id               uuid PRIMARY KEY,
    organisation_id  uuid REFERENCES organisations (id) ON DELETE CASCADE,
    requested_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    report           text NOT NULL,
    format           text NOT NULL CHECK (format IN ('csv', 'xlsx')),
    params           jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    rows_written     bigint NOT NULL DEFAULT 0,
    rows_total       bigint,
    object_key       text,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Moved by the worker while it writes; a running export whose worker
    -- stopped moving it (a crash) is taken again.
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX report_exports_queued ON report_exports (created_at) WHERE state = 'queued';
