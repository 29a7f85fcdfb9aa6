-- URL pulls: a partner names a URL, Lectern downloads it. The row is what
-- the partner polls; its id becomes the asset's id when the download has
-- been stored, in the same transaction that marks it completed. A `pulling`
-- row whose heartbeat (updated_at) stops belongs to a process that died and
-- is reported as failed with `pull_interrupted`.
CREATE TABLE pulls (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    -- Redacted: no credentials, no query string (presigned URLs carry secrets).
    source_url       text NOT NULL,
    title            text,
    profile          text NOT NULL,
    state            text NOT NULL DEFAULT 'pulling' CHECK (state IN ('pulling', 'completed', 'failed')),
    received_bytes   bigint NOT NULL DEFAULT 0 CHECK (received_bytes >= 0),
    error_code       text,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'failed') = (error_code IS NOT NULL))
);
CREATE INDEX pulls_by_org ON pulls (organisation_id, created_at DESC);

-- Recording drops: objects a live platform writes under a watched prefix.
-- Each (key, etag) is taken exactly once: the row is inserted in the same
-- transaction that creates the asset, and the primary key makes a second
-- watcher (another node, or this one after a restart) insert nothing.
-- A new version of the same key (another ETag) is a new recording.
CREATE TABLE drops (
    key              text NOT NULL,
    etag             text NOT NULL,
    size             bigint NOT NULL CHECK (size >= 0),
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    -- NULL when the object was not media (or its asset was deleted later:
    -- the drop stays recorded so it is never taken again).
    -- Checked at commit, so a watcher claims the drop before creating the asset.
    asset_id         uuid REFERENCES assets (id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED,
    outcome          text NOT NULL CHECK (outcome IN ('asset', 'not_media')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, etag)
);
