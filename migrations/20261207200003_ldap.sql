-- LDAP / Active Directory bind sign-in (issue #23): each organisation may
-- name one directory; its groups decide the role at every sign-in.

CREATE TABLE ldap_directories (
    org_id            uuid PRIMARY KEY REFERENCES organisations (id) ON DELETE CASCADE,
    -- `ldaps://host:636` (TLS) or `ldap://host:389` (StartTLS required
    -- unless LECTERN_SIGN_IN_ALLOW_PLAIN, development only).
    url               text NOT NULL CHECK (url ~ '^ldaps?://'),
    -- The account people are looked up with; NULL: an anonymous search.
    bind_dn           text,
    -- Sealed with the field keys (row: the organisation's id); never answered.
    bind_password_ct  bytea,
    key_id            text NOT NULL,
    -- Where people are, and the attribute a login name matches
    -- (`uid`; `sAMAccountName` in Active Directory).
    user_base         text NOT NULL,
    user_attribute    text NOT NULL DEFAULT 'uid' CHECK (user_attribute ~ '^[A-Za-z][A-Za-z0-9-]*$'),
    -- Where groups are (groupOfNames / AD groups listing `member`s), and
    -- what each group's `cn` makes its members here: {"doctors": "learner"}.
    group_base        text NOT NULL,
    group_roles       jsonb NOT NULL DEFAULT '{}',
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((bind_dn IS NULL) = (bind_password_ct IS NULL))
);
