-- Satisfaction surveys (issue #17, scope 4). An organisation's operators
-- define surveys; a survey's questions are single choice, multiple
-- choice, a scale or free text, and the choices are the operator's data
-- (`survey_options`), not an enum. Surveys are attached to courses; a
-- learner who completed a course answers each open survey attached to it
-- once. Results are aggregated per survey × course.
--
-- Versioning: a question is frozen (`frozen_at`) by the first response
-- submitted while it was live — whether that response answered it or
-- skipped it — and from then on its prompt, kind, options and scale never
-- change (the API refuses, and answers reference options with the
-- default NO ACTION, so a frozen option cannot be deleted under them).
-- An operator changes a running survey by retiring questions
-- (`retired_at`: no longer asked, results kept) and adding new ones.

CREATE TABLE surveys (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    -- draft: being built, not shown to learners; open: answered; closed:
    -- no more answers, results kept.
    state            text NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'open', 'closed')),
    created_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX surveys_by_org ON surveys (organisation_id, created_at DESC);

CREATE TABLE survey_questions (
    id          uuid PRIMARY KEY,
    survey_id   uuid NOT NULL REFERENCES surveys (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('single_choice', 'multiple_choice', 'scale', 'free_text')),
    prompt      text NOT NULL CHECK (length(prompt) BETWEEN 1 AND 500),
    required    boolean NOT NULL DEFAULT true,
    -- A scale's ends (whole numbers, 0–10) and their optional labels.
    scale_min   smallint CHECK (scale_min BETWEEN 0 AND 10),
    scale_max   smallint CHECK (scale_max BETWEEN 0 AND 10),
    min_label   text CHECK (length(min_label) <= 50),
    max_label   text CHECK (length(max_label) <= 50),
    frozen_at   timestamptz,
    retired_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'scale') = (scale_min IS NOT NULL AND scale_max IS NOT NULL)),
    CHECK (scale_min < scale_max),
    UNIQUE (survey_id, position)
);

CREATE TABLE survey_options (
    id           uuid PRIMARY KEY,
    question_id  uuid NOT NULL REFERENCES survey_questions (id) ON DELETE CASCADE,
    position     integer NOT NULL,
    label        text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    UNIQUE (question_id, position)
);

-- Which surveys a course shows at its completion.
CREATE TABLE course_surveys (
    course_id    uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    survey_id    uuid NOT NULL REFERENCES surveys (id) ON DELETE CASCADE,
    attached_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (course_id, survey_id)
);
CREATE INDEX course_surveys_by_survey ON course_surveys (survey_id);

-- One response per learner × survey × course; never edited. `id` is a
-- UUIDv7, so its order is the order of submission (keyset pages of free
-- text, the CSV export). A deleted account takes its responses with it,
-- like its posts.
CREATE TABLE survey_responses (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    survey_id        uuid NOT NULL REFERENCES surveys (id) ON DELETE CASCADE,
    course_id        uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    submitted_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (survey_id, course_id, user_id)
);
CREATE INDEX survey_responses_page ON survey_responses (survey_id, course_id, id);
CREATE INDEX survey_responses_by_user ON survey_responses (user_id);

-- One row per question a response answered: a scale's `value`, a free
-- text's `body` (plain text, never rendered as HTML), or neither for a
-- choice question (its choices are in `survey_choices`).
CREATE TABLE survey_answers (
    response_id  uuid NOT NULL REFERENCES survey_responses (id) ON DELETE CASCADE,
    question_id  uuid NOT NULL REFERENCES survey_questions (id),
    value        smallint CHECK (value BETWEEN 0 AND 10),
    body         text CHECK (length(body) BETWEEN 1 AND 2000),
    PRIMARY KEY (response_id, question_id)
);
CREATE INDEX survey_answers_by_question ON survey_answers (question_id, response_id);

CREATE TABLE survey_choices (
    response_id  uuid NOT NULL,
    question_id  uuid NOT NULL,
    option_id    uuid NOT NULL REFERENCES survey_options (id),
    PRIMARY KEY (response_id, option_id),
    FOREIGN KEY (response_id, question_id)
        REFERENCES survey_answers (response_id, question_id) ON DELETE CASCADE
);
CREATE INDEX survey_choices_by_option ON survey_choices (option_id);
