-- The audit trail is tamper-evident at its tail too (#16.11).
--
-- 1. Rows are chained with a keyed HMAC from here on: the key lives in
--    configuration, never in the database, so whoever can write the table
--    cannot re-chain rows they edited. `key_id` names the key; NULL marks
--    the unkeyed SHA-256 rows written before, which must all come first.
-- 2. The audit tables belong to `lectern_audit_owner`, a role nobody logs in
--    as. The role Lectern connects with may read and append, nothing else:
--    no UPDATE, DELETE or TRUNCATE. Retention goes through audit_purge(),
--    which runs as the owner and never removes rows younger than 180 days
--    (MLPS level 3 asks for six months).
-- The head of the chain is anchored outside the database by signed
-- checkpoints in object storage (identity/src/audit/checkpoint.rs).

ALTER TABLE audit_log ADD COLUMN key_id text;

-- Parallel migrations (one database per test) may race to create the role.
DO $$
BEGIN
    CREATE ROLE lectern_audit_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only audit_purge(), which runs as the owner, removes rows.
    IF TG_OP = 'DELETE' AND current_user = 'lectern_audit_owner' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

CREATE FUNCTION audit_purge(retention_days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    last_row record;
    gone bigint;
BEGIN
    IF retention_days IS NULL OR retention_days < 180 THEN
        RAISE EXCEPTION 'audit rows are kept at least 180 days (asked for %)', retention_days;
    END IF;
    -- The same lock the writers take (identity/src/audit/chain.rs CHAIN_LOCK).
    PERFORM pg_advisory_xact_lock(5495872949427979337);
    SELECT id, hash INTO last_row FROM audit_log
        WHERE at < now() - make_interval(days => retention_days)
        ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    DELETE FROM audit_log WHERE id <= last_row.id;
    GET DIAGNOSTICS gone = ROW_COUNT;
    UPDATE audit_anchor SET last_id = last_row.id, last_hash = last_row.hash;
    RETURN gone;
END;
$$;

-- Handing objects to a role needs membership of it, and the role needs
-- CREATE on the schema, unless the migrating role is a superuser; both are
-- given up again below. (A superuser skips this: concurrent GRANTs of one
-- membership would collide in pg_auth_members.)
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT lectern_audit_owner TO %I', current_user);
        EXECUTE format('GRANT CREATE ON SCHEMA %I TO lectern_audit_owner', current_schema());
    END IF;
END
$$;
ALTER TABLE audit_log OWNER TO lectern_audit_owner;
ALTER TABLE audit_anchor OWNER TO lectern_audit_owner;
ALTER FUNCTION audit_log_append_only() OWNER TO lectern_audit_owner;
ALTER FUNCTION audit_purge(integer) OWNER TO lectern_audit_owner;
REVOKE ALL ON audit_log, audit_anchor FROM PUBLIC;
GRANT SELECT, INSERT ON audit_log TO CURRENT_USER;
GRANT SELECT ON audit_anchor TO CURRENT_USER;
REVOKE ALL ON FUNCTION audit_purge(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_purge(integer) TO CURRENT_USER;
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM lectern_audit_owner', current_schema());
        EXECUTE format('REVOKE lectern_audit_owner FROM %I', current_user);
    END IF;
END
$$;
