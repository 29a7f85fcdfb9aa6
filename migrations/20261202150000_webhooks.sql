-- Partner notifications: an organisation's webhook endpoints and the log of
-- every delivery. A delivery is written by the database in the same
-- transaction that moves an asset to ready or failed, so no event is lost
-- between the pipeline and the dispatcher; (endpoint, asset, event) is
-- unique, so an event is delivered at most once per endpoint.

CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL REFERENCES organisations (id),
    url              text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    -- The signing secret, sealed with the field keys (AES-GCM); shown once.
    secret_sealed    bytea NOT NULL,
    events           text[] NOT NULL DEFAULT ARRAY['asset.ready', 'asset.failed'],
    created_at       timestamptz NOT NULL DEFAULT now(),
    disabled_at      timestamptz
);
CREATE INDEX webhook_endpoints_by_org ON webhook_endpoints (organisation_id) WHERE disabled_at IS NULL;

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    asset_id         uuid NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    event            text NOT NULL,
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A dispatcher holds a delivery while it posts it; another may take it
    -- over once this passes (the first one died).
    locked_until     timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, asset_id, event)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

CREATE FUNCTION assets_notify_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    happened text := 'asset.' || NEW.status;
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, asset_id, event, payload)
    SELECT e.id, NEW.id, happened, jsonb_build_object(
        'event', happened,
        'asset', jsonb_build_object(
            'id', NEW.id,
            'status', NEW.status,
            'title', NEW.title,
            'duration_s', NEW.duration_s,
            'error', CASE WHEN NEW.error_code IS NULL THEN NULL ELSE
                jsonb_build_object('code', NEW.error_code, 'message', NEW.error_message) END),
        'occurred_at', now())
    FROM webhook_endpoints e
    WHERE e.organisation_id = NEW.organisation_id
      AND e.disabled_at IS NULL
      AND happened = ANY (e.events)
    ON CONFLICT (endpoint_id, asset_id, event) DO NOTHING;
    RETURN NEW;
END $$;

CREATE TRIGGER assets_notify_webhooks
    AFTER UPDATE OF status ON assets
    FOR EACH ROW
    WHEN (NEW.status IN ('ready', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION assets_notify_webhooks();
