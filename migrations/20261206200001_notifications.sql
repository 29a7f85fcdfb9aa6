-- Notifications that arrive (crate `notify`): the transactional outbox
-- `enqueue` writes in the caller's transaction, the in-app inbox, the
-- deliveries the dispatcher claims, their log, and per-user preferences.

-- One notice. Its parameters (and an explicit address, for people without
-- an account) are kept either in the clear (`payload`) or sealed with the
-- field keys (`payload_ct`, AAD `notifications.payload` + id), and are
-- erased once every delivery is final: the queue does not keep codes or
-- tokens longer than it needs them.
CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    org_id      uuid REFERENCES organisations (id) ON DELETE CASCADE,
    user_id     uuid REFERENCES users (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    payload     jsonb,
    payload_ct  bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (payload IS NULL OR payload_ct IS NULL)
);
CREATE INDEX notifications_user ON notifications (user_id);

-- What the person sees in the app. Never a secret topic (one-time codes,
-- links carrying tokens): `enqueue` does not write those here.
CREATE TABLE inbox_items (
    id               uuid PRIMARY KEY,
    notification_id  uuid REFERENCES notifications (id) ON DELETE SET NULL,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id           uuid REFERENCES organisations (id) ON DELETE CASCADE,
    topic            text NOT NULL,
    params           jsonb NOT NULL,
    read_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- Newest first, by keyset (ids are UUIDv7, so they sort by creation).
CREATE INDEX inbox_items_newest ON inbox_items (user_id, id DESC);
CREATE INDEX inbox_items_unread ON inbox_items (user_id) WHERE read_at IS NULL;

-- One message on one channel. `pending` rows are claimed by the
-- dispatcher when `next_attempt_at` is due (a claim pushes it forward by
-- a lease, so a node that dies mid-send hands the row back); `sent` and
-- `failed` are final.
CREATE TABLE notification_deliveries (
    id               uuid PRIMARY KEY,
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    topic            text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('email', 'sms')),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Blind index of the address it went to: per-recipient rate limits.
    recipient_bidx   bytea,
    last_error       text,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX notification_deliveries_recent ON notification_deliveries (recipient_bidx, channel, sent_at)
    WHERE status = 'sent';
CREATE INDEX notification_deliveries_notification ON notification_deliveries (notification_id);

-- Every attempt's outcome. Holds no secret and no personal data: no
-- address, no subject or body, no parameter; `detail` is a redacted error.
CREATE TABLE notification_delivery_log (
    id           bigserial PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES notification_deliveries (id) ON DELETE CASCADE,
    topic        text NOT NULL,
    channel      text NOT NULL,
    attempt      integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed', 'deferred')),
    detail       text,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notification_delivery_log_delivery ON notification_delivery_log (delivery_id, id);

-- A person's choices; no row means the defaults (zh-CN, inbox and e-mail
-- on, SMS off). Lists hold topic names. Mandatory topics ignore
-- `email_off`; secret topics never reach the inbox whatever `inbox_off`.
CREATE TABLE notification_preferences (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    language    text NOT NULL DEFAULT 'zh-CN' CHECK (language IN ('zh-CN', 'en')),
    inbox_off   text[] NOT NULL DEFAULT '{}',
    email_off   text[] NOT NULL DEFAULT '{}',
    sms_on      text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
