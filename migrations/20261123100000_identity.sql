-- Identity: users, sessions, partner API keys, step-up, invitations,
-- login throttling, the hash-chained audit log and security alerts.
--
-- Personal data is never stored in plain text: `*_ct` columns hold
-- AES-256-GCM ciphertext (key id + nonce + sealed bytes) made with keys that
-- live in configuration, and `email_bidx` is a keyed HMAC of the normalised
-- email so sign-in by email is an indexed equality lookup.

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    -- NULL only for a global super admin.
    org_id          uuid REFERENCES organisations (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('learner', 'expert', 'partner', 'content_admin', 'super_admin')),
    email_ct        bytea NOT NULL,
    email_bidx      bytea NOT NULL UNIQUE,
    phone_ct        bytea,
    real_name_ct    bytea,
    id_number_ct    bytea,
    totp_secret_ct  bytea,
    totp_enabled    boolean NOT NULL DEFAULT false,
    -- The last TOTP time step accepted, so a code is never accepted twice.
    totp_last_step  bigint,
    -- The field key every ciphertext of this row was sealed with; rotation
    -- re-encrypts rows whose key is not the active one.
    key_id          text NOT NULL,
    password_hash   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (org_id IS NOT NULL OR role = 'super_admin')
);
CREATE INDEX users_org ON users (org_id);
CREATE INDEX users_key_id ON users (key_id);

CREATE TABLE sessions (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- SHA-256 of the bearer token: the token itself is never stored.
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    ip          text,
    user_agent  text
);
CREATE INDEX sessions_user ON sessions (user_id);

-- A step-up grants one critical operation within a few minutes, bound to
-- the session that performed it.
CREATE TABLE step_up_grants (
    id          uuid PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    method      text NOT NULL CHECK (method IN ('totp', 'code')),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX step_up_grants_session ON step_up_grants (session_id);

-- One-time codes sent through the notifier, stored as SHA-256.
CREATE TABLE step_up_codes (
    id          uuid PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    code_hash   bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    attempts    int NOT NULL DEFAULT 0
);
CREATE INDEX step_up_codes_session ON step_up_codes (session_id);

CREATE TABLE partner_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    name        text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE invitations (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    email_ct     bytea NOT NULL,
    email_bidx   bytea NOT NULL,
    key_id       text NOT NULL,
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invitations_key_id ON invitations (key_id);

-- Failed sign-ins per subject (`email:<blind index>` or `ip:<address>`),
-- shared by every API node so throttling holds behind a load balancer.
CREATE TABLE login_throttle (
    subject       text PRIMARY KEY,
    failures      int NOT NULL,
    window_start  timestamptz NOT NULL,
    locked_until  timestamptz
);

-- Messages a notifier delivered in dev/test instead of SMTP/SMS.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    user_id     uuid,
    recipient   text NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE security_alerts (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    org_id      uuid,
    user_id     uuid,
    ip          text,
    detail      text NOT NULL
);
CREATE INDEX security_alerts_at ON security_alerts (at);

-- The audit log. Each row's `hash` is SHA-256(prev_hash || canonical row),
-- so editing, deleting or inserting a row breaks the chain from there on.
-- `at` is written by the application (microsecond precision) because it is
-- part of the hashed row.
CREATE TABLE audit_log (
    id          bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text,
    org_id      uuid,
    role        text,
    action      text NOT NULL,
    target      text,
    outcome     text NOT NULL,
    ip          text,
    user_agent  text,
    request_id  text,
    detail      text,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

-- The chain's start: after a retention purge, the id and hash of the last
-- purged row, so the remaining rows still verify.
CREATE TABLE audit_anchor (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_id     bigint NOT NULL,
    last_hash   bytea NOT NULL
);
INSERT INTO audit_anchor (last_id, last_hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- The table owner could still change rows, but nothing in Lectern does:
-- updates are refused outright, deletes only inside a retention purge that
-- sets `lectern.audit_purge` for its transaction and moves the anchor.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('lectern.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
