-- The EBU R128 loudness of an asset's audio as the transcode measured it
-- (after the downmix to the rendition's channels), and the gain its audio
-- rendition got (issue #22 §4). `loudness_outcome` is NULL until a
-- transcode has measured (no audio, or encoded before this existed).
-- Expand only: nullable columns the previous release never reads.
ALTER TABLE assets
    ADD COLUMN loudness_integrated_lufs double precision,
    ADD COLUMN loudness_range_lu double precision,
    ADD COLUMN loudness_true_peak_dbtp double precision,
    ADD COLUMN loudness_target_lufs double precision,
    ADD COLUMN loudness_true_peak_max_dbtp double precision,
    ADD COLUMN loudness_gain_db double precision,
    ADD COLUMN loudness_outcome text
        CHECK (loudness_outcome IN ('normalised', 'peak_limited', 'gain_limited', 'silent', 'off'));
