-- Resumable (tus) uploads in flight. The row is the upload's durable state:
-- `received` is only ever advanced after the bytes it covers are durably in
-- storage, and `storage` is the storage crate's resumable-upload handle for
-- exactly those bytes, so any API node can continue an upload after a
-- restart. The id becomes the asset id when the upload completes.
CREATE TABLE uploads (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    length           bigint NOT NULL CHECK (length >= 0),
    received         bigint NOT NULL DEFAULT 0 CHECK (received BETWEEN 0 AND length),
    -- Validated tus metadata (filename, title, course/lesson references),
    -- and the raw header echoed back on HEAD as the protocol asks.
    metadata         jsonb NOT NULL DEFAULT '{}',
    metadata_header  text,
    storage          jsonb NOT NULL,
    -- receiving → completing (all bytes stored, asset not yet recorded)
    -- → completed | rejected (not media); or terminated / expired.
    state            text NOT NULL DEFAULT 'receiving' CHECK (state IN
                       ('receiving', 'completing', 'completed', 'rejected', 'terminated', 'expired')),
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- Quota checks count an organisation's live uploads.
CREATE INDEX uploads_live_by_org ON uploads (organisation_id) WHERE state IN ('receiving', 'completing');
-- The expiry sweep and crash recovery of completions.
CREATE INDEX uploads_unfinished_by_expiry ON uploads (expires_at) WHERE state IN ('receiving', 'completing');
