-- A pull outlives the process that runs it. The full URL (credentials and
-- a presigned query included) is kept sealed with the field keys, so any
-- node can resume a pull whose heartbeat stopped; `attempt` fences the
-- attempts: only the newest may heartbeat, complete or fail the pull.
ALTER TABLE pulls
    ADD COLUMN source_url_sealed bytea,
    ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1);
-- The resumer's scan: silent pulls, oldest first.
CREATE INDEX pulls_pulling ON pulls (updated_at) WHERE state = 'pulling';
