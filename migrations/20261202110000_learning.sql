-- What learners did: resume points, watched intervals and preferred speed,
-- written in batches by the progress flusher (never once per heartbeat),
-- and what the player experienced (QoE events).

-- The union of two interval lists [[from, to], …] (seconds), sorted and
-- disjoint; intervals closer than `gap` seconds are joined, because
-- consecutive heartbeats rarely meet to the microsecond. The flusher merges
-- what the absorber saw into what is stored with it, so a batch from any
-- API node, repeated or late, only ever grows the union.
CREATE FUNCTION lectern_merge_intervals(a jsonb, b jsonb, gap double precision DEFAULT 0.25)
RETURNS jsonb LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH iv AS (
        SELECT (e ->> 0)::float8 AS f, (e ->> 1)::float8 AS t
        FROM jsonb_array_elements(coalesce(a, '[]') || coalesce(b, '[]')) AS e
    ), ordered AS (
        SELECT f, t,
               max(t) OVER (ORDER BY f, t ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
        FROM iv
    ), grouped AS (
        SELECT f, t,
               sum(CASE WHEN reach IS NULL OR f > reach + gap THEN 1 ELSE 0 END)
                   OVER (ORDER BY f, t ROWS UNBOUNDED PRECEDING) AS grp
        FROM ordered
    )
    SELECT coalesce(jsonb_agg(jsonb_build_array(f, t) ORDER BY f), '[]'::jsonb)
    FROM (SELECT min(f) AS f, max(t) AS t FROM grouped GROUP BY grp) AS merged
$$;

-- Seconds covered by a merged interval list.
CREATE FUNCTION lectern_intervals_total(a jsonb)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum((e ->> 1)::float8 - (e ->> 0)::float8), 0)
    FROM jsonb_array_elements(coalesce(a, '[]')) AS e
$$;

-- One row per learner × lesson. watched holds the merged intervals
-- [[from, to], …] in seconds, sorted and disjoint; watched_s their total
-- and duration_s the lesson's duration when last written, so completion
-- (watched_s / duration_s, complete at ≥ 90 %) needs no join.
CREATE TABLE lesson_progress (
    user_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lesson_id          uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    organisation_id    uuid NOT NULL REFERENCES organisations (id),
    position_s         double precision NOT NULL DEFAULT 0 CHECK (position_s >= 0),
    speed              real NOT NULL DEFAULT 1 CHECK (speed BETWEEN 0.25 AND 4),
    watched            jsonb NOT NULL DEFAULT '[]',
    watched_s          double precision NOT NULL DEFAULT 0,
    duration_s         double precision NOT NULL DEFAULT 0,
    -- Wall-clock seconds spent playing (media seconds ÷ speed).
    watch_time_s       double precision NOT NULL DEFAULT 0,
    completed_at       timestamptz,
    -- The time of the newest heartbeat applied (the client's `sent_at`,
    -- never later than its arrival), so late or duplicated beats never
    -- move the resume point backwards.
    last_beat_at       timestamptz NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, lesson_id)
);
CREATE INDEX lesson_progress_recent ON lesson_progress (user_id, last_beat_at DESC);

CREATE TABLE learner_preferences (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    speed      real NOT NULL DEFAULT 1 CHECK (speed BETWEEN 0.25 AND 4),
    -- Beat time of the speed, so an older beat flushed late never wins.
    speed_at   timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What the player experienced. Low rate (a few per playback), inserted
-- directly. user_id is kept for support ("my video stalls"), set NULL
-- when the person is deleted so aggregates survive.
CREATE TABLE qoe_events (
    id               bigserial PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    user_id          uuid REFERENCES users (id) ON DELETE SET NULL,
    lesson_id        uuid REFERENCES lessons (id) ON DELETE SET NULL,
    session_id       uuid,
    kind             text NOT NULL CHECK (kind IN ('startup', 'rebuffer', 'bitrate_switch', 'fatal_error')),
    startup_ms       integer CHECK (startup_ms BETWEEN 0 AND 600000),
    rebuffer_count   integer CHECK (rebuffer_count BETWEEN 0 AND 100000),
    rebuffer_ms      integer CHECK (rebuffer_ms BETWEEN 0 AND 86400000),
    from_bitrate     integer CHECK (from_bitrate >= 0),
    to_bitrate       integer CHECK (to_bitrate >= 0),
    error_code       text CHECK (length(error_code) <= 100),
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX qoe_events_by_org ON qoe_events (organisation_id, at DESC);
