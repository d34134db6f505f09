-- Inbox: one row per (consumer group, ce_id) handled, written in the same
-- transaction as the handler's state change, so a redelivery is a no-op.
CREATE TABLE inbox (
    group_id    text        NOT NULL,
    event_id    text        NOT NULL,
    topic       text        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, event_id)
);
CREATE INDEX inbox_handled_at ON inbox (handled_at);

-- Outbox: messages written in the same transaction as the state change that
-- caused them; the relay publishes committed rows in id order and deletes them.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,
    topic       text        NOT NULL,
    key         bytea,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    attempts    integer     NOT NULL DEFAULT 0,
    last_error  text
);
