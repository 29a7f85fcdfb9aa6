-- OpenID Connect single sign-on (issue #23): each organisation may name
-- one provider; sign-ins are authorisation code + PKCE flows whose state
-- is bound to the browser that started them.

CREATE TABLE oidc_providers (
    org_id            uuid PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    -- The issuer URL, exactly as the provider's discovery document and ID
    -- tokens spell it.
    issuer            text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 500),
    client_id         text NOT NULL CHECK (length(client_id) BETWEEN 1 AND 500),
    -- Sealed with the field keys (row: the organisation's id); never answered.
    client_secret_ct  bytea NOT NULL,
    key_id            text NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- A sign-in (or link) under way. Found by the SHA-256 of its `state`;
-- `browser_hash` is the SHA-256 of the random value in the HttpOnly
-- cookie set when it started, so a `state` lured into another browser is
-- refused. Used once.
CREATE TABLE oidc_flows (
    id            uuid PRIMARY KEY,
    state_hash    bytea NOT NULL UNIQUE,
    browser_hash  bytea NOT NULL,
    org_id        uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    nonce         text NOT NULL,
    -- The PKCE verifier, sealed (row: this id).
    verifier_ct   bytea NOT NULL,
    key_id        text NOT NULL,
    -- A path of this site the browser goes back to.
    return_to     text NOT NULL,
    -- Set when a signed-in person links the identity to their account.
    link_user_id  uuid REFERENCES users (id) ON DELETE CASCADE,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oidc_flows_expires ON oidc_flows (expires_at);

-- The ID token of a session signed in by OIDC, sealed (row: the session),
-- kept for RP-initiated logout's `id_token_hint`.
CREATE TABLE oidc_sessions (
    session_id   uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    org_id       uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    id_token_ct  bytea NOT NULL,
    key_id       text NOT NULL
);
