-- The asset lifecycle and the durable job queue that drives it.
--
-- An asset is one uploaded source and everything made from it. Its status
-- moves uploaded → probing → transcoding → packaging → ready, or ends in
-- failed (with a stable error code) or cancelled. Every transition is kept
-- in asset_events with the worker and attempt that made it.

CREATE TABLE assets (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    status           text NOT NULL DEFAULT 'uploaded' CHECK (status IN
                       ('uploaded', 'probing', 'transcoding', 'packaging', 'ready', 'failed', 'cancelled')),
    title            text,
    source_key       text NOT NULL,
    profile          text NOT NULL DEFAULT 'default',
    priority         integer NOT NULL DEFAULT 0,
    progress         real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    duration_s       double precision,
    media_info       jsonb,
    error_code       text,
    error_message    text,
    -- Where the published ladder of the winning attempt lives; switched in
    -- the same transaction that marks the asset ready, so readers never see
    -- a mix of two attempts.
    output_prefix    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    ready_at         timestamptz
);
CREATE INDEX assets_by_org ON assets (organisation_id, created_at DESC);

CREATE TABLE asset_renditions (
    asset_id    uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('video', 'audio')),
    width       integer,
    height      integer,
    codecs      text,
    bandwidth   bigint,
    status      text NOT NULL CHECK (status IN ('encoding', 'ready')),
    progress    real NOT NULL DEFAULT 0,
    PRIMARY KEY (asset_id, name)
);

CREATE TABLE asset_events (
    id          bigserial PRIMARY KEY,
    asset_id    uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    from_status text,
    to_status   text NOT NULL,
    worker      text,
    attempt     integer,
    detail      jsonb
);
CREATE INDEX asset_events_by_asset ON asset_events (asset_id, id);

-- The queue: a job is claimed with FOR UPDATE SKIP LOCKED and held by a
-- lease that its worker renews; a job whose lease expired (the worker died)
-- is claimable again. attempts counts claims, so each claim has a unique
-- attempt number that names its output prefix.
CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('transcode')),
    asset_id          uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    priority          integer NOT NULL DEFAULT 0,
    state             text NOT NULL DEFAULT 'queued' CHECK (state IN
                        ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts          integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 5,
    run_after         timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_error_code   text,
    last_error_message text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_claimable ON jobs (priority DESC, run_after) WHERE state IN ('queued', 'running');
CREATE UNIQUE INDEX jobs_one_live_per_asset ON jobs (asset_id, kind) WHERE state IN ('queued', 'running');

-- Ingest only records assets; the pipeline's queue gets a job for each new
-- one here, in the same transaction, so an asset never exists without the
-- job that will finish it and ingest needs no knowledge of jobs.
CREATE FUNCTION enqueue_transcode() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs (id, kind, asset_id, priority)
    VALUES (gen_random_uuid(), 'transcode', NEW.id, NEW.priority);
    INSERT INTO asset_events (asset_id, to_status) VALUES (NEW.id, NEW.status);
    RETURN NEW;
END $$;

CREATE TRIGGER assets_enqueue_transcode AFTER INSERT ON assets
    FOR EACH ROW WHEN (NEW.status = 'uploaded') EXECUTE FUNCTION enqueue_transcode();

-- Fast first playback: while the ladder encodes, the lowest rung (and the
-- audio) is published progressively under the attempt's prefix as growing
-- EVENT playlists; playable_prefix points at it from the first segment on.
ALTER TABLE assets
    ADD COLUMN playable_prefix   text,
    ADD COLUMN first_playable_at timestamptz;
