-- Several ways in (issue #23): a person may have a password, a verified
-- phone number, WeChat identities and single sign-on identities (OIDC,
-- LDAP); each organisation chooses which of them it allows and whether a
-- first sign-in creates a learner (just in time) or needs an invitation.

-- An account made by a first sign-in with a phone, WeChat or single
-- sign-on has no email address and no password until its owner adds one.
ALTER TABLE users ALTER COLUMN email_ct DROP NOT NULL,
                  ALTER COLUMN email_bidx DROP NOT NULL,
                  ALTER COLUMN password_hash DROP NOT NULL,
                  ADD CONSTRAINT users_email_sealed_with_index
                      CHECK ((email_ct IS NULL) = (email_bidx IS NULL));

-- A verified phone number, sealed in `phone_ct` like the email, and
-- found by its blind index (HMAC of the E.164 form): one account per number.
ALTER TABLE users ADD COLUMN phone_bidx bytea UNIQUE,
                  ADD COLUMN phone_verified_at timestamptz;
-- Numbers stored before verification existed were never proven: they
-- stay for notices but cannot sign in (no blind index).

-- Which ways in an organisation allows besides the password (which stays:
-- it is how its administrators get in). No row: passwords only, and new
-- accounts only by invitation (the behaviour before this table).
CREATE TABLE sign_in_policies (
    org_id        uuid PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    methods       text[] NOT NULL DEFAULT '{}'
                  CHECK (methods <@ ARRAY['sms', 'wechat', 'oidc', 'ldap']::text[]),
    -- `just_in_time`: a first sign-in by an allowed way creates a learner;
    -- `invitation`: only people who already have an account get in.
    new_accounts  text NOT NULL DEFAULT 'invitation'
                  CHECK (new_accounts IN ('invitation', 'just_in_time')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Identities another system vouches for. `issuer` scopes the subject:
-- the OIDC issuer URL, the WeChat app id (OpenIDs differ per app), the
-- WeChat open-platform account for UnionIDs, the LDAP directory's URL.
-- Subjects are personal data (a DN names the person): sealed, found by
-- blind index.
CREATE TABLE external_identities (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id          uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    kind            text NOT NULL
                    CHECK (kind IN ('wechat_unionid', 'wechat_openid', 'oidc', 'ldap')),
    issuer          text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 500),
    subject_bidx    bytea NOT NULL,
    subject_ct      bytea NOT NULL,
    key_id          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_sign_in_at timestamptz,
    UNIQUE (kind, issuer, subject_bidx)
);
CREATE INDEX external_identities_user ON external_identities (user_id);
CREATE INDEX external_identities_key_id ON external_identities (key_id);

-- One-time codes sent by SMS: to sign in with a number, or to prove a
-- number before it is put on an account. Stored as an HMAC under the
-- token key bound to the number's blind index, never the code; a new
-- code of the same purpose for the same number supersedes the older.
CREATE TABLE phone_codes (
    id          uuid PRIMARY KEY,
    purpose     text NOT NULL CHECK (purpose IN ('sign_in', 'verify')),
    phone_bidx  bytea NOT NULL,
    -- `verify`: the account the number is being added to, and the number
    -- itself (sealed) to store once proven.
    user_id     uuid REFERENCES users (id) ON DELETE CASCADE,
    phone_ct    bytea,
    key_id      text,
    -- `sign_in`: the organisation a first sign-in would create a learner in.
    org_id      uuid REFERENCES organisations (id) ON DELETE CASCADE,
    code_hash   bytea NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (purpose = 'sign_in' OR (user_id IS NOT NULL AND phone_ct IS NOT NULL))
);
CREATE INDEX phone_codes_open ON phone_codes (phone_bidx, purpose) WHERE used_at IS NULL;
CREATE INDEX phone_codes_expires ON phone_codes (expires_at);
