-- WeChat sign-in (issue #23): an organisation's mini-program and official
-- account, the app-level access token every node shares, the session keys
-- mini-program sessions decrypt user data with, and official-account
-- authorisations under way.

CREATE TABLE wechat_apps (
    appid          text PRIMARY KEY CHECK (appid ~ '^wx[0-9a-f]{16}$'),
    org_id         uuid NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('mini_program', 'official_account')),
    -- Sealed with the field keys (row: the organisation's id, field
    -- `wechat_apps.secret:<appid>`); never answered.
    secret_ct      bytea NOT NULL,
    key_id         text NOT NULL,
    -- The open-platform account the apps are bound to: UnionIDs are one
    -- person across its apps, and are scoped by it. NULL: OpenIDs only.
    open_platform  text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wechat_apps_org ON wechat_apps (org_id);

-- The app-level access token (`cgi-bin/token`), one per app for every
-- node: refreshed under an advisory lock before it expires. Sealed (row:
-- a UUID v5 of the app id).
CREATE TABLE wechat_access_tokens (
    appid        text PRIMARY KEY REFERENCES wechat_apps (appid) ON DELETE CASCADE,
    token_ct     bytea NOT NULL,
    key_id       text NOT NULL,
    expires_at   timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

-- A mini-program session's WeChat session key, which never leaves the
-- server: it decrypts the user data the mini-program hands over.
CREATE TABLE wechat_sessions (
    session_id      uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    appid           text NOT NULL REFERENCES wechat_apps (appid) ON DELETE CASCADE,
    session_key_ct  bytea NOT NULL,
    key_id          text NOT NULL
);

-- Official-account web authorisations under way: as OIDC flows, bound to
-- the browser by a cookie and used once.
CREATE TABLE wechat_flows (
    id            uuid PRIMARY KEY,
    state_hash    bytea NOT NULL UNIQUE,
    browser_hash  bytea NOT NULL,
    appid         text NOT NULL REFERENCES wechat_apps (appid) ON DELETE CASCADE,
    scope         text NOT NULL CHECK (scope IN ('snsapi_base', 'snsapi_userinfo')),
    return_to     text NOT NULL,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX wechat_flows_expires ON wechat_flows (expires_at);
