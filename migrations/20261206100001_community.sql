-- Community (issue #17): reviews, lesson comments, questions to experts,
-- moderation, and the reason a course review was sent back.
--
-- Every post (a review, a comment, a question, an answer) carries a
-- moderation `state`: `published` (everyone in the organisation sees it),
-- `pending` (awaiting a moderator: pre-moderation, a listed word, or
-- enough reports), `rejected` (a moderator refused it, with a reason the
-- author sees) or `hidden` (a moderator took it down). Only the author
-- and moderators see a post that is not published. User text is stored
-- as text and returned as JSON strings, never as HTML.

-- Reviews extend the ratings table in place (its name, key and `rating`
-- column stay), so the catalogue's averages and other readers keep
-- working; they now count published reviews only.
ALTER TABLE course_ratings
    ADD COLUMN id            uuid NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN body          text NOT NULL DEFAULT '' CHECK (length(body) <= 5000),
    ADD COLUMN state         text NOT NULL DEFAULT 'published'
        CHECK (state IN ('pending', 'published', 'rejected', 'hidden')),
    ADD COLUMN helpful_count integer NOT NULL DEFAULT 0 CHECK (helpful_count >= 0),
    ADD COLUMN created_at    timestamptz NOT NULL DEFAULT now();
UPDATE course_ratings SET created_at = updated_at;
ALTER TABLE course_ratings ADD CONSTRAINT course_ratings_id_key UNIQUE (id);
-- The two sorts of a course's reviews, each a keyset walk of one index.
CREATE INDEX course_reviews_newest ON course_ratings (course_id, created_at DESC, id DESC)
    WHERE state = 'published';
CREATE INDEX course_reviews_helpful ON course_ratings (course_id, helpful_count DESC, id DESC)
    WHERE state = 'published';

-- "This review helped me": one vote per learner per review, never on
-- their own (checked by the API); `helpful_count` is kept in the vote's
-- transaction.
CREATE TABLE review_votes (
    review_id  uuid NOT NULL REFERENCES course_ratings (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (review_id, user_id)
);
CREATE INDEX review_votes_by_user ON review_votes (user_id);

-- Comments on a lesson, one level of replies. `id` is a UUIDv7, so its
-- order is the order of posting and a page is a keyset walk of
-- `lesson_comments_page` backwards from a cursor id: the first page of a
-- lesson with 100k comments reads ~20 index entries.
CREATE TABLE lesson_comments (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    lesson_id        uuid NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    parent_id        uuid REFERENCES lesson_comments (id) ON DELETE CASCADE,
    author_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body             text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    -- A moment of the lesson's video the comment is about (seconds).
    at_s             double precision CHECK (at_s >= 0),
    state            text NOT NULL CHECK (state IN ('pending', 'published', 'rejected', 'hidden')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    edited_at        timestamptz
);
CREATE INDEX lesson_comments_page ON lesson_comments (lesson_id, id DESC) WHERE parent_id IS NULL;
CREATE INDEX lesson_comments_replies ON lesson_comments (parent_id, id) WHERE parent_id IS NOT NULL;
CREATE INDEX lesson_comments_by_author ON lesson_comments (author_id);

-- Consultation: a learner asks about a lesson (the course's experts
-- answer) or asks one expert directly.
CREATE TABLE questions (
    id                 uuid PRIMARY KEY,
    organisation_id    uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    course_id          uuid REFERENCES courses (id) ON DELETE CASCADE,
    lesson_id          uuid REFERENCES lessons (id) ON DELETE SET NULL,
    expert_id          uuid REFERENCES experts (id) ON DELETE SET NULL,
    author_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body               text NOT NULL CHECK (length(body) BETWEEN 1 AND 5000),
    state              text NOT NULL CHECK (state IN ('pending', 'published', 'rejected', 'hidden')),
    accepted_answer_id uuid,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (course_id IS NOT NULL OR expert_id IS NOT NULL)
);
CREATE INDEX questions_by_course ON questions (course_id, created_at);
CREATE INDEX questions_by_expert ON questions (expert_id, created_at);
CREATE INDEX questions_by_author ON questions (author_id, created_at DESC);

CREATE TABLE answers (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    question_id      uuid NOT NULL REFERENCES questions (id) ON DELETE CASCADE,
    author_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expert_id        uuid REFERENCES experts (id) ON DELETE SET NULL,
    body             text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    state            text NOT NULL CHECK (state IN ('pending', 'published', 'rejected', 'hidden')),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX answers_by_question ON answers (question_id, created_at);
ALTER TABLE questions ADD CONSTRAINT questions_accepted_answer
    FOREIGN KEY (accepted_answer_id) REFERENCES answers (id) ON DELETE SET NULL;

-- How an organisation moderates: `pre` (先审后发: nothing shows before a
-- moderator approves it) or `post` (posts show at once; reports and
-- listed words bring them to the queue). `words_version` moves with
-- every change of the sensitive-word list, so each API node rebuilds its
-- cached matcher when, and only when, the list changed.
CREATE TABLE community_settings (
    organisation_id  uuid PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    moderation       text NOT NULL DEFAULT 'post' CHECK (moderation IN ('pre', 'post')),
    report_threshold integer NOT NULL DEFAULT 3 CHECK (report_threshold BETWEEN 1 AND 1000),
    words_version    bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The sensitive-word list: `word` as the admin typed it, `folded` as the
-- matcher compares it (NFKC, lower case, letters and digits only).
CREATE TABLE sensitive_words (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    word             text NOT NULL CHECK (length(word) BETWEEN 1 AND 100),
    folded           text NOT NULL CHECK (length(folded) BETWEEN 1 AND 100),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organisation_id, folded)
);

-- The moderation queue: one open case per post at a time. A case records
-- why it was opened, which listed words matched, and the decision.
CREATE TABLE moderation_cases (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    post_kind        text NOT NULL CHECK (post_kind IN ('review', 'comment', 'question', 'answer')),
    post_id          uuid NOT NULL,
    cause            text NOT NULL CHECK (cause IN ('pre_moderation', 'sensitive_word', 'reported')),
    matched          text[] NOT NULL DEFAULT '{}',
    opened_at        timestamptz NOT NULL DEFAULT now(),
    decided_at       timestamptz,
    decision         text CHECK (decision IN ('approved', 'rejected', 'hidden')),
    reason           text CHECK (length(reason) <= 500),
    decided_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    CHECK ((decided_at IS NULL) = (decision IS NULL))
);
CREATE UNIQUE INDEX moderation_cases_open ON moderation_cases (post_kind, post_id) WHERE decided_at IS NULL;
CREATE INDEX moderation_cases_queue ON moderation_cases (organisation_id, opened_at) WHERE decided_at IS NULL;
CREATE INDEX moderation_cases_decided ON moderation_cases (organisation_id, decided_at DESC) WHERE decided_at IS NOT NULL;
CREATE INDEX moderation_cases_by_post ON moderation_cases (post_kind, post_id);

-- Learners' reports: one per person per post.
CREATE TABLE post_reports (
    post_kind        text NOT NULL CHECK (post_kind IN ('review', 'comment', 'question', 'answer')),
    post_id          uuid NOT NULL,
    reporter_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    reason           text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (post_kind, post_id, reporter_id)
);

-- A course review's outcome: a rejection carries the reason its experts
-- and admins see on the course.
ALTER TABLE courses
    ADD COLUMN review_outcome text CHECK (review_outcome IN ('published', 'rejected')),
    ADD COLUMN review_reason  text CHECK (length(review_reason) <= 2000),
    ADD COLUMN reviewed_at    timestamptz;
