-- Live lectures (issue #20): a lesson of kind `live` with a schedule, an
-- organiser and one live event whose stream key publishers present over
-- RTMP (at `publish`) or SRT (in the stream id). The key is random, shown
-- once, and stored only as its SHA-256: a 256-bit random secret needs no
-- slow hash, and the digest is what the ingest servers look up.
--
-- The event owns one asset (status `transcoding` while live, so the
-- pipeline's queue never claims it; no source object exists) whose
-- `playable_prefix` names the live ladder from the first segment on and
-- whose `output_prefix` becomes the same prefix when the replay, the live
-- segments under VOD playlists, is published.

ALTER TABLE lessons
    ADD COLUMN kind text NOT NULL DEFAULT 'video' CHECK (kind IN ('video', 'live'));

CREATE TABLE live_events (
    id                  uuid PRIMARY KEY,
    organisation_id     uuid NOT NULL REFERENCES organisations (id),
    lesson_id           uuid NOT NULL UNIQUE REFERENCES lessons (id) ON DELETE CASCADE,
    asset_id            uuid NOT NULL UNIQUE REFERENCES assets (id),
    -- Who runs the lecture: the person who scheduled it (NULL for a partner key).
    organiser_id        uuid REFERENCES users (id) ON DELETE SET NULL,
    scheduled_start     timestamptz NOT NULL,
    scheduled_end       timestamptz CHECK (scheduled_end IS NULL OR scheduled_end > scheduled_start),
    state               text NOT NULL DEFAULT 'scheduled'
                          CHECK (state IN ('scheduled', 'live', 'ended', 'replay_ready')),
    stream_key_sha256   bytea NOT NULL UNIQUE CHECK (length(stream_key_sha256) = 32),
    key_rotated_at      timestamptz,
    -- Per event; NULL takes the server's setting.
    dvr_window_s        integer CHECK (dvr_window_s BETWEEN 60 AND 86400),
    reconnect_window_s  integer CHECK (reconnect_window_s BETWEEN 0 AND 1800),
    -- Publishing connections so far: each one's segments carry its number.
    connections         integer NOT NULL DEFAULT 0,
    -- Set while the publisher is away (within the reconnect window).
    disconnected_at     timestamptz,
    started_at          timestamptz,
    ended_at            timestamptz,
    replay_ready_at     timestamptz,
    -- Media seconds published (sum of the replay's segments).
    duration_s          double precision,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX live_events_by_org ON live_events (organisation_id, scheduled_start DESC);
CREATE INDEX live_events_away ON live_events (disconnected_at) WHERE state = 'live';

-- What happened to an event, for organisers: connections, refusals
-- (a wrong codec), disconnects, the end and the replay.
CREATE TABLE live_event_log (
    id        bigserial PRIMARY KEY,
    event_id  uuid NOT NULL REFERENCES live_events (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind      text NOT NULL,
    detail    jsonb
);
CREATE INDEX live_event_log_by_event ON live_event_log (event_id, id);
