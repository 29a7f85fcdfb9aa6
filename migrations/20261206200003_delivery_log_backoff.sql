-- The delivery log says how long a retried or deferred delivery waits
-- before its next attempt (the backoff the dispatcher chose), so the
-- schedule can be read without comparing timestamps. A migration of its
-- own: 20261206200001 has already been merged as it was.
ALTER TABLE notification_delivery_log ADD COLUMN backoff_ms bigint;
