-- Hand-off codes (issues #19, #23): a mini-program signed in with
-- `wx.login` opens the learner H5 app in a `web-view`, which does not
-- share its session. An authenticated call mints a short-lived code the
-- H5 redeems once for its own session. Only the code's SHA-256 is kept;
-- the code is bound to the session that minted it (signing that session
-- out kills its codes) and to the organisation it was minted in.
CREATE TABLE handoff_codes (
    id          uuid PRIMARY KEY,
    code_hash   bytea NOT NULL UNIQUE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- NULL only for a global super admin's session.
    org_id      uuid REFERENCES organisations (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    -- The session the redemption started (for the audit trail).
    redeemed_session_id uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX handoff_codes_session ON handoff_codes (session_id);
CREATE INDEX handoff_codes_expires ON handoff_codes (expires_at);
