-- Chunked parallel encoding of long sources.
--
-- A long source's transcode job splits the video into keyframe-aligned
-- chunks and becomes the parent of one `encode_part` job per chunk plus one
-- for the audio, poster and storyboard of the whole source. The parts run on
-- any worker like any job (same leases, retries and backoff) and write under
-- the parent attempt's prefix; the parent waits, not leased, until the last
-- part's success re-queues it in the same transaction to stitch the parts'
-- playlists into one ladder and switch the asset to ready.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('transcode', 'encode_part'));
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN
    ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled'));

ALTER TABLE jobs
    -- The transcode job a part belongs to.
    ADD COLUMN parent_id uuid REFERENCES jobs (id) ON DELETE CASCADE,
    -- What the job does beyond its kind: a part's chunk and scope, or a
    -- parent's stitch stage (NULL: a transcode job not yet split).
    ADD COLUMN spec      jsonb,
    -- What a finished part produced: its renditions' uploaded files.
    ADD COLUMN result    jsonb,
    -- 0–100 while running; the asset's progress is the parts' weighted mean.
    ADD COLUMN progress  real NOT NULL DEFAULT 0;

CREATE INDEX jobs_by_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;

-- One live transcode per asset; its parts are many.
DROP INDEX jobs_one_live_per_asset;
CREATE UNIQUE INDEX jobs_one_live_transcode_per_asset ON jobs (asset_id)
    WHERE kind = 'transcode' AND state IN ('queued', 'running', 'waiting');
