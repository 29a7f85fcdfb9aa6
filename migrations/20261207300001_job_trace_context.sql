-- Trace context from the request that queued a job to the worker that runs
-- it (W3C `traceparent`, `lectern_telemetry`): one trace shows an upload
-- and its transcode. Expand only: a nullable column, and the enqueue
-- trigger reading a transaction-local setting the previous release never
-- sets (so its jobs get NULL, as before).
ALTER TABLE jobs ADD COLUMN traceparent text
    CHECK (traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');

-- `lectern_assets::create` sets `lectern.traceparent` (is_local) in the
-- statement that inserts the asset; anything malformed is dropped rather
-- than failing the asset's insert.
CREATE OR REPLACE FUNCTION enqueue_transcode() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent text := nullif(current_setting('lectern.traceparent', true), '');
BEGIN
    IF parent !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$' THEN
        parent := NULL;
    END IF;
    INSERT INTO jobs (id, kind, asset_id, priority, traceparent)
    VALUES (gen_random_uuid(), 'transcode', NEW.id, NEW.priority, parent);
    INSERT INTO asset_events (asset_id, to_status) VALUES (NEW.id, NEW.status);
    RETURN NEW;
END $$;
