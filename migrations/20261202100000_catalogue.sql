-- The catalogue and what learners did with it.
--
-- Disciplines (学科) form a tree per organisation. A course is one
-- resource — a video course, a clinical case, a guideline or a live
-- replay — with ordered chapters and lessons; a lesson plays one asset.
-- Publication state lives on the course: a lesson is watchable when its
-- course is published and its asset is playable.

CREATE TABLE disciplines (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    parent_id        uuid REFERENCES disciplines (id) ON DELETE RESTRICT,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    position         integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX disciplines_unique_name
    ON disciplines (organisation_id, coalesce(parent_id, '00000000-0000-0000-0000-000000000000'::uuid), name);

CREATE TABLE experts (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    -- The expert's own account, when they have one (invited experts do).
    user_id          uuid REFERENCES users (id) ON DELETE SET NULL,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    title            text NOT NULL DEFAULT '',
    bio              text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX experts_by_org ON experts (organisation_id, name);

ALTER TABLE courses
    ADD COLUMN description   text NOT NULL DEFAULT '' CHECK (length(description) <= 20000),
    ADD COLUMN resource_type text NOT NULL DEFAULT 'video_course'
        CHECK (resource_type IN ('video_course', 'clinical_case', 'guideline', 'live_replay')),
    ADD COLUMN discipline_id uuid REFERENCES disciplines (id) ON DELETE SET NULL,
    ADD COLUMN state         text NOT NULL DEFAULT 'draft'
        CHECK (state IN ('draft', 'in_review', 'published', 'unpublished')),
    ADD COLUMN published_at  timestamptz;
CREATE INDEX courses_published ON courses (organisation_id, published_at DESC) WHERE state = 'published';

CREATE TABLE course_experts (
    course_id  uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    expert_id  uuid NOT NULL REFERENCES experts (id) ON DELETE CASCADE,
    position   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (course_id, expert_id)
);
CREATE INDEX course_experts_by_expert ON course_experts (expert_id);

CREATE TABLE course_tags (
    course_id  uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    tag        text NOT NULL CHECK (length(tag) BETWEEN 1 AND 50),
    PRIMARY KEY (course_id, tag)
);
CREATE INDEX course_tags_by_tag ON course_tags (tag);

CREATE TABLE chapters (
    id         uuid PRIMARY KEY,
    course_id  uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    position   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chapters_by_course ON chapters (course_id, position);

CREATE TABLE lessons (
    id               uuid PRIMARY KEY,
    -- Denormalised from the course so every learner query scopes by index.
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    course_id        uuid NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    chapter_id       uuid REFERENCES chapters (id) ON DELETE CASCADE,
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    description      text NOT NULL DEFAULT '' CHECK (length(description) <= 20000),
    position         integer NOT NULL DEFAULT 0,
    asset_id         uuid REFERENCES assets (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lessons_by_course ON lessons (course_id, chapter_id, position);
CREATE INDEX lessons_by_asset ON lessons (asset_id);
CREATE INDEX lessons_by_org ON lessons (organisation_id);

-- The search document of each lesson: its own title and description plus
-- its course's title, description, tags, experts, type and discipline,
-- segmented by the API (jieba for Chinese, lowercase words for English)
-- and stored with weights A/B/C under the `simple` configuration, so
-- PostgreSQL never has to understand Chinese. The API rewrites it in the
-- same transaction as every change that feeds it.
ALTER TABLE lessons ADD COLUMN search_doc tsvector NOT NULL DEFAULT '';

-- What search filters on, copied from the course onto each lesson so a
-- query over a third of the catalogue reads one table and no join: the
-- course's publication (state = 'published' and when), type and
-- discipline. Triggers keep the copy in the same transaction as the
-- course or lesson change, whoever writes it (the API, the demo seeder,
-- tests' fixtures), so search never shows a lesson whose course has just
-- been unpublished.
ALTER TABLE lessons
    ADD COLUMN published     boolean NOT NULL DEFAULT false,
    ADD COLUMN published_at  timestamptz,
    ADD COLUMN resource_type text NOT NULL DEFAULT 'video_course',
    ADD COLUMN discipline_id uuid;

CREATE FUNCTION lessons_copy_course() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT c.state = 'published', c.published_at, c.resource_type, c.discipline_id
      INTO NEW.published, NEW.published_at, NEW.resource_type, NEW.discipline_id
      FROM courses c WHERE c.id = NEW.course_id;
    RETURN NEW;
END $$;
CREATE TRIGGER lessons_copy_course BEFORE INSERT OR UPDATE OF course_id ON lessons
    FOR EACH ROW EXECUTE FUNCTION lessons_copy_course();

CREATE FUNCTION courses_copy_to_lessons() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lessons
       SET published = NEW.state = 'published', published_at = NEW.published_at,
           resource_type = NEW.resource_type, discipline_id = NEW.discipline_id
     WHERE course_id = NEW.id;
    RETURN NULL;
END $$;
-- Also fires for ON DELETE SET NULL of a course's discipline.
CREATE TRIGGER courses_copy_to_lessons AFTER UPDATE OF state, published_at, resource_type, discipline_id ON courses
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR OLD.published_at IS DISTINCT FROM NEW.published_at
          OR OLD.resource_type IS DISTINCT FROM NEW.resource_type
          OR OLD.discipline_id IS DISTINCT FROM NEW.discipline_id)
    EXECUTE FUNCTION courses_copy_to_lessons();

-- Only published lessons are ever searched. The GIN index finds the
-- matches of selective words; the B-tree walks an organisation's lessons
-- newest first, which answers `sort=newest` and the bounded candidate set
-- that relevance ranks (see api/src/search) without visiting every match
-- of a broad word.
CREATE INDEX lessons_search ON lessons USING gin (search_doc) WHERE published;
CREATE INDEX lessons_published_recent ON lessons (organisation_id, published_at DESC, id) WHERE published;
CREATE INDEX courses_by_discipline ON courses (discipline_id);
