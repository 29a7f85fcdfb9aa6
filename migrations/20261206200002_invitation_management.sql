-- Expert management: invitations can be resent (a new token; the old
-- link dies, since a token carries the generation it was issued for)
-- and revoked (its link then fails with `invitation_revoked`).
ALTER TABLE invitations
    ADD COLUMN generation  integer NOT NULL DEFAULT 1,
    ADD COLUMN sent_at     timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN revoked_at  timestamptz,
    ADD COLUMN revoked_by  uuid REFERENCES users (id) ON DELETE SET NULL;
CREATE INDEX invitations_org ON invitations (org_id, id DESC);
