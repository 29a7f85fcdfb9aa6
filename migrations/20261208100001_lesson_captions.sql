-- Captions per lesson and language (catalogue::captions). The segmented
-- WebVTT lives in object storage under `prefix` (below the asset's out/),
-- written before the row and never changed: a replacement is a new prefix.
-- The media origin reads this table when it serves a lesson's master
-- playlist, to list the SUBTITLES group.
CREATE TABLE lesson_captions (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    lesson_id        uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    -- BCP-47 in canonical case (zh-CN, en): one track per language.
    language         text NOT NULL CHECK (length(language) BETWEEN 2 AND 35),
    label            text NOT NULL CHECK (length(label) BETWEEN 1 AND 40 AND position('"' in label) = 0),
    is_default       boolean NOT NULL DEFAULT false,
    source_format    text NOT NULL CHECK (source_format IN ('webvtt', 'srt')),
    cue_count        integer NOT NULL CHECK (cue_count > 0),
    source_bytes     integer NOT NULL CHECK (source_bytes > 0),
    -- The video the cues were segmented against; a lesson given another
    -- video keeps the row, which is not played until replaced.
    asset_id         uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    prefix           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lesson_id, language)
);
-- At most one track a player turns on by itself.
CREATE UNIQUE INDEX lesson_captions_one_default ON lesson_captions (lesson_id) WHERE is_default;
CREATE INDEX lesson_captions_by_org ON lesson_captions (organisation_id);
