-- Learners rate courses 1–5 (one rating per learner, replaced on change);
-- search sorts by the average.
CREATE TABLE course_ratings (
    course_id   uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating      smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (course_id, user_id)
);

-- "Most watched" counts learners per lesson; without this index every
-- count would scan all progress rows. lesson_id never changes on the
-- flusher's updates, so they stay HOT.
CREATE INDEX lesson_progress_by_lesson ON lesson_progress (lesson_id);
