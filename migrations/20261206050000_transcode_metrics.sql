-- /metrics reads the transcodes that finished in the last hour at every
-- scrape; without this the query would scan every asset's event history.
CREATE INDEX asset_events_ready_at ON asset_events (at) WHERE to_status = 'ready';
