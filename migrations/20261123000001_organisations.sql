-- Organisations are the tenants of one Lectern deployment (a medical
-- association, a university's alumni office, an SME service centre). Every
-- later table hangs off one; nothing is shared across them by accident.
CREATE TABLE organisations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
