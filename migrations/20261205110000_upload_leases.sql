-- A tus PATCH leases its upload instead of holding the row lock (and a
-- database connection) while its body streams: the lease is taken and
-- cleared in short statements, renewed while the body flows, and lapses on
-- its own if the process writing died. `lease_id` fences the holder's
-- statements, so a PATCH that outlived its lease records nothing.
ALTER TABLE uploads
    ADD COLUMN lease_id uuid,
    ADD COLUMN leased_until timestamptz,
    ADD CHECK ((lease_id IS NULL) = (leased_until IS NULL));
