-- Optional HLS AES-128 encryption per asset (api::origin::encryption).
-- Objects at rest stay clear; the origin encrypts media segments on the fly
-- with this key, so encryption can be turned on without re-transcoding.
-- The key is 16 random bytes sealed with the field keys (AES-256-GCM, bound
-- to the asset row and this column, like webhook secrets); the id is public
-- (it appears in media URLs so a CDN never mixes clear and encrypted copies)
-- and changes with every new key. NULL/NULL = served clear.
ALTER TABLE assets
    ADD COLUMN encryption_key_id     text,
    ADD COLUMN encryption_key_sealed bytea,
    ADD CONSTRAINT assets_encryption_key_whole
        CHECK ((encryption_key_id IS NULL) = (encryption_key_sealed IS NULL));
