-- Identity hardening (issue #16): self sign-up is opt-in per organisation
-- and needs proof of the email address; an invitation raises only accounts
-- whose owner proved the email; one-time secrets are not readable at rest.

-- Off unless the organisation's super admin turns it on
-- (PUT /api/v1/organisations/{org_id}/signup).
ALTER TABLE organisations ADD COLUMN self_signup boolean NOT NULL DEFAULT false;

-- When the person behind the email proved it (a confirmed sign-up, an
-- accepted invitation) while choosing this account's password. NULL means
-- someone else may have chosen the password — an operator with `lectern
-- admin create-user`, or a sign-up from before proof was required — so
-- accepting an invitation sets a new password instead of raising the
-- account as it is. Existing rows cannot tell, so they start NULL.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- Sign-ups waiting for proof of their email address. The account is
-- created only by the confirmation, so a sign-up in someone else's name
-- leaves nothing behind that could later become theirs.
CREATE TABLE signup_requests (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    email_ct      bytea NOT NULL,
    email_bidx    bytea NOT NULL,
    key_id        text NOT NULL,
    password_hash text NOT NULL,
    -- SHA-256 of the 256-bit token sent to the address; never the token.
    token_hash    bytea NOT NULL UNIQUE,
    expires_at    timestamptz NOT NULL,
    confirmed_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX signup_requests_key_id ON signup_requests (key_id);
CREATE INDEX signup_requests_expires ON signup_requests (expires_at);

-- One-time codes are now an HMAC under the token key (configuration, not
-- the database): a plain SHA-256 of six digits is reversed by trying a
-- million. Codes hashed the old way could no longer match; they expired
-- within minutes anyway.
DELETE FROM step_up_codes;
COMMENT ON COLUMN step_up_codes.code_hash IS
    'HMAC-SHA-256 (token key) of the session id and the code';

-- The development outbox keeps recipients and bodies sealed with the
-- field keys (bodies hold one-time codes and invitation tokens); the
-- recipient is found by its blind index. Messages written in the clear
-- before this are dropped rather than kept readable.
DELETE FROM outbox;
ALTER TABLE outbox
    DROP COLUMN recipient,
    DROP COLUMN body,
    ADD COLUMN message_id uuid NOT NULL UNIQUE,
    ADD COLUMN recipient_bidx bytea NOT NULL,
    ADD COLUMN recipient_ct bytea NOT NULL,
    ADD COLUMN body_ct bytea NOT NULL;
CREATE INDEX outbox_recipient ON outbox (recipient_bidx, id);
