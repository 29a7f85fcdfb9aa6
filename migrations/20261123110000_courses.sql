-- The smallest real course: enough for content admins to create one and
-- for deleting it to be the critical, step-up-guarded operation it is.
-- The catalogue (chapters, lessons, disciplines, states) extends this table.
CREATE TABLE courses (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    title            text NOT NULL CHECK (length(title) BETWEEN 1 AND 300),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX courses_by_org ON courses (organisation_id, created_at DESC);
