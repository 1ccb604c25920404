-- herald's history: one row per notification, one per (notification, channel),
-- and an append-only trail of every status change.

CREATE FUNCTION herald_status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'CREATED' THEN 0 WHEN 'SCHEDULED' THEN 1 WHEN 'QUEUED' THEN 2
        WHEN 'FAILED' THEN 3 WHEN 'SENT' THEN 4 WHEN 'SUPPRESSED' THEN 4
        WHEN 'DEAD' THEN 4 WHEN 'DELIVERED' THEN 5 WHEN 'READ' THEN 6
        ELSE -1 END
$$;

CREATE TABLE notifications (
    id          text PRIMARY KEY,
    user_id     text NOT NULL,
    category    text NOT NULL,
    priority    text NOT NULL,
    title       text,
    body        text,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The inbox reads a user's newest notifications first.
CREATE INDEX notifications_inbox ON notifications (user_id, created_at DESC, id DESC);

-- No foreign key to notifications: on a replay or across partitions a status
-- event may be recorded before the notification row it belongs to.
CREATE TABLE deliveries (
    notification_id     text NOT NULL,
    channel             text NOT NULL,
    status              text NOT NULL CHECK (herald_status_rank(status) >= 0),
    attempts            int NOT NULL DEFAULT 0,
    reason              text,
    last_error          text,
    provider_message_id text,
    queued_at           timestamptz,
    sent_at             timestamptz,
    delivered_at        timestamptz,
    read_at             timestamptz,
    updated_at          timestamptz NOT NULL,
    PRIMARY KEY (notification_id, channel)
);

CREATE INDEX deliveries_operations ON deliveries (status, updated_at);

CREATE TABLE delivery_events (
    id                  bigserial PRIMARY KEY,
    notification_id     text NOT NULL,
    channel             text NOT NULL,
    status              text NOT NULL,
    attempts            int NOT NULL DEFAULT 0,
    at                  timestamptz NOT NULL,
    reason              text,
    error               text,
    provider_message_id text,
    -- A replayed event is the same event: recorded once.
    UNIQUE (notification_id, channel, status, attempts)
);
